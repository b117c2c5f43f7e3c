//! `zx_vmo_create_child`: snapshots (copy-on-write children, `src/vmo/cow.rs`), slices and
//! references.
//!
//! A slice or a reference has no pages of its own: it is an *alias*, a window on its parent's
//! pages, and every operation on it is its parent's at an offset (an alias of an alias is made
//! an alias of the VMO underneath). A mapping of an alias is a mapping of that VMO, so that a
//! DECOMMIT of the parent reaches it, and a DECOMMIT through it acts on the parent's pages.

use super::cow::{free_now, CowLink, CowTree, MAX_COW_DEPTH};
use super::{Vmo, VmoInner, VmoKind, MAX_VMO_SIZE};
use crate::abi::{is_page_aligned, zx_koid_t, Status, ZxResult, PAGE_SHIFT};
use crate::arch::MmuFlags;
use crate::tlb::TlbBatch;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicU64, Ordering};

/// A slice or reference: the VMO whose pages it shows, from which offset.
pub(crate) struct Alias {
    pub(super) target: Arc<Vmo>,
    pub(super) offset: u64,
    /// A reference: the whole target, whose size it follows.
    pub(super) reference: bool,
}

impl Alias {
    /// The VMO whose pages the alias shows.
    pub(super) fn target(&self) -> &Arc<Vmo> {
        &self.target
    }
}

/// Where a VMO came from, and how many children it has.
#[derive(Default)]
pub(crate) struct Lineage {
    parent_koid: zx_koid_t,
    parent: Weak<Vmo>,
    children: AtomicU64,
    cow_clone: bool,
}

impl Lineage {
    fn of(parent: &Arc<Vmo>, cow_clone: bool) -> Lineage {
        parent.lineage.children.fetch_add(1, Ordering::Relaxed);
        Lineage {
            parent_koid: parent.koid,
            parent: Arc::downgrade(parent),
            children: AtomicU64::new(0),
            cow_clone,
        }
    }

    /// The VMO died: its parent has one child fewer.
    pub(super) fn release(&self) {
        if let Some(parent) = self.parent.upgrade() {
            parent.lineage.children.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Vmo {
    /// The parent's koid, for a child; 0 otherwise.
    pub fn parent_koid(&self) -> zx_koid_t {
        self.lineage.parent_koid
    }

    /// How many children of this VMO live.
    pub fn num_children(&self) -> u64 {
        self.lineage.children.load(Ordering::Relaxed)
    }

    /// Whether this VMO is a snapshot child (`ZX_INFO_VMO_IS_COW_CLONE`).
    pub fn is_cow_clone(&self) -> bool {
        self.lineage.cow_clone
    }

    /// For an alias: the VMO underneath and the offset there of `[offset, offset + len)` of this
    /// one (`ZX_ERR_OUT_OF_RANGE` past the alias's end). `None` for a VMO with pages of its own.
    pub(super) fn forward(&self, offset: u64, len: u64) -> Option<ZxResult<(&Arc<Vmo>, u64)>> {
        let alias = self.alias.as_ref()?;
        let end = offset.checked_add(len);
        Some(match end {
            Some(end) if end <= self.size() => Ok((&alias.target, alias.offset + offset)),
            _ => Err(Status::OutOfRange),
        })
    }

    /// What a mapping of `[vmo_offset, vmo_offset + len)` of this VMO maps: itself, or for an
    /// alias the VMO underneath at the matching offset. A mapping of a slice must lie inside it
    /// (`ZX_ERR_OUT_OF_RANGE`): it is a mapping of the parent, which a fault past the slice's
    /// end would otherwise reach.
    pub(crate) fn map_target(
        self: &Arc<Self>,
        vmo_offset: u64,
        len: u64,
    ) -> ZxResult<(Arc<Vmo>, u64)> {
        match &self.alias {
            None => Ok((self.clone(), vmo_offset)),
            Some(alias) if alias.reference => Ok((alias.target.clone(), vmo_offset)),
            Some(_) => {
                let (target, offset) = self.forward(vmo_offset, len).expect("an alias")?;
                Ok((target.clone(), offset))
            }
        }
    }

    /// `ZX_VMO_CHILD_SLICE`: a window on `[offset, offset + size)` of this VMO (`size` whole
    /// pages, checked by the caller). Zircon's checks, in its order: an unaligned offset or a
    /// range not inside the parent is `ZX_ERR_INVALID_ARGS`, a resizable parent
    /// `ZX_ERR_NOT_SUPPORTED`.
    pub fn create_slice(self: &Arc<Self>, offset: u64, size: u64) -> ZxResult<Arc<Vmo>> {
        if !is_page_aligned(offset) {
            return Err(Status::InvalidArgs);
        }
        // Inside the parent, so no larger than the largest VMO.
        match offset.checked_add(size) {
            Some(end) if end <= self.size() => {}
            _ => return Err(Status::InvalidArgs),
        }
        if self.is_resizable() {
            return Err(Status::NotSupported);
        }
        let (target, base) = match &self.alias {
            Some(alias) => (alias.target.clone(), alias.offset + offset),
            None => (self.clone(), offset),
        };
        Ok(self.new_alias(target, base, size, false))
    }

    /// `ZX_VMO_CHILD_REFERENCE`: another name for this whole VMO. A slice or contiguous parent
    /// is `ZX_ERR_NOT_SUPPORTED`, as is `resizable` on a parent that is not.
    pub fn create_reference(self: &Arc<Self>, resizable: bool) -> ZxResult<Arc<Vmo>> {
        if self.alias.as_ref().is_some_and(|alias| !alias.reference)
            || matches!(self.kind, VmoKind::Contiguous { .. })
            || (resizable && !self.is_resizable())
        {
            return Err(Status::NotSupported);
        }
        let target = match &self.alias {
            Some(alias) => alias.target.clone(),
            None => self.clone(),
        };
        Ok(self.new_alias(target, 0, 0, true))
    }

    fn new_alias(
        self: &Arc<Self>,
        target: Arc<Vmo>,
        offset: u64,
        size: u64,
        reference: bool,
    ) -> Arc<Vmo> {
        let resizable = reference && target.is_resizable();
        let mut vmo = Vmo::build(target.platform.clone(), size, target.kind, resizable, None);
        vmo.alias = Some(Alias {
            target,
            offset,
            reference,
        });
        vmo.lineage = Lineage::of(self, false);
        Arc::new(vmo)
    }

    /// `ZX_VMO_CHILD_SNAPSHOT` (and `SNAPSHOT_AT_LEAST_ON_WRITE`, `SNAPSHOT_MODIFIED`, which this
    /// crate makes snapshots too): a paged VMO of `size` bytes (whole pages, checked by the
    /// caller) that reads as `[offset, offset + size)` of this one did when the call was made,
    /// zero past this VMO's end. Neither sees the other's writes afterwards. No page is copied
    /// now: the pages become shared, and a write to a shared page copies it (or takes it, when
    /// the writer is the last to see it).
    ///
    /// Before it returns, every writable translation of this VMO's pages, in every address
    /// space, is made read-only, in one shootdown round.
    ///
    /// Zircon's statuses: a contiguous parent `ZX_ERR_INVALID_ARGS`, a physical one or a slice
    /// `ZX_ERR_NOT_SUPPORTED`; an unaligned offset `ZX_ERR_INVALID_ARGS`; an end past 2^64
    /// `ZX_ERR_OUT_OF_RANGE`; a pinned page `ZX_ERR_BAD_STATE`; this crate's own: a tree
    /// deeper than [`MAX_COW_DEPTH`] `ZX_ERR_NO_RESOURCES`.
    pub fn create_snapshot(
        self: &Arc<Self>,
        offset: u64,
        size: u64,
        resizable: bool,
    ) -> ZxResult<Arc<Vmo>> {
        match &self.alias {
            Some(alias) if alias.reference => {
                alias.target.snapshot_for(self, offset, size, resizable)
            }
            Some(_) => Err(Status::NotSupported),
            None => self.snapshot_for(self, offset, size, resizable),
        }
    }

    fn snapshot_for(
        self: &Arc<Self>,
        named: &Arc<Vmo>,
        offset: u64,
        size: u64,
        resizable: bool,
    ) -> ZxResult<Arc<Vmo>> {
        match self.kind {
            VmoKind::Contiguous { .. } => return Err(Status::InvalidArgs),
            VmoKind::Physical { .. } => return Err(Status::NotSupported),
            VmoKind::Paged => {}
        }
        if !is_page_aligned(offset) {
            return Err(Status::InvalidArgs);
        }
        if size > MAX_VMO_SIZE {
            return Err(Status::OutOfRange);
        }
        offset.checked_add(size).ok_or(Status::OutOfRange)?;
        let mut batch = TlbBatch::new(&*self.platform);
        let (child, round) = {
            let mut inner = self.lock();
            let made = self.snapshot_locked(&mut inner, named, offset, size, resizable, &mut batch);
            match made {
                Ok(made) => made,
                Err(status) => {
                    drop(inner);
                    batch.finish(&*self.platform);
                    return Err(status);
                }
            }
        };
        batch.finish(&*self.platform);
        if let Some(tree) = round {
            tree.end_round(&*self.platform);
        }
        Ok(child)
    }

    /// The snapshot under this VMO's lock: the tree changes, the child is made, and this VMO's
    /// translations are write-protected into `batch` (a round the tree counts as under way,
    /// returned, until the caller ends it).
    #[allow(clippy::type_complexity)]
    fn snapshot_locked(
        self: &Arc<Self>,
        inner: &mut VmoInner,
        named: &Arc<Vmo>,
        offset: u64,
        size: u64,
        resizable: bool,
        batch: &mut TlbBatch,
    ) -> ZxResult<(Arc<Vmo>, Option<Arc<CowTree>>)> {
        if !inner.pins.is_empty() {
            return Err(Status::BadState);
        }
        let link = inner.cow.get_or_insert_with(|| {
            let tree = Arc::new(CowTree::default());
            let node = tree.lock().add_root();
            CowLink { tree, node }
        });
        let tree = link.tree.clone();
        let mut nodes = tree.lock();
        nodes.collapse(link.node, &mut inner.pages);
        let mut free = alloc::vec::Vec::new();
        nodes.take_graveyard(&mut free);
        free_now(&*self.platform, &free);
        if nodes.depth(link.node) >= MAX_COW_DEPTH {
            return Err(Status::NoResources);
        }
        let parent_pages = self.size() >> PAGE_SHIFT;
        let (first, pages) = (offset >> PAGE_SHIFT, size >> PAGE_SHIFT);
        let limit = parent_pages.saturating_sub(first).min(pages);
        let own = core::mem::take(&mut inner.pages);
        let node = nodes.snapshot(link.node, own, parent_pages, first, limit);
        let cow = CowLink {
            tree: tree.clone(),
            node,
        };
        let mut child = Vmo::build(
            self.platform.clone(),
            size,
            VmoKind::Paged,
            resizable,
            Some(cow),
        );
        child.lineage = Lineage::of(named, true);
        if !cfg!(feature = "break-write-protect") {
            self.write_protect_locked(inner, batch);
        }
        let round = (!batch.is_empty()).then(|| {
            nodes.begin_round();
            tree.clone()
        });
        Ok((Arc::new(child), round))
    }

    /// Makes every translation of this VMO's pages read-only, in every mapping, into `batch`.
    fn write_protect_locked(&self, inner: &VmoInner, batch: &mut TlbBatch) {
        for mapping in inner.mappings.iter() {
            let Some(space) = mapping.space() else {
                continue;
            };
            if mapping.is_unmapped() {
                // Its entries are gone, but a CPU may still cache a writable one until its
                // unmap's round completes: this round flushes its address space too.
                space.flush_all(batch);
                continue;
            }
            let flags = mapping.flags();
            if flags.contains(MmuFlags::WRITE) {
                let (start, end) = (mapping.base(), mapping.base() + mapping.size());
                space.protect_pages(start, end, flags - MmuFlags::WRITE, batch);
            }
        }
    }
}
