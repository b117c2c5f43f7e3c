//! The shared zero page ([`crate::platform::Platform::zero_frame`]): a read fault on an
//! uncommitted page of a paged VMO maps one frame of zeroes read-only instead of committing a
//! frame. The VMO lists such pages (`zero_mapped`), so that whatever commits one first clears
//! its zero-page entries in every mapping (and the caller's shootdown round removes them from
//! every TLB before its call returns); whatever decommits one clears them too. Invariants
//! (docs/cow.md, checked by the address space audit): no entry that points at the
//! zero page is writable, and each is for an uncommitted page the VMO lists.

use super::{Vmo, VmoInner, VmoKind};
use crate::platform::PhysAddr;
use crate::tlb::TlbBatch;

impl Vmo {
    /// For a read fault on page `index`: the zero page, if the platform has one and the page is
    /// an uncommitted page of a paged VMO, recording the page as zero-mapped. `None`: commit
    /// the page instead.
    pub(crate) fn zero_page_for_read_locked(
        &self,
        inner: &mut VmoInner,
        index: u64,
    ) -> Option<PhysAddr> {
        if self.kind != VmoKind::Paged || inner.pages.get(index).is_some() {
            return None;
        }
        let zero = self.platform.zero_frame()?;
        inner.zero_mapped.insert(index);
        Some(zero)
    }

    /// Whether page `index` may be mapped to the zero page somewhere.
    pub(crate) fn is_zero_mapped_locked(inner: &VmoInner, index: u64) -> bool {
        inner.zero_mapped.contains(&index)
    }

    /// Whether `frame` is the shared zero page (for the audit).
    pub(crate) fn is_zero_frame(&self, frame: PhysAddr) -> bool {
        self.platform.zero_frame() == Some(frame)
    }

    /// After pages `[first, last)` were committed: clears their zero-page entries in every
    /// mapping into `batch`, whose round the caller runs before its call returns (and before any
    /// new entry for those pages is made: break-before-make). Answers whether there were any.
    pub(crate) fn unmap_zero_pages_locked(
        &self,
        inner: &mut VmoInner,
        first: u64,
        last: u64,
        batch: &mut TlbBatch,
    ) -> bool {
        if first >= last {
            return false;
        }
        let mut any = false;
        while let Some(&index) = inner.zero_mapped.range(first..last).next() {
            inner.zero_mapped.remove(&index);
            self.unmap_range_locked(inner, index, index + 1, batch);
            any = true;
        }
        any
    }

    /// Forgets the zero-mapped pages of `[first, last)` (their entries are about to be cleared
    /// with the range's); answers whether there were any. Allocates nothing.
    pub(super) fn forget_zero_pages_locked(inner: &mut VmoInner, first: u64, last: u64) -> bool {
        if first >= last {
            return false;
        }
        let mut any = false;
        while let Some(&index) = inner.zero_mapped.range(first..last).next() {
            inner.zero_mapped.remove(&index);
            any = true;
        }
        any
    }
}
