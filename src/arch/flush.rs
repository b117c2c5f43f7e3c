//! What a change to the page tables leaves to invalidate: the record the walker fills in.
//!
//! The walker ([`super::PageTable`]) writes into a [`PendingFlush`] every page whose translation it
//! changed and every table page it unlinked; the layer above ([`crate::tlb`]) invalidates what the
//! record names on every CPU that may cache it, and only then frees the table pages.

use crate::platform::{PhysAddr, TlbScope};
use alloc::vec::Vec;

/// Past this many pages in one address space, an operation invalidates the whole address space
/// instead of page by page. Zircon uses 32 on x86 and 16 on arm64, Linux 33
/// (`tlb_single_page_flush_ceiling`) on x86. Past a few dozen pages the single invalidations cost
/// more than refilling the TLB entries a full flush drops (a 4-level walk from the cache for each of
/// the few entries still in use), so we keep Zircon's x86 value for both architectures.
pub const FULL_FLUSH_THRESHOLD: usize = 32;

/// What one address space needs invalidated after its entries changed, and the table pages that
/// become free once that is done. The single pages sit in a fixed array; only the list of freed
/// table pages is on the heap, and a [`crate::tlb::TlbBatch`] keeps its capacity from one operation to the next.
#[derive(Debug)]
pub struct PendingFlush {
    pages: [u64; FULL_FLUSH_THRESHOLD],
    page_count: usize,
    full: bool,
    changed: usize,
    freed_tables: Vec<PhysAddr>,
}

impl Default for PendingFlush {
    fn default() -> Self {
        Self::new()
    }
}

impl PendingFlush {
    /// An empty record.
    pub const fn new() -> Self {
        PendingFlush {
            pages: [0; FULL_FLUSH_THRESHOLD],
            page_count: 0,
            full: false,
            changed: 0,
            freed_tables: Vec::new(),
        }
    }

    /// Records that the translation of the page at `va` changed.
    #[inline]
    pub fn add_page(&mut self, va: u64) {
        self.changed += 1;
        if self.full {
            return;
        }
        if self.page_count < FULL_FLUSH_THRESHOLD {
            self.pages[self.page_count] = va;
            self.page_count += 1;
        } else {
            self.add_all();
        }
    }

    /// Records that the whole address space must be invalidated.
    pub fn add_all(&mut self) {
        self.full = true;
        self.page_count = 0;
    }

    /// Records a page-table page that was unlinked and may be freed after the invalidation.
    pub fn free_table(&mut self, table: PhysAddr) {
        self.freed_tables.push(table);
    }

    /// Whether nothing needs invalidating.
    pub fn is_empty(&self) -> bool {
        !self.full && self.page_count == 0
    }

    /// How many page translations changed.
    pub fn changed_pages(&self) -> usize {
        self.changed
    }

    /// What to invalidate.
    pub fn scope(&self) -> TlbScope<'_> {
        if self.full {
            TlbScope::All
        } else {
            TlbScope::Pages(self.pages())
        }
    }

    /// Whether table pages were unlinked (cached walks through them must go too).
    pub fn tables_freed(&self) -> bool {
        !self.freed_tables.is_empty()
    }

    /// Whether the whole address space must be invalidated.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The single pages to invalidate (empty when [`PendingFlush::is_full`]).
    pub fn pages(&self) -> &[u64] {
        &self.pages[..self.page_count]
    }

    /// The table pages to free after the invalidation (for kernels that drive a
    /// [`crate::arch::PageTable`] of their own).
    pub fn freed_tables(&self) -> &[PhysAddr] {
        &self.freed_tables
    }

    /// Empties the record, keeping the capacity of its table list.
    pub fn clear(&mut self) {
        self.page_count = 0;
        self.full = false;
        self.changed = 0;
        self.freed_tables.clear();
    }
}
