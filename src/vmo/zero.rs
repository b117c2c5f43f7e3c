//! `ZX_VMO_OP_ZERO`: a range of a VMO reads as zero afterwards, at the least memory cost.

use super::{Blocked, Vmo, VmoInner, VmoKind};
use crate::abi::{Status, ZxResult, PAGE_SHIFT, PAGE_SIZE};
use crate::tlb::TlbBatch;
use alloc::sync::Arc;

impl Vmo {
    /// `ZX_VMO_OP_ZERO`: bytes `[offset, offset + len)` read as zero afterwards, as if zeroes had
    /// been written there. Any offset and length inside the VMO; an empty range does nothing;
    /// a range past the end (or one whose end overflows) is `ZX_ERR_OUT_OF_RANGE`.
    ///
    /// A paged VMO gives the whole pages of the range back instead of writing them, unmapping
    /// them from every mapping in one shootdown round as DECOMMIT does (the next access faults in
    /// a zeroed page, so the committed bytes drop). Pinned pages stay committed and are zeroed in
    /// place, as are the partly covered pages at either end. A contiguous VMO is zeroed in place;
    /// a physical one (device memory) is `ZX_ERR_NOT_SUPPORTED`, as its reads and writes are.
    pub fn zero(self: &Arc<Self>, offset: u64, len: u64) -> ZxResult {
        if let Some(forward) = self.forward(offset, len) {
            let (target, offset) = forward?;
            return target.zero(offset, len);
        }
        let end = offset.checked_add(len).ok_or(Status::OutOfRange)?;
        self.until_settled(|| {
            let mut batch = TlbBatch::new(&*self.platform);
            let round = {
                let mut inner = self.lock();
                if end > self.size() {
                    return Err(Status::OutOfRange.into());
                }
                if matches!(self.kind, VmoKind::Physical { .. }) {
                    return Err(Status::NotSupported.into());
                }
                if len == 0 {
                    return Ok(());
                }
                self.zero_locked(&mut inner, offset, end, &mut batch)?;
                Self::begin_round_locked(&mut inner, &batch)
            };
            self.finish_round(batch, round);
            Ok(())
        })
    }

    /// ZERO of `[offset, end)` (not empty, inside the VMO) under the lock.
    fn zero_locked(
        &self,
        inner: &mut VmoInner,
        offset: u64,
        end: u64,
        batch: &mut TlbBatch,
    ) -> Result<(), Blocked> {
        if self.leave_tree_if_alone_locked(inner) {
            // A VMO that shares pages with a live snapshot relative cannot give a page back
            // (its parent's would show through): the pages a parent provides become its own,
            // and its own are written over. (One whose relatives all died leaves its tree here,
            // and gives pages back as any VMO.)
            let last = end.div_ceil(PAGE_SIZE);
            self.commit_tree_locked(inner, offset >> PAGE_SHIFT, last, true, batch)?;
            self.zero_in_place_locked(inner, offset, end);
            return Ok(());
        }
        // The whole pages are [first, last); the partly covered ones are zeroed in place: the
        // partly covered page at the start (or the whole range, inside one page), the one at
        // the end, then the whole pages between.
        let first = offset.div_ceil(PAGE_SIZE);
        let last = end >> PAGE_SHIFT;
        let head_end = (first << PAGE_SHIFT).min(end);
        self.zero_in_place_locked(inner, offset, head_end);
        self.zero_in_place_locked(inner, (last << PAGE_SHIFT).max(head_end), end);
        self.zero_pages_locked(inner, first, last.max(first), batch);
        Ok(())
    }

    /// Zeroes the whole pages `[first, last)` (`first <= last`; none when equal): given back where
    /// the VMO can give them back (paged and not pinned), written over where it cannot.
    fn zero_pages_locked(&self, inner: &mut VmoInner, first: u64, last: u64, batch: &mut TlbBatch) {
        if !self.supports_decommit() {
            self.zero_in_place_locked(inner, first << PAGE_SHIFT, last << PAGE_SHIFT);
            return;
        }
        let mut from = first;
        loop {
            // The runs between pinned pages go back (an empty run is nothing to decommit); each
            // pinned page is written over. `from` stays at most `last`: a pinned page is below it.
            let pinned = inner.pins.range(from..last).next().map(|(&index, _)| index);
            self.decommit_locked(inner, from, pinned.unwrap_or(last), batch);
            let Some(index) = pinned else {
                break;
            };
            self.zero_in_place_locked(inner, index << PAGE_SHIFT, (index + 1) << PAGE_SHIFT);
            from = index + 1;
        }
    }

    /// Writes zeroes over the bytes `[start, end)` of the VMO where its pages are committed
    /// (an uncommitted page reads as zero already).
    pub(super) fn zero_in_place_locked(&self, inner: &VmoInner, start: u64, end: u64) {
        let mut at = start;
        while at < end {
            let index = at >> PAGE_SHIFT;
            let page_end = ((index + 1) << PAGE_SHIFT).min(end);
            if let Some(pa) = self.lookup_page_locked(inner, index) {
                let from = (at & (PAGE_SIZE - 1)) as usize;
                let ptr = self.platform.phys_to_virt(pa);
                // SAFETY: the frame is committed to this VMO (a contiguous VMO's frames are, for
                // its life) and cannot be freed while we hold its lock; `phys_to_virt` gives a
                // pointer valid for the whole page (Platform contract), and `from` plus the
                // length stay inside it. Other CPUs may access the page through mappings at the
                // same time, as with `zx_vmo_write`: the bytes are plain memory, not Rust data.
                unsafe { core::ptr::write_bytes(ptr.add(from), 0, (page_end - at) as usize) };
            }
            at = page_end;
        }
    }
}
