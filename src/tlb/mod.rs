//! Batched TLB invalidation across CPUs, and the rule that frames are freed only after it.
//!
//! An operation (a decommit, an unmap, a protect) changes page-table entries in one or more address
//! spaces. It collects, per address space, what must be invalidated in a [`PendingFlush`] (single
//! pages up to [`FULL_FLUSH_THRESHOLD`], then the whole address space), and every frame it takes
//! away from a VMO or a page table in a [`TlbBatch`]. Nothing here frees a frame except
//! [`TlbBatch::finish`], which invalidates first. A batch is `#[must_use]`, and one dropped without
//! `finish` leaks its frames rather than freeing them early (and fails a debug assertion).
//!
//! One flush has one representation: the walker's [`PendingFlush`]. A round reads each record in
//! place: an `Item` (crate-private) is the record with its reach (the CPUs to reach, the tag, the root), and
//! the platform sees it as a [`crate::platform::TlbInvalidate`], a borrowed view of the same
//! pages. Nothing is copied between the walker and the instruction.

mod shootdown;

pub(crate) use self::shootdown::{Item, Reach};
pub use crate::platform::{AsidAllocator, Tlb, TlbConfigError};

pub use crate::arch::{PendingFlush, FULL_FLUSH_THRESHOLD};
use crate::platform::{CpuPin, CpuSet, Platform, Spare};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::{Any, TypeId};

/// Something whose translations a batch invalidates: an address space of the layer above. It
/// says where the invalidation of what `pending` records must go (the CPUs to reach, its tag and
/// root); the batch keeps it alive until the round completed.
pub(crate) trait FlushTarget: Send + Sync {
    /// Where this target's part of the round goes.
    fn reach(&self, pending: &PendingFlush) -> Reach;
}

/// Work that must wait for an operation's shootdown round: frames to free, lists to update.
/// The layers above define it; this layer knows only that it waits. One value of each type per
/// scratch space, made on first use and kept warm with it.
pub(crate) trait Deferred: Any + Send {
    /// Carries the work out, and empties the value (keeping its capacity).
    ///
    /// # Safety
    /// Called only once every invalidation that covers the work completed: no page table or
    /// TLB refers to the frames it frees.
    unsafe fn after_flush(&mut self, platform: &dyn Platform);
    /// Whether it holds frames (which a batch dropped without `finish` leaks).
    fn holds_frames(&self) -> bool;
    /// `self`, for finding a value by type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// How many kinds of deferred work one batch can carry.
const DEFERRED_KINDS: usize = 2;

/// The heap space one operation works in: its records and its deferred work. Kept warm between
/// operations (one spare per CPU in the [`Tlb`]), so that a decommit, an unmap or a protect
/// allocates nothing once its lists have grown to its size.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Per target touched: its record. Only the first `used` are in use; the rest keep their
    /// capacity for later operations.
    spaces: Vec<Item>,
    used: usize,
    /// Each kind of deferred work, found by its type's id (compared without a call).
    deferred: [Option<(TypeId, Box<dyn Deferred>)>; DEFERRED_KINDS],
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

    /// The record for `target`, made on first use.
    pub(crate) fn space<T: FlushTarget + 'static>(&mut self, target: &Arc<T>) -> &mut PendingFlush {
        let scratch = self.scratch();
        let used = scratch.used;
        let key = Arc::as_ptr(target) as *const ();
        let found = scratch.spaces[..used].iter().position(|item| {
            item.target
                .as_ref()
                .is_some_and(|t| core::ptr::eq(Arc::as_ptr(t) as *const (), key))
        });
        let index = match found {
            Some(index) => index,
            None => {
                if used == scratch.spaces.len() {
                    scratch.spaces.push(Item::new());
                }
                scratch.spaces[used].target = Some(target.clone());
                scratch.used += 1;
                used
            }
        };
        &mut scratch.spaces[index].pending
    }

    /// The batch's deferred work of type `W`, made on first use.
    pub(crate) fn deferred<W: Deferred + Default>(&mut self) -> &mut W {
        let slots = &mut self.scratch().deferred;
        let id = TypeId::of::<W>();
        let index = slots
            .iter()
            .position(|slot| slot.as_ref().is_none_or(|(kind, _)| *kind == id))
            .expect("more kinds of deferred work than DEFERRED_KINDS");
        slots[index]
            .get_or_insert_with(|| (id, Box::new(W::default())))
            .1
            .as_any_mut()
            .downcast_mut()
            .expect("found by type")
    }

    /// Whether the batch has nothing to invalidate or free yet.
    pub fn is_empty(&self) -> bool {
        let Some(scratch) = self
            .scratch
            .as_deref()
            .and_then(|spare| spare.downcast_ref::<Scratch>())
        else {
            return true;
        };
        scratch.spaces[..scratch.used]
            .iter()
            .all(|item| item.pending.is_empty())
            && scratch
                .deferred
                .iter()
                .flatten()
                .all(|(_, work)| !work.holds_frames())
    }

    /// Invalidates every recorded translation on the CPUs that may hold it, in one shootdown
    /// round for the whole operation, waits for that to complete, and only then frees the table
    /// pages and runs the deferred work. Called with no crate lock held.
    pub fn finish(mut self, platform: &dyn Platform) {
        let mut spare = self
            .scratch
            .take()
            .expect("a batch holds its scratch until finish");
        let scratch: &mut Scratch = spare.downcast_mut().expect("made by take_scratch");
        let used = scratch.used;
        {
            let pin = CpuPin::new(platform);
            let items = &mut scratch.spaces[..used];
            for item in items.iter_mut() {
                if let (Some(target), false) = (&item.target, item.pending.is_empty()) {
                    item.reach = target.reach(&item.pending);
                }
            }
            platform.tlb().shoot(&pin, items);
        }
        for Item { pending, .. } in &scratch.spaces[..used] {
            if !pending.freed_tables().is_empty() {
                // SAFETY: every table here was unlinked under its address space's page-table
                // lock, and `shoot` returned only after every CPU that may have cached a walk
                // through it completed its invalidation (or was marked to flush before it runs
                // the address space again); each is listed once.
                unsafe { platform.free_frames(pending.freed_tables()) };
            }
        }
        for (_, work) in scratch.deferred.iter_mut().flatten() {
            // SAFETY: `shoot` returned: every invalidation of this operation completed.
            unsafe { work.after_flush(platform) };
        }
        for item in &mut scratch.spaces[..used] {
            item.pending.clear();
            item.reach.targets = CpuSet::EMPTY;
            // May drop the last reference to the address space, which tears it down (with a
            // round of its own, in another scratch space).
            item.target = None;
        }
        scratch.used = 0;
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
                scratch
                    .deferred
                    .iter()
                    .flatten()
                    .all(|(_, w)| !w.holds_frames())
                    && scratch.spaces[..scratch.used]
                        .iter()
                        .all(|item| item.pending.freed_tables().is_empty()),
                "a TlbBatch holding frames was dropped without finish(): its frames leak"
            );
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::platform::PhysAddr;
    use crate::sim::SimMachine;

    /// Frames to free after the round.
    #[derive(Default)]
    struct Frames(Vec<PhysAddr>);

    impl Deferred for Frames {
        unsafe fn after_flush(&mut self, platform: &dyn Platform) {
            // SAFETY: forwarded from the caller.
            unsafe { platform.free_frames(&self.0) };
            self.0.clear();
        }
        fn holds_frames(&self) -> bool {
            !self.0.is_empty()
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    /// A batch that defers freeing one frame frees it in `finish`.
    fn frees_one_frame_at_finish(machine: &SimMachine) {
        let frame = machine.alloc_frame().unwrap();
        let freed = machine.counters().frames_freed;
        let mut batch = TlbBatch::new(machine);
        batch.deferred::<Frames>().0.push(frame);
        batch.finish(machine);
        assert_eq!(machine.counters().frames_freed, freed + 1);
    }

    /// Deferred work runs after the round: the frames are free once `finish` returned.
    #[test]
    fn deferred_work_runs_at_finish() {
        frees_one_frame_at_finish(&SimMachine::with_frames(8));
    }

    /// A batch dropped while it holds frames, without `finish`, is a bug the debug build names
    /// (its frames leak rather than being freed before the invalidation).
    #[test]
    #[should_panic(expected = "dropped without finish()")]
    fn a_batch_dropped_with_frames_is_named() {
        let machine = SimMachine::with_frames(8);
        let frame = machine.alloc_frame().unwrap();
        let mut batch = TlbBatch::new(&*machine);
        batch.deferred::<Frames>().0.push(frame);
        drop(batch);
    }

    /// A CPU's spare slot is typed only as `Any` (the platform layer cannot name [`Scratch`]):
    /// a value of another type found there is not taken for a scratch space.
    #[test]
    fn a_foreign_spare_is_not_taken_for_scratch() {
        let machine = SimMachine::with_frames(8);
        let cpu = machine.current_cpu();
        machine.tlb().put_spare(cpu, Box::new(Box::new(7u32)));
        frees_one_frame_at_finish(&machine);
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
