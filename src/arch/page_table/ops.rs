//! The walker behind one object-safe trait ([`PageTableOps`]) for an address space that does not
//! know its format, its constructors, and the walks and checks that read a table without owning
//! it (translation, the prepared-root check).

use super::*;

/// The page-table operations an address space uses, independent of the format.
///
/// Every method that changes entries records in a [`PendingFlush`] what must be invalidated and
/// which table pages may be freed once it has been.
pub trait PageTableOps: Send {
    /// The format of the entries.
    fn format(&self) -> Format;

    /// The physical address of the root table.
    fn root(&self) -> PhysAddr;

    /// How many table pages the tree holds, its root included (0 once released).
    fn table_pages(&self) -> usize;

    /// Maps the page at `va` to the frame `pa` with `flags`, allocating tables as needed, and
    /// answers whether a valid translation of `va` was there (the caller only replaces one that
    /// maps the same frame, with the same or fewer permissions). A CPU may cache the old one: an
    /// upgrade needs a local invalidation where it faulted (aarch64 keeps a narrower TLB entry
    /// after the fault; x86_64 drops it on the #PF, but an INVLPG there costs little).
    fn map(
        &mut self,
        platform: &dyn Platform,
        va: u64,
        pa: PhysAddr,
        flags: MmuFlags,
    ) -> Result<bool, Status>;

    /// Removes every translation in `[start, end)` (page aligned) and frees the tables emptied.
    fn unmap(&mut self, platform: &dyn Platform, start: u64, end: u64, out: &mut PendingFlush);

    /// Gives every translation in `[start, end)` the permissions `flags`; without
    /// [`MmuFlags::READ`] the translations are removed instead.
    fn protect(
        &mut self,
        platform: &dyn Platform,
        start: u64,
        end: u64,
        flags: MmuFlags,
        out: &mut PendingFlush,
    );

    /// The frame and permissions `va` translates to, if any.
    fn query(&self, platform: &dyn Platform, va: u64) -> Option<(PhysAddr, MmuFlags)>;

    /// Frees the whole tree, the root included, into `out`. The table is empty afterwards and must
    /// not be used again.
    fn release(&mut self, platform: &dyn Platform, out: &mut PendingFlush);

    /// The root slots the tree owns, `first..=last` (those covering its user range).
    fn user_slots(&self) -> (usize, usize);

    /// Gives up the tree without looking below its root: only the root page goes into `out`.
    /// For a root that failed [`check_prepared_root`], whose slots may hold the kernel's tables.
    /// Only right while the tree never mapped anything.
    fn abandon(&mut self, out: &mut PendingFlush);

    /// Calls `f` with every page the user range's root slots translate (each 4 KiB page of a
    /// large leaf too): its address, frame and permissions, in address order. For audits.
    fn for_each_page(&self, platform: &dyn Platform, f: &mut dyn FnMut(u64, PhysAddr, MmuFlags));

    /// Gives the tree its address space's tag, which a split's break-before-make invalidates
    /// under (0 until set).
    fn set_tag(&mut self, tag: u16);

    /// Whether the tree may hold large leaves on `platform` (see [`PageTableOps::map_large`]).
    fn large_leaves(&self, platform: &dyn Platform) -> bool;

    /// Maps `[va, va + entry_span(level))` to the frames from `pa` with one large leaf: `level` 1
    /// for 2 MiB, 2 for 1 GiB, `va` and `pa` aligned to that span. Answers whether the same leaf
    /// was there already. `ZX_ERR_ALREADY_EXISTS` where smaller leaves (or a larger one) are in
    /// the way, and `ZX_ERR_NOT_SUPPORTED` where the format needs break-before-make and the
    /// platform's invalidations are not broadcast: the caller maps 4 KiB pages instead.
    /// `ZX_ERR_NO_MEMORY` changes nothing.
    fn map_large(
        &mut self,
        platform: &dyn Platform,
        va: u64,
        pa: PhysAddr,
        level: usize,
        flags: MmuFlags,
    ) -> Result<bool, Status>;

    /// Splits every large leaf that straddles `start` or `end` into leaves of the next sizes
    /// down, which translate the same, so that a change to `[start, end)` touches no translation
    /// outside it. All or nothing: `ZX_ERR_NO_MEMORY` changes nothing. (An unmap or protect
    /// that meets a straddling leaf splits it too, or, with no frame for the table, removes the
    /// leaf whole.)
    fn split_edges(&mut self, platform: &dyn Platform, start: u64, end: u64) -> Result<(), Status>;

    /// The leaves of the tree, by size.
    fn leaf_counts(&self, platform: &dyn Platform) -> LeafCounts;
}

impl<F: PteFormat> PageTableOps for PageTable<F> {
    fn format(&self) -> Format {
        if F::NAME == crate::arch::Aarch64::NAME {
            Format::Aarch64
        } else {
            Format::X86_64
        }
    }

    fn root(&self) -> PhysAddr {
        self.root
    }

    fn table_pages(&self) -> usize {
        self.tables
    }

    fn map(
        &mut self,
        platform: &dyn Platform,
        va: u64,
        pa: PhysAddr,
        flags: MmuFlags,
    ) -> Result<bool, Status> {
        let (lo, hi) = self.owned_span();
        if va < lo || va >= hi || va & 0xfff != 0 {
            // Never reached through the crate (mappings lie inside the user range); refusing
            // keeps a caller's mistake out of the kernel's tables.
            return Err(Status::InvalidArgs);
        }
        // Follow the tables that exist.
        let mut table_pa = self.root;
        let mut level = ROOT_LEVEL;
        while level > 0 {
            // SAFETY: `table_pa` is a table of this tree, owned exclusively through &mut self.
            let table = unsafe { entries(platform, table_pa) };
            let slot = &table[table_index(va, level)];
            let entry = slot.load(Ordering::Relaxed);
            if F::is_leaf(entry, level) {
                // A large leaf covers the page: it stays if it translates as asked already;
                // otherwise it is split, and the page's own entry set below.
                let span = entry_span(level);
                let mapped = PhysAddr(F::address(entry).0 + (va & (span - 1)));
                let wanted = flags | MmuFlags::READ;
                if mapped == pa && F::page_flags(entry) == wanted {
                    return Ok(true);
                }
                table_pa = self.split_leaf(platform, slot, level, va & !(span - 1))?;
                level -= 1;
                continue;
            }
            if !F::is_table(entry, level) {
                break;
            }
            table_pa = F::address(entry);
            level -= 1;
        }
        if level > 0 {
            table_pa = self.link_missing(platform, va, table_pa, level, 0)?;
        }
        // SAFETY: as above, a level-0 table of this tree.
        let table = unsafe { entries(platform, table_pa) };
        let slot = &table[table_index(va, 0)];
        let old = slot.load(Ordering::Relaxed);
        debug_assert!(
            !F::is_valid(old) || F::address(old) == pa,
            "map() replaced a translation to another frame"
        );
        slot.store(
            F::page_entry_with(pa, flags | MmuFlags::READ, self.attrs),
            Ordering::Release,
        );
        Ok(F::is_valid(old))
    }

    fn unmap(&mut self, platform: &dyn Platform, start: u64, end: u64, out: &mut PendingFlush) {
        let (lo, hi) = self.owned_span();
        let (start, end) = (start.max(lo), end.min(hi));
        if start < end && !self.unmap_in_one_leaf_table(platform, start, end, out) {
            self.unmap_level(platform, self.root, ROOT_LEVEL, start, end, out);
        }
    }

    fn protect(
        &mut self,
        platform: &dyn Platform,
        start: u64,
        end: u64,
        flags: MmuFlags,
        out: &mut PendingFlush,
    ) {
        if !flags.contains(MmuFlags::READ) {
            return self.unmap(platform, start, end, out);
        }
        let (lo, hi) = self.owned_span();
        let (start, end) = (start.max(lo), end.min(hi));
        if start < end {
            self.protect_level(platform, self.root, ROOT_LEVEL, start, end, flags, out);
        }
    }

    fn query(&self, platform: &dyn Platform, va: u64) -> Option<(PhysAddr, MmuFlags)> {
        // SAFETY: the tree is borrowed for the walk, so none of its tables is freed meanwhile.
        unsafe { translate::<F>(platform, self.root, va) }
    }

    fn for_each_page(&self, platform: &dyn Platform, f: &mut dyn FnMut(u64, PhysAddr, MmuFlags)) {
        if self.tables > 0 {
            self.visit_level(platform, self.root, ROOT_LEVEL, 0, f);
        }
    }

    fn release(&mut self, platform: &dyn Platform, out: &mut PendingFlush) {
        if self.tables > 0 {
            // SAFETY: the root is this tree's, owned exclusively through &mut self.
            let root = unsafe { entries(platform, self.root) };
            // Only the slots of the user range: the others are the kernel's
            // (`Platform::prepare_root`), and so is every table below them.
            for slot in &root[self.slots.0..=self.slots.1] {
                let entry = slot.load(Ordering::Relaxed);
                slot.store(0, Ordering::Relaxed);
                if F::is_table(entry, ROOT_LEVEL) {
                    self.release_below(platform, F::address(entry), ROOT_LEVEL - 1, out);
                }
            }
            out.free_table(self.root);
            out.add_all();
            self.tables = 0;
        }
    }

    fn user_slots(&self) -> (usize, usize) {
        self.slots
    }

    fn set_tag(&mut self, tag: u16) {
        self.tag = tag;
    }

    fn large_leaves(&self, platform: &dyn Platform) -> bool {
        Self::large_leaves_allowed(platform)
    }

    fn map_large(
        &mut self,
        platform: &dyn Platform,
        va: u64,
        pa: PhysAddr,
        level: usize,
        flags: MmuFlags,
    ) -> Result<bool, Status> {
        self.map_large_inner(platform, va, pa, level, flags)
    }

    fn split_edges(&mut self, platform: &dyn Platform, start: u64, end: u64) -> Result<(), Status> {
        self.split_edges_inner(platform, start, end)
    }

    fn leaf_counts(&self, platform: &dyn Platform) -> LeafCounts {
        let mut counts = LeafCounts::default();
        if self.tables > 0 {
            self.count_leaves(platform, self.root, ROOT_LEVEL, &mut counts);
        }
        counts
    }

    fn abandon(&mut self, out: &mut PendingFlush) {
        debug_assert!(self.tables <= 1, "abandon() after mapping");
        if self.tables > 0 {
            out.free_table(self.root);
            self.tables = 0;
        }
    }
}

/// Walks the tree at `root` for `va` as an MMU would, without locks: the frame and permissions of
/// its level-0 entry, or `None` where a level is not valid.
///
/// # Safety
/// The tables reachable from `root` stay readable during the walk: either the caller keeps the
/// tree from being freed, or the platform never unmaps freed frames (as the host simulation does;
/// a concurrent change then yields a stale or missing translation, as it would on hardware).
pub unsafe fn translate<F: PteFormat>(
    platform: &dyn Platform,
    root: PhysAddr,
    va: u64,
) -> Option<(PhysAddr, MmuFlags)> {
    // SAFETY: forwarded from the caller.
    unsafe { walk::<F>(platform, root, ROOT_LEVEL, va, &mut |_, _| {}) }
        .map(|(frame, flags, _)| (frame, flags))
}

/// Walks for `va` from the table at `table_pa`, which sits at `level` (3: the root), as an MMU
/// would, without locks: the frame of `va`'s page, the permissions, and the level of the leaf
/// that maps it (0: a page; 1, 2: a 2 MiB or 1 GiB leaf), or `None` where an entry is not valid.
/// `on_table(level, table)` is called for each table-pointing entry passed, with
/// the level of the table it points to: what an MMU's walk caches may keep.
///
/// # Safety
/// As for [`translate`], for the tables reachable from `table_pa`.
pub unsafe fn walk<F: PteFormat>(
    platform: &dyn Platform,
    table_pa: PhysAddr,
    level: usize,
    va: u64,
    on_table: &mut dyn FnMut(usize, PhysAddr),
) -> Option<(PhysAddr, MmuFlags, usize)> {
    if va >= crate::arch::USER_ADDRESS_LIMIT || level > ROOT_LEVEL {
        return None;
    }
    let mut table_pa = table_pa;
    for level in (0..=level).rev() {
        // SAFETY: the caller keeps every table reachable from `table_pa` readable for the walk.
        let table = unsafe { entries(platform, table_pa) };
        let entry = table[table_index(va, level)].load(Ordering::Acquire);
        if !F::is_valid(entry) || level == 0 && !F::is_page(entry) {
            return None;
        }
        if !F::is_table(entry, level) {
            if level == ROOT_LEVEL {
                // No format has leaves in its root.
                return None;
            }
            // A leaf: a page, or a large leaf whose page at `va` is its frame plus the offset.
            let offset = va & (entry_span(level) - 1) & !0xfff;
            return Some((
                PhysAddr(F::address(entry).0 + offset),
                F::page_flags(entry),
                level,
            ));
        }
        table_pa = F::address(entry);
        on_table(level - 1, table_pa);
    }
    None
}

/// [`walk`] for a format chosen at run time.
///
/// # Safety
/// As for [`walk`].
pub unsafe fn walk_format(
    format: Format,
    platform: &dyn Platform,
    table_pa: PhysAddr,
    level: usize,
    va: u64,
    on_table: &mut dyn FnMut(usize, PhysAddr),
) -> Option<(PhysAddr, MmuFlags, usize)> {
    // SAFETY: forwarded from the caller.
    unsafe {
        match format {
            Format::X86_64 => walk::<crate::arch::X86_64>(platform, table_pa, level, va, on_table),
            Format::Aarch64 => {
                walk::<crate::arch::Aarch64>(platform, table_pa, level, va, on_table)
            }
        }
    }
}

/// A new, empty page table of `format` owning the whole lower half, with the default memory
/// attributes (aarch64 MAIR index 0): a kernel whose index 0 is not normal memory uses
/// [`new_page_table_for`] with its `Platform::memory_attributes()`.
pub fn new_page_table(
    platform: &dyn Platform,
    format: Format,
) -> Result<alloc::boxed::Box<dyn PageTableOps>, Status> {
    new_page_table_for(
        platform,
        format,
        0,
        crate::arch::USER_ADDRESS_LIMIT,
        MemoryAttributes::DEFAULT,
    )
}

/// A new, empty page table of `format` for the user range `[start, end)` with leaves of memory
/// attributes `attrs` (see [`PageTable::with_attributes`]).
pub fn new_page_table_for(
    platform: &dyn Platform,
    format: Format,
    start: u64,
    end: u64,
    attrs: MemoryAttributes,
) -> Result<alloc::boxed::Box<dyn PageTableOps>, Status> {
    use alloc::boxed::Box;
    Ok(match format {
        Format::X86_64 => Box::new(PageTable::<crate::arch::X86_64>::with_attributes(
            platform, start, end, attrs,
        )?),
        Format::Aarch64 => Box::new(PageTable::<crate::arch::Aarch64>::with_attributes(
            platform, start, end, attrs,
        )?),
    })
}

/// What is wrong with a root table after [`Platform::prepare_root`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootProblem {
    /// `prepare_root` wrote entries into root slots that the user range uses; the crate would
    /// map user pages through (and free) the kernel's tables.
    KernelInUserRange {
        /// The first such slot.
        slot: usize,
        /// The user range's slots, `first..=last`.
        user_slots: (usize, usize),
    },
    /// x86_64: no entry outside the user range, so loading the root would unmap the kernel.
    KernelHalfEmpty,
}

impl core::fmt::Display for RootProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            RootProblem::KernelInUserRange { slot, user_slots } => write!(
                f,
                "Platform::prepare_root put an entry in root slot {slot}, inside the user range's \
                 slots {}..={}: give the address space a user range clear of the kernel's slots",
                user_slots.0, user_slots.1
            ),
            RootProblem::KernelHalfEmpty => f.write_str(
                "the new root table has no kernel entries after Platform::prepare_root: loading \
                 it would unmap the kernel (copy the kernel's PML4 entries in prepare_root)",
            ),
        }
    }
}

/// Checks a root table of `format` after [`Platform::prepare_root`]: the slots of the user range
/// (`first..=last`) are empty, and on x86_64 some other slot holds the kernel.
pub fn check_prepared_root(
    platform: &dyn Platform,
    format: Format,
    root: PhysAddr,
    user_slots: (usize, usize),
) -> Result<(), RootProblem> {
    // SAFETY: `root` is a live root table the caller owns (just made, not yet shared).
    let table = unsafe { entries(platform, root) };
    let valid = |entry: u64| match format {
        Format::X86_64 => crate::arch::X86_64::is_valid(entry),
        Format::Aarch64 => crate::arch::Aarch64::is_valid(entry),
    };
    let mut kernel_entries = 0;
    for (slot, entry) in table.iter().enumerate() {
        if !valid(entry.load(Ordering::Relaxed)) {
            continue;
        }
        if (user_slots.0..=user_slots.1).contains(&slot) {
            return Err(RootProblem::KernelInUserRange { slot, user_slots });
        }
        kernel_entries += 1;
    }
    if format == Format::X86_64 && kernel_entries == 0 {
        return Err(RootProblem::KernelHalfEmpty);
    }
    Ok(())
}

/// [`translate`] for a format chosen at run time.
///
/// # Safety
/// As for [`translate`].
pub unsafe fn translate_format(
    format: Format,
    platform: &dyn Platform,
    root: PhysAddr,
    va: u64,
) -> Option<(PhysAddr, MmuFlags)> {
    // SAFETY: forwarded from the caller.
    unsafe {
        match format {
            Format::X86_64 => translate::<crate::arch::X86_64>(platform, root, va),
            Format::Aarch64 => translate::<crate::arch::Aarch64>(platform, root, va),
        }
    }
}
