//! The model's VMAR calls: allocate, map, unmap, protect, destroy, op_range.

use super::*;

impl Model {
    /// `zx_vmar_allocate`. Each `ZX_VM_CAN_MAP_*` asked for needs its right on the parent handle
    /// and its flag on the parent VMAR; the new handle gets the default VMAR rights plus those
    /// rights. Placement is first fit unless `ZX_VM_SPECIFIC`.
    pub fn vmar_allocate(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: zx_vm_option_t,
        offset: u64,
        size: u64,
        new: zx_handle_t,
    ) -> R<u64> {
        let (parent, rights) = self.vmar_handle(p, h)?;
        if options & !ALL_VM_OPTIONS != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let granted = rights_for_perms(perms_for_can_map(options));
        need(rights, granted)?;
        let allowed = CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC | ZX_VM_SPECIFIC | ZX_VM_COMPACT;
        if options & !allowed != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // Zircon: the size is not rounded up (InvalidArgsTest).
        if size == 0 || !aligned(size) || !aligned(offset) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if !self.vmars[parent].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let flags = options & (CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC);
        // Only read, write and execute are inherited rights; CAN_MAP_SPECIFIC is the child's own.
        if flags & CAN_MAP_RWX & !self.vmars[parent].flags != 0 {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        let base = if options & ZX_VM_SPECIFIC != 0 {
            if self.vmars[parent].flags & ZX_VM_CAN_MAP_SPECIFIC == 0 {
                return Err(ZX_ERR_ACCESS_DENIED);
            }
            let (start, end) = self
                .sub_range(parent, offset, size)
                .ok_or(ZX_ERR_INVALID_ARGS)?;
            if self.overlaps(parent, start, end) {
                return Err(ZX_ERR_ALREADY_EXISTS);
            }
            start
        } else {
            if offset != 0 {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            // Zircon: larger than the parent is INVALID_ARGS (AllocateUnsatisfiableTest).
            if size > self.vmars[parent].size {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            self.find_gap(parent, size).ok_or(ZX_ERR_NO_RESOURCES)?
        };
        // A child no handle could name is taken back: nothing changes.
        self.has_room(p)?;
        let id = self.vmars.len();
        self.vmars.push(MVmar {
            aspace: self.vmars[parent].aspace,
            base,
            size,
            flags,
            parent: Some(parent),
            children: Vec::new(),
            alive: true,
        });
        self.insert_child(parent, MChild::Vmar(id));
        self.add_handle(p, Obj::Vmar(id), ZX_DEFAULT_VMAR_RIGHTS | granted, new)?;
        Ok(base)
    }

    /// `zx_vmar_map`. The VMO handle needs `ZX_RIGHT_MAP`; each `ZX_VM_PERM_*` needs its right on
    /// both handles and its `ZX_VM_CAN_MAP_*` on the VMAR. The mapping may later be given any
    /// permission both handles had the rights for and the VMAR could map.
    #[allow(clippy::too_many_arguments)]
    pub fn vmar_map(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: zx_vm_option_t,
        vmar_offset: u64,
        vmo_h: zx_handle_t,
        vmo_offset: u64,
        len: u64,
    ) -> R<u64> {
        let (vmar, vmar_rights) = self.vmar_handle(p, h)?;
        let (vmo, vmo_rights) = self.vmo_handle(p, vmo_h)?;
        need(vmo_rights, ZX_RIGHT_MAP)?;
        // Zircon: write without read is refused right after the MAP right.
        if options & !ALL_VM_OPTIONS != 0 || !valid_perms(options & PERMS) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if options & (CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC) != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let both = vmar_rights & vmo_rights;
        let perms = options & PERMS;
        need(both, rights_for_perms(perms))?;
        let allowed = PERMS
            | ZX_VM_SPECIFIC
            | ZX_VM_SPECIFIC_OVERWRITE
            | ZX_VM_MAP_RANGE
            | ZX_VM_ALLOW_FAULTS
            | ZX_VM_REQUIRE_NON_RESIZABLE;
        if options & !allowed != 0 || !valid_perms(perms) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // Zircon: an overwrite cannot also map the range at once.
        let overwrite = options & ZX_VM_SPECIFIC_OVERWRITE != 0;
        if overwrite && options & ZX_VM_MAP_RANGE != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if len == 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // Zircon: a length that rounds up past 2^64 is OUT_OF_RANGE (InvalidArgsTest).
        let len = round_up(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if !aligned(vmar_offset) || !aligned(vmo_offset) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        vmo_offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        let v = &self.vmars[vmar];
        if !v.alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let vmar_perms = perms_for_can_map(v.flags);
        if perms & !vmar_perms != 0 {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        let max_perms = perms_for_rights(both) & vmar_perms;
        // After the permission checks, before placement (and its CAN_MAP_SPECIFIC check): a
        // resizable VMO when the caller asked for a fixed one.
        if options & ZX_VM_REQUIRE_NON_RESIZABLE != 0 && self.vmos[vmo].resizable {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        // A slice or reference maps the VMO underneath it.
        let (vmo, vmo_offset) = self.map_target(vmo, vmo_offset, len)?;
        let base = self.place_mapping(vmar, options, vmar_offset, len)?;
        // ZX_VM_MAP_RANGE only prefaults translations: nothing the model can see.
        self.insert_child(
            vmar,
            MChild::Map(MMapping {
                base,
                len,
                vmo,
                vmo_offset,
                perms,
                max_perms,
            }),
        );
        Ok(base)
    }

    /// Where a mapping of `len` bytes goes in `vmar`: `ZX_VM_SPECIFIC` (or an overwrite, which
    /// unmaps what is there first) at `vmar_offset`, else first fit.
    fn place_mapping(
        &mut self,
        vmar: usize,
        options: zx_vm_option_t,
        vmar_offset: u64,
        len: u64,
    ) -> R<u64> {
        if options & (ZX_VM_SPECIFIC | ZX_VM_SPECIFIC_OVERWRITE) != 0 {
            if self.vmars[vmar].flags & ZX_VM_CAN_MAP_SPECIFIC == 0 {
                return Err(ZX_ERR_ACCESS_DENIED);
            }
            let (start, end) = self
                .sub_range(vmar, vmar_offset, len)
                .ok_or(ZX_ERR_INVALID_ARGS)?;
            if self.overlaps(vmar, start, end) {
                if options & ZX_VM_SPECIFIC_OVERWRITE == 0 {
                    return Err(ZX_ERR_ALREADY_EXISTS);
                }
                // An overwrite replaces mappings, never sub-VMARs (Zircon: INVALID_ARGS for any
                // sub-VMAR in the range).
                self.unmap_range(vmar, start, end, false)?;
            }
            Ok(start)
        } else {
            if vmar_offset != 0 {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            // Zircon: longer than the VMAR is INVALID_ARGS, before any search.
            if len > self.vmars[vmar].size {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            self.find_gap(vmar, len).ok_or(ZX_ERR_NO_RESOURCES)
        }
    }

    /// `zx_vmar_unmap`: needs no right. Removes the mappings in the range (splitting those that
    /// straddle its ends) and destroys sub-VMARs wholly inside it; a sub-VMAR partly inside is
    /// `ZX_ERR_INVALID_ARGS`.
    pub fn vmar_unmap(&mut self, p: usize, h: zx_handle_t, addr: u64, len: u64) -> R {
        let (vmar, _) = self.vmar_handle(p, h)?;
        let len = round_up(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        if len == 0 || !aligned(addr) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if !self.vmars[vmar].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let end = addr.checked_add(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        let v = &self.vmars[vmar];
        if addr < v.base || end > v.end() {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        self.unmap_range(vmar, addr, end, true)
    }

    /// `zx_vmar_protect`: each `ZX_VM_PERM_*` needs its right on the handle; the range must be
    /// wholly mapped (looking through sub-VMARs: `ZX_ERR_NOT_FOUND`), and each mapping must be
    /// allowed the permissions (`ZX_ERR_ACCESS_DENIED`).
    pub fn vmar_protect(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: zx_vm_option_t,
        addr: u64,
        len: u64,
    ) -> R {
        let (vmar, rights) = self.vmar_handle(p, h)?;
        if options & !ALL_VM_OPTIONS != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        need(rights, rights_for_perms(options & PERMS))?;
        if options & !PERMS != 0 || !valid_perms(options) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let len = round_up(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        if len == 0 || !aligned(addr) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if !self.vmars[vmar].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let end = addr.checked_add(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        let v = &self.vmars[vmar];
        if addr < v.base || end > v.end() {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let covered = self.covering(vmar, addr, end).ok_or(ZX_ERR_NOT_FOUND)?;
        if covered
            .iter()
            .any(|&(v, lo, _)| options & !self.piece_at(v, lo).max_perms != 0)
        {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        let mut vmos = Vec::new();
        for &(v, lo, hi) in &covered {
            self.split(v, lo);
            self.split(v, hi);
            for child in &mut self.vmars[v].children {
                if let MChild::Map(m) = child {
                    if m.base >= lo && m.base < hi {
                        m.perms = options;
                        vmos.push(m.vmo);
                    }
                }
            }
        }
        // As the crate: a VMO whose snapshot relatives all died leaves its family here.
        for vmo in vmos {
            self.leave_family_if_alone(vmo);
        }
        Ok(())
    }

    /// `zx_vmar_destroy`: needs `ZX_RIGHT_OP_CHILDREN`.
    pub fn vmar_destroy(&mut self, p: usize, h: zx_handle_t) -> R {
        let (vmar, rights) = self.vmar_handle(p, h)?;
        need(rights, ZX_RIGHT_OP_CHILDREN)?;
        if self.vmars[vmar].parent.is_none() && !ROOT_VMAR_DESTROY_ALLOWED {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        if !self.vmars[vmar].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        if let Some(parent) = self.vmars[vmar].parent {
            self.vmars[parent]
                .children
                .retain(|c| !matches!(c, MChild::Vmar(id) if *id == vmar));
        }
        self.destroy_subtree(vmar);
        Ok(())
    }

    /// `zx_vmar_op_range`, checks in the order of docs/contract.md ("Order of checks"), each before
    /// anything changes; then DECOMMIT of the VMO pages behind every mapping piece in the range.
    #[allow(clippy::too_many_arguments)]
    pub fn vmar_op_range(
        &mut self,
        p: usize,
        h: zx_handle_t,
        op: u32,
        addr: u64,
        size: u64,
        buffer: u64,
        buffer_size: usize,
    ) -> R {
        // 1. A handle, to a VMAR.
        let (vmar, rights) = self.vmar_handle(p, h)?;
        // 2. An empty buffer.
        if buffer != 0 || buffer_size != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // 3. A defined op (1-4, 6-14), and DECOMMIT.
        if !matches!(op, 1..=4 | 6..=14) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if op != ZX_VMAR_OP_DECOMMIT {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        // 4. The handle may write.
        need(rights, ZX_RIGHT_WRITE)?;
        // 5. Size rounded up (overflow: OUT_OF_RANGE); not zero; address aligned.
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size == 0 || !aligned(addr) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // 6. A live VMAR.
        let v = &self.vmars[vmar];
        if !v.alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        // 7. Wholly inside the VMAR, overflow included.
        let end = addr.checked_add(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if addr < v.base || end > v.end() {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        // 8. Every page covered by a mapping, through nested VMARs.
        let covered = self.covering(vmar, addr, end).ok_or(ZX_ERR_BAD_STATE)?;
        let pieces = self.pieces_with_pages(&covered);
        // 9. Every mapping could be writable: made from handles that both had WRITE (a mapping
        //    made read-only by choice, or by protect, still qualifies).
        if pieces
            .iter()
            .any(|(m, _, _)| m.max_perms & ZX_VM_PERM_WRITE == 0)
        {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        // 10. Every VMO supports decommit, in the crate's lock order (the order VMOs were made
        //     in), each checked with the side effect of leaving a snapshot family it is alone in;
        //     then no affected page is pinned.
        let vmos: BTreeSet<usize> = pieces.iter().map(|(m, _, _)| m.vmo).collect();
        for vmo in vmos {
            if !self.supports_decommit(vmo) {
                return Err(ZX_ERR_NOT_SUPPORTED);
            }
        }
        if pieces
            .iter()
            .any(|(m, first, last)| self.any_pinned(m.vmo, *first, *last))
        {
            return Err(ZX_ERR_BAD_STATE);
        }
        // The effect: the pages leave their VMOs (every mapping of them reads zero next).
        for (m, first, last) in pieces {
            self.decommit_pages(m.vmo, first, last);
        }
        Ok(())
    }

    /// Each mapping piece of `covered` with the VMO pages `[first, last)` behind its part of the
    /// range.
    fn pieces_with_pages(&self, covered: &[(usize, u64, u64)]) -> Vec<(MMapping, u64, u64)> {
        covered
            .iter()
            .map(|&(v, lo, hi)| {
                let m = self.piece_at(v, lo).clone();
                let first = (lo - m.base + m.vmo_offset) / PAGE;
                let last = (hi - m.base + m.vmo_offset) / PAGE;
                (m, first, last)
            })
            .collect()
    }
}
