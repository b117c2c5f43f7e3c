//! The VMAR operations behind the syscalls: allocate, map, unmap, protect, destroy and
//! DECOMMIT, and the permission rules they share.

use super::*;

/// A VMAR: a handle's view of one region of an address space.
pub struct Vmar {
    pub(super) koid: zx_koid_t,
    pub(super) aspace: Arc<AddressSpace>,
    pub(super) id: VmarId,
    pub(super) base: u64,
    pub(super) size: u64,
    pub(super) flags: VmOptions,
}

impl Vmar {
    /// The kernel object id.
    pub fn koid(&self) -> zx_koid_t {
        self.koid
    }

    /// The first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `ZX_VM_CAN_MAP_*` flags.
    pub fn flags(&self) -> VmOptions {
        self.flags
    }

    /// The address space.
    pub fn aspace(&self) -> &Arc<AddressSpace> {
        &self.aspace
    }

    /// Whether the VMAR was destroyed.
    pub fn is_destroyed(&self) -> bool {
        !self.aspace.lock_tree().vmars.contains_key(&self.id)
    }

    /// The absolute range `[base + offset, base + offset + size)`, if it fits in the VMAR.
    pub(super) fn sub_range(&self, offset: u64, size: u64) -> Option<(u64, u64)> {
        let start = self.base.checked_add(offset)?;
        let end = start.checked_add(size)?;
        (end <= self.base + self.size && start < end).then_some((start, end))
    }

    /// `zx_vmar_allocate`: a sub-VMAR of `size` bytes at `offset` (with `ZX_VM_SPECIFIC`) or
    /// wherever it fits. `options` may hold `ZX_VM_CAN_MAP_*`, `ZX_VM_SPECIFIC` and
    /// `ZX_VM_COMPACT`; the caller checked the handle's rights.
    pub fn allocate(&self, options: VmOptions, offset: u64, size: u64) -> ZxResult<Arc<Vmar>> {
        let allowed = VmOptions::CAN_MAP_PERMS
            | VmOptions::CAN_MAP_SPECIFIC
            | VmOptions::SPECIFIC
            | VmOptions::COMPACT;
        if !allowed.contains(options) {
            return Err(Status::InvalidArgs);
        }
        // Zircon: the size is not rounded (AllocateUnsatisfiableTest, InvalidArgsTest).
        if size == 0 || !is_page_aligned(size) || !is_page_aligned(offset) {
            return Err(Status::InvalidArgs);
        }
        let mut tree = self.aspace.lock_tree();
        let node = tree.node(self.id)?;
        let child_flags = options & (VmOptions::CAN_MAP_PERMS | VmOptions::CAN_MAP_SPECIFIC);
        if !node.flags.contains(child_flags & VmOptions::CAN_MAP_PERMS) {
            return Err(Status::AccessDenied);
        }
        let start = if options.contains(VmOptions::SPECIFIC) {
            if !node.flags.contains(VmOptions::CAN_MAP_SPECIFIC) {
                return Err(Status::AccessDenied);
            }
            let (start, end) = self.sub_range(offset, size).ok_or(Status::InvalidArgs)?;
            if node.overlaps(start, end) {
                return Err(Status::AlreadyExists);
            }
            start
        } else {
            if offset != 0 {
                return Err(Status::InvalidArgs);
            }
            // A child larger than its parent can never fit: INVALID_ARGS before any search
            // (Zircon's AllocateUnsatisfiableTest).
            if size > node.size {
                return Err(Status::InvalidArgs);
            }
            node.find_gap(size).ok_or(Status::NoResources)?
        };
        let id = tree.next_id;
        tree.next_id += 1;
        let parent = tree.node_mut(self.id)?;
        parent.children.insert(Region::new_vmar(id, start, size));
        tree.vmars.insert(
            id,
            VmarNode {
                base: start,
                size,
                flags: child_flags,
                parent: Some(self.id),
                children: RBTree::new(TreeAdapter::new()),
            },
        );
        Ok(Arc::new(Vmar {
            koid: next_koid(),
            aspace: self.aspace.clone(),
            id,
            base: start,
            size,
            flags: child_flags,
        }))
    }

    /// The options `zx_vmar_map` takes.
    const MAP_OPTIONS: VmOptions = VmOptions::PERMS
        .union(VmOptions::SPECIFIC)
        .union(VmOptions::SPECIFIC_OVERWRITE)
        .union(VmOptions::MAP_RANGE)
        .union(VmOptions::ALLOW_FAULTS)
        .union(VmOptions::REQUIRE_NON_RESIZABLE);

    /// `zx_vmar_map`: maps `len` bytes of `vmo` from `vmo_offset`. `options` holds `ZX_VM_PERM_*`
    /// and the placement flags; `can_map` the `ZX_VM_CAN_MAP_*` permissions that the caller's
    /// handles allow (the mapping may never exceed them). Returns the mapped address.
    pub fn map(
        &self,
        options: VmOptions,
        vmar_offset: u64,
        vmo: &Arc<Vmo>,
        vmo_offset: u64,
        len: u64,
        can_map: VmOptions,
    ) -> ZxResult<u64> {
        if !Self::MAP_OPTIONS.contains(options) || !valid_perms(options) {
            return Err(Status::InvalidArgs);
        }
        // As in Zircon: an overwrite cannot also map the range at once (a map that could fail
        // after the overwrite removed the old mappings would change things and fail).
        if options.contains(VmOptions::SPECIFIC_OVERWRITE | VmOptions::MAP_RANGE) {
            return Err(Status::InvalidArgs);
        }
        if len == 0 {
            return Err(Status::InvalidArgs);
        }
        // A length that rounds up past the end of the address space (Zircon: OUT_OF_RANGE).
        let len = page_round_up(len).ok_or(Status::OutOfRange)?;
        if !is_page_aligned(vmar_offset) || !is_page_aligned(vmo_offset) {
            return Err(Status::InvalidArgs);
        }
        vmo_offset.checked_add(len).ok_or(Status::OutOfRange)?;
        let mut tree = self.aspace.lock_tree();
        let node = tree.node(self.id)?;
        let needed = perms_needing_can_map(options);
        if !node.flags.contains(needed) || !can_map.contains(needed) {
            return Err(Status::AccessDenied);
        }
        if options.contains(VmOptions::REQUIRE_NON_RESIZABLE) && vmo.is_resizable() {
            return Err(Status::NotSupported);
        }
        // A slice or reference maps the VMO underneath it.
        let (ref vmo, vmo_offset) = vmo.map_target(vmo_offset, len)?;
        let can_map = can_map & node.flags & VmOptions::CAN_MAP_PERMS;
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let align = vmo.leaf_alignment(vmo_offset, len);
        let placed = self.place_locked(&mut tree, options, vmar_offset, len, align, &mut batch);
        let start = match placed {
            Ok(start) => start,
            Err(status) => {
                drop(tree);
                batch.finish(platform);
                return Err(status);
            }
        };
        let flags = perms_to_mmu(options);
        let space: Weak<dyn MappedSpace> = Arc::downgrade(&self.aspace) as Weak<AddressSpace>;
        let mapping = Mapping::new(space, start, len, vmo.clone(), vmo_offset, flags, can_map);
        let region = Region::new_mapping(mapping.clone());
        let mut result = Ok(start);
        let mapped = {
            let mut inner = vmo.lock();
            Vmo::add_mapping_locked(&mut inner, mapping);
            tree.node_mut(self.id)?.children.insert(region.clone());
            if options.contains(VmOptions::MAP_RANGE) && flags.contains(MmuFlags::READ) {
                self.map_committed_locked(vmo, &inner, start, len, vmo_offset, flags)
            } else {
                Ok(())
            }
        };
        if let Err(status) = mapped {
            // Out of page-table pages: take the new mapping away again, as an unmap would (a CPU
            // may already have walked the entries that were made).
            tree.node_mut(self.id)?.unlink(&region);
            self.aspace.unlink_mapping(&region, &mut batch);
            result = Err(status);
        }
        drop(tree);
        batch.finish(platform);
        result
    }

    /// Where a new mapping of `len` bytes goes: at `vmar_offset` with `ZX_VM_SPECIFIC` (after
    /// unmapping what is there, with `ZX_VM_SPECIFIC_OVERWRITE`), else in the lowest gap that
    /// fits.
    #[allow(clippy::too_many_arguments)]
    fn place_locked(
        &self,
        tree: &mut AspaceTree,
        options: VmOptions,
        vmar_offset: u64,
        len: u64,
        align: Option<(u64, u64)>,
        batch: &mut TlbBatch,
    ) -> ZxResult<u64> {
        let node = tree.node(self.id)?;
        if !options.intersects(VmOptions::SPECIFIC | VmOptions::SPECIFIC_OVERWRITE) {
            if vmar_offset != 0 {
                return Err(Status::InvalidArgs);
            }
            // Longer than the VMAR: it can never fit (Zircon: INVALID_ARGS, before any search).
            if len > node.size {
                return Err(Status::InvalidArgs);
            }
            // A mapping that large leaves could map goes where they can, if there is room.
            let aligned = align.and_then(|(align, phase)| node.find_aligned_gap(len, align, phase));
            return aligned
                .or_else(|| node.find_gap(len))
                .ok_or(Status::NoResources);
        }
        if !node.flags.contains(VmOptions::CAN_MAP_SPECIFIC) {
            return Err(Status::AccessDenied);
        }
        let (start, end) = self
            .sub_range(vmar_offset, len)
            .ok_or(Status::InvalidArgs)?;
        if !node.overlaps(start, end) {
            return Ok(start);
        }
        if !options.contains(VmOptions::SPECIFIC_OVERWRITE) {
            return Err(Status::AlreadyExists);
        }
        // An overwrite replaces mappings, never sub-VMARs (Zircon: ZX_ERR_INVALID_ARGS).
        if node.any_child_in(start, end, |r| matches!(r.kind(), RegionKind::Vmar(_))) {
            return Err(Status::InvalidArgs);
        }
        self.unmap_locked(tree, start, end, batch)?;
        Ok(start)
    }

    /// Maps every committed page of a new mapping (`ZX_VM_MAP_RANGE`).
    pub(super) fn map_committed_locked(
        &self,
        vmo: &Vmo,
        inner: &VmoInner,
        start: u64,
        len: u64,
        vmo_offset: u64,
        flags: MmuFlags,
    ) -> ZxResult {
        let first = vmo_offset >> PAGE_SHIFT;
        let last = (((vmo_offset + len).min(vmo.size())) >> PAGE_SHIFT).max(first);
        let platform = &**self.aspace.platform();
        let flags = flags | MmuFlags::USER;
        let mut mmu = self.aspace.mmu.lock();
        let va_of = |index: u64| start + ((index << PAGE_SHIFT) - vmo_offset);
        let mut index = first;
        while index < last {
            let va = va_of(index);
            // The largest leaf that starts here and fits, where the VMO has a run for it.
            let large = largest_leaf(vmo, inner, va, index, va, va_of(last)).and_then(
                |(base, run, level)| {
                    let mapped = mmu.map_large(platform, base, run, level, flags).ok();
                    mapped.map(|_| entry_span(level) >> PAGE_SHIFT)
                },
            );
            if let Some(pages) = large {
                index += pages;
                continue;
            }
            // Pages, up to where the next 2 MiB leaf could begin.
            let next = (va | (entry_span(1) - 1)) + 1;
            let stop = last.min(index + ((next - va) >> PAGE_SHIFT));
            for (index, pa) in vmo.committed_in_locked(inner, index, stop) {
                mmu.map(platform, va_of(index), pa, flags)?;
            }
            index = stop;
        }
        Ok(())
    }

    /// Removes everything in `[start, end)` of this VMAR: mappings (split where they straddle the
    /// ends) and sub-VMARs wholly inside. A sub-VMAR partly inside is `ZX_ERR_INVALID_ARGS`, checked
    /// before anything changes.
    pub(super) fn unmap_locked(
        &self,
        tree: &mut AspaceTree,
        start: u64,
        end: u64,
        batch: &mut TlbBatch,
    ) -> ZxResult {
        let node = tree.node(self.id)?;
        let partial_vmar = node.any_child_in(start, end, |region| {
            matches!(region.kind(), RegionKind::Vmar(_))
                && (region.base() < start || region.end() > end)
        });
        if partial_vmar {
            return Err(Status::InvalidArgs);
        }
        // Large leaves across the ends are split first, all or nothing (ZX_ERR_NO_MEMORY).
        self.aspace
            .mmu
            .lock()
            .split_edges(&**self.aspace.platform(), start, end)?;
        self.aspace.split_at_bounds(tree, self.id, start, end)?;
        let mut scratch = RangeScratch::take(tree);
        tree.node(self.id)?
            .children_in(start, end, &mut scratch.regions);
        for region in scratch.regions.drain(..) {
            tree.node_mut(self.id)?.unlink(&region);
            match region.kind() {
                RegionKind::Vmar(child) => {
                    tree.destroy_subtree(&self.aspace, *child, &mut scratch.vmar_ids, batch)
                }
                RegionKind::Mapping(_) => self.aspace.unlink_mapping(&region, batch),
            }
        }
        scratch.put(tree);
        Ok(())
    }

    /// `zx_vmar_unmap`: unmaps `[addr, addr + len)` (length rounded up to pages).
    pub fn unmap(&self, addr: u64, len: u64) -> ZxResult {
        let len = page_round_up(len).ok_or(Status::InvalidArgs)?;
        if len == 0 || !is_page_aligned(addr) {
            return Err(Status::InvalidArgs);
        }
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let result = match tree.node(self.id) {
            Err(status) => Err(status),
            Ok(node) => match addr.checked_add(len) {
                Some(end) if node.contains_range(addr, end) => {
                    self.unmap_locked(&mut tree, addr, end, &mut batch)
                }
                _ => Err(Status::InvalidArgs),
            },
        };
        drop(tree);
        batch.finish(platform);
        result
    }

    /// `zx_vmar_protect`: gives the mappings covering `[addr, addr + len)` the permissions in
    /// `options` (`ZX_VM_PERM_*`). The range must be wholly mapped (`ZX_ERR_NOT_FOUND`), and each
    /// mapping must be allowed the permissions (`ZX_ERR_ACCESS_DENIED`).
    pub fn protect(&self, options: VmOptions, addr: u64, len: u64) -> ZxResult {
        if !VmOptions::PERMS.contains(options) || !valid_perms(options) {
            return Err(Status::InvalidArgs);
        }
        const RULES: RangeRules = RangeRules {
            overflow: Status::InvalidArgs,
            outside: Status::InvalidArgs,
            gap: Status::NotFound,
        };
        self.range_op(addr, len, &RULES, |range| {
            let needed = perms_needing_can_map(options);
            if range
                .covered
                .iter()
                .any(|c| !c.mapping().can_map().contains(needed))
            {
                return Err(Status::AccessDenied);
            }
            let flags = perms_to_mmu(options);
            let aspace = &self.aspace;
            // Large leaves across the ends are split first, all or nothing (ZX_ERR_NO_MEMORY).
            let (first, last) = (range.covered.first(), range.covered.last());
            if let (Some(first), Some(last)) = (first, last) {
                aspace
                    .mmu
                    .lock()
                    .split_edges(&**aspace.platform(), first.start, last.end)?;
            }
            for c in range.covered {
                aspace.split_at_bounds(range.tree, c.vmar, c.start, c.end)?;
            }
            // The VMOs' locks keep a snapshot from sharing their pages meanwhile: a VMO that
            // shares pages keeps its translations read-only (a write fault makes the page its
            // own and maps it writable).
            let locked = HeldVmos::lock_covered(range.covered, range.vmos);
            let pending = range.batch.space(aspace);
            let mut mmu = aspace.mmu.lock();
            for c in range.covered {
                let vmo = c.mapping().vmo();
                let shared = vmo.leave_tree_if_alone_locked(locked.inner(vmo));
                let entries = if shared {
                    flags - MmuFlags::WRITE
                } else {
                    flags
                };
                range.regions.clear();
                range
                    .tree
                    .node(c.vmar)?
                    .children_in(c.start, c.end, range.regions);
                for region in range.regions.iter() {
                    if let Some(mapping) = region.mapping() {
                        mapping.set_flags(flags);
                    }
                }
                mmu.protect(
                    &**aspace.platform(),
                    c.start,
                    c.end,
                    entries | MmuFlags::USER,
                    pending,
                );
            }
            Ok(())
        })
    }

    /// Whether this is its address space's root VMAR.
    pub fn is_root(&self) -> bool {
        self.id == self.aspace.root_vmar
    }

    /// `zx_vmar_destroy`: unmaps everything in the VMAR and destroys it and its sub-VMARs; later
    /// operations on it fail with `ZX_ERR_BAD_STATE`. (The syscall refuses a root VMAR; the kernel
    /// destroys one when its process dies.)
    pub fn destroy(&self) -> ZxResult {
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let parent = match tree.node(self.id) {
            Ok(node) => node.parent,
            Err(status) => {
                drop(tree);
                batch.finish(platform);
                return Err(status);
            }
        };
        if let Some(parent) = parent {
            if let Ok(node) = tree.node_mut(parent) {
                if let Some(region) = node.child_at(self.base) {
                    debug_assert!(matches!(region.kind(), RegionKind::Vmar(id) if *id == self.id));
                    node.unlink(&region);
                }
            }
        }
        let mut scratch = RangeScratch::take(&mut tree);
        tree.destroy_subtree(&self.aspace, self.id, &mut scratch.vmar_ids, &mut batch);
        scratch.put(&mut tree);
        drop(tree);
        batch.finish(platform);
        Ok(())
    }

    /// `ZX_VMAR_OP_DECOMMIT` over `[addr, addr + len)`, after the syscall checked the handle,
    /// the arguments and the rights: checks 5 to 10 of the contract, in its order, all before
    /// anything changes; then decommits the VMO pages behind every mapping in the range, looking
    /// through nested VMARs, from every mapping of those pages in every address space.
    pub fn decommit(&self, addr: u64, len: u64) -> ZxResult {
        // 5 to 8: the rounding and alignment, a live VMAR, inside it, every page mapped.
        const RULES: RangeRules = RangeRules {
            overflow: Status::OutOfRange,
            outside: Status::OutOfRange,
            gap: Status::BadState,
        };
        self.range_op(addr, len, &RULES, |range| {
            // 9. Every mapping could be writable.
            let writable = |c: &Covered| c.mapping().can_map().contains(VmOptions::CAN_MAP_WRITE);
            if !range.covered.iter().all(writable) {
                return Err(Status::AccessDenied);
            }
            // 10. Every VMO supports decommit (under its lock: a snapshot may share its pages
            // meanwhile), and no page is pinned.
            let locked = HeldVmos::lock_covered(range.covered, range.vmos);
            if !locked
                .vmos
                .iter()
                .all(|vmo| vmo.supports_decommit_locked(locked.inner(vmo)))
            {
                return Err(Status::NotSupported);
            }
            for c in range.covered {
                let (first, last) = c.vmo_pages();
                if Vmo::any_pinned_locked(locked.inner(c.mapping().vmo()), first, last) {
                    return Err(Status::BadState);
                }
            }
            // Every check passed: now change things, once per run of adjacent VMO pages (a VMO
            // mapped piecewise side by side is decommitted in one pass over its mapping list).
            let mut covered = range.covered.iter().peekable();
            while let Some(c) = covered.next() {
                let vmo = c.mapping().vmo();
                let (first, mut last) = c.vmo_pages();
                while let Some(next) = covered.peek() {
                    let (next_first, next_last) = next.vmo_pages();
                    if !Arc::ptr_eq(next.mapping().vmo(), vmo) || next_first != last {
                        break;
                    }
                    last = next_last;
                    covered.next();
                }
                vmo.decommit_locked(locked.inner(vmo), first, last, range.batch);
            }
            Ok(())
        })
    }
}

/// Several VMO locks held at once, taken in koid order (the lock order), without a list of
/// guards: each lock stays held from [`HeldVmos::lock`] until the value drops.
pub(super) struct HeldVmos<'a> {
    /// Sorted by koid, no duplicates.
    pub(super) vmos: &'a [Arc<Vmo>],
}

impl<'a> HeldVmos<'a> {
    /// Locks the VMOs of the `covered` mappings, listing them in `vmos` (sorted by koid, each
    /// once).
    pub(super) fn lock_covered(covered: &[Covered], vmos: &'a mut Vec<Arc<Vmo>>) -> Self {
        vmos.extend(covered.iter().map(|c| c.mapping().vmo().clone()));
        vmos.sort_unstable_by_key(|vmo| vmo.koid());
        vmos.dedup_by_key(|vmo| vmo.koid());
        Self::lock(vmos)
    }

    fn lock(vmos: &'a [Arc<Vmo>]) -> Self {
        for vmo in vmos {
            vmo.lock_held();
        }
        HeldVmos { vmos }
    }

    /// The state of `vmo`, one of the locked VMOs.
    #[allow(clippy::mut_from_ref)] // one VMO's state at a time: see the SAFETY argument
    pub(super) fn inner<'v>(&self, vmo: &'v Vmo) -> &'v mut VmoInner {
        debug_assert!(self
            .vmos
            .binary_search_by_key(&vmo.koid(), |v| v.koid())
            .is_ok());
        // SAFETY: `vmo` is one of `self.vmos`, whose locks this value holds until it drops; the
        // callers use each returned reference only until they ask for the next one, so no two
        // references to one VMO's state are alive at once.
        unsafe { vmo.held_inner() }
    }
}

impl Drop for HeldVmos<'_> {
    fn drop(&mut self) {
        for vmo in self.vmos.iter().rev() {
            // SAFETY: `lock` took this lock and forgot its guard; no reference from `inner`
            // outlives this value.
            unsafe { vmo.unlock_held() };
        }
    }
}
