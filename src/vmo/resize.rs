//! `zx_vmo_set_size`: resizable VMOs grow and shrink.

use super::{Vmo, MAX_VMO_SIZE};
use crate::abi::{page_round_up, Status, ZxResult, PAGE_SHIFT};
use crate::tlb::TlbBatch;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

impl Vmo {
    /// `zx_vmo_set_size`: the VMO's size becomes `size` rounded up to a whole page.
    ///
    /// Growing adds pages that read as zero. Shrinking gives back every page past the new end
    /// and unmaps them from every mapping of the VMO, in every address space, in one shootdown
    /// round (as DECOMMIT does); the mappings stay, and the fault path refuses an access past
    /// the end as out of range. Either way the bytes from
    /// `size` to the page boundary read as zero afterwards, as in Zircon.
    ///
    /// `ZX_ERR_UNAVAILABLE` if the VMO is not resizable, `ZX_ERR_OUT_OF_RANGE` if the size
    /// cannot be rounded or exceeds [`MAX_VMO_SIZE`], `ZX_ERR_BAD_STATE` if shrinking would take
    /// a pinned page; each changes nothing.
    pub fn set_size(self: &Arc<Self>, size: u64) -> ZxResult {
        if !self.resizable {
            return Err(Status::Unavailable);
        }
        let new_size = page_round_up(size).ok_or(Status::OutOfRange)?;
        if new_size > MAX_VMO_SIZE {
            return Err(Status::OutOfRange);
        }
        let mut batch = TlbBatch::new(&*self.platform);
        {
            let mut inner = self.lock();
            let old_size = self.size();
            let (new_pages, old_pages) = (new_size >> PAGE_SHIFT, old_size >> PAGE_SHIFT);
            if new_pages < old_pages {
                if Self::any_pinned_locked(&inner, new_pages, old_pages) {
                    return Err(Status::BadState);
                }
                self.decommit_locked(&mut inner, new_pages, old_pages, &mut batch);
            }
            // The tail of the last page past the size asked for, where the VMO had it (empty
            // when the size is whole pages or the VMO grows past its old end).
            self.zero_in_place_locked(&inner, size, new_size.min(old_size));
            self.size.store(new_size, Ordering::Release);
        }
        batch.finish(&*self.platform);
        Ok(())
    }
}
