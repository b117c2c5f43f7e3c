//! The VMAR tree of one address space: each VMAR's children in an intrusive red-black tree,
//! the queries over it (the child at an address, overlap, gaps), and the walk that finds the
//! mappings covering a range through nested VMARs.

use super::*;

/// One VMAR's own state, in its address space's tree.
pub(crate) struct VmarNode {
    pub(super) base: u64,
    pub(super) size: u64,
    /// The `ZX_VM_CAN_MAP_*` flags of the VMAR.
    pub(super) flags: VmOptions,
    pub(super) parent: Option<VmarId>,
    pub(super) children: RBTree<TreeAdapter>,
}

impl VmarNode {
    pub(super) fn end(&self) -> u64 {
        self.base + self.size
    }

    pub(super) fn contains_range(&self, start: u64, end: u64) -> bool {
        start >= self.base && end <= self.end() && start < end
    }

    /// The child containing `va`.
    pub(super) fn child_at(&self, va: u64) -> Option<Arc<Region>> {
        let cursor = self.children.upper_bound(Bound::Included(&va));
        let region = cursor.get()?;
        if va < region.end() {
            cursor.clone_pointer()
        } else {
            None
        }
    }

    /// Whether any child overlaps `[start, end)`.
    pub(super) fn overlaps(&self, start: u64, end: u64) -> bool {
        // Children do not overlap, so the one with the greatest base below `end` reaches furthest.
        self.children
            .upper_bound(Bound::Excluded(&end))
            .get()
            .is_some_and(|region| region.end() > start)
    }

    /// The children overlapping `[start, end)`, in address order, appended to `out`.
    pub(super) fn children_in(&self, start: u64, end: u64, out: &mut Vec<Arc<Region>>) {
        let mut cursor = self.children.upper_bound(Bound::Included(&start));
        if cursor.get().is_none_or(|region| region.end() <= start) {
            cursor.move_next();
        }
        while let Some(region) = cursor.get() {
            if region.base() >= end {
                break;
            }
            out.extend(cursor.clone_pointer());
            cursor.move_next();
        }
    }

    /// Whether a child overlapping `[start, end)` satisfies `test`.
    pub(super) fn any_child_in(
        &self,
        start: u64,
        end: u64,
        test: impl Fn(&Region) -> bool,
    ) -> bool {
        let mut cursor = self.children.upper_bound(Bound::Included(&start));
        if cursor.get().is_none_or(|region| region.end() <= start) {
            cursor.move_next();
        }
        while let Some(region) = cursor.get() {
            if region.base() >= end {
                return false;
            }
            if test(region) {
                return true;
            }
            cursor.move_next();
        }
        false
    }

    /// The lowest free, page-aligned gap of `size` bytes (not 0).
    pub(super) fn find_gap(&self, size: u64) -> Option<u64> {
        // The children and the node are page-aligned, so any start is.
        self.find_aligned_gap(size, 1, 0)
    }

    /// The lowest free gap of `size` bytes whose start is `phase` past a multiple of `align` (a
    /// power of two), if there is one.
    pub(super) fn find_aligned_gap(&self, size: u64, align: u64, phase: u64) -> Option<u64> {
        let fit = |from: u64, to: u64| {
            // The first address at or after `from` that is `phase` past a multiple of `align`.
            let start = from.checked_add(phase.wrapping_sub(from) & (align - 1))?;
            (start.checked_add(size)? <= to).then_some(start)
        };
        let mut candidate = self.base;
        for region in self.children.iter() {
            if region.base() > candidate {
                if let Some(start) = fit(candidate, region.base()) {
                    return Some(start);
                }
            }
            candidate = candidate.max(region.end());
        }
        fit(candidate, self.end())
    }

    /// Unlinks `region` from the children.
    pub(super) fn unlink(&mut self, region: &Arc<Region>) {
        // SAFETY: callers pass only regions found in this node's tree under the tree lock they
        // still hold, so `region` is linked in `self.children` and in no other tree. The pointer
        // comes from the `Arc`, so it keeps the provenance of the whole allocation that `remove`
        // turns back into an `Arc`.
        let mut cursor = unsafe { self.children.cursor_mut_from_ptr(Arc::as_ptr(region)) };
        cursor.remove();
    }
}

/// The VMAR tree of one address space.
pub(crate) struct AspaceTree {
    pub(super) vmars: BTreeMap<VmarId, VmarNode>,
    pub(super) next_id: VmarId,
    /// The lists range operations walk and collect into, kept warm under the tree lock.
    pub(super) scratch: RangeScratch,
}

impl AspaceTree {
    pub(super) fn node(&self, id: VmarId) -> ZxResult<&VmarNode> {
        self.vmars.get(&id).ok_or(Status::BadState)
    }

    pub(super) fn node_mut(&mut self, id: VmarId) -> ZxResult<&mut VmarNode> {
        self.vmars.get_mut(&id).ok_or(Status::BadState)
    }

    /// The mappings that cover `[start, end)` below VMAR `id`, each with the part of the range it
    /// covers and the VMAR it sits in, looking through nested VMARs, into `out` (in address
    /// order). `gap` is returned if a page of the range is not covered by a mapping.
    ///
    /// Iterative, with an explicit stack in `walk`: VMARs nest as deep as a caller makes them, and
    /// a kernel stack must not pay for that.
    pub(super) fn covering_mappings(
        &self,
        id: VmarId,
        start: u64,
        end: u64,
        gap: Status,
        walk: &mut Vec<WalkFrame>,
        out: &mut Vec<Covered>,
    ) -> ZxResult {
        walk.clear();
        walk.push(WalkFrame {
            vmar: id,
            next: start,
            end,
        });
        let result = loop {
            let Some(top) = walk.last_mut() else {
                break Ok(());
            };
            if top.next >= top.end {
                walk.pop();
                continue;
            }
            let node = match self.node(top.vmar) {
                Ok(node) => node,
                Err(status) => break Err(status),
            };
            // The child holding `next`: the range is covered only if one starts at or before it.
            let Some(region) = node.child_at(top.next) else {
                break Err(gap);
            };
            let (lo, hi) = (top.next, top.end.min(region.end()));
            top.next = hi;
            let vmar = top.vmar;
            match region.kind() {
                RegionKind::Vmar(child) => walk.push(WalkFrame {
                    vmar: *child,
                    next: lo,
                    end: hi,
                }),
                RegionKind::Mapping(_) => out.push(Covered {
                    vmar,
                    region,
                    start: lo,
                    end: hi,
                }),
            }
        };
        walk.clear();
        result
    }

    /// Destroys VMAR `id` and everything below it, unmapping every mapping into `batch`. Its
    /// region in the parent is left to the caller. Iterative (VMARs nest as deep as a caller
    /// makes them): `stack` holds the VMARs still to take apart.
    pub(super) fn destroy_subtree(
        &mut self,
        aspace: &AddressSpace,
        id: VmarId,
        stack: &mut Vec<VmarId>,
        batch: &mut TlbBatch,
    ) {
        stack.clear();
        stack.push(id);
        while let Some(id) = stack.pop() {
            let Some(mut node) = self.vmars.remove(&id) else {
                continue;
            };
            let mut children = node.children.take();
            let mut cursor = children.front_mut();
            while let Some(region) = cursor.remove() {
                match region.kind() {
                    RegionKind::Vmar(child) => stack.push(*child),
                    RegionKind::Mapping(_) => aspace.unlink_mapping(&region, batch),
                }
            }
        }
    }
}

/// One level of [`AspaceTree::covering_mappings`]'s walk: the part `[next, end)` of VMAR
/// `vmar` still to cover.
pub(crate) struct WalkFrame {
    pub(super) vmar: VmarId,
    pub(super) next: u64,
    pub(super) end: u64,
}

/// The lists a range operation walks and collects into: kept in the address space's tree (used
/// only under its lock), so that they keep their capacity from one operation to the next and a
/// warm decommit, unmap or protect allocates nothing.
#[derive(Default)]
pub(crate) struct RangeScratch {
    pub(super) walk: Vec<WalkFrame>,
    pub(super) covered: Vec<Covered>,
    /// The VMOs an operation locks, by koid.
    pub(super) vmos: Vec<Arc<Vmo>>,
    pub(super) regions: Vec<Arc<Region>>,
    pub(super) vmar_ids: Vec<VmarId>,
}

impl RangeScratch {
    /// Takes the lists out of `tree` (so that the tree can be used beside them).
    pub(super) fn take(tree: &mut AspaceTree) -> RangeScratch {
        core::mem::take(&mut tree.scratch)
    }

    /// Empties the lists and puts them back into `tree`, keeping their capacity.
    pub(super) fn put(mut self, tree: &mut AspaceTree) {
        self.walk.clear();
        self.covered.clear();
        self.vmos.clear();
        self.regions.clear();
        self.vmar_ids.clear();
        tree.scratch = self;
    }
}

/// A mapping and the part of an operation's range that it covers.
pub(crate) struct Covered {
    pub(super) vmar: VmarId,
    pub(super) region: Arc<Region>,
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Covered {
    pub(super) fn mapping(&self) -> &Mapping {
        self.region.mapping().expect("only mappings are collected")
    }

    /// The VMO pages behind `[start, end)`.
    pub(super) fn vmo_pages(&self) -> (u64, u64) {
        let to_vmo =
            |va: u64| (va - self.region.base() + self.mapping().vmo_offset()) >> PAGE_SHIFT;
        (to_vmo(self.start), to_vmo(self.end))
    }
}
