//! The model's VMO calls, and its VMOs' pages.

use super::*;

impl Model {
    pub(super) fn new_vmo(&mut self, kind: MKind, pages: u64) -> usize {
        let data = match kind {
            MKind::Paged => BTreeMap::new(),
            MKind::Contiguous | MKind::Physical => (0..pages).map(|i| (i, zero_page())).collect(),
        };
        self.vmos.push(MVmo {
            kind,
            resizable: false,
            pages,
            data,
            pins: BTreeMap::new(),
            alias: None,
            parent: None,
            cow_clone: false,
            tree: None,
            foreign: BTreeSet::new(),
            depth: 0,
            large: false,
        });
        self.vmos.len() - 1
    }

    /// `zx_vmo_create`: a paged VMO, size rounded up to pages (0 allowed); `ZX_VMO_RESIZABLE`
    /// makes it resizable and adds `ZX_RIGHT_RESIZE` to the handle.
    pub fn vmo_create(&mut self, p: usize, size: u64, options: u32, new: zx_handle_t) -> R {
        if options & !(ZX_VMO_RESIZABLE | ZX_VMO_DISCARDABLE) != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if options & ZX_VMO_DISCARDABLE != 0 {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size > MAX_VMO_SIZE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        // A VMO whose handle cannot be added is dropped again: nothing changes.
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Paged, size / PAGE);
        let resizable = options & ZX_VMO_RESIZABLE != 0;
        self.vmos[id].resizable = resizable;
        let rights = ZX_DEFAULT_VMO_RIGHTS | if resizable { ZX_RIGHT_RESIZE } else { 0 };
        self.add_handle(p, Obj::Vmo(id), rights, new)
    }

    /// `zx_vmo_set_size`: WRITE, then RESIZE if the VMO is resizable; a fixed VMO is
    /// UNAVAILABLE. A shrink takes the pages past the end (none may be pinned) and zeroes the
    /// bytes past `size` in the last page. A reference resizes its target (a slice is never
    /// resizable).
    pub fn vmo_set_size(&mut self, p: usize, h: zx_handle_t, size: u64) -> R {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_WRITE)?;
        if self.vmos[vmo].resizable {
            need(rights, ZX_RIGHT_RESIZE)?;
        } else {
            return Err(ZX_ERR_UNAVAILABLE);
        }
        let rounded = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if rounded > MAX_VMO_SIZE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        let vmo = self.vmos[vmo].alias.map_or(vmo, |alias| alias.target);
        let (new, old) = (rounded / PAGE, self.vmos[vmo].pages);
        if let Some(tree) = self.vmos[vmo].tree {
            record("tree", "resized");
            let shed = self.vmos[vmo]
                .data
                .range(new..)
                .map(|(_, page)| page.clone());
            self.shed.entry(tree).or_default().extend(shed);
        }
        if new < old && self.any_pinned(vmo, new, old) {
            return Err(ZX_ERR_BAD_STATE);
        }
        self.decommit_pages(vmo, new, old);
        if size % PAGE != 0 && size < old * PAGE {
            self.zero_committed_bytes(vmo, size, rounded.min(old * PAGE));
        }
        self.vmos[vmo].pages = new;
        Ok(())
    }

    /// `ZX_VMO_OP_ZERO` on `[offset, offset + len)`, rights checked: whole unpinned pages of a
    /// paged VMO leave it, everything else in the range is written over where committed. A VMO
    /// of a snapshot family gives no page back (a parent's would show through): it writes over
    /// every page it has in the range, which become its own.
    fn vmo_zero(&mut self, vmo: usize, offset: u64, len: u64) -> R {
        let end = offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if end > self.vmos[vmo].pages * PAGE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        if self.vmos[vmo].kind == MKind::Physical {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        self.zero_committed_bytes(vmo, offset, end);
        if !self.leave_family_if_alone(vmo) {
            record("tree", "zero writes over shared pages");
        } else if self.vmos[vmo].kind == MKind::Paged {
            for index in offset.div_ceil(PAGE)..end / PAGE {
                if !self.vmos[vmo].pins.contains_key(&index) {
                    self.vmos[vmo].data.remove(&index);
                }
            }
        }
        Ok(())
    }

    /// Writes zeroes over `[start, end)` where the VMO's pages are committed (nothing for an
    /// empty range: the crate's ZERO of nothing leaves a shared page shared).
    fn zero_committed_bytes(&mut self, vmo: usize, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let committed: Vec<u64> = self.vmos[vmo]
            .data
            .range(start / PAGE..end.div_ceil(PAGE))
            .map(|(&i, _)| i)
            .collect();
        for index in committed {
            let from = start.max(index * PAGE) - index * PAGE;
            let to = end.min((index + 1) * PAGE) - index * PAGE;
            self.commit_page(vmo, index)[from as usize..to as usize].fill(0);
        }
    }

    /// A contiguous VMO made by the kernel and handed to `p` with the default VMO rights.
    pub fn vmo_create_contiguous(&mut self, p: usize, size: u64, new: zx_handle_t) -> R {
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size == 0 || size > MAX_VMO_SIZE {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Contiguous, size / PAGE);
        self.add_handle(p, Obj::Vmo(id), ZX_DEFAULT_VMO_RIGHTS, new)
    }

    /// A paged VMO with large pages (`Vmo::create_large_pages`) made by the kernel and handed to
    /// `p` with the default VMO rights: not resizable.
    pub fn vmo_create_large_pages(&mut self, p: usize, size: u64, new: zx_handle_t) -> R {
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size > MAX_VMO_SIZE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Paged, size / PAGE);
        self.vmos[id].large = true;
        self.add_handle(p, Obj::Vmo(id), ZX_DEFAULT_VMO_RIGHTS, new)
    }

    /// The run a fault on uncommitted page `index` of `vmo` commits whole, if it commits one: the
    /// aligned [`RUN_PAGES`] around it, where the VMO has large pages and is in no snapshot
    /// family, the run lies inside the VMO and none of its pages is committed, and the machine
    /// has a run of frames (`commit_run_locked` in `src/vmo/large.rs`).
    pub(super) fn fault_run(&self, vmo: usize, index: u64) -> Option<(u64, u64)> {
        let v = &self.vmos[vmo];
        let first = index - index % RUN_PAGES;
        let last = first + RUN_PAGES;
        let commits = v.large
            && v.tree.is_none()
            && self.run_available
            && last <= v.pages
            && v.data.range(first..last).next().is_none();
        commits.then_some((first, last))
    }

    /// A physical VMO (over frames the harness owns, zeroed) handed to `p` with the default VMO
    /// rights.
    pub fn vmo_create_physical(&mut self, p: usize, pages: u64, new: zx_handle_t) -> R {
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Physical, pages);
        self.add_handle(p, Obj::Vmo(id), ZX_DEFAULT_VMO_RIGHTS, new)
    }

    /// `[offset, offset + len)` as pages `[first, last)`: `ZX_ERR_OUT_OF_RANGE` unless inside the
    /// VMO; an empty range is no page.
    pub(super) fn page_range(&self, vmo: usize, offset: u64, len: u64) -> R<(u64, u64)> {
        let end = offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if end > self.vmos[vmo].pages * PAGE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        if len == 0 {
            return Ok((offset / PAGE, offset / PAGE));
        }
        Ok((offset / PAGE, end.div_ceil(PAGE)))
    }

    pub(super) fn read_bytes(&self, vmo: usize, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let (index, from) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE_BYTES - from).min(len - done);
            if let Some(page) = self.vmos[vmo].data.get(&index) {
                out[done..done + n].copy_from_slice(&page[from..from + n]);
            }
            done += n;
        }
        out
    }

    /// Page `index` of `vmo`, committed if it was not, to be written: the VMO's own from now on
    /// (a page shared with a snapshot relative is copied).
    pub(super) fn commit_page(&mut self, vmo: usize, index: u64) -> &mut [u8; PAGE_BYTES] {
        let v = &mut self.vmos[vmo];
        v.foreign.remove(&index);
        Arc::make_mut(v.data.entry(index).or_insert_with(zero_page))
    }

    pub(super) fn write_bytes(&mut self, vmo: usize, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, to) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE_BYTES - to).min(data.len() - done);
            self.commit_page(vmo, index)[to..to + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Commits pages `[first, last)` (nothing to do unless paged). More new pages than the
    /// machine has frames cannot be committed: `ZX_ERR_NO_MEMORY`, before anything changes (the
    /// crate gives back what it took). The check also keeps the model from building a page per
    /// page of a huge VMO's range.
    pub(super) fn commit_range(&mut self, vmo: usize, first: u64, last: u64) -> R {
        if self.vmos[vmo].kind != MKind::Paged || first >= last {
            return Ok(());
        }
        let present = self.vmos[vmo].data.range(first..last).count() as u64;
        if last - first - present > self.frames {
            return Err(ZX_ERR_NO_MEMORY);
        }
        for index in first..last {
            self.commit_page(vmo, index);
        }
        Ok(())
    }

    pub(super) fn any_pinned(&self, vmo: usize, first: u64, last: u64) -> bool {
        first < last && self.vmos[vmo].pins.range(first..last).next().is_some()
    }

    /// Takes pages `[first, last)` (clamped to the VMO) out of a paged VMO.
    pub(super) fn decommit_pages(&mut self, vmo: usize, first: u64, last: u64) {
        let last = last.min(self.vmos[vmo].pages);
        if first < last {
            let doomed: Vec<u64> = self.vmos[vmo]
                .data
                .range(first..last)
                .map(|(&i, _)| i)
                .collect();
            for index in doomed {
                self.vmos[vmo].data.remove(&index);
                self.vmos[vmo].foreign.remove(&index);
            }
        }
    }

    /// `zx_vmo_read`: needs `ZX_RIGHT_READ`; uncommitted pages read as zero (and stay so).
    pub fn vmo_read(&self, p: usize, h: zx_handle_t, offset: u64, len: usize) -> R<Vec<u8>> {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_READ)?;
        if self.vmos[vmo].kind == MKind::Physical {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        let (vmo, offset) = self.forward(vmo, offset, len as u64)?;
        self.page_range(vmo, offset, len as u64)?;
        Ok(self.read_bytes(vmo, offset, len))
    }

    /// `zx_vmo_write`: needs `ZX_RIGHT_WRITE`; commits the pages it touches.
    pub fn vmo_write(&mut self, p: usize, h: zx_handle_t, offset: u64, data: &[u8]) -> R {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_WRITE)?;
        if self.vmos[vmo].kind == MKind::Physical {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        let (vmo, offset) = self.forward(vmo, offset, data.len() as u64)?;
        self.page_range(vmo, offset, data.len() as u64)?;
        self.write_bytes(vmo, offset, data);
        Ok(())
    }

    /// `zx_vmo_op_range`: COMMIT (rounds out to pages) and DECOMMIT (page aligned), both needing
    /// `ZX_RIGHT_WRITE`; other defined ops are not supported, undefined ones invalid.
    #[allow(clippy::too_many_arguments)]
    pub fn vmo_op_range(
        &mut self,
        p: usize,
        h: zx_handle_t,
        op: u32,
        offset: u64,
        size: u64,
        buffer: u64,
        buffer_size: usize,
    ) -> R {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        if buffer != 0 || buffer_size != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        match op {
            ZX_VMO_OP_COMMIT => {
                need(rights, ZX_RIGHT_WRITE)?;
                let (vmo, offset) = self.forward(vmo, offset, size)?;
                let (first, last) = self.page_range(vmo, offset, size)?;
                self.commit_range(vmo, first, last)
            }
            ZX_VMO_OP_DECOMMIT => {
                need(rights, ZX_RIGHT_WRITE)?;
                if !aligned(offset) || !aligned(size) {
                    return Err(ZX_ERR_INVALID_ARGS);
                }
                let (vmo, offset) = self.forward(vmo, offset, size)?;
                let (first, last) = self.page_range(vmo, offset, size)?;
                if !self.supports_decommit(vmo) {
                    return Err(ZX_ERR_NOT_SUPPORTED);
                }
                if self.any_pinned(vmo, first, last) {
                    return Err(ZX_ERR_BAD_STATE);
                }
                self.decommit_pages(vmo, first, last);
                Ok(())
            }
            ZX_VMO_OP_ZERO => {
                need(rights, ZX_RIGHT_WRITE)?;
                let (vmo, offset) = self.forward(vmo, offset, size)?;
                self.vmo_zero(vmo, offset, size)
            }
            1..=4 | 6..=14 => Err(ZX_ERR_NOT_SUPPORTED),
            _ => Err(ZX_ERR_INVALID_ARGS),
        }
    }

    /// `zx_vmo_get_size`: needs no right.
    pub fn vmo_get_size(&self, p: usize, h: zx_handle_t) -> R<u64> {
        let (vmo, _) = self.vmo_handle(p, h)?;
        Ok(self.size_pages(vmo) * PAGE)
    }

    /// `zx_object_get_info(ZX_INFO_VMO)`: needs no right (Zircon).
    pub fn vmo_info(&self, p: usize, h: zx_handle_t) -> R<MInfo> {
        let (vmo, _) = self.vmo_handle(p, h)?;
        Ok(self.info(vmo))
    }

    /// A VMO's size, committed bytes, mapping count and lineage.
    pub fn info(&self, vmo: usize) -> MInfo {
        let live = self.live_vmos();
        let (low, high) = self.committed_bounds(vmo, &live);
        let v = &self.vmos[vmo];
        MInfo {
            size_bytes: self.size_pages(vmo) * PAGE,
            committed_bytes: (low * PAGE, high * PAGE),
            num_mappings: self.mapping_counts().get(&vmo).copied().unwrap_or(0),
            num_children: live
                .iter()
                .filter(|&&id| self.vmos[id].parent == Some(vmo))
                .count() as u64,
            parent: v.parent,
            cow_clone: v.cow_clone,
        }
    }

    /// Pages a VMO reports as committed, at least: all its pages, for a VMO alone; those it did
    /// not get from a snapshot relative (or wrote since), for one of a snapshot family.
    pub fn committed_pages(&self, vmo: usize) -> u64 {
        let v = &self.vmos[vmo];
        if v.alias.is_some() {
            return 0;
        }
        match v.kind {
            MKind::Paged => (v.data.len() - v.foreign.len()) as u64,
            MKind::Contiguous => v.pages,
            MKind::Physical => 0,
        }
    }

    /// Kernel-side `Vmo::pin` (page-aligned, non-empty): commits the pages and pins them.
    pub fn pin(&mut self, p: usize, h: zx_handle_t, offset: u64, len: u64) -> R {
        let (vmo, _) = self.vmo_handle(p, h)?;
        if !aligned(offset) || !aligned(len) || len == 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let (vmo, offset) = self.forward(vmo, offset, len)?;
        let (first, last) = self.page_range(vmo, offset, len)?;
        self.commit_range(vmo, first, last)?;
        for index in first..last {
            *self.vmos[vmo].pins.entry(index).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Kernel-side `Vmo::unpin`: every page must be pinned (`ZX_ERR_BAD_STATE`).
    pub fn unpin(&mut self, p: usize, h: zx_handle_t, offset: u64, len: u64) -> R {
        let (vmo, _) = self.vmo_handle(p, h)?;
        if !aligned(offset) || !aligned(len) || len == 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let (vmo, offset) = self.forward(vmo, offset, len)?;
        let (first, last) = self.page_range(vmo, offset, len)?;
        if (first..last).any(|i| !self.vmos[vmo].pins.contains_key(&i)) {
            return Err(ZX_ERR_BAD_STATE);
        }
        for index in first..last {
            let count = self.vmos[vmo].pins.get_mut(&index).expect("checked");
            *count -= 1;
            if *count == 0 {
                self.vmos[vmo].pins.remove(&index);
            }
        }
        Ok(())
    }
}
