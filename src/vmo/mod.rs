//! Virtual memory objects: reference-counted sets of pages, and the list of their mappings.
//!
//! A paged VMO commits zero-filled frames on demand (a fault, a write, `ZX_VMO_OP_COMMIT`) and
//! gives them back on `ZX_VMO_OP_DECOMMIT`. Contiguous and physical VMOs, which a kernel creates for
//! drivers, are backed from their creation and do not decommit.
//!
//! Each VMO keeps, under its lock, the list of every mapping of it in every address space, so a
//! decommit reaches every translation of its pages. The lock order is in [`crate::vmar`].

mod child;
mod cow;
mod cow_pages;
mod deferred;
mod info;
mod io;
mod large;
mod mapping;
mod page_list;
mod pin;
mod resize;
mod zero;
mod zero_page;

use self::cow_pages::Blocked;
pub(crate) use self::cow_pages::FaultPage;
pub(crate) use self::deferred::RetiredMappings;
pub use self::mapping::Mapping;
pub(crate) use self::mapping::{MappedSpace, VmoListAdapter};

pub use self::cow::MAX_COW_DEPTH;
pub use self::page_list::{
    Chunk, PageList, RemovedPages, RunBlock, CHUNK_PAGES, PAGE_LIST_PHYS_LIMIT,
};

use self::child::{Alias, Lineage};
use self::cow::CowLink;

impl VmoInner {
    /// Whether the VMO shares pages with a snapshot relative (a node of a copy-on-write tree):
    /// its translations of shared pages must stay read-only.
    pub(crate) fn in_cow_tree(&self) -> bool {
        self.cow.is_some()
    }
}

use crate::abi::next_koid;
use crate::abi::{
    is_page_aligned, page_round_up, zx_koid_t, Status, ZxResult, PAGE_SHIFT, PAGE_SIZE,
};
use crate::platform::{PhysAddr, Platform};
use crate::tlb::TlbBatch;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use intrusive_collections::LinkedList;
use spin::mutex::{SpinMutex as Mutex, SpinMutexGuard as MutexGuard};

/// The largest VMO: the user address space, so that any VMO can be mapped whole.
pub const MAX_VMO_SIZE: u64 = 1 << 47;

/// What backs a VMO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmoKind {
    /// Frames from the allocator, committed on demand.
    Paged,
    /// Physically contiguous frames from [`Platform::alloc_contiguous`], committed at creation.
    Contiguous {
        /// The first frame.
        base: PhysAddr,
    },
    /// A fixed physical range (device memory), never allocated or freed by the crate.
    Physical {
        /// The first frame.
        base: PhysAddr,
    },
}

/// A VMO's mutable state, guarded by its lock.
pub(crate) struct VmoInner {
    pages: PageList,
    /// Pin counts of pinned pages.
    pins: BTreeMap<u64, u32>,
    /// Every mapping of this VMO, in every address space.
    mappings: LinkedList<VmoListAdapter>,
    mapping_count: u64,
    /// Uncommitted pages that a read fault mapped to the shared zero page somewhere (a superset:
    /// an unmap may have cleared the entry since). Each entry that points at the zero page is for
    /// a page listed here; a page leaves the set when it is committed or decommitted, its zero
    /// entries cleared in every mapping (`src/vmo/zero_page.rs`).
    zero_mapped: BTreeSet<u64>,
    /// The copy-on-write tree this VMO is a node of, once it has a snapshot parent or child
    /// (`src/vmo/cow.rs`); `None` for a VMO alone.
    cow: Option<CowLink>,
    /// A copy of this operation has begun the tree's count of a round already (it did so under
    /// the tree's lock, before letting go of it); [`Vmo::begin_round_locked`] takes it over.
    /// Only ever true inside one operation, under the VMO's lock.
    round_open: bool,
}

/// A virtual memory object.
pub struct Vmo {
    koid: zx_koid_t,
    /// The size in bytes, whole pages. Changes only under the VMO's lock (`zx_vmo_set_size`),
    /// so an operation that checks a range against it under the lock sees it hold until it
    /// lets go.
    size: AtomicU64,
    /// Created with `ZX_VMO_RESIZABLE`.
    resizable: bool,
    /// A paged VMO made with [`Vmo::create_large_pages`]: commits in aligned 2 MiB runs where it
    /// can, which its mappings map with 2 MiB leaves.
    large_pages: bool,
    kind: VmoKind,
    platform: Arc<dyn Platform>,
    inner: Mutex<VmoInner>,
    /// A slice or reference child: a window on another VMO's pages, which every operation
    /// forwards to (`src/vmo/child.rs`); such a VMO has no pages or mappings of its own.
    alias: Option<Alias>,
    /// Where the VMO came from and how many children it has, for `ZX_INFO_VMO`.
    lineage: Lineage,
}

/// Fills the frame at `pa` with zeroes.
fn zero_frame(platform: &dyn Platform, pa: PhysAddr) {
    let ptr = platform.phys_to_virt(pa);
    // SAFETY: `ptr` is valid for PAGE_SIZE bytes while the frame is allocated (Platform contract);
    // the caller has just allocated the frame and nothing else refers to it yet.
    unsafe { core::ptr::write_bytes(ptr, 0, PAGE_SIZE as usize) };
}

impl Vmo {
    fn new(platform: Arc<dyn Platform>, size: u64, kind: VmoKind, resizable: bool) -> Arc<Vmo> {
        Arc::new(Self::build(platform, size, kind, resizable, None))
    }

    /// A VMO's value, before it is shared.
    fn build(
        platform: Arc<dyn Platform>,
        size: u64,
        kind: VmoKind,
        resizable: bool,
        cow: Option<CowLink>,
    ) -> Vmo {
        Vmo {
            koid: next_koid(),
            size: AtomicU64::new(size),
            resizable,
            large_pages: false,
            kind,
            platform,
            inner: Mutex::new(VmoInner {
                pages: PageList::new(),
                pins: BTreeMap::new(),
                mappings: LinkedList::new(VmoListAdapter::new()),
                mapping_count: 0,
                zero_mapped: BTreeSet::new(),
                cow,
                round_open: false,
            }),
            alias: None,
            lineage: Lineage::default(),
        }
    }

    /// A paged VMO of `size` bytes (rounded up to whole pages), with nothing committed.
    pub fn create(platform: Arc<dyn Platform>, size: u64) -> ZxResult<Arc<Vmo>> {
        Self::create_paged(platform, size, false)
    }

    /// A paged VMO of `size` bytes that [`Vmo::set_size`] can grow and shrink
    /// (`ZX_VMO_RESIZABLE`).
    pub fn create_resizable(platform: Arc<dyn Platform>, size: u64) -> ZxResult<Arc<Vmo>> {
        Self::create_paged(platform, size, true)
    }

    fn create_paged(platform: Arc<dyn Platform>, size: u64, resizable: bool) -> ZxResult<Arc<Vmo>> {
        let size = page_round_up(size).ok_or(Status::OutOfRange)?;
        if size > MAX_VMO_SIZE {
            return Err(Status::OutOfRange);
        }
        Ok(Self::new(platform, size, VmoKind::Paged, resizable))
    }

    /// A VMO over `size` bytes of physically contiguous, zeroed frames. Kernel use only.
    pub fn create_contiguous(platform: Arc<dyn Platform>, size: u64) -> ZxResult<Arc<Vmo>> {
        let size = page_round_up(size).ok_or(Status::OutOfRange)?;
        if size == 0 || size > MAX_VMO_SIZE {
            return Err(Status::InvalidArgs);
        }
        let pages = (size >> PAGE_SHIFT) as usize;
        let base = platform.alloc_contiguous(pages).ok_or(Status::NoMemory)?;
        for i in 0..pages as u64 {
            zero_frame(&*platform, PhysAddr(base.0 + i * PAGE_SIZE));
        }
        Ok(Self::new(
            platform,
            size,
            VmoKind::Contiguous { base },
            false,
        ))
    }

    /// A VMO over the physical range `[base, base + size)`, e.g. device memory. Kernel use only;
    /// the caller vouches that the range is not RAM the allocator hands out.
    pub fn create_physical(
        platform: Arc<dyn Platform>,
        base: PhysAddr,
        size: u64,
    ) -> ZxResult<Arc<Vmo>> {
        if !is_page_aligned(base.0) || !is_page_aligned(size) || size == 0 || size > MAX_VMO_SIZE {
            return Err(Status::InvalidArgs);
        }
        base.0.checked_add(size).ok_or(Status::InvalidArgs)?;
        Ok(Self::new(platform, size, VmoKind::Physical { base }, false))
    }

    /// The kernel object id.
    pub fn koid(&self) -> zx_koid_t {
        self.koid
    }

    /// The size in bytes (whole pages).
    pub fn size(&self) -> u64 {
        match &self.alias {
            Some(alias) if alias.reference => alias.target.size(),
            _ => self.size.load(Ordering::Acquire),
        }
    }

    /// Whether [`Vmo::set_size`] may change the size (`ZX_VMO_RESIZABLE`).
    pub fn is_resizable(&self) -> bool {
        self.resizable
    }

    /// What backs the VMO.
    pub fn kind(&self) -> VmoKind {
        self.kind
    }

    /// The platform the VMO's frames come from.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Whether `ZX_VMO_OP_DECOMMIT` applies to this VMO.
    pub fn supports_decommit(&self) -> bool {
        self.kind == VmoKind::Paged
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, VmoInner> {
        self.inner.lock()
    }

    /// Takes the VMO's lock and keeps it past this call, with no guard: for an operation that
    /// holds several VMO locks at once without a list of guards. Undone by
    /// [`Vmo::unlock_held`]; the state is reached meanwhile through [`Vmo::held_inner`].
    pub(crate) fn lock_held(&self) {
        MutexGuard::leak(self.inner.lock());
    }

    /// The VMO's state, while its lock is held through [`Vmo::lock_held`].
    ///
    /// # Safety
    /// The caller took the lock with [`Vmo::lock_held`] and has not released it, and no other
    /// reference to the state is alive while the returned one is.
    #[allow(clippy::mut_from_ref)] // exclusive by the lock and the caller's promise
    pub(crate) unsafe fn held_inner(&self) -> &mut VmoInner {
        // SAFETY: the lock is held by the caller's operation (so no other thread reaches the
        // state), and the caller keeps this the only reference to it.
        unsafe { &mut *self.inner.as_mut_ptr() }
    }

    /// Releases a lock taken with [`Vmo::lock_held`].
    ///
    /// # Safety
    /// The caller took the lock with [`Vmo::lock_held`], and no reference from
    /// [`Vmo::held_inner`] is alive.
    pub(crate) unsafe fn unlock_held(&self) {
        // SAFETY: forwarded from the caller: the lock is held, by this operation, with no guard.
        unsafe { self.inner.force_unlock() };
    }

    /// How many mappings of the VMO exist.
    pub fn num_mappings(&self) -> u64 {
        self.lock().mapping_count
    }

    /// Heap bytes of page-list metadata.
    pub fn page_list_heap_bytes(&self) -> usize {
        self.lock().pages.heap_bytes()
    }

    /// `[offset, offset + len)` as page indices, if it lies within the VMO. Called under the
    /// VMO's lock, which keeps the size.
    fn page_range(&self, _locked: &VmoInner, offset: u64, len: u64) -> ZxResult<(u64, u64)> {
        let end = offset.checked_add(len).ok_or(Status::OutOfRange)?;
        if end > self.size() {
            return Err(Status::OutOfRange);
        }
        let first = offset >> PAGE_SHIFT;
        if len == 0 {
            return Ok((first, first));
        }
        let last = page_round_up(end).ok_or(Status::OutOfRange)? >> PAGE_SHIFT;
        Ok((first, last))
    }

    /// The frame of page `index` if it is committed, without committing it.
    pub(crate) fn lookup_page_locked(&self, inner: &VmoInner, index: u64) -> Option<PhysAddr> {
        match self.kind {
            VmoKind::Paged => inner.pages.get(index),
            VmoKind::Contiguous { base } | VmoKind::Physical { base } => {
                Some(PhysAddr(base.0 + (index << PAGE_SHIFT)))
            }
        }
    }

    /// The frame of page `index`, committing a zeroed frame if there is none. `index` is below the
    /// VMO's size in pages.
    pub(crate) fn commit_page_locked(
        &self,
        inner: &mut VmoInner,
        index: u64,
    ) -> ZxResult<PhysAddr> {
        debug_assert!(index < self.size() >> PAGE_SHIFT);
        if let Some(pa) = self.lookup_page_locked(inner, index) {
            return Ok(pa);
        }
        if let Some(first) = self.commit_run_locked(inner, index) {
            return Ok(PhysAddr(first.0 + ((index % CHUNK_PAGES) << PAGE_SHIFT)));
        }
        let pa = self.alloc_page_frame()?;
        zero_frame(&*self.platform, pa);
        inner.pages.insert(index, pa);
        Ok(pa)
    }

    /// A frame for a paged VMO's page: `ZX_ERR_NO_MEMORY` when the platform has none, or hands
    /// out one at or above [`page_list::PAGE_LIST_PHYS_LIMIT`] (16 TiB), which the page list
    /// cannot hold; that frame goes straight back.
    fn alloc_page_frame(&self) -> ZxResult<PhysAddr> {
        let pa = self.platform.alloc_frame().ok_or(Status::NoMemory)?;
        if !PageList::can_hold(pa) {
            // SAFETY: allocated just now and never mapped or recorded anywhere.
            unsafe { self.platform.free_frames(&[pa]) };
            return Err(Status::NoMemory);
        }
        Ok(pa)
    }

    /// The committed pages in `[first, last)` with their frames.
    pub(crate) fn committed_in_locked<'a>(
        &self,
        inner: &'a VmoInner,
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = (u64, PhysAddr)> + 'a {
        let (base, paged) = match self.kind {
            VmoKind::Paged => (PhysAddr(0), true),
            VmoKind::Contiguous { base } | VmoKind::Physical { base } => (base, false),
        };
        let fixed = (!paged)
            .then(move || (first..last).map(move |i| (i, PhysAddr(base.0 + (i << PAGE_SHIFT)))));
        let listed = paged.then(|| inner.pages.iter_range(first, last));
        fixed
            .into_iter()
            .flatten()
            .chain(listed.into_iter().flatten())
    }

    /// Commits every page of `[offset, offset + len)` (rounded out to pages). On failure, the
    /// pages this call committed are given back, so nothing changes.
    pub fn commit(&self, offset: u64, len: u64) -> ZxResult {
        if let Some(forward) = self.forward(offset, len) {
            let (target, offset) = forward?;
            return target.commit(offset, len);
        }
        self.until_settled(|| {
            let mut batch = TlbBatch::new(&*self.platform);
            let round = {
                let mut inner = self.lock();
                let (first, last) = self.page_range(&inner, offset, len)?;
                self.commit_all_locked(&mut inner, first, last, &mut batch)?;
                self.unmap_zero_pages_locked(&mut inner, first, last, &mut batch);
                Self::begin_round_locked(&mut inner, &batch)
            };
            self.finish_round(batch, round);
            Ok(())
        })
    }

    /// Commits every page in `[first, last)`, or none of the missing ones; in a tree, the
    /// translations of the pages copied are cleared into `batch`.
    fn commit_all_locked(
        &self,
        inner: &mut VmoInner,
        first: u64,
        last: u64,
        batch: &mut TlbBatch,
    ) -> Result<(), Blocked> {
        if self.kind != VmoKind::Paged {
            return Ok(());
        }
        if inner.cow.is_some() {
            return self.commit_tree_locked(inner, first, last, false, batch);
        }
        let mut added: Vec<u64> = Vec::new();
        for index in first..last {
            if inner.pages.get(index).is_some() {
                continue;
            }
            if index % CHUNK_PAGES == 0 && index + CHUNK_PAGES <= last {
                // A run wholly inside the range, of a VMO with large pages: one allocation.
                if added.try_reserve(CHUNK_PAGES as usize).is_err() {
                    self.give_back_locked(inner, &added);
                    return Err(Status::NoMemory.into());
                }
                if self.commit_run_locked(inner, index).is_some() {
                    added.extend(index..index + CHUNK_PAGES);
                    continue;
                }
            }
            if added.try_reserve(1).is_err() {
                self.give_back_locked(inner, &added);
                return Err(Status::NoMemory.into());
            }
            match self.alloc_page_frame().ok() {
                Some(pa) => {
                    zero_frame(&*self.platform, pa);
                    inner.pages.insert(index, pa);
                    added.push(index);
                }
                None => {
                    self.give_back_locked(inner, &added);
                    return Err(Status::NoMemory.into());
                }
            }
        }
        Ok(())
    }

    /// Takes back the pages `added` that a failing commit made.
    fn give_back_locked(&self, inner: &mut VmoInner, added: &[u64]) {
        let mut removed = RemovedPages::default();
        for &index in added {
            inner.pages.remove_range(index, index + 1, &mut removed);
        }
        // SAFETY: these frames were committed by this call under the lock the caller still
        // holds, so no mapping can have translated them: no TLB holds them.
        unsafe { removed.free(&*self.platform) };
    }

    /// `ZX_VMO_OP_DECOMMIT` on the VMO itself: `offset` and `len` page aligned, inside the VMO.
    pub fn decommit(self: &Arc<Self>, offset: u64, len: u64) -> ZxResult {
        if !is_page_aligned(offset) || !is_page_aligned(len) {
            return Err(Status::InvalidArgs);
        }
        if let Some(forward) = self.forward(offset, len) {
            let (target, offset) = forward?;
            return target.decommit(offset, len);
        }
        let mut batch = TlbBatch::new(&*self.platform);
        {
            let mut inner = self.lock();
            let (first, last) = self.page_range(&inner, offset, len)?;
            if !self.supports_decommit_locked(&mut inner) {
                return Err(Status::NotSupported);
            }
            if Self::any_pinned_locked(&inner, first, last) {
                return Err(Status::BadState);
            }
            self.decommit_locked(&mut inner, first, last, &mut batch);
        }
        batch.finish(&*self.platform);
        Ok(())
    }

    /// Takes pages `[first, last)` out of the VMO and unmaps them from every mapping, recording
    /// the invalidations and the frames to free in `batch`. The caller checked pins and kind.
    pub(crate) fn decommit_locked(
        &self,
        inner: &mut VmoInner,
        first: u64,
        last: u64,
        batch: &mut TlbBatch,
    ) {
        debug_assert!(self.kind == VmoKind::Paged);
        let last = last.min(self.size() >> PAGE_SHIFT);
        let removed = inner
            .pages
            .remove_range(first, last, batch.deferred::<RemovedPages>());
        let zero_mapped = Self::forget_zero_pages_locked(inner, first, last);
        if removed == 0 && !zero_mapped && inner.cow.is_none() {
            // No page was committed or mapped to the zero page (nor shared from a parent): no
            // translation can exist.
            return;
        }
        self.unmap_range_locked(inner, first, last, batch);
    }

    /// Clears every translation of pages `[first, last)` in every mapping of the VMO, into
    /// `batch`.
    fn unmap_range_locked(&self, inner: &VmoInner, first: u64, last: u64, batch: &mut TlbBatch) {
        let (start, end) = (first << PAGE_SHIFT, last << PAGE_SHIFT);
        for mapping in inner.mappings.iter() {
            let offset = mapping.vmo_offset();
            let lo = start.max(offset);
            let hi = end.min(offset.saturating_add(mapping.size()));
            if lo >= hi {
                continue;
            }
            let Some(space) = mapping.space() else {
                continue;
            };
            if mapping.is_unmapped() {
                // Its entries are gone, but the shootdown of its unmap may still be under way:
                // a CPU may cache a translation to one of our frames through it. Flush its
                // address space as part of our round, so the frames outlive every such entry.
                space.flush_all(batch);
                continue;
            }
            let va = mapping.base() + (lo - offset);
            space.unmap_pages(va, va + (hi - lo), batch);
        }
    }

    /// Adds `mapping`, a new mapping of this VMO, to its list.
    pub(crate) fn add_mapping_locked(inner: &mut VmoInner, mapping: Arc<Mapping>) {
        inner.mappings.push_back(mapping);
        inner.mapping_count += 1;
    }

    /// Removes `mapping` from this VMO's mapping list.
    pub(crate) fn remove_mapping_locked(inner: &mut VmoInner, mapping: &Arc<Mapping>) {
        // SAFETY: `mapping` is a mapping of this VMO, and a mapping is in its VMO's list from its
        // creation until this call (made once, after its unmap's shootdown), so it is linked in
        // `inner.mappings` and not in any other list. The pointer comes from the `Arc`, keeping
        // the provenance of the whole allocation that `remove` turns back into an `Arc`.
        let mut cursor = unsafe { inner.mappings.cursor_mut_from_ptr(Arc::as_ptr(mapping)) };
        cursor.remove();
        inner.mapping_count -= 1;
    }
}

impl Drop for Vmo {
    fn drop(&mut self) {
        self.lineage.release();
        self.leave_tree();
        let inner = self.inner.get_mut();
        debug_assert!(inner.mappings.is_empty(), "a mapping holds its VMO alive");
        let mut removed = RemovedPages::default();
        inner.pages.remove_range(0, u64::MAX, &mut removed);
        // An alias's frames are its target's (which it holds alive), never its own.
        if let (VmoKind::Contiguous { base }, None) = (self.kind, &self.alias) {
            removed.frames.extend(
                (0..*self.size.get_mut() >> PAGE_SHIFT)
                    .map(|i| PhysAddr(base.0 + (i << PAGE_SHIFT))),
            );
        }
        // SAFETY: the VMO has no mappings (each mapping holds it alive, and an unmapped one keeps
        // it alive in its TlbBatch until the shootdown completed), so no page table or TLB refers
        // to these frames; each is freed once, here.
        unsafe { removed.free(&*self.platform) };
    }
}
