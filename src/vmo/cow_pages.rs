//! A VMO's pages when it is a node of a copy-on-write tree (`src/vmo/cow.rs`): reads fall
//! through to the hidden nodes above, a write makes the page the VMO's own (copying it, or
//! taking it when no other VMO sees it), and the translations of a page that changed frames are
//! cleared first, in every mapping of the VMO, before any maps the new one.

use super::cow::{free_now, CowTree};
use super::{Vmo, VmoInner, VmoKind};
use crate::abi::{Status, ZxResult, PAGE_SIZE};
use crate::platform::{CpuPin, PhysAddr};
use crate::tlb::TlbBatch;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Why a commit in a tree did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// A status for the caller.
    Status(Status),
    /// A round that invalidates translations of the tree's shared frames is under way: no
    /// page may be copied or taken until it completes. Let go of the locks and try again.
    Unsettled,
}

impl From<Status> for Blocked {
    fn from(status: Status) -> Self {
        Blocked::Status(status)
    }
}

/// What a fault maps.
pub(crate) enum FaultPage {
    /// This frame, writable if the mapping allows and `writable`.
    Map { frame: PhysAddr, writable: bool },
    /// Nothing yet: the translations of the page were cleared; run the round and let the
    /// access fault again.
    Retry,
    /// Nothing yet: a round of the tree is under way; let go of the locks, wait until it
    /// completed ([`Vmo::wait_settled`]), and resolve the fault again.
    Wait,
}

impl Vmo {
    /// The frame page `index` reads from: the VMO's own, or a hidden parent's (shared, mapped
    /// read-only); `None` reads as zero.
    pub(crate) fn read_page_locked(
        &self,
        inner: &VmoInner,
        index: u64,
    ) -> Option<(PhysAddr, bool)> {
        if let Some(frame) = self.lookup_page_locked(inner, index) {
            return Some((frame, true));
        }
        let link = inner.cow.as_ref()?;
        let found = link.tree.lock().lookup(link.node, index)?;
        Some((found.frame, false))
    }

    /// Makes pages `[first, last)` the VMO's own (only those a parent provides, with
    /// `only_shared`; else every one, zero-filled where nothing is there), all or none:
    /// the frames are allocated first. The translations of each copied page are cleared, in
    /// every mapping of the VMO, into `batch`.
    pub(crate) fn commit_tree_locked(
        &self,
        inner: &mut VmoInner,
        first: u64,
        last: u64,
        only_shared: bool,
        batch: &mut TlbBatch,
    ) -> Result<(), Blocked> {
        let link = inner.cow.as_ref().expect("a node of a tree");
        let (tree, node) = (link.tree.clone(), link.node);
        let mut nodes = tree.lock();
        // Count the frames needed: a copied or zero-filled page takes one, a taken one none.
        let mut needed = 0usize;
        for index in first..last {
            if inner.pages.get(index).is_some() {
                continue;
            }
            match nodes.lookup(node, index) {
                Some(found) => {
                    if !nodes.settled() {
                        return Err(Blocked::Unsettled);
                    }
                    needed += usize::from(!nodes.sole_viewer(node, index, found));
                }
                None => needed += usize::from(!only_shared),
            }
        }
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(needed)
            .map_err(|_| Status::NoMemory)?;
        for _ in 0..needed {
            match self.alloc_page_frame() {
                Ok(frame) => frames.push(frame),
                Err(status) => {
                    // SAFETY: allocated just now, never mapped or recorded anywhere.
                    unsafe { self.platform.free_frames(&frames) };
                    return Err(status.into());
                }
            }
        }
        for index in first..last {
            if inner.pages.get(index).is_some() {
                continue;
            }
            let frame = match nodes.lookup(node, index) {
                Some(found) if nodes.sole_viewer(node, index, found) => {
                    // The translations stay: same frame, read-only until a write fault.
                    nodes.take(node, index, found)
                }
                Some(found) => {
                    let copy = frames.pop().expect("counted above");
                    self.copy_frame(found.frame, copy);
                    nodes.diverge(node, index);
                    self.unmap_range_locked(inner, index, index + 1, batch);
                    if !inner.round_open && !batch.is_empty() {
                        // Counted from now, under the tree's lock: until the round completes,
                        // no other VMO may take or free the frame this one's stale
                        // translations may still reach.
                        nodes.begin_round();
                        inner.round_open = true;
                    }
                    copy
                }
                None if only_shared => continue,
                None => {
                    let frame = frames.pop().expect("counted above");
                    super::zero_frame(&*self.platform, frame);
                    frame
                }
            };
            inner.pages.insert(index, frame);
        }
        debug_assert!(frames.is_empty());
        let mut free = Vec::new();
        nodes.take_graveyard(&mut free);
        drop(nodes);
        free_now(&*self.platform, &free);
        Ok(())
    }

    /// Copies the frame `from` into the frame `to`.
    fn copy_frame(&self, from: PhysAddr, to: PhysAddr) {
        let (src, dst) = (
            self.platform.phys_to_virt(from),
            self.platform.phys_to_virt(to),
        );
        // SAFETY: `from` is a frame of the tree, which cannot be freed while the tree's lock is
        // held (the caller holds it); `to` was just allocated; both are valid for a page
        // (Platform contract) and distinct frames.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, PAGE_SIZE as usize) };
    }

    /// The page a fault at page `index` maps, for a VMO of a tree (`write`: a write access);
    /// `None` when neither the VMO nor a parent has the page (the caller maps the zero page or
    /// commits one, as for any VMO).
    pub(crate) fn fault_tree_locked(
        &self,
        inner: &mut VmoInner,
        index: u64,
        write: bool,
        batch: &mut TlbBatch,
    ) -> ZxResult<Option<FaultPage>> {
        let Some((frame, own)) = self.read_page_locked(inner, index) else {
            return Ok(None);
        };
        if own || !write {
            return Ok(Some(FaultPage::Map {
                frame,
                writable: own,
            }));
        }
        match self.commit_tree_locked(inner, index, index + 1, false, batch) {
            Ok(()) if batch.is_empty() => {}
            Ok(()) => return Ok(Some(FaultPage::Retry)),
            Err(Blocked::Unsettled) => return Ok(Some(FaultPage::Wait)),
            Err(Blocked::Status(status)) => return Err(status),
        }
        let frame = self
            .lookup_page_locked(inner, index)
            .expect("committed just now");
        Ok(Some(FaultPage::Map {
            frame,
            writable: true,
        }))
    }

    /// The tree's invariants, for the audit (none to check for a VMO alone).
    pub(crate) fn check_tree_locked(inner: &VmoInner) -> Result<(), &'static str> {
        match inner.cow.as_ref() {
            Some(link) => link.tree.lock().check(),
            None => Ok(()),
        }
    }

    /// For an operation that cleared translations into `batch`: when the VMO is in a tree and
    /// the batch has work, the tree counts a round as under way (from here, or from the copy
    /// that opened it: `round_open`); the caller ends it with [`CowTree::end_round`] after the
    /// batch finished. Every operation on a VMO of a tree calls it before letting go of the
    /// VMO's lock.
    pub(crate) fn begin_round_locked(
        inner: &mut VmoInner,
        batch: &TlbBatch,
    ) -> Option<Arc<CowTree>> {
        let open = core::mem::take(&mut inner.round_open);
        let link = inner.cow.as_ref()?;
        if !open {
            if batch.is_empty() {
                return None;
            }
            link.tree.lock().begin_round();
        }
        Some(link.tree.clone())
    }

    /// Finishes `batch`, then ends the tree's round if one was begun.
    pub(crate) fn finish_round(&self, batch: TlbBatch, round: Option<Arc<CowTree>>) {
        batch.finish(&*self.platform);
        if let Some(tree) = round {
            tree.end_round(&*self.platform);
        }
    }

    /// Runs `op` (which takes and lets go of the VMO's lock) until no tree round blocks it,
    /// serving this CPU's shootdown mailbox while it waits, so that the round can complete.
    pub(crate) fn until_settled<T>(
        &self,
        mut op: impl FnMut() -> Result<T, Blocked>,
    ) -> ZxResult<T> {
        loop {
            match op() {
                Ok(value) => return Ok(value),
                Err(Blocked::Status(status)) => return Err(status),
                Err(Blocked::Unsettled) => self.wait_settled(),
            }
        }
    }

    /// Waits, holding no lock, until no round of the VMO's tree is under way, serving this
    /// CPU's shootdown mailbox meanwhile (the round may be waiting for this CPU).
    pub(crate) fn wait_settled(&self) {
        loop {
            let settled = {
                let inner = self.lock();
                inner
                    .cow
                    .as_ref()
                    .is_none_or(|link| link.tree.lock().settled())
            };
            if settled {
                return;
            }
            let pin = CpuPin::new(&*self.platform);
            self.platform.tlb().handle_ipi(&pin);
            drop(pin);
            self.platform.wait_hint();
        }
    }

    /// Whether DECOMMIT may take this VMO's pages: a paged VMO that no snapshot shares pages
    /// with ([`Vmo::leave_tree_if_alone_locked`]).
    pub(crate) fn supports_decommit_locked(&self, inner: &mut VmoInner) -> bool {
        self.kind == VmoKind::Paged && !self.leave_tree_if_alone_locked(inner)
    }

    /// Whether the VMO shares pages with a snapshot relative. One whose relatives all died
    /// leaves its tree here, taking the pages it saw, and answers false.
    pub(crate) fn leave_tree_if_alone_locked(&self, inner: &mut VmoInner) -> bool {
        let Some(link) = inner.cow.as_ref() else {
            return false;
        };
        let tree = link.tree.clone();
        let mut nodes = tree.lock();
        if !nodes.collapse(link.node, &mut inner.pages) {
            return true;
        }
        let mut free = Vec::new();
        nodes.release(link.node);
        nodes.take_graveyard(&mut free);
        drop(nodes);
        free_now(&*self.platform, &free);
        // A round still under way holds the tree, and frees what it keeps when it ends.
        inner.cow = None;
        false
    }

    /// A shrink to `pages`: the VMO no longer sees its parents' pages from there on. What no
    /// one sees any more is freed now if no round is under way (the caller began its own round
    /// first when its batch cleared translations), else when the last round ends.
    pub(crate) fn limit_tree_locked(&self, inner: &VmoInner, pages: u64) {
        let Some(link) = inner.cow.as_ref() else {
            return;
        };
        let mut free = Vec::new();
        {
            let mut nodes = link.tree.lock();
            nodes.limit(link.node, pages);
            nodes.take_graveyard(&mut free);
        }
        free_now(&*self.platform, &free);
    }

    /// The VMO dies: its node leaves its tree, and the tree frees what only it saw.
    pub(super) fn leave_tree(&mut self) {
        let Some(link) = self.inner.get_mut().cow.take() else {
            return;
        };
        let mut free = Vec::new();
        {
            let mut nodes = link.tree.lock();
            nodes.release(link.node);
            nodes.take_graveyard(&mut free);
        }
        free_now(&*self.platform, &free);
    }
}
