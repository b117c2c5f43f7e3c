//! The committed pages of a VMO, compactly.
//!
//! Pages are kept in chunks of [`CHUNK_PAGES`] consecutive page indices (the pages one
//! last-level table maps), held inline in a `BTreeMap` keyed by chunk index (no box per chunk:
//! a run chunk, which has no slots, costs no heap of its own). A chunk is a presence bitmap
//! and the 32-bit frame numbers of its committed pages: packed in page order while it holds up to
//! 128 pages (the `k`-th set bit's frame is the `k`-th number), one slot per page above that. A
//! fully committed range costs a little over 4 bytes per page; a sparse one 4 bytes per
//! committed page plus the chunk's bitmap (64 bytes) and its share of one map entry (at 1 page in
//! 16, about 8 bytes per committed page in all). A chunk is freed as soon as its last page
//! leaves; removing pages never allocates. Frame numbers must fit in 32 bits: physical memory
//! up to 16 TiB.

mod chunk;
mod removed;

pub use self::chunk::Chunk;
pub use self::removed::RemovedPages;
use crate::platform::PhysAddr;
use alloc::collections::BTreeMap;

/// Pages per chunk.
pub const CHUNK_PAGES: u64 = 512;

/// A sparse map from page index to frame.
#[derive(Default)]
pub struct PageList {
    chunks: BTreeMap<u64, Chunk>,
    committed: u64,
}

/// The first physical address the list cannot hold: frame numbers are stored in 32 bits, so
/// paged VMOs take frames below 16 TiB. A frame above it is refused where it is allocated
/// ([`PageList::can_hold`]), and the allocation fails with `ZX_ERR_NO_MEMORY`.
pub const PAGE_LIST_PHYS_LIMIT: u64 = (u32::MAX as u64) << crate::abi::PAGE_SHIFT;

fn encode(pa: PhysAddr) -> u32 {
    debug_assert!(PageList::can_hold(pa), "checked by the caller");
    pa.frame_number() as u32
}

/// The part of `[start, end)` that falls in chunk `key`, as offsets in the chunk.
fn offsets(key: u64, start: u64, end: u64) -> (usize, usize) {
    let base = key * CHUNK_PAGES;
    let lo = start.max(base) - base;
    let hi = end.min(base + CHUNK_PAGES) - base;
    (lo as usize, hi as usize)
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

    /// The first frame of the run that pages `[index, index + CHUNK_PAGES)` are committed to,
    /// where `index` starts a chunk committed by [`PageList::insert_run`] and unchanged since.
    pub fn run_at(&self, index: u64) -> Option<PhysAddr> {
        if index % CHUNK_PAGES != 0 {
            return None;
        }
        self.chunks.get(&(index / CHUNK_PAGES))?.run()
    }

    /// The frame of page `index`, if committed.
    pub fn get(&self, index: u64) -> Option<PhysAddr> {
        let chunk = self.chunks.get(&(index / CHUNK_PAGES))?;
        chunk.get((index % CHUNK_PAGES) as usize)
    }

    /// Commits page `index` to `frame`. The page must not be committed, and the list must be
    /// able to hold the frame ([`PageList::can_hold`]).
    pub fn insert(&mut self, index: u64, frame: PhysAddr) {
        let chunk = self
            .chunks
            .entry(index / CHUNK_PAGES)
            .or_insert_with(Chunk::new);
        chunk.insert((index % CHUNK_PAGES) as usize, encode(frame));
        self.committed += 1;
    }

    /// Commits the [`CHUNK_PAGES`] pages from `index` (which starts a chunk with no page
    /// committed) to the run of consecutive frames from `first` (aligned to the run's size, and
    /// its last frame one the list can hold), in one step.
    pub fn insert_run(&mut self, index: u64, first: PhysAddr) {
        debug_assert!(index % CHUNK_PAGES == 0);
        let chunk = Chunk::new_run(encode(first));
        let old = self.chunks.insert(index / CHUNK_PAGES, chunk);
        debug_assert!(old.is_none(), "a run over committed pages");
        self.committed += CHUNK_PAGES;
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
                removed += chunk.used();
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
            let (lo, hi) = offsets(key, start, end);
            removed += chunk.remove_range(lo, hi, &mut out.frames);
            if chunk.used() == 0 {
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
            let (lo, hi) = offsets(key, start, end);
            let base = key * CHUNK_PAGES;
            chunk
                .iter_range(lo, hi)
                .map(move |(i, frame)| (base + i as u64, frame))
        })
    }

    /// Heap bytes used by the list's chunks (their size in the map's nodes and their slots, not
    /// the nodes' keys and links), for accounting.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.values().map(|chunk| chunk.heap_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A run chunk: every page's frame is the run's first plus its index, with no slots; it
    /// stays a run only while whole; a decommit of some pages keeps the rest as they were; a
    /// page committed again with another frame makes the chunk direct.
    #[test]
    fn a_run_is_one_chunk_without_slots() {
        const C: u64 = CHUNK_PAGES;
        let mut list = PageList::new();
        let first = PhysAddr::from_frame_number(4 * C);
        list.insert_run(C, first);
        assert_eq!(list.committed_pages(), C);
        assert_eq!(list.run_at(C), Some(first));
        assert_eq!((list.run_at(0), list.run_at(C + 1)), (None, None));
        assert_eq!(
            list.get(C + 9),
            Some(PhysAddr::from_frame_number(4 * C + 9))
        );
        assert_eq!(list.heap_bytes(), core::mem::size_of::<Chunk>());
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(C + 3, C + 5, &mut removed), 2);
        let frames: Vec<u64> = removed.frames().map(PhysAddr::frame_number).collect();
        assert_eq!(frames, [4 * C + 3, 4 * C + 4]);
        assert_eq!(list.run_at(C), None, "no longer whole");
        assert_eq!(
            list.get(C + 5),
            Some(PhysAddr::from_frame_number(4 * C + 5))
        );
        list.insert(C + 3, PhysAddr::from_frame_number(7));
        assert_eq!(list.get(C + 3), Some(PhysAddr::from_frame_number(7)));
        assert_eq!(
            list.get(C + 511),
            Some(PhysAddr::from_frame_number(5 * C - 1))
        );
        assert_eq!(list.get(C + 4), None);
        assert_eq!(list.committed_pages(), C - 1);
        let all: Vec<(u64, u64)> = list
            .iter_range(C, 2 * C)
            .map(|(i, pa)| (i, pa.frame_number()))
            .collect();
        assert_eq!(all.len(), (C - 1) as usize);
        assert!(all
            .iter()
            .all(|&(i, f)| i == C + 3 && f == 7 || f == 4 * C + (i - C)));
    }

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
        // Page 0's chunk keeps page 0; page 1000's chunk stays.
        assert_eq!(list.chunks.len(), 2);
        assert_eq!(list.remove_range(1000, 1001, &mut removed), 1);
        // A chunk whose last page left is gone.
        assert_eq!(list.chunks.len(), 1);
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
        const C: u64 = CHUNK_PAGES;
        let mut list = PageList::new();
        for i in C..4 * C {
            list.insert(i, PhysAddr::from_frame_number(i));
        }
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(C, 4 * C, &mut removed), 3 * C);
        assert_eq!((removed.maps.len(), removed.chunks.len()), (1, 0));
        assert_eq!(removed.frames().count() as u64, 3 * C);
        assert_eq!(list.committed_pages(), 0);
        assert!(list.chunks.is_empty());
        list.insert(0, PhysAddr::from_frame_number(1));
        list.insert(C, PhysAddr::from_frame_number(2));
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(C, 2 * C, &mut removed), 1);
        assert_eq!((removed.maps.len(), removed.chunks.len()), (0, 1));
        assert_eq!(list.get(0), Some(PhysAddr::from_frame_number(1)));
        removed.clear();
        assert!(removed.is_empty());
    }

    /// Pages committed in any order come back in page order with their own frames; a range
    /// inside a chunk takes exactly its pages, across bitmap words and at the chunk's ends.
    #[test]
    fn packed_frames_follow_page_order() {
        let mut list = PageList::new();
        let pages = [511u64, 0, 64, 63, 200, 128, 1, 127, 65, 300];
        for &i in &pages {
            list.insert(i, PhysAddr::from_frame_number(1000 + i));
        }
        let mut sorted = pages;
        sorted.sort_unstable();
        let listed: Vec<_> = list.iter_range(0, CHUNK_PAGES).collect();
        let expected: Vec<_> = sorted
            .iter()
            .map(|&i| (i, PhysAddr::from_frame_number(1000 + i)))
            .collect();
        assert_eq!(listed, expected);
        for &i in &pages {
            assert_eq!(list.get(i), Some(PhysAddr::from_frame_number(1000 + i)));
        }
        assert_eq!(list.get(2), None);
        assert_eq!(list.iter_range(64, 128).count(), 3);
        let mut removed = RemovedPages::default();
        assert_eq!(list.remove_range(63, 129, &mut removed), 5);
        let taken: Vec<_> = removed.frames().map(|f| f.frame_number() - 1000).collect();
        assert_eq!(taken, [63, 64, 65, 127, 128]);
        let left: Vec<_> = list.iter_range(0, CHUNK_PAGES).map(|(i, _)| i).collect();
        assert_eq!(left, [0, 1, 200, 300, 511]);
        assert_eq!(list.get(300), Some(PhysAddr::from_frame_number(1300)));
        assert_eq!(list.get(511), Some(PhysAddr::from_frame_number(1511)));
        assert_eq!(list.committed_pages(), 5);
        // A whole 64-page word at once, then the chunk's last page.
        list.insert(64 * 3 + 5, PhysAddr::from_frame_number(7));
        assert_eq!(list.remove_range(128, 256, &mut removed), 2);
        assert_eq!(list.remove_range(511, 512, &mut removed), 1);
        let left: Vec<_> = list.iter_range(0, CHUNK_PAGES).map(|(i, _)| i).collect();
        assert_eq!(left, [0, 1, 300]);
        assert!(list.heap_bytes() >= core::mem::size_of::<Chunk>() + 3 * 4);
    }

    /// Against a plain map, over random commits and range removals that cross the packed and
    /// direct forms, chunk ends and bitmap words: every lookup, listing, count and removed frame
    /// agrees.
    #[test]
    #[cfg_attr(miri, ignore = "4,000 rounds of safe code: minutes under Miri")]
    fn agrees_with_a_plain_map() {
        use alloc::collections::BTreeMap;
        let mut list = PageList::new();
        let mut oracle = BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let span = 3 * CHUNK_PAGES;
        // Rounds with only packed chunks, and with a direct one: both must occur.
        let mut forms = [0; 2];
        for round in 0..4000u64 {
            if next(8) != 0 {
                let page = next(span);
                if let alloc::collections::btree_map::Entry::Vacant(slot) = oracle.entry(page) {
                    slot.insert(PhysAddr::from_frame_number(round + 1));
                    list.insert(page, PhysAddr::from_frame_number(round + 1));
                }
            } else {
                let start = next(span);
                let long = next(16) == 0;
                let end = start + next(if long { span } else { 70 });
                let mut removed = RemovedPages::default();
                let taken = list.remove_range(start, end, &mut removed);
                let mut got: Vec<_> = removed.frames().collect();
                let mut want = Vec::new();
                oracle.retain(|&page, &mut frame| {
                    let inside = (start..end).contains(&page);
                    if inside {
                        want.push(frame);
                    }
                    !inside
                });
                got.sort_unstable_by_key(|f| f.0);
                want.sort_unstable_by_key(|f| f.0);
                assert_eq!((taken as usize, &got), (want.len(), &want), "round {round}");
            }
            assert_eq!(list.committed_pages(), oracle.len() as u64);
            let direct = list.chunks.values().any(|c| c.is_direct());
            forms[usize::from(direct)] += 1;
            let probe = next(span);
            assert_eq!(list.get(probe), oracle.get(&probe).copied());
            if round % 97 == 0 {
                let (a, b) = (next(span), next(span));
                let listed: Vec<_> = list.iter_range(a, b).collect();
                let want: Vec<_> = oracle.range(a..b.max(a)).map(|(&p, &f)| (p, f)).collect();
                assert_eq!(listed, want, "round {round}");
                assert_eq!(list.any_in_range(a, b), !want.is_empty());
            }
        }
        assert!(forms[0] > 100 && forms[1] > 100, "{forms:?}");
    }

    /// A chunk that grows past the packed form keeps every frame where it was.
    #[test]
    fn a_chunk_turns_direct_without_losing_a_frame() {
        let mut list = PageList::new();
        let pages: Vec<u64> = (0..CHUNK_PAGES).map(|i| (i * 37) % CHUNK_PAGES).collect();
        for (n, &page) in pages.iter().enumerate() {
            list.insert(page, PhysAddr::from_frame_number(page + 5));
            assert_eq!(list.committed_pages(), n as u64 + 1);
        }
        for page in 0..CHUNK_PAGES {
            assert_eq!(list.get(page), Some(PhysAddr::from_frame_number(page + 5)));
        }
        let direct = list.heap_bytes();
        assert!(direct >= CHUNK_PAGES as usize * 4, "{direct}");
        let mut removed = RemovedPages::default();
        assert_eq!(
            list.remove_range(10, CHUNK_PAGES - 10, &mut removed),
            CHUNK_PAGES - 20
        );
        let taken: Vec<_> = removed.frames().map(|f| f.frame_number() - 5).collect();
        assert_eq!(taken, (10..CHUNK_PAGES - 10).collect::<Vec<_>>());
        assert_eq!(list.get(9), Some(PhysAddr::from_frame_number(14)));
        assert_eq!(list.get(10), None);
        // Removal does not allocate: the chunk keeps its direct slots until it empties.
        assert_eq!(list.heap_bytes(), direct);
    }

    /// Pages taken out are "empty" only when no kind of them is there: single frames, whole
    /// chunks and whole lists each count (a batch dropped with any of them is a leak the debug
    /// build names).
    #[test]
    fn removed_pages_are_empty_only_with_nothing_in_them() {
        let mut removed = RemovedPages::default();
        assert!(removed.is_empty());
        removed.frames.push(PhysAddr(0));
        assert!(!removed.is_empty());
        removed.clear();
        assert!(removed.is_empty());
        let mut list = PageList::new();
        list.insert(0, PhysAddr::from_frame_number(1));
        list.insert(CHUNK_PAGES, PhysAddr::from_frame_number(2));
        assert_eq!(list.remove_range(0, CHUNK_PAGES, &mut removed), 1);
        assert_eq!((removed.chunks.len(), removed.maps.len()), (1, 0));
        assert!(!removed.is_empty());
        removed.clear();
        assert_eq!(list.remove_range(0, 2 * CHUNK_PAGES, &mut removed), 1);
        assert_eq!((removed.chunks.len(), removed.maps.len()), (0, 1));
        assert!(!removed.is_empty());
    }

    /// A range whose ends cut two direct chunks counts every page it takes from each (the second
    /// chunk's count must not include the first's frames already taken out), and the heap
    /// accounting is each chunk's size and its slots' capacity, in both forms.
    #[test]
    fn counts_across_two_direct_chunks_and_heap_bytes_are_exact() {
        let mut list = PageList::new();
        for page in (CHUNK_PAGES - 200)..(CHUNK_PAGES + 200) {
            list.insert(page, PhysAddr::from_frame_number(page));
        }
        assert!(list.chunks.values().all(|c| c.is_direct()));
        let mut removed = RemovedPages::default();
        assert_eq!(
            list.remove_range(CHUNK_PAGES - 10, CHUNK_PAGES + 10, &mut removed),
            20
        );
        assert_eq!(list.committed_pages(), 380);
        assert_eq!(removed.frames().count(), 20);
        let exact = |list: &PageList| {
            list.chunks
                .values()
                .map(|c| core::mem::size_of::<Chunk>() + 4 * c.slot_capacity())
                .sum::<usize>()
        };
        assert_eq!(list.heap_bytes(), exact(&list));
        let mut packed = PageList::new();
        for page in [3, 9, 70] {
            packed.insert(page, PhysAddr::from_frame_number(page));
        }
        assert!(!packed.chunks.values().any(|c| c.is_direct()));
        assert_eq!(packed.heap_bytes(), exact(&packed));
    }

    #[test]
    fn frame_zero_is_representable() {
        let mut list = PageList::new();
        list.insert(5, PhysAddr(0));
        assert_eq!(list.get(5), Some(PhysAddr(0)));
    }
}
