//! The model's children (`zx_vmo_create_child`): snapshots as eager copies, slices and references
//! as aliases of the VMO underneath, and what a snapshot family changes for its VMOs (DECOMMIT
//! refused while a relative lives, ZERO writing over pages, committed bytes).
//!
//! The model keeps no copy-on-write tree: a snapshot child's `data` is a copy of its parent's
//! pages in its range, taken when it is made. The copy shares the parent's page `Arc`s until one
//! side writes (`Arc::make_mut`), which is also how the model counts the frames the crate needs:
//! one per distinct page of the live VMOs ([`Model::distinct_frames`]).

use super::*;

/// The crate's limit on the depth of a copy-on-write tree (`zx_vm::vmo::MAX_COW_DEPTH`).
pub const MAX_COW_DEPTH: usize = zx_vm::vmo::MAX_COW_DEPTH;

/// The snapshot options, each of which makes a snapshot (this crate has no pager).
const SNAPSHOTS: [u32; 3] = [
    ZX_VMO_CHILD_SNAPSHOT,
    ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
    ZX_VMO_CHILD_SNAPSHOT_MODIFIED,
];

impl Model {
    /// The size of `vmo` in pages (a reference's is its target's).
    pub fn size_pages(&self, vmo: usize) -> u64 {
        match self.vmos[vmo].alias {
            Some(alias) if alias.reference => self.vmos[alias.target].pages,
            _ => self.vmos[vmo].pages,
        }
    }

    /// The VMO with pages behind `[offset, offset + len)` of `vmo`, and the offset there: `vmo`
    /// itself, or for an alias its target (`ZX_ERR_OUT_OF_RANGE` past the alias's end).
    pub(super) fn forward(&self, vmo: usize, offset: u64, len: u64) -> R<(usize, u64)> {
        let Some(alias) = self.vmos[vmo].alias else {
            return Ok((vmo, offset));
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.size_pages(vmo) * PAGE => {
                record(
                    "alias",
                    if alias.reference {
                        "reference forwards"
                    } else {
                        "slice forwards"
                    },
                );
                Ok((alias.target, alias.offset * PAGE + offset))
            }
            _ => Err(ZX_ERR_OUT_OF_RANGE),
        }
    }

    /// What a mapping of `[offset, offset + len)` of `vmo` maps: a slice's range must lie inside
    /// it (`ZX_ERR_OUT_OF_RANGE`); a reference maps its target whatever its size.
    pub(super) fn map_target(&self, vmo: usize, offset: u64, len: u64) -> R<(usize, u64)> {
        match self.vmos[vmo].alias {
            Some(alias) if alias.reference => Ok((alias.target, offset)),
            _ => self.forward(vmo, offset, len),
        }
    }

    /// Whether another VMO of `vmo`'s snapshot family lives.
    pub(super) fn relatives_alive(&self, vmo: usize, live: &BTreeSet<usize>) -> bool {
        let tree = self.vmos[vmo].tree;
        tree.is_some()
            && live
                .iter()
                .any(|&id| id != vmo && self.vmos[id].tree == tree)
    }

    /// Whether a VMO of snapshot family `tree` died: the crate then merges hidden nodes, and
    /// which VMO its shared pages count for follows the tree's shape, which the model does not
    /// keep.
    pub(super) fn murky(&self, tree: usize, live: &BTreeSet<usize>) -> bool {
        (0..self.vmos.len()).any(|id| self.vmos[id].tree == Some(tree) && !live.contains(&id))
    }

    /// Whether DECOMMIT may take `vmo`'s pages (the VMO underneath, not an alias): a paged VMO
    /// with no snapshot relative alive. One whose relatives all died leaves its family here
    /// (every page it has is its own from now on), even if the call fails later.
    pub(super) fn supports_decommit(&mut self, vmo: usize) -> bool {
        if self.vmos[vmo].kind != MKind::Paged {
            return false;
        }
        if self.vmos[vmo].tree.is_none() {
            return true;
        }
        if !self.leave_family_if_alone(vmo) {
            record("tree", "decommit refused: pages shared");
            return false;
        }
        true
    }

    /// Whether `vmo` is alone (or in no family): one whose snapshot relatives all died leaves
    /// its family here (every page it has is its own from now on), as the crate's DECOMMIT
    /// check, ZERO and protect do.
    pub(super) fn leave_family_if_alone(&mut self, vmo: usize) -> bool {
        if self.vmos[vmo].tree.is_none() {
            return true;
        }
        if self.relatives_alive(vmo, &self.live_vmos()) {
            return false;
        }
        record("tree", "left its family");
        let v = &mut self.vmos[vmo];
        (v.tree, v.depth) = (None, 0);
        v.foreign.clear();
        true
    }

    /// The committed pages `vmo` reports, as a range: exact for a VMO alone, and for one of a
    /// snapshot family in which no VMO died (its own pages: those it had before its snapshots
    /// and those it wrote since); otherwise at least those and at most every page it has.
    pub fn committed_bounds(&self, vmo: usize, live: &BTreeSet<usize>) -> (u64, u64) {
        let v = &self.vmos[vmo];
        let low = self.committed_pages(vmo);
        match v.tree {
            Some(tree) if v.alias.is_none() && self.murky(tree, live) => (low, v.data.len() as u64),
            _ => (low, low),
        }
    }

    /// The frames the live paged VMOs' pages take, as a range: at least one per distinct page
    /// of the live VMOs (a page that snapshots share is one frame however many VMOs see it). The
    /// crate may keep more while a snapshot family lives: pages of its dead VMOs in a hidden node
    /// that waits for the survivor to leave its family or snapshot (and merge it away), and pages
    /// a VMO gave up by shrinking that a hidden node further up keeps
    /// (`a_shrink_frees_what_no_one_sees_two_nodes_up` in `tests/regressions.rs`): at most one
    /// per distinct page such a family's VMOs ever had.
    pub fn distinct_frames(&self, live: &BTreeSet<usize>) -> (u64, u64) {
        let key = |page: &Page| Arc::as_ptr(page) as usize;
        let mut low = BTreeSet::new();
        let mut families = BTreeSet::new();
        for &id in live {
            let v = &self.vmos[id];
            if v.kind == MKind::Paged && v.alias.is_none() {
                low.extend(v.data.values().map(key));
                families.extend(v.tree);
            }
        }
        let mut high = low.clone();
        for (id, v) in self.vmos.iter().enumerate() {
            if !live.contains(&id) && v.tree.is_some_and(|tree| families.contains(&tree)) {
                high.extend(v.data.values().map(key));
            }
        }
        for tree in &families {
            high.extend(self.shed.get(tree).into_iter().flatten().map(key));
        }
        (low.len() as u64, high.len() as u64)
    }

    /// The pages (by address) that more than one live VMO has: shared by a snapshot, which no
    /// translation may make writable.
    pub fn shared_pages(&self, live: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut seen = BTreeMap::new();
        for &id in live {
            let v = &self.vmos[id];
            if v.kind == MKind::Paged && v.alias.is_none() {
                for page in v.data.values() {
                    *seen.entry(Arc::as_ptr(page) as usize).or_insert(0) += 1;
                }
            }
        }
        seen.into_iter()
            .filter(|&(_, count)| count > 1)
            .map(|(page, _)| page)
            .collect()
    }

    /// `zx_vmo_create_child`, with the crate's checks in its order (Zircon's): the size rounded
    /// up (`ZX_ERR_OUT_OF_RANGE` past the largest VMO), `NO_WRITE` with `RESIZABLE`, the handle
    /// (`ZX_RIGHT_DUPLICATE | ZX_RIGHT_READ`), the options (one kind; a slice takes only
    /// `NO_WRITE`, a reference `RESIZABLE` too and offset and size 0), then the kind's own.
    #[allow(clippy::too_many_arguments)]
    pub fn vmo_create_child(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: u32,
        offset: u64,
        size: u64,
        new: zx_handle_t,
    ) -> R {
        let size = round_up(size)
            .filter(|&size| size <= MAX_VMO_SIZE)
            .ok_or(ZX_ERR_OUT_OF_RANGE)?;
        let no_write = options & ZX_VMO_CHILD_NO_WRITE != 0;
        let resizable = options & ZX_VMO_CHILD_RESIZABLE != 0;
        if no_write && resizable {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_DUPLICATE | ZX_RIGHT_READ)?;
        let kind = options & !ZX_VMO_CHILD_NO_WRITE;
        let mut child_rights =
            (rights & !ZX_RIGHT_RESIZE) | ZX_RIGHT_GET_PROPERTY | ZX_RIGHT_SET_PROPERTY;
        let child = if kind == ZX_VMO_CHILD_SLICE {
            self.slice(p, vmo, offset, size)?
        } else if kind & ZX_VMO_CHILD_REFERENCE != 0 {
            if kind & !(ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_RESIZABLE) != 0
                || offset != 0
                || size != 0
            {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            self.reference(p, vmo, resizable)?
        } else if let Some(bit) = SNAPSHOTS.into_iter().find(|&bit| kind & bit != 0) {
            if kind & !(bit | ZX_VMO_CHILD_RESIZABLE) != 0 {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            child_rights = (child_rights | ZX_RIGHT_WRITE) & !ZX_RIGHT_EXECUTE;
            let child = self.snapshot(vmo, offset, size, resizable)?;
            // The crate made the snapshot before it found no room for its handle: the parent's
            // pages are shared now, and the child dies at once.
            self.has_room(p)?;
            child
        } else {
            return Err(ZX_ERR_INVALID_ARGS);
        };
        if resizable {
            child_rights |= ZX_RIGHT_RESIZE;
        }
        if no_write {
            child_rights &= !ZX_RIGHT_WRITE;
        }
        self.add_handle(p, Obj::Vmo(child), child_rights, new)
    }

    /// `ZX_VMO_CHILD_SLICE` of `vmo`: an unaligned offset or a range not inside it is
    /// `ZX_ERR_INVALID_ARGS`, a resizable VMO `ZX_ERR_NOT_SUPPORTED`.
    fn slice(&mut self, p: usize, vmo: usize, offset: u64, size: u64) -> R<usize> {
        if !aligned(offset) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        match offset.checked_add(size) {
            Some(end) if end <= self.size_pages(vmo) * PAGE => {}
            _ => return Err(ZX_ERR_INVALID_ARGS),
        }
        if self.vmos[vmo].resizable {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        self.has_room(p)?;
        let (target, base) = match self.vmos[vmo].alias {
            Some(alias) => (alias.target, alias.offset + offset / PAGE),
            None => (vmo, offset / PAGE),
        };
        Ok(self.new_alias(vmo, target, base, size / PAGE, false))
    }

    /// `ZX_VMO_CHILD_REFERENCE` of `vmo`: a slice or contiguous VMO is `ZX_ERR_NOT_SUPPORTED`,
    /// as is `resizable` for a VMO that is not.
    fn reference(&mut self, p: usize, vmo: usize, resizable: bool) -> R<usize> {
        let v = &self.vmos[vmo];
        if v.alias.is_some_and(|alias| !alias.reference)
            || v.kind == MKind::Contiguous
            || (resizable && !v.resizable)
        {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        self.has_room(p)?;
        let target = v.alias.map_or(vmo, |alias| alias.target);
        Ok(self.new_alias(vmo, target, 0, 0, true))
    }

    fn new_alias(
        &mut self,
        parent: usize,
        target: usize,
        offset: u64,
        pages: u64,
        reference: bool,
    ) -> usize {
        let kind = self.vmos[target].kind;
        let resizable = reference && self.vmos[target].resizable;
        let id = self.new_vmo(MKind::Paged, pages);
        let v = &mut self.vmos[id];
        (v.kind, v.resizable, v.parent) = (kind, resizable, Some(parent));
        v.alias = Some(MAlias {
            target,
            offset,
            reference,
        });
        id
    }

    /// A snapshot of `[offset, offset + size)` of `named` (a reference: of its target), made as
    /// an eager copy. Statuses: a slice or a physical VMO `ZX_ERR_NOT_SUPPORTED`, a contiguous
    /// one or an unaligned offset `ZX_ERR_INVALID_ARGS`, an end past 2^64 `ZX_ERR_OUT_OF_RANGE`,
    /// a pinned page `ZX_ERR_BAD_STATE`, a tree too deep `ZX_ERR_NO_RESOURCES`.
    fn snapshot(&mut self, named: usize, offset: u64, size: u64, resizable: bool) -> R<usize> {
        let vmo = match self.vmos[named].alias {
            Some(alias) if alias.reference => alias.target,
            Some(_) => return Err(ZX_ERR_NOT_SUPPORTED),
            None => named,
        };
        match self.vmos[vmo].kind {
            MKind::Contiguous => return Err(ZX_ERR_INVALID_ARGS),
            MKind::Physical => return Err(ZX_ERR_NOT_SUPPORTED),
            MKind::Paged => {}
        }
        if !aligned(offset) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        offset.checked_add(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if !self.vmos[vmo].pins.is_empty() {
            return Err(ZX_ERR_BAD_STATE);
        }
        self.check_depth(vmo)?;
        let tree = self.vmos[vmo].tree.unwrap_or_else(|| {
            self.trees += 1;
            self.trees - 1
        });
        let (first, pages) = (offset / PAGE, size / PAGE);
        let parent = &mut self.vmos[vmo];
        parent.tree = Some(tree);
        parent.depth += 1;
        let depth = parent.depth;
        // The eager copy: the parent's pages in the range (zeroes past its end).
        let data: BTreeMap<u64, Page> = parent
            .data
            .range(first..first.saturating_add(pages))
            .map(|(&index, page)| (index - first, page.clone()))
            .collect();
        let id = self.new_vmo(MKind::Paged, pages);
        let child = &mut self.vmos[id];
        child.foreign = data.keys().copied().collect();
        child.data = data;
        (child.resizable, child.parent, child.cow_clone) = (resizable, Some(named), true);
        (child.tree, child.depth) = (Some(tree), depth);
        Ok(id)
    }

    /// The depth check of a snapshot of `vmo`. A family whose other VMOs all died is whole again
    /// (the crate's snapshot first merges into the VMO every hidden node only it still has, so
    /// every page it has is its own): it starts a new family. In a family where a VMO died while
    /// others live, the model's depth is an upper bound; at the limit, the crate's answer
    /// ([`Model::depth_override`]) decides.
    fn check_depth(&mut self, vmo: usize) -> R {
        let live = self.live_vmos();
        if let Some(tree) = self.vmos[vmo].tree {
            if !self.relatives_alive(vmo, &live) {
                let v = &mut self.vmos[vmo];
                (v.tree, v.depth) = (None, 0);
                v.foreign.clear();
            } else if self.vmos[vmo].depth >= MAX_COW_DEPTH && self.murky(tree, &live) {
                record("tree", "depth unknown at the limit");
                return match self.depth_override.take() {
                    Some(true) => Err(ZX_ERR_NO_RESOURCES),
                    _ => Ok(()),
                };
            }
        }
        if self.vmos[vmo].depth >= MAX_COW_DEPTH {
            return Err(ZX_ERR_NO_RESOURCES);
        }
        Ok(())
    }
}
