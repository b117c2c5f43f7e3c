//! The committed pages of a VMO, compactly.
//!
//! Pages are kept in chunks of [`CHUNK_PAGES`] consecutive page indices, each chunk an array of
//! 32-bit frame numbers (plus one, so that 0 means "not committed"), in a `BTreeMap` keyed by
//! chunk index. A fully committed range costs 4 bytes per page plus the chunk's share of one map
//! entry; a chunk is freed as soon as its last page leaves. Frame numbers must fit in 32 bits:
//! physical memory up to 16 TiB.

use crate::platform::PhysAddr;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Pages per chunk.
pub const CHUNK_PAGES: u64 = 64;

/// The frames of up to [`CHUNK_PAGES`] consecutive pages.
pub struct Chunk {
    /// Frame number + 1 of each page; 0 where the page is not committed.
    slots: [u32; CHUNK_PAGES as usize],
    /// How many slots are non-zero.
    used: u32,
}

impl Chunk {
    /// The frames in the chunk (the scan stops at the last one).
    pub fn frames(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.slots
            .iter()
            .filter(|&&slot| slot != 0)
            .take(self.used as usize)
            .map(|&slot| decode(slot))
    }
}

/// Pages taken out of a [`PageList`]: whole lists, whole chunks, and single frames from partial
/// chunks.
#[derive(Default)]
pub struct RemovedPages {
    /// Whole lists' chunk maps, when a range took every page of a list: moved in one step.
    pub maps: Vec<BTreeMap<u64, Box<Chunk>>>,
    /// Chunks that left whole.
    pub chunks: Vec<Box<Chunk>>,
    /// Frames that left one by one.
    pub frames: Vec<PhysAddr>,
}

impl RemovedPages {
    /// Gives every frame back to `platform`, without a list of them all: the single frames in
    /// one call, each whole chunk's in another.
    ///
    /// # Safety
    /// As for [`crate::platform::Platform::free_frames`]: no page table or TLB may still reach any of the frames.
    pub unsafe fn free(&self, platform: &dyn crate::platform::Platform) {
        if !self.frames.is_empty() {
            // SAFETY: forwarded from the caller.
            unsafe { platform.free_frames(&self.frames) };
        }
        if self.chunks.is_empty() && self.maps.is_empty() {
            return;
        }
        let mut batch = [PhysAddr(0); CHUNK_PAGES as usize];
        let whole = self.maps.iter().flat_map(|map| map.values());
        for chunk in self.chunks.iter().chain(whole) {
            let mut count = 0;
            for frame in chunk.frames() {
                batch[count] = frame;
                count += 1;
            }
            // SAFETY: forwarded from the caller.
            unsafe { platform.free_frames(&batch[..count]) };
        }
    }

    /// Every frame taken out.
    pub fn frames(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        let whole = self.maps.iter().flat_map(|map| map.values());
        self.frames.iter().copied().chain(
            self.chunks
                .iter()
                .chain(whole)
                .flat_map(|chunk| chunk.frames()),
        )
    }

    /// Forgets what was taken out (after it was freed), keeping the lists' capacity.
    pub fn clear(&mut self) {
        self.maps.clear();
        self.chunks.clear();
        self.frames.clear();
    }

    /// Whether nothing was taken out.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty() && self.chunks.is_empty() && self.frames.is_empty()
    }
}

/// A sparse map from page index to frame.
#[derive(Default)]
pub struct PageList {
    chunks: BTreeMap<u64, Box<Chunk>>,
    committed: u64,
}

/// The first physical address the list cannot hold: frame numbers are stored in 32 bits, so
/// paged VMOs take frames below 16 TiB. A frame above it is refused where it is allocated
/// ([`PageList::can_hold`]), and the allocation fails with `ZX_ERR_NO_MEMORY`.
pub const PAGE_LIST_PHYS_LIMIT: u64 = (u32::MAX as u64) << crate::abi::PAGE_SHIFT;

fn encode(pa: PhysAddr) -> u32 {
    debug_assert!(PageList::can_hold(pa), "checked by the caller");
    (pa.frame_number() as u32).wrapping_add(1)
}

fn decode(slot: u32) -> PhysAddr {
    PhysAddr::from_frame_number(u64::from(slot - 1))
}

impl PageList {
    /// An empty list.
    pub const fn new() -> Self {
        PageList {
            chunks: BTreeMap::new(),
            committed: 0,
        }
    }

    /// Whether the list can hold the frame at `pa` (below [`PAGE_LIST_PHYS_LIMIT`]).
    pub const fn can_hold(pa: PhysAddr) -> bool {
        pa.0 < PAGE_LIST_PHYS_LIMIT
    }

    /// How many pages are committed.
    pub fn committed_pages(&self) -> u64 {
        self.committed
    }

    /// The frame of page `index`, if committed.
    pub fn get(&self, index: u64) -> Option<PhysAddr> {
        let chunk = self.chunks.get(&(index / CHUNK_PAGES))?;
        let slot = chunk.slots[(index % CHUNK_PAGES) as usize];
        (slot != 0).then(|| decode(slot))
    }

    /// Commits page `index` to `frame`. The page must not be committed, and the list must be
    /// able to hold the frame ([`PageList::can_hold`]).
    pub fn insert(&mut self, index: u64, frame: PhysAddr) {
        let chunk = self.chunks.entry(index / CHUNK_PAGES).or_insert_with(|| {
            Box::new(Chunk {
                slots: [0; CHUNK_PAGES as usize],
                used: 0,
            })
        });
        let slot = &mut chunk.slots[(index % CHUNK_PAGES) as usize];
        debug_assert_eq!(*slot, 0, "page {index} committed twice");
        *slot = encode(frame);
        chunk.used += 1;
        self.committed += 1;
    }

    /// Takes every committed page in `[start, end)` out of the list into `out`: chunks that lie
    /// wholly inside the range move there as they are (no per-page work), the pages of the chunks
    /// at its ends one by one. Returns how many pages left.
    pub fn remove_range(&mut self, start: u64, end: u64, out: &mut RemovedPages) -> u64 {
        if start >= end || self.committed == 0 {
            return 0;
        }
        let first_chunk = start / CHUNK_PAGES;
        let last_chunk = (end - 1) / CHUNK_PAGES;
        // The chunks wholly inside: [first_full, end_full).
        let first_full = start.div_ceil(CHUNK_PAGES);
        let end_full = end / CHUNK_PAGES;
        // The range takes every chunk: the whole map moves out in one step (no per-chunk work,
        // no allocation; the common case of a decommit of a whole VMO).
        // (Only a range with a whole chunk in it can: a list that is not empty has a chunk.)
        if first_full < end_full
            && first_full <= self.chunks.keys().next().copied().unwrap_or(0)
            && self.chunks.keys().next_back().copied().unwrap_or(0) < end_full
        {
            let removed = self.committed;
            out.maps.push(core::mem::take(&mut self.chunks));
            self.committed = 0;
            return removed;
        }
        let mut removed = 0;
        if first_full < end_full {
            // One removal per chunk: unlike `split_off`, removing from a B-tree never allocates.
            loop {
                let next = self.chunks.range(first_full..end_full).next();
                let Some(key) = next.map(|(&key, _)| key) else {
                    break;
                };
                let Some(chunk) = self.chunks.remove(&key) else {
                    break;
                };
                removed += u64::from(chunk.used);
                out.chunks.push(chunk);
            }
        }
        // The chunks at either end that the range covers only in part.
        let full = first_full..end_full;
        let mut emptied = [None; 2];
        let ends = [first_chunk, last_chunk];
        let partial = ends[..if first_chunk == last_chunk { 1 } else { 2 }]
            .iter()
            .filter(|key| !full.contains(key));
        for &key in partial {
            let Some(chunk) = self.chunks.get_mut(&key) else {
                continue;
            };
            let base = key * CHUNK_PAGES;
            let lo = (start.max(base) - base) as usize;
            let hi = (end.min(base + CHUNK_PAGES) - base) as usize;
            let mut taken = 0u32;
            for slot in &mut chunk.slots[lo..hi] {
                if *slot != 0 {
                    out.frames.push(decode(*slot));
                    *slot = 0;
                    taken += 1;
                }
            }
            chunk.used -= taken;
            removed += u64::from(taken);
            if chunk.used == 0 {
                emptied[usize::from(key != first_chunk)] = Some(key);
            }
        }
        for key in emptied.into_iter().flatten() {
            self.chunks.remove(&key);
        }
        self.committed -= removed;
        removed
    }

    /// Whether any page in `[start, end)` is committed.
    pub fn any_in_range(&self, start: u64, end: u64) -> bool {
        self.iter_range(start, end).next().is_some()
    }

    /// The committed pages in `[start, end)` with their frames, in order.
    pub fn iter_range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, PhysAddr)> + '_ {
        let chunks = if start < end {
            self.chunks
                .range(start / CHUNK_PAGES..=(end - 1) / CHUNK_PAGES)
        } else {
            self.chunks.range(1..1)
        };
        chunks.flat_map(move |(&key, chunk)| {
            let base = key * CHUNK_PAGES;
            chunk
                .slots
                .iter()
                .enumerate()
                .filter(|(_, &slot)| slot != 0)
                .map(move |(i, &slot)| (base + i as u64, decode(slot)))
                .filter(move |&(index, _)| index >= start && index < end)
        })
    }

    /// Heap bytes used by the list, for accounting.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * core::mem::size_of::<Chunk>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let mut list = PageList::new();
        for i in [0u64, 1, 63, 64, 1000] {
            list.insert(i, PhysAddr::from_frame_number(i + 7));
        }
        assert_eq!(list.committed_pages(), 5);
        assert_eq!(list.get(63), Some(PhysAddr::from_frame_number(70)));
        assert_eq!(list.get(2), None);
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(1, 65, &mut removed), 3);
        assert_eq!(removed.frames().count(), 3);
        assert_eq!(list.committed_pages(), 2);
        assert!(list.any_in_range(0, 1));
        assert!(!list.any_in_range(1, 1000));
        assert_eq!(list.iter_range(0, 2000).count(), 2);
        // The chunk holding 63 and 64 emptied is gone; page 0's chunk stays.
        assert_eq!(list.chunks.len(), 2);
    }

    /// `iter_range` finds pages in any chunk of the range, far past the first ones, and an empty
    /// range (also one on a chunk boundary, or at 0) yields nothing.
    #[test]
    fn iter_range_reaches_every_chunk_and_empty_ranges_are_empty() {
        let mut list = PageList::new();
        let far = 100 * CHUNK_PAGES + 3;
        list.insert(far, PhysAddr::from_frame_number(9));
        list.insert(CHUNK_PAGES, PhysAddr::from_frame_number(8));
        let found: Vec<_> = list.iter_range(0, far + 1).map(|(i, _)| i).collect();
        assert_eq!(found, [CHUNK_PAGES, far]);
        assert_eq!(list.iter_range(far, far + 1).count(), 1);
        for at in [0, CHUNK_PAGES, far] {
            assert_eq!(list.iter_range(at, at).count(), 0, "{at}");
        }
    }

    /// A range that takes every chunk moves the whole map out at once; one that leaves a chunk
    /// takes chunk by chunk. Both give back every frame once.
    #[test]
    fn whole_lists_move_out_at_once() {
        let mut list = PageList::new();
        for i in 64..4 * 64 {
            list.insert(i, PhysAddr::from_frame_number(i));
        }
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(64, 4 * 64, &mut removed), 192);
        assert_eq!((removed.maps.len(), removed.chunks.len()), (1, 0));
        assert_eq!(removed.frames().count(), 192);
        assert_eq!(list.committed_pages(), 0);
        assert!(list.chunks.is_empty());
        list.insert(0, PhysAddr::from_frame_number(1));
        list.insert(64, PhysAddr::from_frame_number(2));
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(64, 128, &mut removed), 1);
        assert_eq!((removed.maps.len(), removed.chunks.len()), (0, 1));
        assert_eq!(list.get(0), Some(PhysAddr::from_frame_number(1)));
        removed.clear();
        assert!(removed.is_empty());
    }

    #[test]
    fn frame_zero_is_representable() {
        let mut list = PageList::new();
        list.insert(5, PhysAddr(0));
        assert_eq!(list.get(5), Some(PhysAddr(0)));
    }
}
