//! What a change to the page tables leaves to invalidate: the record the walker fills in.
//!
//! The walker ([`super::PageTable`]) writes into a [`PendingFlush`] every page whose translation it
//! changed and every table page it unlinked; the layer above ([`crate::tlb`]) invalidates what the
//! record names on every CPU that may cache it, and only then frees the table pages.

use crate::platform::tlbi::{instructions, MAX_RANGE_PAGES};
use crate::platform::{PhysAddr, Span, TlbFeatures, TlbScope};
use alloc::vec::Vec;

/// Past this many invalidation instructions in one address space, an operation invalidates the
/// whole address space instead. Without range features an instruction is one entry (a 4 KiB
/// page or one large leaf); with arm64 FEAT_TLBIRANGE a span of consecutive entries takes at
/// most five ([`crate::platform::tlbi::arm_span_ops`]), with INVLPGB one per
/// `TlbFeatures::invlpgb` entries. Zircon uses 32 entries on x86 and 16 on arm64, Linux 33
/// pages (`tlb_single_page_flush_ceiling`) on x86 and, on arm64, 512 pages without
/// FEAT_TLBIRANGE and 2^21 with it. Past a few dozen instructions they cost more than
/// refilling the TLB entries a full flush drops (a 4-level walk from the cache for each of the
/// few entries still in use), so we keep Zircon's x86 value for every path; with
/// FEAT_TLBIRANGE a range past [`MAX_RANGE_PAGES`] (8 GiB) flushes the address space too, as
/// Linux does: past that nearly everything the address space caches is in the range.
pub const FULL_FLUSH_THRESHOLD: usize = 32;

/// The most spans one record keeps; past that, the spans are not used (the record falls back
/// to its single entries, or the whole address space). Each span costs at least one
/// instruction, so more could never stay under [`FULL_FLUSH_THRESHOLD`].
const MAX_SPANS: usize = FULL_FLUSH_THRESHOLD;

/// What one address space needs invalidated after its entries changed, and the table pages that
/// become free once that is done. The single pages sit in a fixed array; only the list of freed
/// table pages is on the heap, and a [`crate::tlb::TlbBatch`] keeps its capacity from one operation to the next.
#[derive(Debug)]
pub struct PendingFlush {
    pages: [u64; FULL_FLUSH_THRESHOLD],
    page_count: usize,
    spans: [Span; MAX_SPANS],
    span_count: usize,
    /// More spans than `spans` holds.
    spans_over: bool,
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
        const NO_SPAN: Span = Span {
            va: 0,
            count: 0,
            level: 0,
        };
        PendingFlush {
            pages: [0; FULL_FLUSH_THRESHOLD],
            page_count: 0,
            spans: [NO_SPAN; MAX_SPANS],
            span_count: 0,
            spans_over: false,
            full: false,
            changed: 0,
            freed_tables: Vec::new(),
        }
    }

    /// Records that the translation of the 4 KiB page at `va` changed.
    #[inline]
    pub fn add_page(&mut self, va: u64) {
        self.add_leaf(va, 0);
    }

    /// Records that the translation of the leaf entry of `level` (0: a 4 KiB page, 1: 2 MiB,
    /// 2: 1 GiB) at `va` (aligned to its size) changed.
    #[inline]
    pub fn add_leaf(&mut self, va: u64, level: u8) {
        self.changed += 1;
        if self.full {
            return;
        }
        if self.page_count < FULL_FLUSH_THRESHOLD {
            self.pages[self.page_count] = va;
            self.page_count += 1;
        }
        if self.span_count > 0 {
            let last = &mut self.spans[self.span_count - 1];
            if last.level == level && last.end() == va {
                last.count += 1;
                return;
            }
        }
        if self.span_count < MAX_SPANS {
            self.spans[self.span_count] = Span {
                va,
                count: 1,
                level,
            };
            self.span_count += 1;
        } else {
            self.spans_over = true;
        }
    }

    /// Records that the whole address space must be invalidated.
    pub fn add_all(&mut self) {
        self.full = true;
        self.page_count = 0;
        self.span_count = 0;
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

    /// What to invalidate with single-page instructions only: the entries one by one up to
    /// [`FULL_FLUSH_THRESHOLD`], else everything.
    pub fn scope(&self) -> TlbScope<'_> {
        if self.is_full() {
            TlbScope::All
        } else {
            TlbScope::Pages(self.pages())
        }
    }

    /// What to invalidate with `features`: the spans, where the features cover them in at most
    /// [`FULL_FLUSH_THRESHOLD`] instructions (and, with arm64 ranges, at most
    /// [`MAX_RANGE_PAGES`] pages); else as [`PendingFlush::scope`].
    pub fn scope_with(&self, features: TlbFeatures) -> TlbScope<'_> {
        let ranged = features.range || features.invlpgb > 0;
        if !ranged || self.full || self.spans_over {
            return self.scope();
        }
        let spans = self.spans();
        let pages: u64 = spans.iter().map(Span::pages).sum();
        let fits = instructions(spans, features) <= FULL_FLUSH_THRESHOLD as u64
            && (features.invlpgb > 0 || pages <= MAX_RANGE_PAGES);
        if fits {
            TlbScope::Spans(spans)
        } else {
            TlbScope::All
        }
    }

    /// The changed entries as spans of consecutive entries of one size (empty when
    /// [`PendingFlush::add_all`] was called; incomplete past `MAX_SPANS`, which
    /// [`PendingFlush::scope_with`] checks).
    pub fn spans(&self) -> &[Span] {
        &self.spans[..self.span_count]
    }

    /// Whether table pages were unlinked (cached walks through them must go too).
    pub fn tables_freed(&self) -> bool {
        !self.freed_tables.is_empty()
    }

    /// Whether the whole address space must be invalidated with single-page instructions
    /// (more entries changed than [`FULL_FLUSH_THRESHOLD`], or [`PendingFlush::add_all`]).
    pub fn is_full(&self) -> bool {
        self.full || self.changed > FULL_FLUSH_THRESHOLD
    }

    /// The single pages to invalidate (empty when [`PendingFlush::is_full`]).
    pub fn pages(&self) -> &[u64] {
        if self.is_full() {
            &[]
        } else {
            &self.pages[..self.page_count]
        }
    }

    /// The table pages to free after the invalidation (for kernels that drive a
    /// [`crate::arch::PageTable`] of their own).
    pub fn freed_tables(&self) -> &[PhysAddr] {
        &self.freed_tables
    }

    /// Empties the record, keeping the capacity of its table list.
    pub fn clear(&mut self) {
        self.page_count = 0;
        self.span_count = 0;
        self.spans_over = false;
        self.full = false;
        self.changed = 0;
        self.freed_tables.clear();
    }
}
