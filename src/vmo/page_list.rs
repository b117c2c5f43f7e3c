//! The committed pages of a VMO, compactly.
//!
//! Pages are kept in chunks of [`CHUNK_PAGES`] consecutive page indices (the pages one
//! last-level table maps). Pages committed one by one go in a chunk held inline in a `BTreeMap`
//! keyed by chunk index: a presence bitmap and the 32-bit frame numbers of its committed pages,
//! packed in page order while it holds up to 128 pages (the `k`-th set bit's frame is the `k`-th
//! number), one slot per page above that. A fully committed range costs a little over 4 bytes
//! per page; a sparse one 4 bytes per committed page plus the chunk's bitmap (64 bytes) and its
//! share of one map entry (at 1 page in 16, about 8 bytes per committed page in all).
//!
//! Chunks committed as one aligned run of frames ([`PageList::insert_run`], large-page VMOs)
//! go instead in a block of 64 such chunks ([`RunBlock`], 4.5 KiB, boxed, in a second map): a
//! whole run is its first frame number, and a run that lost some pages keeps a bitmap of the
//! rest in its block, so a decommit of part of a run never allocates. A 1 GiB large-page VMO is
//! 8 blocks, and a decommit of all of it reads those, not 512 chunks.
//!
//! A chunk, and a block, is freed as soon as its last page leaves; removing pages never
//! allocates. A chunk index is in one of the two maps, never both. Frame numbers must fit in 32
//! bits: physical memory up to 16 TiB.

mod chunk;
mod removed;
mod runs;

pub use self::chunk::Chunk;
pub use self::removed::RemovedPages;
pub use self::runs::RunBlock;
use self::runs::BLOCK_RUNS;
use crate::platform::PhysAddr;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::iter::Peekable;

/// Pages per chunk.
pub const CHUNK_PAGES: u64 = 512;

/// A sparse map from page index to frame.
#[derive(Default)]
pub struct PageList {
    /// Chunks of pages committed one by one, by chunk index.
    chunks: BTreeMap<u64, Chunk>,
    /// Blocks of chunks committed as runs, by chunk index / [`BLOCK_RUNS`].
    runs: BTreeMap<u64, Box<RunBlock>>,
    /// Pages committed, in all.
    committed: u64,
    /// Pages committed in the run blocks.
    in_runs: u64,
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

/// Chunk `key`'s block and slot in it.
fn slot_of(key: u64) -> (u64, usize) {
    (key / BLOCK_RUNS, (key % BLOCK_RUNS) as usize)
}

/// Whether the chunks `[first, end)` take every chunk from `lo` to `hi` (inclusive).
fn covers(first: u64, end: u64, lo: u64, hi: u64) -> bool {
    first <= lo && hi < end
}

impl PageList {
    /// An empty list.
    pub const fn new() -> Self {
        PageList {
            chunks: BTreeMap::new(),
            runs: BTreeMap::new(),
            committed: 0,
            in_runs: 0,
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
        let (block, r) = slot_of(index / CHUNK_PAGES);
        self.runs.get(&block)?.run(r)
    }

    /// The frame of page `index`, if committed.
    pub fn get(&self, index: u64) -> Option<PhysAddr> {
        let key = index / CHUNK_PAGES;
        let i = (index % CHUNK_PAGES) as usize;
        if let Some(chunk) = self.chunks.get(&key) {
            return chunk.get(i);
        }
        let (block, r) = slot_of(key);
        self.runs.get(&block)?.get(r, i)
    }

    /// Commits page `index` to `frame`. The page must not be committed, and the list must be
    /// able to hold the frame ([`PageList::can_hold`]). A page in a run's hole takes the run's
    /// other pages into a chunk with it.
    pub fn insert(&mut self, index: u64, frame: PhysAddr) {
        let key = index / CHUNK_PAGES;
        let (block, r) = slot_of(key);
        let from_run = match self.runs.get_mut(&block) {
            Some(runs) if runs.holds(r) => {
                let chunk = runs.take_chunk(r);
                self.in_runs -= chunk.used();
                if runs.is_empty() {
                    self.runs.remove(&block);
                }
                Some(chunk)
            }
            _ => None,
        };
        let chunk = match from_run {
            Some(chunk) => self.chunks.entry(key).or_insert(chunk),
            None => self.chunks.entry(key).or_insert_with(Chunk::new),
        };
        chunk.insert((index % CHUNK_PAGES) as usize, encode(frame));
        self.committed += 1;
    }

    /// Commits the [`CHUNK_PAGES`] pages from `index` (which starts a chunk with no page
    /// committed) to the run of consecutive frames from `first` (aligned to the run's size, and
    /// its last frame one the list can hold), in one step.
    pub fn insert_run(&mut self, index: u64, first: PhysAddr) {
        debug_assert!(index % CHUNK_PAGES == 0);
        let key = index / CHUNK_PAGES;
        debug_assert!(
            !self.chunks.contains_key(&key),
            "a run over committed pages"
        );
        let (block, r) = slot_of(key);
        let runs = self.runs.entry(block).or_insert_with(RunBlock::new_boxed);
        runs.set_run(r, encode(first));
        self.committed += CHUNK_PAGES;
        self.in_runs += CHUNK_PAGES;
    }

    /// Takes every committed page in `[start, end)` out of the list into `out`: a map that lies
    /// wholly inside the range moves there in one step, chunks and blocks wholly inside as they
    /// are (no per-page work), the pages at the range's ends one by one. Returns how many pages
    /// left.
    pub fn remove_range(&mut self, start: u64, end: u64, out: &mut RemovedPages) -> u64 {
        if start >= end || self.committed == 0 {
            return 0;
        }
        // (Both parts read `in_runs` as it was before the call.)
        let from_runs = self.remove_runs(start, end, out);
        let removed = self.remove_chunks(start, end, out) + from_runs;
        self.in_runs -= from_runs;
        self.committed -= removed;
        removed
    }

    /// [`PageList::remove_range`] in the chunk map.
    fn remove_chunks(&mut self, start: u64, end: u64, out: &mut RemovedPages) -> u64 {
        let first_chunk = start / CHUNK_PAGES;
        let last_chunk = (end - 1) / CHUNK_PAGES;
        // The chunks wholly inside: [first_full, end_full).
        let first_full = start.div_ceil(CHUNK_PAGES);
        let end_full = end / CHUNK_PAGES;
        // The range takes every chunk: the whole map moves out in one step (no per-chunk work,
        // no allocation; the common case of a decommit of a whole VMO).
        let (lo, hi) = (self.chunks.first_key_value(), self.chunks.last_key_value());
        let (Some((&lo, _)), Some((&hi, _))) = (lo, hi) else {
            return 0;
        };
        if covers(first_full, end_full, lo, hi) {
            let removed = self.committed - self.in_runs;
            out.maps.push(core::mem::take(&mut self.chunks));
            return removed;
        }
        let mut removed = 0;
        // One removal per chunk: unlike `split_off`, removing from a B-tree never allocates.
        let full_keys = first_full..end_full.max(first_full);
        while let Some(key) = self.chunks.range(full_keys.clone()).next().map(|(&k, _)| k) {
            let Some(chunk) = self.chunks.remove(&key) else {
                break;
            };
            removed += chunk.used();
            out.chunks.push(chunk);
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
        removed
    }

    /// [`PageList::remove_range`] in the run blocks.
    fn remove_runs(&mut self, start: u64, end: u64, out: &mut RemovedPages) -> u64 {
        let first_chunk = start / CHUNK_PAGES;
        let last_chunk = (end - 1) / CHUNK_PAGES;
        // The chunks wholly inside: [first_full, end_full).
        let (first_full, end_full) = (start.div_ceil(CHUNK_PAGES), end / CHUNK_PAGES);
        let (lo, hi) = (self.runs.first_key_value(), self.runs.last_key_value());
        let (Some((&lo_key, lo)), Some((&hi_key, hi))) = (lo, hi) else {
            return 0;
        };
        // The range takes every run: the whole map moves out in one step (a decommit of a
        // whole large-page VMO).
        if covers(
            first_full,
            end_full,
            lo.first_chunk(lo_key),
            hi.last_chunk(hi_key),
        ) {
            out.run_maps.push(core::mem::take(&mut self.runs));
            return self.in_runs;
        }
        let mut removed = 0;
        let mut next = first_chunk / BLOCK_RUNS;
        let blocks_end = last_chunk / BLOCK_RUNS + 1;
        while let Some(key) = self.runs.range(next..blocks_end).next().map(|(&k, _)| k) {
            next = key + 1;
            let Some(block) = self.runs.get_mut(&key) else {
                break;
            };
            if covers(
                first_full,
                end_full,
                block.first_chunk(key),
                block.last_chunk(key),
            ) {
                // Every run of the block is inside: the block moves out as it is.
                removed += block.pages();
                if let Some(block) = self.runs.remove(&key) {
                    out.blocks.push(block);
                }
                continue;
            }
            for r in block.slots() {
                let chunk = key * BLOCK_RUNS + r as u64;
                if (first_chunk..=last_chunk).contains(&chunk) {
                    let (lo, hi) = offsets(chunk, start, end);
                    removed += block.remove(r, lo, hi, &mut out.frames, &mut out.runs);
                }
            }
            if block.is_empty() {
                self.runs.remove(&key);
            }
        }
        removed
    }

    /// Whether any page in `[start, end)` is committed.
    pub fn any_in_range(&self, start: u64, end: u64) -> bool {
        self.iter_range(start, end).next().is_some()
    }

    /// The committed pages in `[start, end)` with their frames, in order.
    pub fn iter_range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, PhysAddr)> + '_ {
        // Chunk keys and block keys, as ranges a B-tree takes (an empty one when the pages are).
        let (chunk_keys, block_keys) = if start < end {
            let (first, last) = (start / CHUNK_PAGES, (end - 1) / CHUNK_PAGES);
            (first..last + 1, first / BLOCK_RUNS..last / BLOCK_RUNS + 1)
        } else {
            (1..1, 1..1)
        };
        let chunks = self
            .chunks
            .range(chunk_keys.clone())
            .flat_map(move |(&key, chunk)| {
                let (lo, hi) = offsets(key, start, end);
                let base = key * CHUNK_PAGES;
                chunk
                    .iter_range(lo, hi)
                    .map(move |(i, frame)| (base + i as u64, frame))
            });
        let runs = self.runs.range(block_keys).flat_map(move |(&key, block)| {
            let keys = chunk_keys.clone();
            block
                .slots()
                .map(move |r| (key * BLOCK_RUNS + r as u64, r))
                .filter(move |(chunk, _)| keys.contains(chunk))
                .flat_map(move |(chunk, r)| {
                    let (lo, hi) = offsets(chunk, start, end);
                    let base = chunk * CHUNK_PAGES;
                    block
                        .iter_slot(r, lo, hi)
                        .map(move |(i, frame)| (base + i as u64, frame))
                })
        });
        Merge {
            a: chunks.peekable(),
            b: runs.peekable(),
        }
    }

    /// Heap bytes used by the list's chunks (their size in the map's nodes and their slots, not
    /// the nodes' keys and links) and run blocks, for accounting.
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.chunks.values().map(|chunk| chunk.heap_bytes()).sum();
        chunks + self.runs.len() * core::mem::size_of::<RunBlock>()
    }
}

/// Two iterators of pages in increasing order, with no page in both, merged in order.
struct Merge<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (u64, PhysAddr)>,
    B: Iterator<Item = (u64, PhysAddr)>,
{
    type Item = (u64, PhysAddr);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests;
