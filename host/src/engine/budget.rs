//! One memory budget per invocation, host side included.
//!
//! wasmtime's resource limiter sees only what wasm allocates itself: linear memories and
//! tables. A guest can make the *host* allocate for it instead: `wasi:http` fields, resource
//! handles, buffered bodies and streams, llm streams, log lines. Counting each of those where
//! it is implemented would miss the next one someone adds, so the count is taken where every
//! host allocation passes: the process's global allocator ([`HostAllocator`]).
//!
//! While an invocation's future is being polled ([`Charged`]), the thread-local "current
//! budget" names its [`Budget`]; every allocation made then is tagged with it (an 8-byte tag
//! in front of the block) and its size is added to the budget. Whenever a tagged block is
//! freed, on whatever thread and however late, its size is given back, so bytes handed on to
//! hyper or a channel count until they are really gone. A budget lives in a fixed slot of a
//! static table, with a generation that changes when the slot is reused, so a block freed
//! after its invocation ended can never credit the next user of the slot.
//!
//! The allocator cannot fail an allocation without aborting the process, so passing the cap
//! only marks the budget as exceeded; the store's call hook (every return from a host call)
//! and epoch callback turn the mark into a `memory limit exceeded` trap. The overshoot is
//! therefore at most what one host call allocates, and that is bounded by its inputs, which
//! come from the guest's own capped memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::limits::MemoryLimitExceeded;

/// Budgets that may be alive at once. More than the instance pool ever holds; an invocation
/// that finds none free runs with its linear memory capped only (and says so in the log).
const SLOTS: usize = 8192;
/// A slot's word holds the generation above this bit and the host bytes below it.
const GEN_SHIFT: u32 = 40;
const BYTES_MASK: u64 = (1 << GEN_SHIFT) - 1;
const GEN_MASK: u32 = (1 << (64 - GEN_SHIFT)) - 1;

/// The accounting state of one budget slot; everything is atomic because a tagged block may
/// be freed on any thread.
struct Slot {
    /// `generation << GEN_SHIFT | host bytes`, updated in one word so a late free can check
    /// the generation and subtract atomically.
    host: AtomicU64,
    /// Linear memories and tables, as the resource limiter last set them.
    linear: AtomicUsize,
    cap: AtomicUsize,
    host_peak: AtomicUsize,
    total_peak: AtomicUsize,
    exceeded: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            host: AtomicU64::new(0),
            linear: AtomicUsize::new(0),
            cap: AtomicUsize::new(usize::MAX),
            host_peak: AtomicUsize::new(0),
            total_peak: AtomicUsize::new(0),
            exceeded: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Slots never used yet start here (slot 0 means "no budget" in a tag).
static NEXT_UNUSED: AtomicU32 = AtomicU32::new(1);
/// Slots given back, reused first so few distinct slots are ever touched.
static FREE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

thread_local! {
    /// The tag of the budget being charged on this thread, 0 for none.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

fn tag(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

fn untag(tag: u64) -> (usize, u32) {
    ((tag & 0xffff_ffff) as usize, (tag >> 32) as u32)
}

/// An invocation's memory budget: `cap` bytes for its linear memories, tables and everything
/// the host allocates on its behalf. Dropping it ends the accounting; blocks still alive are
/// then no longer counted anywhere.
#[derive(Debug)]
pub struct Budget {
    slot: u32,
    generation: u32,
    cap: usize,
}

impl Budget {
    /// A budget of `cap` bytes, or `None` when every slot is taken.
    pub fn new(cap: usize) -> Option<Self> {
        let slot = FREE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .or_else(|| {
                let next = NEXT_UNUSED.fetch_add(1, Ordering::Relaxed);
                (next < SLOTS as u32).then_some(next)
            })?;
        let s = &TABLE[slot as usize];
        let generation = (s.host.load(Ordering::Acquire) >> GEN_SHIFT) as u32;
        s.linear.store(0, Ordering::Relaxed);
        s.cap.store(cap, Ordering::Relaxed);
        s.host_peak.store(0, Ordering::Relaxed);
        s.total_peak.store(0, Ordering::Relaxed);
        s.exceeded.store(false, Ordering::Relaxed);
        Some(Self {
            slot,
            generation,
            cap,
        })
    }

    fn slot(&self) -> &'static Slot {
        &TABLE[self.slot as usize]
    }

    /// Bytes the host holds for the invocation now.
    pub fn host_bytes(&self) -> usize {
        (self.slot().host.load(Ordering::Relaxed) & BYTES_MASK) as usize
    }

    pub fn host_peak(&self) -> usize {
        self.slot().host_peak.load(Ordering::Relaxed)
    }

    /// The largest footprint reached, linear and host side together.
    pub fn total_peak(&self) -> usize {
        self.slot().total_peak.load(Ordering::Relaxed)
    }

    /// Checks that `linear` bytes of memories and tables fit beside what the host holds, and
    /// records them.
    pub fn set_linear(&self, linear: usize) -> Result<(), MemoryLimitExceeded> {
        let s = self.slot();
        let host = self.host_bytes();
        let total = linear.saturating_add(host);
        if total > self.cap {
            return Err(MemoryLimitExceeded {
                requested: total,
                host,
                cap: self.cap,
            });
        }
        s.linear.store(linear, Ordering::Relaxed);
        s.total_peak.fetch_max(total, Ordering::Relaxed);
        Ok(())
    }

    /// The error to trap with when host-side allocations have passed the cap.
    pub fn check(&self) -> Result<(), MemoryLimitExceeded> {
        let s = self.slot();
        if !s.exceeded.load(Ordering::Relaxed) {
            return Ok(());
        }
        let host = self.host_bytes().max(s.host_peak.load(Ordering::Relaxed));
        Err(MemoryLimitExceeded {
            requested: s.linear.load(Ordering::Relaxed).saturating_add(host),
            host,
            cap: self.cap,
        })
    }

    /// A copyable way to charge this budget from elsewhere (a hook, another task).
    pub fn handle(&self) -> BudgetHandle {
        BudgetHandle {
            tag: tag(self.slot, self.generation),
            cap: self.cap,
        }
    }

    /// See [`BudgetHandle::reserve`].
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, MemoryLimitExceeded> {
        self.handle().reserve(bytes)
    }

    #[cfg(test)]
    fn enter(&self) -> EnterGuard {
        self.handle().enter()
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        super::heap::after_invocation(self.host_peak());
        let next = (self.generation.wrapping_add(1) & GEN_MASK) as u64;
        self.slot().host.store(next << GEN_SHIFT, Ordering::Release);
        FREE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.slot);
    }
}

/// Names a budget without owning it; charging through it after the budget ended does nothing.
#[derive(Debug, Clone, Copy)]
pub struct BudgetHandle {
    tag: u64,
    cap: usize,
}

impl BudgetHandle {
    /// Charges this thread's allocations to the budget until the guard drops.
    fn enter(self) -> EnterGuard {
        let previous = CURRENT.with(|c| c.replace(self.tag));
        EnterGuard { previous }
    }

    /// Charges `bytes` the allocator cannot see (another task's buffers) until the reservation
    /// is dropped; fails without charging when they do not fit.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, MemoryLimitExceeded> {
        let (slot, generation) = untag(self.tag);
        let s = &TABLE[slot];
        let word = s.host.load(Ordering::Relaxed);
        if (word >> GEN_SHIFT) as u32 != generation {
            return Ok(Reservation {
                tag: self.tag,
                bytes: 0,
            });
        }
        let host = ((word & BYTES_MASK) as usize).saturating_add(bytes);
        let total = host.saturating_add(s.linear.load(Ordering::Relaxed));
        if total > self.cap {
            return Err(MemoryLimitExceeded {
                requested: total,
                host,
                cap: self.cap,
            });
        }
        charge(self.tag, bytes);
        Ok(Reservation {
            tag: self.tag,
            bytes,
        })
    }
}

/// Bytes charged to a budget by hand, given back on drop (if the budget still exists).
#[derive(Debug)]
pub struct Reservation {
    tag: u64,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        refund(self.tag, self.bytes);
    }
}

struct EnterGuard {
    previous: u64,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

pin_project_lite::pin_project! {
    /// A future whose polls charge this thread's allocations to a budget: an invocation's
    /// instantiate, guest code and host calls all run inside it.
    pub struct Charged<F> {
        budget: Option<BudgetHandle>,
        #[pin]
        inner: F,
    }
}

impl<F> Charged<F> {
    pub fn new(budget: Option<BudgetHandle>, inner: F) -> Self {
        Self { budget, inner }
    }
}

impl<F: Future> Future for Charged<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let _guard = this.budget.map(BudgetHandle::enter);
        this.inner.poll(cx)
    }
}

fn charge(tag: u64, bytes: usize) {
    let (slot, _) = untag(tag);
    let s = &TABLE[slot];
    let host = ((s.host.fetch_add(bytes as u64, Ordering::Relaxed) & BYTES_MASK) as usize)
        .saturating_add(bytes);
    let total = host.saturating_add(s.linear.load(Ordering::Relaxed));
    // Peaks change rarely once an invocation is warm: read before writing.
    if host > s.host_peak.load(Ordering::Relaxed) {
        s.host_peak.fetch_max(host, Ordering::Relaxed);
    }
    if total > s.total_peak.load(Ordering::Relaxed) {
        s.total_peak.fetch_max(total, Ordering::Relaxed);
    }
    if total > s.cap.load(Ordering::Relaxed) {
        s.exceeded.store(true, Ordering::Relaxed);
    }
}

/// Gives `bytes` back to the budget of `tag`, unless its slot has moved on to another
/// invocation since.
fn refund(tag: u64, bytes: usize) {
    let (slot, generation) = untag(tag);
    let s = &TABLE[slot];
    let mut current = s.host.load(Ordering::Relaxed);
    loop {
        if (current >> GEN_SHIFT) as u32 != generation {
            return;
        }
        let next = current - (bytes as u64).min(current & BYTES_MASK);
        match s
            .host
            .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// The process's allocator: the system allocator, plus a tag in front of every block that
/// names the budget it is charged to (0 for none).
pub struct HostAllocator;

/// Room in front of a block for its tag, keeping the block's alignment.
fn tag_room(align: usize) -> usize {
    align.max(16)
}

/// The layout asked of the system allocator for a block of `layout` plus its tag.
fn outer(layout: Layout, size: usize) -> Option<Layout> {
    let room = tag_room(layout.align());
    Layout::from_size_align(size.checked_add(room)?, room).ok()
}

#[expect(
    unsafe_code,
    reason = "a global allocator is unsafe by definition; it wraps the system allocator"
)]
// SAFETY (for every method): the outer block is `room` bytes longer than asked and aligned to
// `room` (a multiple of the asked alignment, and at least 16), so `base + room` is aligned as
// asked and the 8 bytes before it, where the tag lives, are inside the block. Every pointer
// given out is `base + room` of a block from `System` with the `outer` layout, which is what
// `dealloc` and `realloc` recompute from the same `layout`.
unsafe impl GlobalAlloc for HostAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { self.allocate(layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { self.allocate(layout, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let room = tag_room(layout.align());
        unsafe {
            let tag = ptr.sub(8).cast::<u64>().read();
            let outer = Layout::from_size_align_unchecked(layout.size() + room, room);
            System.dealloc(ptr.sub(room), outer);
            if tag != 0 {
                refund(tag, layout.size());
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let room = tag_room(layout.align());
        let Some(new_outer) = new_size.checked_add(room) else {
            return std::ptr::null_mut();
        };
        unsafe {
            let outer = Layout::from_size_align_unchecked(layout.size() + room, room);
            let base = System.realloc(ptr.sub(room), outer, new_outer);
            if base.is_null() {
                return base;
            }
            let ptr = base.add(room);
            // The tag moved with the block's contents; the block stays charged to its owner.
            let tag = ptr.sub(8).cast::<u64>().read();
            if tag != 0 {
                if new_size > layout.size() {
                    let (slot, generation) = untag(tag);
                    if (TABLE[slot].host.load(Ordering::Relaxed) >> GEN_SHIFT) as u32 == generation
                    {
                        charge(tag, new_size - layout.size());
                    }
                } else {
                    refund(tag, layout.size() - new_size);
                }
            }
            ptr
        }
    }
}

impl HostAllocator {
    #[expect(unsafe_code, reason = "allocates through the system allocator")]
    unsafe fn allocate(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let Some(outer) = outer(layout, layout.size()) else {
            return std::ptr::null_mut();
        };
        let room = outer.align();
        // SAFETY: `outer` has a non-zero size (room >= 16); see the impl's SAFETY note for the
        // tag's position.
        unsafe {
            let base = if zeroed {
                System.alloc_zeroed(outer)
            } else {
                System.alloc(outer)
            };
            if base.is_null() {
                return base;
            }
            let ptr = base.add(room);
            let tag = CURRENT.with(Cell::get);
            ptr.sub(8).cast::<u64>().write(tag);
            if tag != 0 {
                charge(tag, layout.size());
            }
            ptr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charged<T>(budget: &Budget, f: impl FnOnce() -> T) -> T {
        let _guard = budget.enter();
        f()
    }

    #[test]
    fn allocations_made_while_charged_count_until_freed() {
        let budget = Budget::new(1 << 20).unwrap();
        let block = charged(&budget, || vec![0u8; 100_000]);
        assert!(budget.host_bytes() >= 100_000);
        // Freed elsewhere, still given back.
        std::thread::spawn(move || drop(block)).join().unwrap();
        assert!(budget.host_bytes() < 1_000, "{}", budget.host_bytes());
        assert!(budget.host_peak() >= 100_000);
        assert!(budget.check().is_ok());
    }

    #[test]
    fn passing_the_cap_marks_the_budget_and_linear_memory_shares_it() {
        let budget = Budget::new(256 << 10).unwrap();
        budget.set_linear(200 << 10).unwrap();
        let block = charged(&budget, || vec![1u8; 100 << 10]);
        let err = budget.check().unwrap_err();
        assert_eq!(err.cap, 256 << 10);
        assert!(err.host >= 100 << 10);
        drop(block);
        // Linear growth is refused while the host holds bytes.
        let _held = charged(&budget, || vec![1u8; 100 << 10]);
        assert!(budget.set_linear(200 << 10).is_err());
    }

    #[test]
    fn a_block_freed_after_its_budget_ended_never_credits_the_next_one() {
        let first = Budget::new(1 << 20).unwrap();
        let block = charged(&first, || vec![0u8; 50_000]);
        drop(first);
        let second = Budget::new(1 << 20).unwrap();
        let held = charged(&second, || vec![0u8; 10_000]);
        let before = second.host_bytes();
        drop(block);
        assert_eq!(second.host_bytes(), before);
        drop(held);
    }

    #[test]
    fn realloc_moves_the_charge_with_the_block() {
        let budget = Budget::new(1 << 20).unwrap();
        let mut v: Vec<u8> = charged(&budget, || Vec::with_capacity(1_000));
        let small = budget.host_bytes();
        v.reserve_exact(200_000); // grown outside the charged section: still the owner's
        assert!(budget.host_bytes() >= small + 199_000);
        v.shrink_to(10);
        assert!(budget.host_bytes() < small + 1_000);
    }

    #[test]
    fn reservations_are_refused_past_the_cap_and_given_back() {
        let budget = Budget::new(1 << 20).unwrap();
        let r = budget.reserve(600 << 10).unwrap();
        assert!(budget.reserve(600 << 10).is_err());
        drop(r);
        assert!(budget.reserve(600 << 10).is_ok());
    }

    #[test]
    fn over_aligned_blocks_keep_their_alignment() {
        let budget = Budget::new(1 << 20).unwrap();
        #[repr(align(64))]
        struct Wide([u8; 64]);
        let b = charged(&budget, || Box::new(Wide([7; 64])));
        assert_eq!((&*b as *const Wide as usize) % 64, 0);
        assert_eq!(b.0[63], 7);
        assert!(budget.host_bytes() >= 64);
        drop(b);
    }
}
