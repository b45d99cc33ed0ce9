//! The per-instance resource limiter: one byte budget for all memories, tables and what the
//! host holds for the instance.
//!
//! wasmtime's `StoreLimits` caps each memory separately, so a component with two memories
//! could use twice its cap. This limiter sums every memory and table of the instance, adds
//! the host-side bytes its [`Budget`] counts, and traps with [`MemoryLimitExceeded`] the
//! moment the sum would pass the cap, so the failure is named exactly instead of surfacing
//! as a guest `unreachable`.

use wasmtime::ResourceLimiter;

use super::budget::Budget;

/// Bytes a table element costs against the budget (a funcref or externref pointer).
const TABLE_ELEMENT_BYTES: usize = 8;

/// The error an invocation fails with when its instance outgrows the cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit exceeded: the instance needed {requested} bytes ({host} of them held by the host for it), its cap is {cap} bytes"
)]
pub struct MemoryLimitExceeded {
    pub requested: usize,
    /// The part held by the host: resources, fields, bodies, streams, buffers.
    pub host: usize,
    pub cap: usize,
}

/// Tracks the instance's current and peak footprint against its cap.
#[derive(Debug)]
pub struct InstanceLimiter {
    cap: usize,
    used: usize,
    peak: usize,
    /// The host side of the budget; `None` only when every budget slot is taken, and then
    /// linear memory is still capped.
    budget: Option<Budget>,
    /// Marks the store as alive for the idle slot release; dropped with the store's data.
    live: Option<super::idle_pool::LiveStore>,
}

impl InstanceLimiter {
    pub fn new(cap: usize) -> Self {
        let budget = Budget::new(cap);
        if budget.is_none() {
            tracing::warn!(
                "no memory budget slot is free; host-side bytes of this invocation are not counted"
            );
        }
        Self {
            cap,
            used: 0,
            peak: 0,
            budget,
            live: None,
        }
    }

    /// Keeps `live` until this limiter (the store's data) is dropped.
    pub(super) fn hold_while_alive(&mut self, live: super::idle_pool::LiveStore) {
        self.live = Some(live);
    }

    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// The largest footprint the instance reached, in bytes: memories, tables and host side.
    pub fn peak_bytes(&self) -> usize {
        self.budget
            .as_ref()
            .map_or(self.peak, |b| b.total_peak().max(self.peak))
    }

    /// The largest number of bytes the host held for the instance at once.
    pub fn peak_host_bytes(&self) -> usize {
        self.budget.as_ref().map_or(0, Budget::host_peak)
    }

    /// Fails once the host side has pushed the instance past its cap.
    pub fn check(&self) -> Result<(), MemoryLimitExceeded> {
        self.budget.as_ref().map_or(Ok(()), Budget::check)
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.cap {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                requested: next,
                host: 0,
                cap: self.cap,
            }));
        }
        if let Some(budget) = &self.budget {
            budget.set_linear(next).map_err(wasmtime::Error::new)?;
        }
        self.used = next;
        self.peak = self.peak.max(next);
        Ok(true)
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut l = InstanceLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        assert!(l.memory_growing(0, 256 << 10, None).unwrap());
        // 256 KiB left; a table of 40k elements needs 320 KiB.
        let err = l.table_growing(0, 40_000, None).unwrap_err();
        let exceeded = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!(exceeded.cap, 1 << 20);
        assert!(l.table_growing(0, 1_000, None).unwrap());
        assert_eq!(l.peak_bytes(), (768 << 10) + 8_000);
    }

    #[test]
    fn growth_counts_only_the_difference() {
        let mut l = InstanceLimiter::new(100 << 10);
        assert!(l.memory_growing(0, 64 << 10, None).unwrap());
        assert!(l.memory_growing(64 << 10, 96 << 10, None).unwrap());
        assert!(l.memory_growing(96 << 10, 128 << 10, None).is_err());
        assert_eq!(l.peak_bytes(), 96 << 10);
    }
}
