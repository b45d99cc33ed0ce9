//! Giving freed heap memory back to the operating system.
//!
//! glibc keeps what threads freed in their arenas. Two things leave a lot there: cranelift's
//! compile scratch (a host that has just compiled its components idles at ~46 MB instead of
//! ~16 MB; one `malloc_trim` after loading gives it back), and an invocation that made the
//! host hold many megabytes before it was stopped. [`after_invocation`] trims after the
//! latter, at most every [`TRIM_INTERVAL`], so a stopped attack leaves the process where it
//! was instead of at its high-water mark.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Host-side bytes above which an invocation's end asks for a trim.
const TRIM_AFTER_HOST_BYTES: usize = 4 << 20;
/// Trims are not free (they walk every arena), so they are spaced out.
const TRIM_INTERVAL: Duration = Duration::from_millis(200);

static PENDING: AtomicBool = AtomicBool::new(false);
static LAST_TRIM: Mutex<Option<Instant>> = Mutex::new(None);

/// Blocks at least this big get their own mapping, returned to the OS when freed.
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`], its initial value; call it first thing.
///
/// glibc otherwise raises the threshold to the size of the largest mapped block freed (up to
/// 32 MiB) and its trim threshold to twice that. After one 14 MB deploy body, blocks of that
/// size then come from the worker threads' arenas, and the top of a thread arena is never
/// returned, not even by `malloc_trim`: a host that took one deploy idled ~45 MB higher.
/// Fixing the threshold also fixes the trim threshold at its 128 KiB default.
pub fn pin_allocator_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code, reason = "mallopt is a C function")]
    // SAFETY: mallopt only sets an allocator parameter; M_MMAP_THRESHOLD takes any value up
    // to 32 MiB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns freed heap pages to the OS; a no-op where the allocator is not glibc's.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim();
}

/// Called as each invocation's budget ends with the most bytes the host held for it: asks
/// for a trim after a big one, and carries out a pending trim once the interval has passed,
/// so the last of a burst of big invocations is trimmed by the next invocation of any kind.
pub fn after_invocation(host_peak: usize) {
    if host_peak >= TRIM_AFTER_HOST_BYTES {
        PENDING.store(true, Ordering::Relaxed);
    }
    if !PENDING.load(Ordering::Relaxed) {
        return;
    }
    let mut last = LAST_TRIM.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < TRIM_INTERVAL) {
        return;
    }
    PENDING.store(false, Ordering::Relaxed);
    *last = Some(Instant::now());
    drop(last);
    return_freed_memory();
}

/// The periodic trim (at each dashboard sample): returns what a burst of requests left in the
/// worker threads' heaps (connection buffers, bodies) once the burst is over, and carries
/// out a trim [`after_invocation`] asked for that no later invocation performed.
pub fn trim_periodically() {
    PENDING.store(false, Ordering::Relaxed);
    *LAST_TRIM.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    return_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "malloc_trim is a C function")]
fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator already considers free; it takes
    // a padding size and has no other preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
