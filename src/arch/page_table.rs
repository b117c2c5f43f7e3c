//! The page-table walker shared by both formats.
//!
//! Entries are read and written as `AtomicU64`, because an MMU (real, or the host simulation's) may
//! walk a table while the kernel changes it. A new table is zeroed before the entry that links it
//! is published with release ordering, so a concurrent walker never sees an uninitialised table.
//!
//! Nothing here invalidates a TLB or frees a frame that a CPU may still reach: unmapping records
//! the pages to invalidate and the table pages to free in a [`PendingFlush`], and the caller hands
//! that to [`crate::tlb`], which invalidates first and frees after.

use super::PendingFlush;
use super::{
    entry_span, table_index, Format, MemoryAttributes, MmuFlags, PteFormat, ENTRIES, LEVELS,
};
use crate::abi::Status;
use crate::platform::{PhysAddr, Platform};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

const ROOT_LEVEL: usize = LEVELS - 1;

/// The entries of the table at `pa`.
///
/// # Safety
/// `pa` is a page-table page allocated from `platform` and not freed for the lifetime `'a`.
#[inline]
unsafe fn entries<'a>(platform: &dyn Platform, pa: PhysAddr) -> &'a [AtomicU64; ENTRIES] {
    let ptr = platform.phys_to_virt(pa) as *const [AtomicU64; ENTRIES];
    // SAFETY: the Platform contract makes `ptr` valid and 8-aligned for the 4096 bytes of an
    // allocated frame, and the caller keeps the frame allocated for 'a. `[AtomicU64; 512]` has the
    // size (4096) and alignment (8) of that memory and every bit pattern is a valid value. All
    // access goes through atomics, so concurrent walkers do not make it a data race.
    unsafe { &*ptr }
}

/// Allocates and zeroes a table page.
fn new_table(platform: &dyn Platform) -> Result<PhysAddr, Status> {
    let pa = platform.alloc_frame().ok_or(Status::NoMemory)?;
    // SAFETY: `pa` was just allocated for this tree and is not freed while we use it.
    let table = unsafe { entries(platform, pa) };
    for entry in table {
        entry.store(0, Ordering::Relaxed);
    }
    Ok(pa)
}

/// One address space's page tables in format `F`.
///
/// The tree is owned: dropping a `PageTable` without [`PageTableOps::release`] leaks its pages
/// (and says so in debug builds).
pub struct PageTable<F: PteFormat> {
    root: PhysAddr,
    /// Table pages in the tree, the root included.
    tables: usize,
    /// The root slots this tree owns, `first..=last`: those that cover its user range. Every
    /// table below them was made here; every other root slot is the kernel's, never touched.
    slots: (usize, usize),
    /// The memory-attribute bits of every leaf ([`PteFormat::attribute_bits`]).
    attrs: u64,
    _format: PhantomData<F>,
}

/// The root slots (512 GiB each) that cover `[start, end)`.
fn root_slots(start: u64, end: u64) -> (usize, usize) {
    (
        table_index(start, ROOT_LEVEL),
        table_index(end - 1, ROOT_LEVEL),
    )
}

/// Whether `[start, end)` is a user range a tree can own: page aligned, not empty, inside the
/// lower half.
pub fn valid_user_range(start: u64, end: u64) -> bool {
    start < end && start & 0xfff == 0 && end & 0xfff == 0 && end <= super::USER_ADDRESS_LIMIT
}

impl<F: PteFormat> PageTable<F> {
    /// A tree with an empty root table, owning the whole lower half (root slots 0-255).
    pub fn new(platform: &dyn Platform) -> Result<Self, Status> {
        Self::with_user_range(platform, 0, super::USER_ADDRESS_LIMIT)
    }

    /// A tree with an empty root table that maps only `[start, end)` (page aligned, inside the
    /// lower half: `ZX_ERR_INVALID_ARGS` otherwise) and owns just the root slots covering it.
    pub fn with_user_range(platform: &dyn Platform, start: u64, end: u64) -> Result<Self, Status> {
        Self::with_attributes(platform, start, end, MemoryAttributes::DEFAULT)
    }

    /// As [`PageTable::with_user_range`], with leaves of memory attributes `attrs`
    /// (`ZX_ERR_INVALID_ARGS` for an index above 7).
    pub fn with_attributes(
        platform: &dyn Platform,
        start: u64,
        end: u64,
        attrs: MemoryAttributes,
    ) -> Result<Self, Status> {
        if !valid_user_range(start, end) || !attrs.is_valid() {
            return Err(Status::InvalidArgs);
        }
        Ok(PageTable {
            root: new_table(platform)?,
            tables: 1,
            slots: root_slots(start, end),
            attrs: F::attribute_bits(attrs),
            _format: PhantomData,
        })
    }

    /// Clears the level-0 entries in `[start, end)` below `table` (at `level`), records them in
    /// `out`, and frees the tables it empties. Returns whether `table` is now empty.
    fn unmap_level(
        &mut self,
        platform: &dyn Platform,
        table_pa: PhysAddr,
        level: usize,
        start: u64,
        end: u64,
        out: &mut PendingFlush,
    ) -> bool {
        // SAFETY: `table_pa` is a table of this tree, which we own exclusively (&mut self).
        let table = unsafe { entries(platform, table_pa) };
        if level == 0 {
            // The leaves: one tight loop over the slots of the range.
            let first = table_index(start, 0);
            let count = ((end - start) >> 12) as usize;
            let mut va = start;
            for slot in &table[first..first + count] {
                if F::is_valid(slot.load(Ordering::Relaxed)) {
                    slot.store(0, Ordering::Relaxed);
                    out.add_page(va);
                }
                va += 4096;
            }
            return count == ENTRIES
                || table
                    .iter()
                    .all(|e| !F::is_valid(e.load(Ordering::Relaxed)));
        }
        let span = entry_span(level);
        let mut va = start;
        while va < end {
            let entry_end = ((va & !(span - 1)) + span).min(end);
            let slot = &table[table_index(va, level)];
            let entry = slot.load(Ordering::Relaxed);
            if F::is_valid(entry) {
                if F::is_table(entry, level) {
                    let child = F::address(entry);
                    if self.unmap_level(platform, child, level - 1, va, entry_end, out) {
                        slot.store(0, Ordering::Relaxed);
                        self.tables -= 1;
                        out.free_table(child);
                    }
                } else {
                    // A block mapping: never made by this walker, but clear it whole if found.
                    slot.store(0, Ordering::Relaxed);
                    out.add_all();
                }
            }
            va = entry_end;
        }
        if level == ROOT_LEVEL {
            // The root is never freed.
            return false;
        }
        // A range that spans the whole table cleared every entry; otherwise look.
        end - start == entry_span(level + 1)
            || table
                .iter()
                .all(|e| !F::is_valid(e.load(Ordering::Relaxed)))
    }

    #[allow(clippy::too_many_arguments)]
    fn protect_level(
        platform: &dyn Platform,
        table_pa: PhysAddr,
        level: usize,
        start: u64,
        end: u64,
        flags: MmuFlags,
        attrs: u64,
        out: &mut PendingFlush,
    ) {
        // SAFETY: `table_pa` is a table of this tree, owned exclusively by the caller's &mut.
        let table = unsafe { entries(platform, table_pa) };
        let span = entry_span(level);
        let mut va = start;
        while va < end {
            let entry_end = ((va & !(span - 1)) + span).min(end);
            let slot = &table[table_index(va, level)];
            let entry = slot.load(Ordering::Relaxed);
            if F::is_valid(entry) {
                if level == 0 {
                    let new = F::page_entry_with(F::address(entry), flags, attrs);
                    if new != entry {
                        slot.store(new, Ordering::Release);
                        out.add_page(va);
                    }
                } else if F::is_table(entry, level) {
                    Self::protect_level(
                        platform,
                        F::address(entry),
                        level - 1,
                        va,
                        entry_end,
                        flags,
                        attrs,
                        out,
                    );
                }
            }
            va = entry_end;
        }
    }

    /// The addresses the owned root slots cover.
    fn owned_span(&self) -> (u64, u64) {
        let span = entry_span(ROOT_LEVEL);
        (self.slots.0 as u64 * span, (self.slots.1 as u64 + 1) * span)
    }

    /// Frees the tables below `table_pa` (at `level`), then `table_pa` itself, into `out`.
    /// Iterative, with one cursor per level on this stack frame: the depth is the format's.
    fn release_below(
        &self,
        platform: &dyn Platform,
        table_pa: PhysAddr,
        level: usize,
        out: &mut PendingFlush,
    ) {
        // path[l] = (table at level l, next slot to look at) for the levels being walked.
        let mut path = [(PhysAddr(0), 0usize); LEVELS];
        path[level] = (table_pa, 0);
        let mut at = level;
        loop {
            let (table_pa, next) = path[at];
            if at == 0 || next == ENTRIES {
                // Every child is gone (a leaf table holds no tables): free this one.
                out.free_table(table_pa);
                if at == level {
                    return;
                }
                at += 1;
                continue;
            }
            path[at].1 += 1;
            // SAFETY: `table_pa` is a table of this tree, owned exclusively by the caller.
            let slot = &unsafe { entries(platform, table_pa) }[next];
            let entry = slot.load(Ordering::Relaxed);
            slot.store(0, Ordering::Relaxed);
            if F::is_table(entry, at) {
                at -= 1;
                path[at] = (F::address(entry), 0);
            }
        }
    }
}

impl<F: PteFormat> PageTable<F> {
    fn visit_level(
        &self,
        platform: &dyn Platform,
        table_pa: PhysAddr,
        level: usize,
        base: u64,
        f: &mut dyn FnMut(u64, PhysAddr, MmuFlags),
    ) {
        // SAFETY: `table_pa` is a table of this tree, borrowed by the caller for the walk.
        let table = unsafe { entries(platform, table_pa) };
        let (first, last) = if level == ROOT_LEVEL {
            self.slots
        } else {
            (0, ENTRIES - 1)
        };
        for (index, slot) in table.iter().enumerate().take(last + 1).skip(first) {
            let entry = slot.load(Ordering::Relaxed);
            let va = base + index as u64 * entry_span(level);
            if !F::is_valid(entry) {
                continue;
            }
            if level == 0 {
                f(va, F::address(entry), F::page_flags(entry));
            } else if F::is_table(entry, level) {
                self.visit_level(platform, F::address(entry), level - 1, va, f);
            }
        }
    }
}

impl<F: PteFormat> Drop for PageTable<F> {
    fn drop(&mut self) {
        debug_assert!(
            self.tables == 0,
            "a PageTable was dropped without release()"
        );
    }
}

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

    /// Calls `f` with every valid level-0 entry of the user range's root slots: its address,
    /// frame and permissions, in address order. For audits; O(tables).
    fn for_each_page(&self, platform: &dyn Platform, f: &mut dyn FnMut(u64, PhysAddr, MmuFlags));
}

impl<F: PteFormat> PageTableOps for PageTable<F> {
    fn format(&self) -> Format {
        if F::NAME == super::Aarch64::NAME {
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
            let entry = table[table_index(va, level)].load(Ordering::Relaxed);
            if !F::is_table(entry, level) {
                debug_assert!(!F::is_valid(entry), "block mappings are never made");
                break;
            }
            table_pa = F::address(entry);
            level -= 1;
        }
        // Allocate every missing table before linking any, so that running out of frames
        // changes nothing: tables never linked were never seen by a walker, and go back at once.
        let mut fresh = [PhysAddr(0); LEVELS - 1];
        for made in 0..level {
            match new_table(platform) {
                Ok(table) => fresh[made] = table,
                Err(status) => {
                    // SAFETY: these frames were allocated just now and never linked into the
                    // tree, so no page-table entry, walker or TLB can refer to them.
                    unsafe { platform.free_frames(&fresh[..made]) };
                    return Err(status);
                }
            }
        }
        for &child in &fresh[..level] {
            // SAFETY: `table_pa` is a table of this tree, owned exclusively through &mut self.
            let table = unsafe { entries(platform, table_pa) };
            // Release: the zeroed child is visible before the entry that links it.
            table[table_index(va, level)].store(F::table_entry(child), Ordering::Release);
            self.tables += 1;
            table_pa = child;
            level -= 1;
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
        if start < end {
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
            Self::protect_level(
                platform, self.root, ROOT_LEVEL, start, end, flags, self.attrs, out,
            );
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
}

/// Walks for `va` from the table at `table_pa`, which sits at `level` (3: the root), as an MMU
/// would, without locks: the frame and permissions of its level-0 entry, or `None` where an entry
/// is not valid. `on_table(level, table)` is called for each table-pointing entry passed, with
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
) -> Option<(PhysAddr, MmuFlags)> {
    if va >= super::USER_ADDRESS_LIMIT || level > ROOT_LEVEL {
        return None;
    }
    let mut table_pa = table_pa;
    for level in (0..=level).rev() {
        // SAFETY: the caller keeps every table reachable from `table_pa` readable for the walk.
        let table = unsafe { entries(platform, table_pa) };
        let entry = table[table_index(va, level)].load(Ordering::Acquire);
        if !F::is_valid(entry) {
            return None;
        }
        if level == 0 {
            return Some((F::address(entry), F::page_flags(entry)));
        }
        if !F::is_table(entry, level) {
            return None;
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
) -> Option<(PhysAddr, MmuFlags)> {
    // SAFETY: forwarded from the caller.
    unsafe {
        match format {
            Format::X86_64 => walk::<super::X86_64>(platform, table_pa, level, va, on_table),
            Format::Aarch64 => walk::<super::Aarch64>(platform, table_pa, level, va, on_table),
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
        super::USER_ADDRESS_LIMIT,
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
        Format::X86_64 => Box::new(PageTable::<super::X86_64>::with_attributes(
            platform, start, end, attrs,
        )?),
        Format::Aarch64 => Box::new(PageTable::<super::Aarch64>::with_attributes(
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
        Format::X86_64 => super::X86_64::is_valid(entry),
        Format::Aarch64 => super::Aarch64::is_valid(entry),
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
            Format::X86_64 => translate::<super::X86_64>(platform, root, va),
            Format::Aarch64 => translate::<super::Aarch64>(platform, root, va),
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::arch::{Aarch64, X86_64};
    use crate::sim::SimMachine;

    fn flush_and_free(machine: &SimMachine, pending: PendingFlush) {
        // SAFETY: no CPU of the test machine runs in these tables.
        unsafe { machine.free_frames(pending.freed_tables()) };
    }

    /// At the last level a descriptor with both low bits set is a page, never a table (aarch64
    /// encodes level-3 pages like tables above); x86_64 has no table bit at the last level.
    #[test]
    fn last_level_entries_are_never_tables() {
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        let page = Aarch64::page_entry(PhysAddr(0x4000), rw);
        assert!(!Aarch64::is_table(page, 0));
        assert!(Aarch64::is_table(Aarch64::table_entry(PhysAddr(0x4000)), 1));
        let page = X86_64::page_entry(PhysAddr(0x4000), rw);
        assert!(!X86_64::is_table(page, 0));
        assert!(X86_64::is_table(X86_64::table_entry(PhysAddr(0x4000)), 1));
    }

    /// A user range owns exactly the root slots it touches: one that ends on a 512 GiB boundary
    /// does not own the slot after it (the kernel's, on x86_64 the upper half's first).
    #[test]
    fn root_slots_end_where_the_range_ends() {
        const SLOT: u64 = 1 << 39;
        assert_eq!(root_slots(0, SLOT), (0, 0));
        assert_eq!(root_slots(SLOT, 2 * SLOT), (1, 1));
        assert_eq!(
            root_slots(0x1000, crate::arch::USER_ADDRESS_LIMIT),
            (0, 255)
        );
        assert_eq!(root_slots(SLOT - 0x1000, SLOT + 0x1000), (0, 1));
    }

    /// An unmap frees a table only when it is empty: not when the range's ends happen to add up
    /// to the table's span, nor when the range is one entry of the level below, while another
    /// page still lives in the same table. Both formats.
    #[test]
    #[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
    fn unmap_keeps_tables_that_still_map_pages() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        for format in Format::ALL {
            let machine = SimMachine::with_frames(64);
            let p: &dyn Platform = &*machine;
            let mut pt = new_page_table_for(
                p,
                format,
                0,
                super::super::USER_ADDRESS_LIMIT,
                MemoryAttributes::DEFAULT,
            )
            .unwrap();
            let frame = p.alloc_frame().unwrap();
            // [16 MiB, 1 GiB - 16 MiB): the ends add up to the span of one level-1 table.
            let (a, b) = (16 * MIB, GIB - 16 * MIB);
            pt.map(p, a, frame, rw).unwrap();
            pt.map(p, b, frame, rw).unwrap();
            let mut pending = PendingFlush::new();
            pt.unmap(p, a, b, &mut pending);
            assert_eq!(pt.query(p, b), Some((frame, rw)), "{format:?}");
            flush_and_free(&machine, pending);
            // [1 GiB, 1 GiB + 2 MiB): one entry of a level-1 table, which maps 1 GiB + 4 MiB too.
            let (c, d) = (GIB, GIB + 4 * MIB);
            pt.map(p, c, frame, rw).unwrap();
            pt.map(p, d, frame, rw).unwrap();
            let mut pending = PendingFlush::new();
            pt.unmap(p, c, c + 2 * MIB, &mut pending);
            assert_eq!(pt.query(p, d), Some((frame, rw)), "{format:?}");
            flush_and_free(&machine, pending);
            let mut pending = PendingFlush::new();
            pt.release(p, &mut pending);
            flush_and_free(&machine, pending);
            // SAFETY: the test's own frame, mapped by nothing now.
            unsafe { p.free_frames(&[frame]) };
        }
    }

    /// `for_each_page` visits every mapped page once, at its address, also at the last index of a
    /// table and in the top root slot of the user range (which a tree can map up to its end).
    #[test]
    #[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
    fn every_mapped_page_is_visited() {
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        let top = super::super::USER_ADDRESS_LIMIT - 0x1000;
        for format in Format::ALL {
            let machine = SimMachine::with_frames(64);
            let p: &dyn Platform = &*machine;
            let limit = super::super::USER_ADDRESS_LIMIT;
            let mut pt =
                new_page_table_for(p, format, 0, limit, MemoryAttributes::DEFAULT).unwrap();
            let frame = p.alloc_frame().unwrap();
            let mut vas = alloc::vec![0x1000, 0x1f_f000, 0x4000_0000 + 0x1ff * 0x20_0000, top];
            for &va in &vas {
                assert_eq!(pt.map(p, va, frame, rw), Ok(false), "{format:?} {va:#x}");
            }
            let mut seen = alloc::vec::Vec::new();
            pt.for_each_page(p, &mut |va, pa, flags| seen.push((va, pa, flags)));
            vas.sort_unstable();
            let want: alloc::vec::Vec<_> = vas.iter().map(|&va| (va, frame, rw)).collect();
            assert_eq!(seen, want, "{format:?}");
            let mut pending = PendingFlush::new();
            pt.release(p, &mut pending);
            flush_and_free(&machine, pending);
            // SAFETY: the test's own frame, mapped by nothing now.
            unsafe { p.free_frames(&[frame]) };
        }
    }

    /// Once released or abandoned, a tree holds nothing: a second release or abandon gives back
    /// nothing more (the root is not freed twice), and a walk visits nothing.
    #[test]
    fn a_released_tree_is_empty() {
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        for format in Format::ALL {
            let machine = SimMachine::with_frames(16);
            let p: &dyn Platform = &*machine;
            let mut pt =
                new_page_table_for(p, format, 0, 1 << 39, MemoryAttributes::DEFAULT).unwrap();
            let frame = p.alloc_frame().unwrap();
            pt.map(p, 0x1000, frame, rw).unwrap();
            let mut pending = PendingFlush::new();
            pt.release(p, &mut pending);
            assert_eq!(pending.freed_tables().len(), 4, "{format:?}");
            flush_and_free(&machine, pending);
            for _ in 0..2 {
                let mut pending = PendingFlush::new();
                pt.release(p, &mut pending);
                pt.abandon(&mut pending);
                assert!(pending.freed_tables().is_empty(), "{format:?}");
            }
            let mut visited = 0;
            pt.for_each_page(p, &mut |_, _, _| visited += 1);
            assert_eq!(visited, 0, "{format:?}");
            // SAFETY: the test's own frame, mapped by nothing now.
            unsafe { p.free_frames(&[frame]) };
        }
    }

    /// A tree dropped without `release` (its tables would leak) is a bug the debug build names.
    #[test]
    #[should_panic(expected = "dropped without release()")]
    #[cfg_attr(miri, ignore)] // the unwinding from a destructor leaves the box to Miri's leak check
    fn a_tree_dropped_without_release_is_named() {
        let machine = SimMachine::with_frames(8);
        let p: &dyn Platform = &*machine;
        let pt = new_page_table_for(p, Format::X86_64, 0, 1 << 39, MemoryAttributes::DEFAULT);
        drop(pt);
    }

    /// A tree maps only inside the root slots its user range owns.
    #[test]
    #[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
    fn a_tree_maps_only_in_its_own_slots() {
        const SLOT: u64 = 1 << 39;
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        for format in Format::ALL {
            let machine = SimMachine::with_frames(64);
            let p: &dyn Platform = &*machine;
            let mut pt =
                new_page_table_for(p, format, SLOT, 2 * SLOT, MemoryAttributes::DEFAULT).unwrap();
            let frame = p.alloc_frame().unwrap();
            assert_eq!(
                pt.map(p, 0x1000, frame, rw),
                Err(Status::InvalidArgs),
                "{format:?}"
            );
            assert_eq!(
                pt.map(p, 2 * SLOT, frame, rw),
                Err(Status::InvalidArgs),
                "{format:?}"
            );
            assert_eq!(
                pt.map(p, SLOT + 8, frame, rw),
                Err(Status::InvalidArgs),
                "{format:?}"
            );
            assert_eq!(pt.map(p, SLOT, frame, rw), Ok(false), "{format:?}");
            assert_eq!(pt.format(), format);
            let mut pending = PendingFlush::new();
            pt.release(p, &mut pending);
            flush_and_free(&machine, pending);
            // SAFETY: the test's own frame, mapped by nothing now.
            unsafe { p.free_frames(&[frame]) };
        }
    }

    /// Every permission set a page can have (read with any of write, execute and user) reads back
    /// from its entry as it went in, in both formats, also for kernel (non-user) pages.
    #[test]
    fn page_permissions_round_trip() {
        fn each<F: PteFormat>() {
            for bits in 0..8u8 {
                let mut flags = MmuFlags::READ;
                for (bit, flag) in [MmuFlags::WRITE, MmuFlags::EXECUTE, MmuFlags::USER]
                    .into_iter()
                    .enumerate()
                {
                    if bits & (1 << bit) != 0 {
                        flags |= flag;
                    }
                }
                let entry = F::page_entry(PhysAddr(0x1234_5000), flags);
                assert!(F::is_valid(entry), "{}: {flags:?}", F::NAME);
                assert_eq!(F::page_flags(entry), flags, "{}", F::NAME);
                assert_eq!(F::address(entry), PhysAddr(0x1234_5000), "{}", F::NAME);
            }
        }
        each::<X86_64>();
        each::<Aarch64>();
    }

    fn map_query_unmap<F: PteFormat>() {
        let machine = SimMachine::with_frames(64);
        let p: &dyn Platform = &*machine;
        let mut pt = PageTable::<F>::new(p).unwrap();
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        let frame = p.alloc_frame().unwrap();
        let va = 0x7f00_1234_5000;
        pt.map(p, va, frame, rw).unwrap();
        // Root plus one table at each of the three lower levels.
        assert_eq!(pt.table_pages(), 4);
        assert_eq!(pt.query(p, va), Some((frame, rw)));
        assert_eq!(pt.query(p, va + 0x1000), None);
        // Neighbouring pages share the tables.
        pt.map(p, va + 0x1000, frame, MmuFlags::READ | MmuFlags::USER)
            .unwrap();
        assert_eq!(pt.table_pages(), 4);
        assert_eq!(
            pt.query(p, va + 0x1000),
            Some((frame, MmuFlags::READ | MmuFlags::USER))
        );

        // Protect one page read-only and executable.
        let mut pending = PendingFlush::new();
        let rx = MmuFlags::READ | MmuFlags::EXECUTE | MmuFlags::USER;
        pt.protect(p, va, va + 0x1000, rx, &mut pending);
        assert_eq!(pt.query(p, va), Some((frame, rx)));
        assert_eq!(pending.scope(), crate::platform::TlbScope::Pages(&[va]));

        // Unmapping one page keeps the tables; unmapping both frees all but the root.
        let mut pending = PendingFlush::new();
        pt.unmap(p, va, va + 0x1000, &mut pending);
        assert_eq!(pt.query(p, va), None);
        assert!(pt.query(p, va + 0x1000).is_some());
        assert_eq!(pt.table_pages(), 4);
        assert!(!pending.tables_freed());
        pt.unmap(p, va, va + 0x2000, &mut pending);
        assert_eq!(pt.table_pages(), 1);
        assert_eq!(pending.freed_tables().len(), 3);
        assert_eq!(pending.changed_pages(), 2);
        flush_and_free(&machine, pending);

        let mut pending = PendingFlush::new();
        pt.release(p, &mut pending);
        flush_and_free(&machine, pending);
        // SAFETY: the frame was only mapped by the released tables.
        unsafe { machine.free_frames(&[frame]) };
        assert_eq!(machine.frames_in_use(), 0);
    }

    #[test]
    fn x86_64_map_query_unmap() {
        map_query_unmap::<X86_64>();
    }

    #[test]
    fn aarch64_map_query_unmap() {
        map_query_unmap::<Aarch64>();
    }

    fn threshold<F: PteFormat>() {
        let machine = SimMachine::with_frames(256);
        let p: &dyn Platform = &*machine;
        let mut pt = PageTable::<F>::new(p).unwrap();
        let frame = p.alloc_frame().unwrap();
        let base = 0x4000_0000;
        for i in 0..100 {
            pt.map(p, base + i * 0x1000, frame, MmuFlags::READ).unwrap();
        }
        let mut pending = PendingFlush::new();
        pt.unmap(p, base, base + 32 * 0x1000, &mut pending);
        assert!(
            matches!(pending.scope(), crate::platform::TlbScope::Pages(pages) if pages.len() == 32)
        );
        pt.unmap(p, base + 32 * 0x1000, base + 33 * 0x1000, &mut pending);
        assert_eq!(pending.scope(), crate::platform::TlbScope::All);
        pt.unmap(p, base, base + 100 * 0x1000, &mut pending);
        assert_eq!(pending.changed_pages(), 100);
        flush_and_free(&machine, pending);
        let mut pending = PendingFlush::new();
        pt.release(p, &mut pending);
        flush_and_free(&machine, pending);
        // SAFETY: the frame was only mapped by the released tables.
        unsafe { machine.free_frames(&[frame]) };
    }

    #[test]
    fn x86_64_flush_threshold() {
        threshold::<X86_64>();
    }

    #[test]
    fn aarch64_flush_threshold() {
        threshold::<Aarch64>();
    }

    #[test]
    fn release_leaves_the_kernel_half_alone() {
        let machine = SimMachine::with_frames(64);
        let p: &dyn Platform = &*machine;
        let mut pt = PageTable::<X86_64>::new(p).unwrap();
        // A kernel's upper-half entry, as `Platform::prepare_root` would copy in.
        let kernel_table = p.alloc_frame().unwrap();
        let kernel_entry = X86_64::table_entry(kernel_table);
        // SAFETY: the root is a live table of `pt`.
        unsafe { entries(p, pt.root())[300].store(kernel_entry, Ordering::Relaxed) };
        pt.map(p, 0x40_0000, kernel_table, MmuFlags::READ).unwrap();
        let root = pt.root();
        // The kernel's table page stays alive past the release, and no user walk ever reaches it.
        let mut pending = PendingFlush::new();
        pt.unmap(p, 0, crate::arch::USER_ADDRESS_LIMIT, &mut pending);
        // SAFETY: the root is still a live table of `pt`.
        let kept = unsafe { entries(p, root)[300].load(Ordering::Relaxed) };
        assert_eq!(kept, kernel_entry);
        pt.release(p, &mut pending);
        assert!(!pending.freed_tables().contains(&kernel_table));
        flush_and_free(&machine, pending);
        // SAFETY: test-owned frame, unreferenced now.
        unsafe { machine.free_frames(&[kernel_table]) };
    }

    #[test]
    fn encodings_are_the_architectures() {
        let pa = PhysAddr(0x1234_5000);
        let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        // x86_64: P | RW | US | A | D, NX set for a non-executable page.
        assert_eq!(X86_64::page_entry(pa, rw), 0x8000_0000_1234_5067);
        assert_eq!(X86_64::table_entry(pa), 0x1234_5007);
        // aarch64: page descriptor 0b11, AP[1] EL0, SH inner, AF, nG, PXN, UXN.
        assert_eq!(Aarch64::page_entry(pa, rw), 0x0060_0000_1234_5f43);
        assert_eq!(Aarch64::table_entry(pa), 0x1234_5003);
        // Read-only sets AP[2].
        assert_eq!(
            Aarch64::page_entry(pa, MmuFlags::READ | MmuFlags::USER) & (1 << 7),
            1 << 7
        );
        for flags in [
            rw,
            MmuFlags::READ | MmuFlags::USER,
            MmuFlags::READ | MmuFlags::EXECUTE | MmuFlags::USER,
        ] {
            assert_eq!(X86_64::page_flags(X86_64::page_entry(pa, flags)), flags);
            assert_eq!(Aarch64::page_flags(Aarch64::page_entry(pa, flags)), flags);
        }
    }
}
