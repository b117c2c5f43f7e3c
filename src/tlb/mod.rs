//! Batched TLB invalidation across CPUs, and the rule that frames are freed only after it.
//!
//! An operation (a decommit, an unmap, a protect) changes page-table entries in one or more address
//! spaces. It collects, per address space, what must be invalidated in a [`PendingFlush`] (single
//! pages up to [`FULL_FLUSH_THRESHOLD`], then the whole address space), and every frame it takes
//! away from a VMO or a page table in a [`TlbBatch`]. Nothing here frees a frame except
//! [`TlbBatch::finish`], which invalidates first. A batch is `#[must_use]`, and one dropped without
//! `finish` leaks its frames rather than freeing them early (and fails a debug assertion).

mod asid;
mod shootdown;

pub use self::asid::AsidAllocator;
pub(crate) use self::shootdown::Item;
pub use self::shootdown::Tlb;

use crate::platform::{PhysAddr, Platform, TlbScope};
use crate::vmar::{AddressSpace, Region};
use crate::vmo::{RemovedPages, Vmo};
use alloc::sync::Arc;
use alloc::vec::Vec;

/// The atomics and `Arc` of the shootdown protocol: `loom`'s under `cfg(loom)`, so that the
/// handshake can be model-checked, and `core`'s otherwise.
mod sync {
    #[cfg(not(loom))]
    pub(crate) use alloc::sync::Arc;
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::Arc;
}

/// Past this many pages in one address space, an operation invalidates the whole address space
/// instead of page by page. Zircon uses 32 on x86 and 16 on arm64, Linux 33
/// (`tlb_single_page_flush_ceiling`) on x86. Past a few dozen pages the single invalidations cost
/// more than refilling the TLB entries a full flush drops (a 4-level walk from the cache for each of
/// the few entries still in use), so we keep Zircon's x86 value for both architectures.
pub const FULL_FLUSH_THRESHOLD: usize = 32;

/// What one address space needs invalidated after its entries changed, and the table pages that
/// become free once that is done.
#[derive(Default, Debug)]
pub struct PendingFlush {
    pages: Vec<u64>,
    full: bool,
    changed: usize,
    freed_tables: Vec<PhysAddr>,
}

impl PendingFlush {
    /// An empty record.
    pub const fn new() -> Self {
        PendingFlush {
            pages: Vec::new(),
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
        if self.pages.len() < FULL_FLUSH_THRESHOLD {
            self.pages.push(va);
        } else {
            self.add_all();
        }
    }

    /// Records that the whole address space must be invalidated.
    pub fn add_all(&mut self) {
        self.full = true;
        self.pages = Vec::new();
    }

    /// Records a page-table page that was unlinked and may be freed after the invalidation.
    pub fn free_table(&mut self, table: PhysAddr) {
        self.freed_tables.push(table);
    }

    /// Whether nothing needs invalidating.
    pub fn is_empty(&self) -> bool {
        !self.full && self.pages.is_empty()
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
            TlbScope::Pages(&self.pages)
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
        &self.pages
    }

    /// The table pages to free after the invalidation (for kernels that drive a
    /// [`crate::arch::PageTable`] of their own).
    pub fn freed_tables(&self) -> &[PhysAddr] {
        &self.freed_tables
    }
}

/// Everything one operation must invalidate and then free.
#[must_use = "frames taken out of use are freed only by TlbBatch::finish, after the invalidation"]
#[derive(Default)]
pub struct TlbBatch {
    spaces: Vec<(Arc<AddressSpace>, PendingFlush)>,
    removed: RemovedPages,
    /// Unmapped mappings, taken off their VMOs' lists after the shootdown.
    retired: Vec<Arc<Region>>,
}

impl TlbBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record for `aspace`, made on first use.
    pub(crate) fn space(&mut self, aspace: &Arc<AddressSpace>) -> &mut PendingFlush {
        let index = match self.spaces.iter().position(|(a, _)| Arc::ptr_eq(a, aspace)) {
            Some(index) => index,
            None => {
                self.spaces.push((aspace.clone(), PendingFlush::new()));
                self.spaces.len() - 1
            }
        };
        &mut self.spaces[index].1
    }

    /// Where the pages that leave VMOs go, to be freed after the invalidation.
    pub(crate) fn removed(&mut self) -> &mut RemovedPages {
        &mut self.removed
    }

    /// Takes over an unmapped mapping: it leaves its VMO's list only after the shootdown, so that
    /// a decommit meanwhile still flushes its address space, and its VMO (which it holds alive)
    /// cannot free frames while a TLB may still map them.
    pub(crate) fn retire(&mut self, region: Arc<Region>) {
        self.retired.push(region);
    }

    /// How many page translations changed, over all address spaces.
    pub fn changed_pages(&self) -> usize {
        self.spaces.iter().map(|(_, p)| p.changed_pages()).sum()
    }

    /// Invalidates every recorded translation on the CPUs that may hold it, in one shootdown
    /// round for the whole operation, waits for that to complete, and only then frees the frames
    /// and table pages. Called with no crate lock held.
    pub fn finish(mut self, platform: &dyn Platform) {
        let spaces = core::mem::take(&mut self.spaces);
        let removed = core::mem::take(&mut self.removed);
        let items: Vec<Item> = spaces
            .iter()
            .filter(|(_, pending)| !pending.is_empty())
            .map(|(aspace, pending)| aspace.shootdown_item(pending))
            .collect();
        platform.tlb().shoot(platform, items);
        for (_, pending) in &spaces {
            if !pending.freed_tables().is_empty() {
                // SAFETY: every table here was unlinked under its address space's page-table
                // lock, and `shoot` returned only after every CPU that may have cached a walk
                // through it completed its invalidation (or was marked to flush before it runs
                // the address space again); each is listed once.
                unsafe { platform.free_frames(pending.freed_tables()) };
            }
        }
        // SAFETY: as for the tables: these frames left their page lists under the VMOs' locks,
        // every entry mapping them was cleared and is covered by the shootdown that completed.
        unsafe { removed.free(platform) };
        // No CPU holds a translation through the retired mappings any more.
        for region in core::mem::take(&mut self.retired) {
            let vmo = region
                .mapping()
                .expect("only mappings retire")
                .vmo()
                .clone();
            Vmo::remove_mapping_locked(&mut vmo.lock(), &region);
            // Dropping the region may drop the VMO, which frees its frames: safe now.
        }
    }
}

impl Drop for TlbBatch {
    fn drop(&mut self) {
        debug_assert!(
            self.removed.is_empty() && self.spaces.iter().all(|(_, p)| p.freed_tables.is_empty()),
            "a TlbBatch holding frames was dropped without finish(): its frames leak"
        );
    }
}
