//! Large pages: paged VMOs that commit aligned 2 MiB runs, and the runs any VMO offers a large
//! leaf (a contiguous or physical VMO's frames, a large-page VMO's committed runs).

use super::*;
use crate::arch::entry_span;

impl Vmo {
    /// A paged VMO of `size` bytes that commits in runs of 512 pages (2 MiB) where the platform
    /// has them ([`Platform::alloc_aligned_run`]), and 4 KiB pages where it has not.
    ///
    /// - A fault commits the whole aligned run around its page when none of the run's pages is
    ///   committed and the run lies inside the VMO; `ZX_VMO_OP_COMMIT`, `zx_vmo_write` and a pin
    ///   commit so the runs their range covers wholly. Reads of uncommitted pages commit too (no
    ///   zero page).
    /// - A mapping maps each committed run with one 2 MiB leaf where its address is aligned
    ///   alike (on fault, and at `ZX_VM_MAP_RANGE`).
    /// - `ZX_VMO_OP_DECOMMIT` of a whole run clears that one leaf in each mapping and gives the
    ///   run back whole ([`Platform::free_runs`], up to 64 runs a call); one of part of a run
    ///   splits the leaf (or, with no frame for the new table, clears it whole: the rest faults
    ///   back in) and frees only the pages decommitted.
    ///
    /// Kernel use only: no `zx_vmo_create` option asks for it. A VMO that takes part in
    /// copy-on-write (a snapshot parent or child) commits and maps 4 KiB pages.
    pub fn create_large_pages(platform: Arc<dyn Platform>, size: u64) -> ZxResult<Arc<Vmo>> {
        let size = page_round_up(size).ok_or(Status::OutOfRange)?;
        if size > MAX_VMO_SIZE {
            return Err(Status::OutOfRange);
        }
        let mut vmo = Self::build(platform, size, VmoKind::Paged, false, None);
        vmo.large_pages = true;
        Ok(Arc::new(vmo))
    }

    /// Whether the VMO commits in 2 MiB runs ([`Vmo::create_large_pages`]).
    pub fn has_large_pages(&self) -> bool {
        self.large_pages
    }

    /// Commits the aligned run of [`CHUNK_PAGES`] pages around page `index` in one allocation,
    /// where the VMO has large pages, none of the run's pages is committed, the run lies inside
    /// the VMO and the platform has a run: its first frame. `None` changes nothing.
    pub(crate) fn commit_run_locked(&self, inner: &mut VmoInner, index: u64) -> Option<PhysAddr> {
        if !self.large_pages || inner.cow.is_some() {
            return None;
        }
        let first = index - index % CHUNK_PAGES;
        let last = first + CHUNK_PAGES;
        if last > self.size() >> PAGE_SHIFT
            || inner.pages.iter_range(first, last).next().is_some()
            || inner.zero_mapped.range(first..last).next().is_some()
        {
            return None;
        }
        let base = self.platform.alloc_aligned_run(CHUNK_PAGES as usize)?;
        let end = PhysAddr(base.0 + ((CHUNK_PAGES - 1) << PAGE_SHIFT));
        if base.0 % entry_span(1) != 0 || !PageList::can_hold(end) {
            // SAFETY: allocated just now and never mapped or recorded anywhere.
            unsafe { self.platform.free_run(base, CHUNK_PAGES as usize) };
            return None;
        }
        for i in 0..CHUNK_PAGES {
            zero_frame(&*self.platform, PhysAddr(base.0 + (i << PAGE_SHIFT)));
        }
        inner.pages.insert_run(first, base);
        Some(base)
    }

    /// Where a mapping of `len` bytes from `offset` should start for large leaves to map it: the
    /// alignment (the largest leaf span that the length reaches and the platform allows) and
    /// the address modulo that alignment which lines the VMO's runs up with it. `None` for a VMO
    /// that never offers a run.
    pub(crate) fn leaf_alignment(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let phys = match self.kind {
            VmoKind::Contiguous { base } | VmoKind::Physical { base } => base.0,
            VmoKind::Paged if self.large_pages => 0,
            VmoKind::Paged => return None,
        };
        let max = match self.kind {
            VmoKind::Paged => 1,
            _ => 2,
        };
        let level = (1..=max.min(self.platform.max_leaf_level()))
            .rev()
            .find(|&level| len >= entry_span(level))?;
        let align = entry_span(level);
        Some((align, phys.wrapping_add(offset) & (align - 1)))
    }

    /// The first frame of pages `[index, index + pages)`, where they are one run of frames
    /// aligned to the span of a leaf at `level` (1: 2 MiB, 2: 1 GiB) that such a leaf may map:
    /// a contiguous or physical VMO's frames, or a committed run of a VMO with large pages
    /// (2 MiB only) that shares nothing with a snapshot relative.
    pub(crate) fn large_run_locked(
        &self,
        inner: &VmoInner,
        index: u64,
        level: usize,
    ) -> Option<PhysAddr> {
        let span = entry_span(level);
        let pages = span >> PAGE_SHIFT;
        if index.checked_add(pages)? > self.size() >> PAGE_SHIFT {
            return None;
        }
        match self.kind {
            VmoKind::Contiguous { base } | VmoKind::Physical { base } => {
                let pa = base.0 + (index << PAGE_SHIFT);
                (pa % span == 0).then_some(PhysAddr(pa))
            }
            VmoKind::Paged => {
                if !self.large_pages || level != 1 || inner.cow.is_some() {
                    return None;
                }
                inner.pages.run_at(index)
            }
        }
    }
}
