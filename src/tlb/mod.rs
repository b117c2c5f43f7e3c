//! Batched TLB invalidation across CPUs, and the rule that frames are freed only after it.
//!
//! An operation (a decommit, an unmap, a protect) changes page-table entries in one or more address
//! spaces. It collects, per address space, what must be invalidated in a [`PendingFlush`] (single
//! pages up to [`FULL_FLUSH_THRESHOLD`], then the whole address space), and every frame it takes
//! away from a VMO or a page table in a [`TlbBatch`]. Nothing here frees a frame except
//! [`TlbBatch::finish`], which invalidates first. A batch is `#[must_use]`, and one dropped without
//! `finish` leaks its frames rather than freeing them early (and fails a debug assertion).

mod shootdown;

pub(crate) use self::shootdown::{Item, ITEM_PAGES};
pub use crate::platform::{AsidAllocator, Tlb, TlbConfigError};

pub use crate::arch::{PendingFlush, FULL_FLUSH_THRESHOLD};
use crate::platform::{CpuPin, Platform, Spare};
use crate::vmar::{AddressSpace, Region};
use crate::vmo::{RemovedPages, Vmo};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// The heap space one operation works in: its records, and the lists the VMAR layer walks and
/// collects into. Kept warm between operations (one spare per CPU in the [`Tlb`]), so that a
/// decommit, an unmap or a protect allocates nothing once its lists have grown to its size.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Per address space touched: its record. Only the first `used` are in use; the rest keep
    /// their capacity for later operations.
    spaces: Vec<(Option<Arc<AddressSpace>>, PendingFlush)>,
    used: usize,
    removed: RemovedPages,
    /// Unmapped mappings, taken off their VMOs' lists after the shootdown.
    retired: Vec<Arc<Region>>,
    items: Vec<Item>,
    /// Lists for the VMAR layer's range walks (taken out and put back by it).
    pub(crate) vmar: crate::vmar::RangeScratch,
}

/// Everything one operation must invalidate and then free.
#[must_use = "frames taken out of use are freed only by TlbBatch::finish, after the invalidation"]
pub struct TlbBatch {
    /// A [`Scratch`]; `None` only after `finish` took it.
    scratch: Option<Box<Spare>>,
}

/// The calling CPU's spare scratch space, or a new one.
fn take_scratch(platform: &dyn Platform) -> Box<Spare> {
    match platform.tlb().take_spare(platform.current_cpu()) {
        Some(spare) if spare.is::<Scratch>() => spare,
        _ => Box::new(Box::new(Scratch::default())),
    }
}

impl TlbBatch {
    /// An empty batch, in the calling CPU's spare scratch space when it has one.
    pub fn new(platform: &dyn Platform) -> Self {
        TlbBatch {
            scratch: Some(take_scratch(platform)),
        }
    }

    fn scratch(&mut self) -> &mut Scratch {
        self.scratch
            .as_deref_mut()
            .and_then(|spare| spare.downcast_mut())
            .expect("a batch holds its scratch until finish")
    }

    /// The VMAR layer's lists.
    pub(crate) fn vmar_scratch(&mut self) -> &mut crate::vmar::RangeScratch {
        &mut self.scratch().vmar
    }

    /// The record for `aspace`, made on first use.
    pub(crate) fn space(&mut self, aspace: &Arc<AddressSpace>) -> &mut PendingFlush {
        let scratch = self.scratch();
        let used = scratch.used;
        let found = scratch.spaces[..used]
            .iter()
            .position(|(a, _)| a.as_ref().is_some_and(|a| Arc::ptr_eq(a, aspace)));
        let index = match found {
            Some(index) => index,
            None => {
                if used == scratch.spaces.len() {
                    scratch.spaces.push((None, PendingFlush::new()));
                }
                scratch.spaces[used].0 = Some(aspace.clone());
                scratch.used += 1;
                used
            }
        };
        &mut scratch.spaces[index].1
    }

    /// Where the pages that leave VMOs go, to be freed after the invalidation.
    pub(crate) fn removed(&mut self) -> &mut RemovedPages {
        &mut self.scratch().removed
    }

    /// Takes over an unmapped mapping: it leaves its VMO's list only after the shootdown, so that
    /// a decommit meanwhile still flushes its address space, and its VMO (which it holds alive)
    /// cannot free frames while a TLB may still map them.
    pub(crate) fn retire(&mut self, region: Arc<Region>) {
        self.scratch().retired.push(region);
    }

    /// Invalidates every recorded translation on the CPUs that may hold it, in one shootdown
    /// round for the whole operation, waits for that to complete, and only then frees the frames
    /// and table pages. Called with no crate lock held.
    pub fn finish(mut self, platform: &dyn Platform) {
        let mut spare = self
            .scratch
            .take()
            .expect("a batch holds its scratch until finish");
        let scratch: &mut Scratch = spare.downcast_mut().expect("made by take_scratch");
        let used = scratch.used;
        {
            let pin = CpuPin::new(platform);
            let Scratch { spaces, items, .. } = &mut *scratch;
            items.clear();
            for (aspace, pending) in &spaces[..used] {
                if let (Some(aspace), false) = (aspace, pending.is_empty()) {
                    items.push(aspace.shootdown_item(pending));
                }
            }
            platform.tlb().shoot(&pin, items);
        }
        for (_, pending) in &scratch.spaces[..used] {
            if !pending.freed_tables().is_empty() {
                // SAFETY: every table here was unlinked under its address space's page-table
                // lock, and `shoot` returned only after every CPU that may have cached a walk
                // through it completed its invalidation (or was marked to flush before it runs
                // the address space again); each is listed once.
                unsafe { platform.free_frames(pending.freed_tables()) };
            }
        }
        // SAFETY: as for the tables: these frames left their page lists under the VMOs' locks,
        // every entry mapping them was cleared and is covered by the shootdown that completed.
        unsafe { scratch.removed.free(platform) };
        scratch.removed.clear();
        // No CPU holds a translation through the retired mappings any more.
        for region in scratch.retired.drain(..) {
            let vmo = region
                .mapping()
                .expect("only mappings retire")
                .vmo()
                .clone();
            Vmo::remove_mapping_locked(&mut vmo.lock(), &region);
            // Dropping the region may drop the VMO, which frees its frames: safe now.
        }
        for (aspace, pending) in &mut scratch.spaces[..used] {
            pending.clear();
            // May drop the last reference to the address space, which tears it down (with a
            // round of its own, in another scratch space).
            *aspace = None;
        }
        scratch.used = 0;
        scratch.items.clear();
        platform.tlb().put_spare(platform.current_cpu(), spare);
    }
}

impl Drop for TlbBatch {
    fn drop(&mut self) {
        if let Some(scratch) = self
            .scratch
            .as_ref()
            .and_then(|s| s.downcast_ref::<Scratch>())
        {
            debug_assert!(
                scratch.removed.is_empty()
                    && scratch.spaces[..scratch.used]
                        .iter()
                        .all(|(_, p)| p.freed_tables().is_empty()),
                "a TlbBatch holding frames was dropped without finish(): its frames leak"
            );
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::SimMachine;

    /// A batch dropped while it holds frames, without `finish`, is a bug the debug build names
    /// (its frames leak rather than being freed before the invalidation).
    #[test]
    #[should_panic(expected = "dropped without finish()")]
    fn a_batch_dropped_with_frames_is_named() {
        let machine = SimMachine::with_frames(8);
        let frame = machine.alloc_frame().unwrap();
        let mut batch = TlbBatch::new(&*machine);
        batch.removed().frames.push(frame);
        drop(batch);
    }

    /// An empty batch finishes without a shootdown round.
    #[test]
    fn an_empty_batch_costs_no_round() {
        let machine = SimMachine::with_frames(8);
        let rounds = machine.tlb().rounds();
        TlbBatch::new(&*machine).finish(&*machine);
        assert_eq!(machine.tlb().rounds(), rounds);
    }
}
