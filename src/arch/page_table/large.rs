//! Large leaves: making them, splitting them, and counting leaves by size.
//!
//! A large leaf maps 2 MiB (level 1) or 1 GiB (level 2) with one entry. A change to part of one
//! (an unmap, a protect, a decommit of some of its pages) first splits it: a table of the next
//! level is filled with leaves that translate exactly as the large one did, and replaces it. On
//! x86_64 the table goes straight in (the old and new translations agree; the change that follows
//! is invalidated with the operation's round, and invalidating any address of a large page drops
//! the whole of it, Intel SDM 4.10.4.1). On aarch64 the architecture demands break-before-make
//! when the size of a translation changes (ARM ARM D8.16.1): the entry is made invalid, its
//! translation invalidated on every CPU (`TLBI VAE1IS` and `DSB ISH`, through
//! [`Platform::invalidate_local`] with broadcast invalidation), and only then the table stored. A
//! CPU that walks in between faults, and its fault waits for the locks the splitting operation
//! holds, then finds the table.
//!
//! Splits are all-or-nothing: [`PageTableOps::split_edges`] counts the tables the edges of a range
//! need, allocates them all, and only then splits.

use super::*;
use crate::arch::LARGE_LEVELS;
use crate::platform::{TlbFeatures, TlbInvalidate, TlbScope};

/// Leaves in a tree by size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafCounts {
    /// 4 KiB page entries.
    pub pages: usize,
    /// 2 MiB leaves.
    pub large_2m: usize,
    /// 1 GiB leaves.
    pub large_1g: usize,
}

/// The record a split's changes go into: `out`, or (in the deliberately broken build
/// `break-split`) a record thrown away, so that nothing below the split is invalidated.
#[inline]
pub(super) fn split_record<'a>(
    out: &'a mut PendingFlush,
    broken: &'a mut PendingFlush,
) -> &'a mut PendingFlush {
    if cfg!(feature = "break-split") {
        broken
    } else {
        out
    }
}

/// Most tables the two edges of one range can need: a 1 GiB leaf and a 2 MiB leaf at each.
const MAX_SPLITS: usize = 4;
static_assertions::const_assert!(MAX_SPLITS <= LEVELS);

impl<F: PteFormat> PageTable<F> {
    /// Whether this tree may hold large leaves on `platform`: the platform allows some
    /// ([`Platform::max_leaf_level`]), and a format that needs break-before-make splits only
    /// where an invalidation reaches every CPU by itself (aarch64's `TLBI ...IS`), because the
    /// split must complete it while holding the operation's locks.
    pub(super) fn large_leaves_allowed(platform: &dyn Platform) -> bool {
        platform.max_leaf_level() >= LARGE_LEVELS[0]
            && (!F::BREAK_BEFORE_MAKE || platform.invalidation_is_broadcast())
    }

    /// Replaces the large leaf in `slot` (at `level`, mapping from `base`) with a new table of
    /// leaves translating the same, and answers that table. `ZX_ERR_NO_MEMORY` changes nothing.
    pub(super) fn split_leaf(
        &mut self,
        platform: &dyn Platform,
        slot: &AtomicU64,
        level: usize,
        base: u64,
    ) -> Result<PhysAddr, Status> {
        let table = new_table(platform)?;
        self.install_split(platform, slot, level, base, table);
        Ok(table)
    }

    /// Fills `table` (zeroed, not yet linked) with the leaves of the large leaf in `slot` and
    /// links it in its place, with break-before-make where the format needs it.
    fn install_split(
        &mut self,
        platform: &dyn Platform,
        slot: &AtomicU64,
        level: usize,
        base: u64,
        table: PhysAddr,
    ) {
        let entry = slot.load(Ordering::Relaxed);
        debug_assert!(F::is_leaf(entry, level) && level > 0);
        let (frame, flags) = (F::address(entry), F::page_flags(entry));
        let step = entry_span(level - 1);
        // SAFETY: `table` was just allocated for this tree and is not linked yet.
        let leaves = unsafe { entries(platform, table) };
        for (i, leaf) in leaves.iter().enumerate() {
            let pa = PhysAddr(frame.0 + i as u64 * step);
            leaf.store(
                F::leaf_entry(level - 1, pa, flags, self.attrs),
                Ordering::Relaxed,
            );
        }
        if F::BREAK_BEFORE_MAKE && !cfg!(feature = "break-split") {
            // Break: no CPU may hold the large translation once the table is there.
            slot.store(0, Ordering::Release);
            platform.invalidate_local(&TlbInvalidate {
                asid: self.tag,
                root: self.root,
                scope: TlbScope::Pages(&[base]),
                tables_freed: false,
                features: TlbFeatures::NONE,
            });
        }
        // Make: release, so that a walker that sees the link sees the filled table.
        slot.store(F::table_entry(table), Ordering::Release);
        self.tables += 1;
    }

    /// The large leaves that straddle `start` or `end`, top-down per edge, without repeats: the
    /// leaf's level and the address its slot translates from.
    fn straddling(
        &self,
        platform: &dyn Platform,
        start: u64,
        end: u64,
    ) -> ([(usize, u64); MAX_SPLITS], usize) {
        let mut found = [(0usize, 0u64); MAX_SPLITS];
        let mut count = 0;
        let (lo, hi) = self.owned_span();
        for edge in [start, end] {
            if edge <= lo || edge >= hi {
                continue;
            }
            let mut table_pa = self.root;
            let mut level = ROOT_LEVEL;
            // The leaf covering `edge`, found through existing tables.
            let leaf = loop {
                // SAFETY: `table_pa` is a table of this tree, borrowed for the walk.
                let entry = unsafe { entries(platform, table_pa) }[table_index(edge, level)]
                    .load(Ordering::Relaxed);
                if level == 0 || !F::is_valid(entry) {
                    break None;
                }
                if !F::is_table(entry, level) {
                    break Some(level);
                }
                table_pa = F::address(entry);
                level -= 1;
            };
            let Some(level) = leaf else { continue };
            // The leaf itself, and (for a 1 GiB leaf) the 2 MiB one its split leaves around the
            // edge.
            for level in (1..=level).rev() {
                let span = entry_span(level);
                if edge % span == 0 {
                    break;
                }
                let key = (level, edge & !(span - 1));
                if !found[..count].contains(&key) {
                    found[count] = key;
                    count += 1;
                }
            }
        }
        (found, count)
    }

    /// Splits every large leaf that straddles `start` or `end`, all or nothing.
    pub(super) fn split_edges_inner(
        &mut self,
        platform: &dyn Platform,
        start: u64,
        end: u64,
    ) -> Result<(), Status> {
        let (found, count) = self.straddling(platform, start, end);
        if count == 0 {
            return Ok(());
        }
        let fresh = new_tables(platform, count)?;
        // Top-down per edge, as found: a 1 GiB leaf is split before the 2 MiB one inside it.
        for (&(level, base), &table) in found[..count].iter().zip(&fresh[..count]) {
            let slot = self.slot_at(platform, base, level);
            self.install_split(platform, slot, level, base, table);
        }
        Ok(())
    }

    /// The slot at `level` translating `va`, through tables that exist (the caller found them).
    fn slot_at<'a>(&self, platform: &dyn Platform, va: u64, level: usize) -> &'a AtomicU64 {
        let mut table_pa = self.root;
        for at in (level + 1..=ROOT_LEVEL).rev() {
            // SAFETY: `table_pa` is a table of this tree, owned by the caller.
            let entry =
                unsafe { entries(platform, table_pa) }[table_index(va, at)].load(Ordering::Relaxed);
            debug_assert!(F::is_table(entry, at));
            table_pa = F::address(entry);
        }
        // SAFETY: as above; the tree outlives the caller's use of the slot.
        let table = unsafe { entries(platform, table_pa) };
        &table[table_index(va, level)]
    }

    /// Maps `[va, va + span)` of `level` (1 or 2) to the frames from `pa` with one large leaf;
    /// see [`PageTableOps::map_large`].
    pub(super) fn map_large_inner(
        &mut self,
        platform: &dyn Platform,
        va: u64,
        pa: PhysAddr,
        level: usize,
        flags: MmuFlags,
    ) -> Result<bool, Status> {
        let span = entry_span(level.min(ROOT_LEVEL));
        let (lo, hi) = self.owned_span();
        if !LARGE_LEVELS.contains(&level)
            || va % span != 0
            || pa.0 % span != 0
            || va < lo
            || va >= hi
        {
            return Err(Status::InvalidArgs);
        }
        if !Self::large_leaves_allowed(platform) || level > platform.max_leaf_level() {
            return Err(Status::NotSupported);
        }
        let mut table_pa = self.root;
        let mut at = ROOT_LEVEL;
        while at > level {
            // SAFETY: `table_pa` is a table of this tree, owned exclusively through &mut self.
            let entry =
                unsafe { entries(platform, table_pa) }[table_index(va, at)].load(Ordering::Relaxed);
            if !F::is_valid(entry) {
                break;
            }
            if !F::is_table(entry, at) {
                // A larger leaf covers it already.
                return Err(Status::AlreadyExists);
            }
            table_pa = F::address(entry);
            at -= 1;
        }
        if at > level {
            table_pa = self.link_missing(platform, va, table_pa, at, level)?;
        }
        // SAFETY: as above.
        let slot = &unsafe { entries(platform, table_pa) }[table_index(va, level)];
        let old = slot.load(Ordering::Relaxed);
        if F::is_table(old, level) {
            // Smaller leaves (or an empty table on its way out) are there: the caller maps pages.
            return Err(Status::AlreadyExists);
        }
        if F::is_valid(old) && F::address(old) != pa {
            return Err(Status::AlreadyExists);
        }
        slot.store(
            F::block_entry_with(pa, flags | MmuFlags::READ, self.attrs),
            Ordering::Release,
        );
        Ok(F::is_valid(old))
    }

    /// Counts the leaves below `table_pa` (at `level`) into `counts`.
    pub(super) fn count_leaves(
        &self,
        platform: &dyn Platform,
        table_pa: PhysAddr,
        level: usize,
        counts: &mut LeafCounts,
    ) {
        // SAFETY: `table_pa` is a table of this tree, borrowed for the walk.
        let table = unsafe { entries(platform, table_pa) };
        let (first, last) = if level == ROOT_LEVEL {
            self.slots
        } else {
            (0, ENTRIES - 1)
        };
        for slot in &table[first..=last] {
            let entry = slot.load(Ordering::Relaxed);
            if !F::is_valid(entry) {
                continue;
            }
            if F::is_table(entry, level) {
                self.count_leaves(platform, F::address(entry), level - 1, counts);
                continue;
            }
            match level {
                0 => counts.pages += 1,
                1 => counts.large_2m += 1,
                _ => counts.large_1g += 1,
            }
        }
    }
}
