//! Giving back the pages of compiled code that no invocation has used for a while.
//!
//! A component's compiled code is mapped from its artifact file, and every page its
//! instances touched stays mapped, counted in the host's RSS although it is a page of the
//! page cache: a TypeScript handler served once leaves ~28 MB mapped, and the Python monitor
//! that runs once a minute ~22 MB, for good. [`release_idle`] drops those mappings
//! (`MADV_DONTNEED`) for every component that has not been instantiated for [`IDLE_AFTER`].
//! The pages stay in the page cache, and the next invocation maps back what it runs, with
//! minor faults (well under a millisecond for a JavaScript engine's hot code).
//!
//! Dropping a private file mapping is only harmless where no page of it was written, since a
//! written page would fall back to the file's contents. wasmtime writes an artifact only
//! before it makes it read-only (relocations, at load), and compiles in memory only when it
//! is not loading a file, so [`CodeImage::release`] first reads `/proc/self/pagemap` and
//! leaves alone any image with a private (anonymous) page.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::Component;

/// How long a component's code stays mapped after its last instantiation.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);
/// How often [`release_idle`] should run.
pub const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// Every live image, for [`release_idle`]; pruned as components are dropped.
static IMAGES: Mutex<Vec<Weak<CodeImage>>> = Mutex::new(Vec::new());

/// One component's mapped code, and when an instance of it last started.
pub struct CodeImage {
    /// Keeps the mapping alive (and at the same address) while this image exists.
    component: Component,
    last_used_ms: AtomicU64,
    /// Set by [`CodeImage::touch`], cleared when the mapping is dropped.
    mapped: AtomicBool,
}

impl CodeImage {
    /// Tracks `component`'s code; dropping the returned image stops tracking it.
    pub fn register(component: &Component) -> Arc<CodeImage> {
        let image = Arc::new(CodeImage {
            component: component.clone(),
            last_used_ms: AtomicU64::new(uptime_ms()),
            mapped: AtomicBool::new(true),
        });
        let mut images = IMAGES.lock().unwrap_or_else(|p| p.into_inner());
        images.retain(|i| i.strong_count() > 0);
        images.push(Arc::downgrade(&image));
        image
    }

    /// Records that an instance is about to run this code.
    pub fn touch(&self) {
        self.last_used_ms.store(uptime_ms(), Ordering::Relaxed);
        if !self.mapped.load(Ordering::Relaxed) {
            self.mapped.store(true, Ordering::Relaxed);
        }
    }

    /// Drops the image's mapped pages if it is idle and has no private page; true if it did.
    /// Without `again`, an image already released and not instantiated since is skipped;
    /// with it, it is released again (its instances may have run on after the release).
    fn release_if_idle(&self, uptime_ms: u64, again: bool) -> bool {
        let idle = uptime_ms.saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        if idle < IDLE_AFTER.as_millis() as u64 {
            return false;
        }
        let mapped = self.mapped.swap(false, Ordering::Relaxed);
        if !mapped && !again {
            return false;
        }
        self.release()
    }

    #[cfg(target_os = "linux")]
    fn release(&self) -> bool {
        let range = self.component.image_range();
        let Some((start, len)) = whole_pages(range.start as usize, range.end as usize) else {
            return false;
        };
        match pagemap::has_private_page(start, len) {
            Ok(false) => {}
            Ok(true) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read /proc/self/pagemap; code stays mapped");
                return false;
            }
        }
        #[expect(unsafe_code, reason = "madvise on memory this image keeps mapped")]
        // SAFETY: `self.component` keeps the mapping alive and in place. Every page of the
        // range is either not present or a clean page of the artifact file (checked just
        // above; the image is read-only since wasmtime published it, so none can become
        // private since), so dropping them changes no byte anyone reads: a later access
        // faults the same file page back in.
        let done =
            unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 };
        done
    }

    #[cfg(not(target_os = "linux"))]
    fn release(&self) -> bool {
        false
    }
}

/// Drops the mapped code pages of every component idle for [`IDLE_AFTER`] or more; returns
/// how many images it released. Cheap when nothing is idle (one clock read per component).
///
/// "Idle" counts from the last instantiation, so the code of an invocation that runs longer
/// than [`IDLE_AFTER`] is released while it still runs and faulted back in: its pages were
/// then kept for good (~8 MB of a JavaScript engine after a 50 s attack). `again` releases
/// images already released once more; the caller passes it once no store is alive.
pub fn release_idle(again: bool) -> usize {
    let images: Vec<Arc<CodeImage>> = {
        let mut images = IMAGES.lock().unwrap_or_else(|p| p.into_inner());
        images.retain(|i| i.strong_count() > 0);
        images.iter().filter_map(Weak::upgrade).collect()
    };
    let now = uptime_ms();
    images
        .iter()
        .filter(|i| i.release_if_idle(now, again))
        .count()
}

/// Milliseconds since the first call in this process: a monotonic clock for idle times,
/// unlike the wall clock of [`crate::timers::now_ms`].
pub(super) fn uptime_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The whole pages inside `start..end`: (first page, length), or `None` if there are none.
fn whole_pages(start: usize, end: usize) -> Option<(usize, usize)> {
    let page = page_size();
    let first = start.checked_next_multiple_of(page)?;
    let last = end - end % page;
    (last > first).then(|| (first, last - first))
}

pub(super) fn page_size() -> usize {
    #[expect(unsafe_code, reason = "sysconf is a C function")]
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(target_os = "linux")]
mod pagemap {
    use std::io::{Read, Seek, SeekFrom};

    /// Bit 63 of a pagemap entry: the page is present.
    const PRESENT: u64 = 1 << 63;
    /// Bit 61: the page is a file page or shared anonymous memory.
    const FILE_OR_SHARED: u64 = 1 << 61;

    /// Whether any present page of `start..start + len` (page-aligned) is private anonymous
    /// memory, per `/proc/self/pagemap` (readable by the process itself without privilege).
    pub fn has_private_page(start: usize, len: usize) -> std::io::Result<bool> {
        let page = super::page_size();
        let mut file = std::fs::File::open("/proc/self/pagemap")?;
        file.seek(SeekFrom::Start((start / page * 8) as u64))?;
        let mut remaining = len / page;
        let mut buf = vec![0u8; 8 * 4096];
        while remaining > 0 {
            let n = remaining.min(4096);
            file.read_exact(&mut buf[..n * 8])?;
            let private = buf[..n * 8].chunks_exact(8).any(|entry| {
                let bits = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8]));
                bits & PRESENT != 0 && bits & FILE_OR_SHARED == 0
            });
            if private {
                return Ok(true);
            }
            remaining -= n;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_pages_rounds_inwards() {
        let p = page_size();
        assert_eq!(whole_pages(0, 3 * p + 5), Some((0, 3 * p)));
        assert_eq!(whole_pages(1, 3 * p), Some((p, 2 * p)));
        assert_eq!(whole_pages(1, p + 1), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pagemap_tells_written_anonymous_pages_from_untouched_ones() {
        let p = page_size();
        let mut block = vec![0u8; 8 * p];
        let base = block.as_ptr() as usize;
        let (start, len) = whole_pages(base, base + block.len()).unwrap();
        for b in block.iter_mut().step_by(p) {
            *b = 1;
        }
        assert!(pagemap::has_private_page(start, len).unwrap());
        std::hint::black_box(&block);
    }
}
