//! Giving back the pages that the pool's memory slots keep resident, once no instance is
//! alive.
//!
//! A memory slot keeps up to `linear_memory_keep_resident` (2 MiB) of its pages mapped
//! after its instance is gone, so that the next instance reuses them instead of faulting
//! them in again (~10 µs per invocation instead of ~36 µs). After 32 attackers that filled
//! their memory, that was 32 × 2 MiB = 65 MB of RSS for good (measured with
//! `/proc/PID/smaps`: 32 slot mappings of 2,040 kB each; the heap, stacks and image pages
//! together grew ~3 MB). wasmtime 48 has no call to decommit unused slots, so
//! [`IdlePool::release_if_idle`] does it itself: when no store of the engine has been alive
//! for [`IDLE_AFTER`], it `MADV_DONTNEED`s the whole memory slab.
//!
//! **Why that is sound.** An unused slot holds exactly its pristine contents: wasmtime
//! resets a slot as its instance goes (pages kept resident are zeroed, or copied back from
//! the module's memory image; the others are dropped with the same `madvise`). Dropping a
//! page of a pristine slot changes no byte: an anonymous page reads back as zeros, a page
//! of the image mapping as the image. A slot being reset while this runs ends pristine in
//! every interleaving (a page dropped before wasmtime rewrites it is faulted back and
//! rewritten with the same bytes). What must never run concurrently is an instance using a
//! slot, or being instantiated into one (which remaps and reprotects it): every store is
//! made by `ComponentEngine::new_store`, which enters the [`IdlePool`] first, and the
//! release runs only when no store is alive, holding a gate that makes a store being
//! created wait until the `madvise` returns.
//!
//! **Where the slab is.** wasmtime does not say. [`IdlePool::discover`] reads
//! `/proc/self/maps` before and after the engine is built (the slab is new address space),
//! computes the slab's length from the pool's configuration as wasmtime 48 lays it out, and
//! instantiates one tiny module to learn the address of one slot. The slab is taken only if
//! exactly one placement of it around that slot lies within the new address space;
//! otherwise the release stays off (and says so in the debug log).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, Result};

use super::resident::{page_size, uptime_ms};

/// How long no store may have been alive before the slab is released.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

/// wasmtime 48's defaults for 64-bit hosts, set explicitly in the engine's configuration so
/// that the slab layout computed here is the one wasmtime uses.
pub const MEMORY_RESERVATION: u64 = 4 << 30;
pub const MEMORY_GUARD: u64 = 32 << 20;

/// Every engine's idle pool, for [`release_idle`].
static POOLS: Mutex<Vec<Weak<IdlePool>>> = Mutex::new(Vec::new());
/// Engines are built one at a time, so that the address space one of them adds is its own.
static BUILDING: Mutex<()> = Mutex::new(());

/// One engine's memory slab, and whether any of its stores is alive.
pub struct IdlePool {
    /// Keeps the pool, and so the slab, mapped while this exists.
    _engine: wasmtime::Engine,
    /// The slab: `(start, len)`, page-aligned; `None` when it could not be found.
    slab: Option<(usize, usize)>,
    live: AtomicUsize,
    /// Set while the slab is being released: a store being created waits.
    gate: AtomicBool,
    /// Whether a store was made since the last release.
    used: AtomicBool,
    last_used_ms: AtomicU64,
}

/// A live store of the engine; dropping it (with the store's data) ends it.
pub struct LiveStore(Arc<IdlePool>);

impl std::fmt::Debug for LiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveStore")
    }
}

impl Drop for LiveStore {
    fn drop(&mut self) {
        self.0.last_used_ms.store(uptime_ms(), Ordering::Relaxed);
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The slab of a pool of `slots` memories, each at most `max_memory` bytes: wasmtime 48's
/// `memory_pool::calculate` without protection keys. Returns (bytes before the first slot,
/// bytes per slot, total bytes).
fn slab_layout(slots: u64, max_memory: u64) -> Option<(u64, u64, u64)> {
    let pre = MEMORY_GUARD;
    let slot = MEMORY_RESERVATION
        .max(max_memory)
        .checked_add(MEMORY_GUARD)?;
    let slot = slot.checked_next_multiple_of(page_size() as u64)?;
    let total = slot.checked_mul(slots)?.checked_add(pre)?;
    Some((pre, slot, total))
}

/// Where a slab of `total` bytes with `slot`-byte slots after `pre` bytes lies, given the
/// address `probe` of one slot and the address ranges `fresh` that building the engine
/// added; `None` unless exactly one placement fits.
fn locate(probe: u64, (pre, slot, total): (u64, u64, u64), fresh: &[(u64, u64)]) -> Option<u64> {
    let slots = (total - pre) / slot;
    let mut found = None;
    for i in 0..slots {
        let Some(start) = probe.checked_sub(pre).and_then(|p| p.checked_sub(i * slot)) else {
            break;
        };
        let Some(end) = start.checked_add(total) else {
            continue;
        };
        if fresh.iter().any(|&(s, e)| s <= start && end <= e) {
            if found.is_some() {
                return None;
            }
            found = Some(start);
        }
    }
    found
}

/// Engines built at most to find the slab.
const DISCOVERY_TRIES: u32 = 3;

impl IdlePool {
    /// Builds the engine with `build` and finds its memory slab (`slots` memories of at
    /// most `max_memory` bytes). Another thread mapping memory between the two reads of the
    /// maps makes the placement ambiguous, which is refused; so up to [`DISCOVERY_TRIES`]
    /// engines are built, and a slab still not found leaves the release off (logged).
    pub fn discover(
        slots: u32,
        max_memory: u64,
        build: impl Fn() -> Result<wasmtime::Engine>,
    ) -> Result<(wasmtime::Engine, Arc<IdlePool>)> {
        let mut tries = 0;
        let (engine, slab) = loop {
            tries += 1;
            let building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
            let before = maps::ranges();
            let engine = build()?;
            let after = maps::ranges();
            drop(building);
            let slab = match (before, after) {
                (Ok(before), Ok(after)) => {
                    let fresh = maps::subtract(&after, &before);
                    find_slab(&engine, slots, max_memory, &fresh)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            if slab.is_ok() || tries == DISCOVERY_TRIES {
                break (engine, slab);
            }
        };
        let slab = match slab {
            Ok(slab) => {
                tracing::debug!(
                    slots,
                    bytes = slab.1,
                    tries,
                    "idle memory slots are released after {IDLE_AFTER:?} without a store"
                );
                Some(slab)
            }
            Err(e) => {
                tracing::info!(
                    error = %format!("{e:#}"),
                    tries,
                    "idle memory slots stay resident: the pool's memory was not found"
                );
                None
            }
        };
        let pool = Arc::new(IdlePool {
            _engine: engine.clone(),
            slab,
            live: AtomicUsize::new(0),
            gate: AtomicBool::new(false),
            used: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(uptime_ms()),
        });
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        Ok((engine, pool))
    }

    /// Records a store being made; waits while the slab is being released (for the length
    /// of one `madvise`, and only when the engine had been idle).
    pub fn enter(self: &Arc<Self>) -> LiveStore {
        self.live.fetch_add(1, Ordering::SeqCst);
        while self.gate.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        self.used.store(true, Ordering::Relaxed);
        LiveStore(self.clone())
    }

    /// Releases the slab if no store is alive, none was for [`IDLE_AFTER`], and one was
    /// made since the last release; true if it did.
    fn release_if_idle(&self, now_ms: u64) -> bool {
        let Some((start, len)) = self.slab else {
            return false;
        };
        let idle = now_ms.saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        if !self.used.load(Ordering::Relaxed)
            || idle < IDLE_AFTER.as_millis() as u64
            || self.live.load(Ordering::SeqCst) != 0
        {
            return false;
        }
        // Close the gate, then look again: a store made from here on waits for the gate,
        // and one made before it is seen here (both sides are SeqCst).
        self.gate.store(true, Ordering::SeqCst);
        if self.live.load(Ordering::SeqCst) != 0 {
            self.gate.store(false, Ordering::SeqCst);
            return false;
        }
        self.used.store(false, Ordering::Relaxed);
        let done = release(start, len);
        self.gate.store(false, Ordering::SeqCst);
        done
    }
}

/// Finds the slab among `fresh` by instantiating a module with one memory.
fn find_slab(
    engine: &wasmtime::Engine,
    slots: u32,
    max_memory: u64,
    fresh: &[(u64, u64)],
) -> Result<(usize, usize)> {
    let layout = slab_layout(u64::from(slots), max_memory).context("the slab size overflows")?;
    // (module (memory (export "m") 1))
    const PROBE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
        0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, min 1 page
        0x07, 0x05, 0x01, 0x01, b'm', 0x02, 0x00, // export "m" = memory 0
    ];
    let module = wasmtime::Module::from_binary(engine, PROBE)
        .map_err(anyhow::Error::from)
        .context("compiling the probe module")?;
    let mut store = wasmtime::Store::new(engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[])
        .map_err(anyhow::Error::from)
        .context("instantiating the probe module")?;
    let memory = instance
        .get_memory(&mut store, "m")
        .context("the probe has no memory")?;
    let probe = memory.data_ptr(&store) as usize as u64;
    drop(store);
    let start = locate(probe, layout, fresh)
        .with_context(|| format!("no single slab placement around slot {probe:#x}"))?;
    let start = usize::try_from(start).context("slab address")?;
    let len = usize::try_from(layout.2).context("slab length")?;
    Ok((start, len))
}

#[cfg(target_os = "linux")]
fn release(start: usize, len: usize) -> bool {
    #[expect(unsafe_code, reason = "madvise on the pool's own slab")]
    // SAFETY: `start..start + len` is the memory slab of a pool that the caller's engine
    // keeps mapped, no store of that engine is alive and none can be made until this
    // returns (see the module docs), so every slot in it is unused and pristine; dropping
    // its pages changes no byte that wasmtime or an instance will read.
    let done = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) == 0 };
    done
}

#[cfg(not(target_os = "linux"))]
fn release(_start: usize, _len: usize) -> bool {
    false
}

/// Releases the memory slab of every engine idle for [`IDLE_AFTER`]; returns how many.
pub fn release_idle() -> usize {
    let pools: Vec<Arc<IdlePool>> = {
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).collect()
    };
    let now = uptime_ms();
    pools.iter().filter(|p| p.release_if_idle(now)).count()
}

mod maps {
    use anyhow::{Context, Result};

    /// The mapped address ranges of this process, sorted, adjacent ones merged.
    #[cfg(target_os = "linux")]
    pub fn ranges() -> Result<Vec<(u64, u64)>> {
        let text = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
        parse(&text)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn ranges() -> Result<Vec<(u64, u64)>> {
        anyhow::bail!("no /proc/self/maps here")
    }

    pub fn parse(text: &str) -> Result<Vec<(u64, u64)>> {
        let mut ranges = Vec::new();
        for line in text.lines() {
            let span = line.split_whitespace().next().unwrap_or_default();
            let (start, end) = span
                .split_once('-')
                .with_context(|| format!("a maps line without a range: {line:?}"))?;
            let start = u64::from_str_radix(start, 16).context("a maps start address")?;
            let end = u64::from_str_radix(end, 16).context("a maps end address")?;
            ranges.push((start, end));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Ok(merged)
    }

    /// The parts of `after` that are not in `before` (both sorted and merged).
    pub fn subtract(after: &[(u64, u64)], before: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut fresh = Vec::new();
        for &(start, end) in after {
            let mut from = start;
            for &(s, e) in before.iter().filter(|&&(s, e)| s < end && e > start) {
                if s > from {
                    fresh.push((from, s));
                }
                from = from.max(e);
            }
            if from < end {
                fresh.push((from, end));
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_parsed_merged_and_subtracted() {
        let before = maps::parse("1000-2000 r--p 0 0:0 0 a\n5000-6000 rw-p 0 0:0 0\n").unwrap();
        let after = maps::parse(
            "1000-2000 r--p 0 0:0 0 a\n2000-3000 ---p 0 0:0 0\n5000-6000 rw-p 0 0:0 0\n\
             6000-9000 rw-p 0 0:0 0\n",
        )
        .unwrap();
        assert_eq!(after, vec![(0x1000, 0x3000), (0x5000, 0x9000)]);
        assert_eq!(
            maps::subtract(&after, &before),
            vec![(0x2000, 0x3000), (0x6000, 0x9000)]
        );
    }

    #[test]
    fn the_slab_is_located_only_when_one_placement_fits() {
        let layout = (0x10, 0x100, 0x10 + 4 * 0x100);
        // Slab at 0x1000..0x1410, probe in slot 2.
        let probe = 0x1000 + 0x10 + 2 * 0x100;
        assert_eq!(locate(probe, layout, &[(0x1000, 0x1410)]), Some(0x1000));
        // Fresh space one slot bigger: two placements fit, so none is taken.
        assert_eq!(locate(probe, layout, &[(0x1000, 0x1510)]), None);
        // Too small: none fits.
        assert_eq!(locate(probe, layout, &[(0x1000, 0x1400)]), None);
    }

    #[test]
    fn the_slab_of_a_real_engine_is_found() {
        // Other unit tests build engines at the same time, without the lock, and a mapping
        // of theirs made between the two reads of the maps makes the placement ambiguous,
        // which discovery refuses and retries (DISCOVERY_TRIES); on a machine this busy even
        // that can miss, so a few discoveries: one finds the slab unless it is broken.
        let build = || {
            let mut pooling = wasmtime::PoolingAllocationConfig::new();
            pooling
                .total_memories(4)
                .total_core_instances(4)
                .max_memory_size(1 << 20);
            let mut config = wasmtime::Config::new();
            config
                .memory_reservation(MEMORY_RESERVATION)
                .memory_guard_size(MEMORY_GUARD)
                .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
            wasmtime::Engine::new(&config).map_err(anyhow::Error::from)
        };
        let found = (0..5).find_map(|_| {
            let (engine, pool) = IdlePool::discover(4, 1 << 20, build).unwrap();
            let slab = pool.slab;
            drop(engine);
            slab
        });
        let (start, len) = found.expect("the slab is found in one of 5 discoveries");
        assert_eq!(len as u64, slab_layout(4, 1 << 20).unwrap().2);
        assert!(start > 0);
    }
}
