//! The model's VMAR structure (children, placement, splitting, coverage) and its CPUs.

use super::*;

impl Model {
    pub(super) fn span(&self, child: &MChild) -> (u64, u64) {
        match child {
            MChild::Vmar(id) => (self.vmars[*id].base, self.vmars[*id].end()),
            MChild::Map(m) => (m.base, m.base + m.len),
        }
    }

    pub(super) fn insert_child(&mut self, vmar: usize, child: MChild) {
        let base = self.span(&child).0;
        let at = self.vmars[vmar]
            .children
            .iter()
            .position(|c| self.span(c).0 > base)
            .unwrap_or(self.vmars[vmar].children.len());
        self.vmars[vmar].children.insert(at, child);
    }

    pub(super) fn overlaps(&self, vmar: usize, start: u64, end: u64) -> bool {
        self.vmars[vmar].children.iter().any(|c| {
            let (b, e) = self.span(c);
            b < end && e > start
        })
    }

    /// First fit: the lowest address in the VMAR where `size` bytes are free.
    pub(super) fn find_gap(&self, vmar: usize, size: u64) -> Option<u64> {
        let v = &self.vmars[vmar];
        let mut candidate = v.base;
        for child in &v.children {
            let (b, e) = self.span(child);
            if b >= candidate && b - candidate >= size {
                return Some(candidate);
            }
            candidate = candidate.max(e);
        }
        (v.end() - candidate >= size).then_some(candidate)
    }

    /// `[base + offset, base + offset + size)` if it lies inside the VMAR (no overflow).
    pub(super) fn sub_range(&self, vmar: usize, offset: u64, size: u64) -> Option<(u64, u64)> {
        let v = &self.vmars[vmar];
        let start = v.base.checked_add(offset)?;
        let end = start.checked_add(size)?;
        (end <= v.end() && start < end).then_some((start, end))
    }

    /// Splits the mapping piece of `vmar` that strictly contains `va` into two at `va`.
    pub(super) fn split(&mut self, vmar: usize, va: u64) {
        let children = &mut self.vmars[vmar].children;
        let found = children
            .iter()
            .position(|c| matches!(c, MChild::Map(m) if m.base < va && va < m.base + m.len));
        if let Some(i) = found {
            let MChild::Map(lower) = &mut children[i] else {
                unreachable!()
            };
            let delta = va - lower.base;
            let upper = MMapping {
                base: va,
                len: lower.len - delta,
                vmo_offset: lower.vmo_offset + delta,
                ..lower.clone()
            };
            lower.len = delta;
            children.insert(i + 1, MChild::Map(upper));
        }
    }

    /// Marks VMAR `id` and everything below it destroyed; their mappings go.
    pub(super) fn destroy_subtree(&mut self, id: usize) {
        self.vmars[id].alive = false;
        for child in std::mem::take(&mut self.vmars[id].children) {
            if let MChild::Vmar(child) = child {
                self.destroy_subtree(child);
            }
        }
    }

    /// Removes everything in `[start, end)` of `vmar` (inside it): mapping pieces, split at the
    /// ends, and whole sub-VMARs. A sub-VMAR partly inside is `ZX_ERR_INVALID_ARGS`, and so is
    /// any sub-VMAR when `may_destroy_vmars` is false; both are checked before anything changes.
    pub(super) fn unmap_range(
        &mut self,
        vmar: usize,
        start: u64,
        end: u64,
        may_destroy_vmars: bool,
    ) -> R {
        for child in &self.vmars[vmar].children {
            let (b, e) = self.span(child);
            let touched = b < end && e > start;
            if touched
                && matches!(child, MChild::Vmar(_))
                && (b < start || e > end || !may_destroy_vmars)
            {
                return Err(ZX_ERR_INVALID_ARGS);
            }
        }
        self.split(vmar, start);
        self.split(vmar, end);
        let children = std::mem::take(&mut self.vmars[vmar].children);
        let mut kept = Vec::new();
        for child in children {
            let (b, e) = self.span(&child);
            if b < end && e > start {
                if let MChild::Vmar(id) = child {
                    self.destroy_subtree(id);
                }
            } else {
                kept.push(child);
            }
        }
        self.vmars[vmar].children = kept;
        Ok(())
    }

    /// The mapping pieces covering `[start, end)` of `vmar`, looking through nested sub-VMARs,
    /// as `(vmar holding the piece, part of the range it covers)`; `None` if any page of the range
    /// is not covered by a mapping.
    pub(super) fn covering(
        &self,
        vmar: usize,
        start: u64,
        end: u64,
    ) -> Option<Vec<(usize, u64, u64)>> {
        let mut out = Vec::new();
        self.covering_into(vmar, start, end, &mut out)
            .then_some(out)
    }

    pub(super) fn covering_into(
        &self,
        vmar: usize,
        start: u64,
        end: u64,
        out: &mut Vec<(usize, u64, u64)>,
    ) -> bool {
        let mut next = start;
        for child in &self.vmars[vmar].children {
            let (b, e) = self.span(child);
            if e <= start || b >= end {
                continue;
            }
            if b > next {
                return false;
            }
            let (lo, hi) = (start.max(b), end.min(e));
            match child {
                MChild::Vmar(id) => {
                    if !self.covering_into(*id, lo, hi, out) {
                        return false;
                    }
                }
                MChild::Map(_) => out.push((vmar, lo, hi)),
            }
            next = hi;
        }
        next >= end
    }

    /// The mapping piece of `vmar` (not looking into sub-VMARs) that contains `va`.
    pub(super) fn piece_at(&self, vmar: usize, va: u64) -> &MMapping {
        self.vmars[vmar]
            .children
            .iter()
            .find_map(|c| match c {
                MChild::Map(m) if m.base <= va && va < m.base + m.len => Some(m),
                _ => None,
            })
            .expect("a covering piece")
    }

    /// How many mapping pieces of each VMO exist in live VMARs.
    pub fn mapping_counts(&self) -> BTreeMap<usize, u64> {
        let mut counts = BTreeMap::new();
        for vmar in self.vmars.iter().filter(|v| v.alive) {
            for child in &vmar.children {
                if let MChild::Map(m) = child {
                    *counts.entry(m.vmo).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// The VMOs that still exist: named by a handle, mapped, or shown by a live slice or
    /// reference. (A snapshot parent may die before its child, and a child before its parent.)
    pub fn live_vmos(&self) -> BTreeSet<usize> {
        let mut live: BTreeSet<usize> = self.mapping_counts().into_keys().collect();
        for proc in &self.procs {
            for handle in proc.handles.values() {
                if let Obj::Vmo(id) = handle.obj {
                    live.insert(id);
                    if let Some(alias) = self.vmos[id].alias {
                        live.insert(alias.target);
                    }
                }
            }
        }
        live
    }

    // ---- CPUs ------------------------------------------------------------------------------------

    /// The regions of process `p`'s address space, as `(base, size)`: every mapping piece, then
    /// every sub-VMAR, each in address order (looking through sub-VMARs).
    pub fn regions(&self, p: usize) -> Vec<(u64, u64)> {
        let (mut pieces, mut vmars) = (Vec::new(), Vec::new());
        let mut stack = vec![self.procs[p].root];
        while let Some(vmar) = stack.pop() {
            for child in &self.vmars[vmar].children {
                match child {
                    MChild::Map(m) => pieces.push((m.base, m.len)),
                    MChild::Vmar(id) => {
                        vmars.push((self.vmars[*id].base, self.vmars[*id].size));
                        stack.push(*id);
                    }
                }
            }
        }
        pieces.sort_unstable();
        vmars.sort_unstable();
        pieces.extend(vmars);
        pieces
    }

    /// The mapping piece that translates `va` in process `p`'s address space, looking through
    /// sub-VMARs.
    pub(super) fn mapping_at(&self, p: usize, va: u64) -> Result<&MMapping, MFault> {
        let mut vmar = self.procs[p].root;
        if !self.vmars[vmar].alive {
            return Err(MFault::NotMapped);
        }
        loop {
            let child = self.vmars[vmar]
                .children
                .iter()
                .find(|c| {
                    let (b, e) = self.span(c);
                    b <= va && va < e
                })
                .ok_or(MFault::NotMapped)?;
            match child {
                MChild::Vmar(id) => vmar = *id,
                MChild::Map(m) => return Ok(m),
            }
        }
    }

    /// A load (`store == None`) or store of the 8-byte word at `va` by `cpu`, as the MMU and the
    /// page-fault path would do it: a load of an uncommitted page commits a zero page.
    pub fn access(&mut self, cpu: usize, va: u64, store: Option<u64>) -> Result<u64, MFault> {
        let p = self.cpus[cpu].ok_or(MFault::NotMapped)?;
        let mapping = self.mapping_at(p, va)?.clone();
        // Every access needs read permission (no translation is made without it); a store needs
        // write too.
        let needed = ZX_VM_PERM_READ | if store.is_some() { ZX_VM_PERM_WRITE } else { 0 };
        if mapping.perms & needed != needed {
            return Err(MFault::AccessDenied);
        }
        let index = (mapping.vmo_offset + (va - mapping.base)) / PAGE;
        if index >= self.vmos[mapping.vmo].pages {
            return Err(MFault::OutOfRange);
        }
        let at = (va % PAGE) as usize;
        if let Some((first, last)) = self.fault_run(mapping.vmo, index) {
            record("large", "fault commits a run");
            for i in first..last {
                self.commit_page(mapping.vmo, i);
            }
        }
        let v = &self.vmos[mapping.vmo];
        // A large-page VMO's read fault commits: no zero page.
        if store.is_none() && self.zero_page && v.kind == MKind::Paged && !v.large {
            // A load reads the page or the zero page; it commits nothing.
            return Ok(v.data.get(&index).map_or(0, |page| {
                u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"))
            }));
        }
        let Some(value) = store else {
            // A load commits a zero page where there is none; a page shared with a snapshot
            // relative stays shared.
            if !v.data.contains_key(&index) {
                self.commit_page(mapping.vmo, index);
            }
            let page = &self.vmos[mapping.vmo].data[&index];
            return Ok(u64::from_le_bytes(
                page[at..at + 8].try_into().expect("8 bytes"),
            ));
        };
        self.commit_page(mapping.vmo, index)[at..at + 8].copy_from_slice(&value.to_le_bytes());
        Ok(0)
    }

    /// The VMO page that an access at `va` by `cpu` reaches, if it reaches one.
    pub fn fault_target(&self, cpu: usize, va: u64) -> Option<(usize, u64)> {
        let m = self.mapping_at(self.cpus[cpu]?, va).ok()?;
        let index = (m.vmo_offset + (va - m.base)) / PAGE;
        (index < self.vmos[m.vmo].pages).then_some((m.vmo, index))
    }
}
