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
        if let Some(alias) = self.alias.as_ref() {
            // A reference: its target's size (a slice is never resizable).
            return alias.target().set_size(size);
        }
        self.until_settled(|| {
            let mut batch = TlbBatch::new(&*self.platform);
            let round = {
                let mut inner = self.lock();
                let old_size = self.size();
                let (new_pages, old_pages) = (new_size >> PAGE_SHIFT, old_size >> PAGE_SHIFT);
                if new_pages < old_pages && Self::any_pinned_locked(&inner, new_pages, old_pages) {
                    return Err(Status::BadState.into());
                }
                // The tail of the last page past the size asked for, where the VMO had it
                // (empty when the size is whole pages or the VMO grows past its old end); in a
                // tree, that page becomes the VMO's own first.
                let (tail, tail_end) = (size, new_size.min(old_size));
                if tail < tail_end && inner.in_cow_tree() {
                    let page = tail >> PAGE_SHIFT;
                    self.commit_tree_locked(&mut inner, page, page + 1, true, &mut batch)?;
                }
                if new_pages < old_pages {
                    self.decommit_locked(&mut inner, new_pages, old_pages, &mut batch);
                }
                self.zero_in_place_locked(&inner, tail, tail_end);
                self.size.store(new_size, Ordering::Release);
                // The round first: pages of a hidden parent that no one sees once this VMO's
                // view of it narrows are freed after it (its translations of them go in it).
                let round = Self::begin_round_locked(&mut inner, &batch);
                self.limit_tree_locked(&inner, new_pages);
                round
            };
            self.finish_round(batch, round);
            Ok(())
        })?;
        Ok(())
    }
}
