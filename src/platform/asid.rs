//! ASIDs (aarch64) and PCIDs (x86_64): the tags that let a TLB keep several address spaces'
//! translations at once.
//!
//! Each address space gets a tag of its own while tags last; after that, new address spaces share
//! tag 0, "untagged", whose translations are dropped at every activation. That is slower but always
//! safe, so running out is never an error.
//!
//! A tag that comes back (its address space died) may still have translations cached on the CPUs
//! that ran it. The allocator hands it out again together with that set of CPUs; the new owner
//! marks them stale, and each flushes the tag before it first runs the new address space there.

use crate::platform::CpuSet;
use alloc::vec::Vec;
use spin::Mutex;

/// Hands out tags `1..=limit`, then 0.
pub struct AsidAllocator {
    inner: Mutex<AsidState>,
}

struct AsidState {
    limit: u16,
    /// The next never-used tag (a `u32`, so that it can pass 65535).
    next: u32,
    /// Returned tags, each with the CPUs that may still cache translations under it.
    free: Vec<(u16, CpuSet)>,
}

impl AsidAllocator {
    /// An allocator of `limit` tags.
    pub fn new(limit: u16) -> Self {
        AsidAllocator {
            inner: Mutex::new(AsidState {
                limit,
                next: 1,
                free: Vec::new(),
            }),
        }
    }

    /// A tag, and the CPUs that must flush it before using it; `(0, EMPTY)` when none is left.
    pub fn alloc(&self) -> (u16, CpuSet) {
        let mut state = self.inner.lock();
        if let Some(reused) = state.free.pop() {
            return reused;
        }
        if state.next <= u32::from(state.limit) {
            let tag = state.next as u16;
            state.next += 1;
            return (tag, CpuSet::EMPTY);
        }
        (0, CpuSet::EMPTY)
    }

    /// Returns `tag`, which CPUs in `dirty` may still cache translations under.
    pub fn free(&self, tag: u16, dirty: CpuSet) {
        if tag != 0 {
            self.inner.lock().free.push((tag, dirty));
        }
    }

    /// How many tags are in use.
    pub fn in_use(&self) -> usize {
        let state = self.inner.lock();
        (state.next - 1) as usize - state.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_run_out_into_untagged_and_come_back_dirty() {
        let asids = AsidAllocator::new(2);
        assert_eq!(asids.alloc(), (1, CpuSet::EMPTY));
        assert_eq!(asids.alloc(), (2, CpuSet::EMPTY));
        assert_eq!(asids.alloc(), (0, CpuSet::EMPTY));
        assert_eq!(asids.in_use(), 2);
        asids.free(1, CpuSet(0b101));
        asids.free(0, CpuSet(0b1));
        assert_eq!(asids.in_use(), 1);
        assert_eq!(asids.alloc(), (1, CpuSet(0b101)));
    }

    /// Every 16-bit ASID is handed out once, then untagged; the count never underflows. (No
    /// unsafe code runs here: skipped under Miri, where 65,535 lock round-trips take minutes.)
    #[test]
    #[cfg_attr(miri, ignore)]
    fn all_65535_asids() {
        let asids = AsidAllocator::new(u16::MAX);
        for expected in 1..=u16::MAX {
            assert_eq!(asids.alloc(), (expected, CpuSet::EMPTY));
        }
        assert_eq!(asids.in_use(), 65535);
        assert_eq!(asids.alloc(), (0, CpuSet::EMPTY));
        asids.free(u16::MAX, CpuSet(1));
        assert_eq!(asids.in_use(), 65534);
        assert_eq!(asids.alloc(), (u16::MAX, CpuSet(1)));
        assert_eq!(asids.in_use(), 65535);
    }

    #[test]
    fn no_tags_means_untagged() {
        let asids = AsidAllocator::new(0);
        assert_eq!(asids.alloc(), (0, CpuSet::EMPTY));
        assert_eq!(asids.in_use(), 0);
    }
}
