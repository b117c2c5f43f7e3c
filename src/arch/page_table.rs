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

/// Entries looked at together where the walker scans for valid ones: a group of zero entries
/// costs one test.
const GROUP: usize = 8;

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

/// Allocates `count` zeroed table pages (at most [`LEVELS`]), all or none: on failure the ones
/// made go straight back, never having been linked.
fn new_tables(platform: &dyn Platform, count: usize) -> Result<[PhysAddr; LEVELS], Status> {
    let mut fresh = [PhysAddr(0); LEVELS];
    for made in 0..count {
        match new_table(platform) {
            Ok(table) => fresh[made] = table,
            Err(status) => {
                // SAFETY: these frames were allocated just now and never linked into a tree, so
                // no page-table entry, walker or TLB can refer to them.
                unsafe { platform.free_frames(&fresh[..made]) };
                return Err(status);
            }
        }
    }
    Ok(fresh)
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
    /// The address space's tag, for the invalidation a split's break-before-make needs.
    tag: u16,
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
            tag: 0,
            _format: PhantomData,
        })
    }

    /// Makes the tables missing on `va`'s walk below `table_pa` (at `level`, whose entry for
    /// `va` is empty) down to level `to`, all allocated before any is linked, so that running out
    /// of frames changes nothing. Answers the table at `to`.
    fn link_missing(
        &mut self,
        platform: &dyn Platform,
        va: u64,
        mut table_pa: PhysAddr,
        level: usize,
        to: usize,
    ) -> Result<PhysAddr, Status> {
        let fresh = new_tables(platform, level - to)?;
        for (at, &child) in (to + 1..=level).rev().zip(&fresh) {
            // SAFETY: `table_pa` is a table of this tree, owned exclusively through &mut self.
            let table = unsafe { entries(platform, table_pa) };
            // Release: the zeroed child is visible before the entry that links it.
            table[table_index(va, at)].store(F::table_entry(child), Ordering::Release);
            self.tables += 1;
            table_pa = child;
        }
        Ok(table_pa)
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
            let count = Self::clear_leaves(table, start, end, out);
            return count == ENTRIES || !Self::any_valid(table);
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
                } else if entry_end - va == span {
                    // A large leaf wholly inside the range: one entry, one invalidation.
                    slot.store(0, Ordering::Relaxed);
                    out.add_leaf(va, level as u8);
                } else {
                    // Part of a large leaf: split it, then unmap inside the new table. Where no
                    // frame is left for the table, the whole leaf goes: its other pages fault
                    // back in from the VMO (callers that must not see that split first).
                    if let Some(child) = self.split_or_drop(platform, slot, level, va, out) {
                        let mut broken = PendingFlush::new();
                        let out = split_record(out, &mut broken);
                        self.unmap_level(platform, child, level - 1, va, entry_end, out);
                    }
                }
            }
            va = entry_end;
        }
        if level == ROOT_LEVEL {
            // The root is never freed.
            return false;
        }
        // A range that spans the whole table cleared every entry; otherwise look.
        end - start == entry_span(level + 1) || !Self::any_valid(table)
    }

    /// Clears the valid entries of `[start, end)` (inside `table`, a last-level table) in one
    /// tight loop, recording each page in `out`; answers how many slots the range spans.
    ///
    /// Slots are looked at [`GROUP`] at a time: a group whose entries are all zero (what an empty
    /// or cleared slot holds in both formats) is passed over with one test, so a sparsely
    /// mapped range costs little more per empty slot than reading it.
    fn clear_leaves(
        table: &[AtomicU64; ENTRIES],
        start: u64,
        end: u64,
        out: &mut PendingFlush,
    ) -> usize {
        let first = table_index(start, 0);
        let count = ((end - start) >> 12) as usize;
        let slots = &table[first..first + count];
        let mut groups = slots.chunks_exact(GROUP);
        let mut va = start;
        for group in &mut groups {
            let entries: [u64; GROUP] = core::array::from_fn(|i| group[i].load(Ordering::Relaxed));
            if entries.iter().fold(0, |acc, &entry| acc | entry) != 0 {
                for (i, &entry) in entries.iter().enumerate() {
                    if F::is_valid(entry) {
                        group[i].store(0, Ordering::Relaxed);
                        out.add_page(va + ((i as u64) << 12));
                    }
                }
            }
            va += (GROUP as u64) << 12;
        }
        for slot in groups.remainder() {
            if F::is_valid(slot.load(Ordering::Relaxed)) {
                slot.store(0, Ordering::Relaxed);
                out.add_page(va);
            }
            va += 4096;
        }
        count
    }

    /// Whether any of `slots` holds a valid entry. Eight at a time: a group of zero entries (what
    /// an empty slot holds in both formats) is passed over with one test.
    fn any_valid(slots: &[AtomicU64]) -> bool {
        let mut groups = slots.chunks_exact(GROUP);
        for group in &mut groups {
            let entries: [u64; GROUP] = core::array::from_fn(|i| group[i].load(Ordering::Relaxed));
            if entries.iter().fold(0, |acc, &entry| acc | entry) != 0
                && entries.iter().any(|&entry| F::is_valid(entry))
            {
                return true;
            }
        }
        let valid = |e: &AtomicU64| F::is_valid(e.load(Ordering::Relaxed));
        groups.remainder().iter().any(valid)
    }

    /// The common small unmap, without recursion: `[start, end)` inside one last-level table
    /// that keeps a valid entry afterwards. Walks down to that table, clears the range's entries
    /// (recording them in `out`) and answers whether that was all there was to do. It is not
    /// when the walk meets a block entry (nothing cleared) or the table is left empty (its entries
    /// cleared, the table not yet unlinked): [`Self::unmap_level`] must then run over the range.
    fn unmap_in_one_leaf_table(
        &mut self,
        platform: &dyn Platform,
        start: u64,
        end: u64,
        out: &mut PendingFlush,
    ) -> bool {
        if start / entry_span(1) != (end - 1) / entry_span(1) {
            return false;
        }
        let mut table_pa = self.root;
        for level in (1..=ROOT_LEVEL).rev() {
            // SAFETY: `table_pa` is a table of this tree, which we own exclusively (&mut self).
            let table = unsafe { entries(platform, table_pa) };
            let entry = table[table_index(start, level)].load(Ordering::Relaxed);
            if !F::is_valid(entry) {
                // Nothing mapped under it: nothing to clear.
                return true;
            }
            if !F::is_table(entry, level) {
                return false;
            }
            table_pa = F::address(entry);
        }
        // SAFETY: as above: the last-level table under `start`, in this tree.
        let table = unsafe { entries(platform, table_pa) };
        let before = out.changed_pages();
        let count = Self::clear_leaves(table, start, end, out);
        if out.changed_pages() == before {
            // Nothing cleared: a table in the tree holds a valid entry, and still does.
            return true;
        }
        let first = table_index(start, 0);
        // Look nearest the range first: a neighbour of a cleared page is the likeliest to be
        // mapped.
        Self::any_valid(&table[first + count..]) || Self::any_valid(&table[..first])
    }

    #[allow(clippy::too_many_arguments)]
    fn protect_level(
        &mut self,
        platform: &dyn Platform,
        table_pa: PhysAddr,
        level: usize,
        start: u64,
        end: u64,
        flags: MmuFlags,
        out: &mut PendingFlush,
    ) {
        // SAFETY: `table_pa` is a table of this tree, owned exclusively through &mut self.
        let table = unsafe { entries(platform, table_pa) };
        let span = entry_span(level);
        let attrs = self.attrs;
        // The shared zero page never becomes writable: its entries keep read-only (the next
        // write faults and replaces it with a page of the VMO's own).
        let zero = if level == 0 && flags.contains(MmuFlags::WRITE) {
            platform.zero_frame()
        } else {
            None
        };
        let mut va = start;
        while va < end {
            let entry_end = ((va & !(span - 1)) + span).min(end);
            let slot = &table[table_index(va, level)];
            let entry = slot.load(Ordering::Relaxed);
            if F::is_valid(entry) {
                if level == 0 {
                    let frame = F::address(entry);
                    let flags = if zero == Some(frame) {
                        flags - MmuFlags::WRITE
                    } else {
                        flags
                    };
                    let new = F::page_entry_with(frame, flags, attrs);
                    if new != entry {
                        slot.store(new, Ordering::Release);
                        out.add_page(va);
                    }
                } else if F::is_table(entry, level) {
                    self.protect_level(
                        platform,
                        F::address(entry),
                        level - 1,
                        va,
                        entry_end,
                        flags,
                        out,
                    );
                } else {
                    self.protect_leaf(platform, slot, level, va, entry_end, flags, out);
                }
            }
            va = entry_end;
        }
    }

    /// Protects `[va, end)` inside the large leaf in `slot` (at `level`): the leaf rewritten in
    /// place where the range covers it, split first where it covers part (or, with no frame for
    /// the table, removed whole: its pages fault back in with the new permissions).
    #[allow(clippy::too_many_arguments)]
    fn protect_leaf(
        &mut self,
        platform: &dyn Platform,
        slot: &AtomicU64,
        level: usize,
        va: u64,
        end: u64,
        flags: MmuFlags,
        out: &mut PendingFlush,
    ) {
        let span = entry_span(level);
        let entry = slot.load(Ordering::Relaxed);
        if end - va == span {
            let new = F::block_entry_with(F::address(entry), flags, self.attrs);
            if new != entry {
                slot.store(new, Ordering::Release);
                out.add_leaf(va, level as u8);
            }
            return;
        }
        if let Some(child) = self.split_or_drop(platform, slot, level, va, out) {
            let mut broken = PendingFlush::new();
            let out = split_record(out, &mut broken);
            self.protect_level(platform, child, level - 1, va, end, flags, out);
        }
    }

    /// Splits the large leaf in `slot` (at `level`, covering `va`) for a change to part of it,
    /// answering the new table; with no frame for the table, removes the leaf whole instead
    /// (recorded in `out`; its pages fault back in) and answers `None`.
    fn split_or_drop(
        &mut self,
        platform: &dyn Platform,
        slot: &AtomicU64,
        level: usize,
        va: u64,
        out: &mut PendingFlush,
    ) -> Option<PhysAddr> {
        let base = va & !(entry_span(level) - 1);
        let split = self.split_leaf(platform, slot, level, base);
        if split.is_err() {
            slot.store(0, Ordering::Relaxed);
            out.add_leaf(base, level as u8);
        }
        split.ok()
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
            if F::is_table(entry, level) {
                self.visit_level(platform, F::address(entry), level - 1, va, f);
            } else {
                // A leaf: each 4 KiB page it maps.
                let (frame, flags) = (F::address(entry), F::page_flags(entry));
                for page in (0..entry_span(level)).step_by(4096) {
                    f(va + page, PhysAddr(frame.0 + page), flags);
                }
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

mod large;
mod ops;

use self::large::split_record;
pub use self::large::LeafCounts;
pub use self::ops::*;

#[cfg(test)]
mod tests {
    use super::*;

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
}
