//! The pages of a list committed as aligned runs ([`super::PageList::insert_run`]), apart from
//! those committed one by one: a block per [`BLOCK_RUNS`] consecutive chunks, boxed, keeps each
//! held chunk's first frame, and, once some of a run's pages were decommitted, which pages are
//! left. A whole run costs no bitmap work and no heap of its own: a 1 GiB large-page VMO is 8
//! blocks, so a decommit of all of it reads 8 blocks, not 512 chunks in 47 map nodes.
//!
//! Invariants: a held slot holds at least one page; a block holds at least one slot; a chunk
//! index is held here or in the list's chunk map, never both.

use super::chunk::{decode, word_mask, FREE_BATCH, WORDS};
use super::removed::RunBatch;
use super::{Chunk, CHUNK_PAGES};
use crate::platform::PhysAddr;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;

/// Chunks (run slots) per block.
pub const BLOCK_RUNS: u64 = 64;

/// The runs of 64 consecutive chunks (a [`super::PageList`] keeps a map of them).
pub struct RunBlock {
    /// Bit `r` is set where slot `r` holds a run, whole or in part.
    held: u64,
    /// Bit `r` is set where slot `r`'s run is whole (every page committed since
    /// [`RunBlock::set_run`]); its bitmap is then unused.
    whole: u64,
    /// Each held slot's first frame number: page `i` of slot `r` is frame `first[r] + i`.
    first: [u32; BLOCK_RUNS as usize],
    /// How many pages each held slot still holds (1 to [`CHUNK_PAGES`]).
    used: [u16; BLOCK_RUNS as usize],
    /// Which pages a held slot that is not whole still holds.
    present: [[u64; WORDS]; BLOCK_RUNS as usize],
}

impl RunBlock {
    /// An empty block, on the heap (allocated zeroed: it is 4.5 KiB, more than a kernel stack
    /// should carry).
    pub(super) fn new_boxed() -> Box<RunBlock> {
        let layout = Layout::new::<RunBlock>();
        // SAFETY: the layout is not zero-sized (the block holds arrays).
        let block = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<RunBlock>();
        if block.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `block` was allocated by the global allocator with `RunBlock`'s layout, is
        // owned by nothing else, and its bytes are zero: every field is an integer or an array
        // of integers, for which all-zero bytes are a valid value (an empty block).
        unsafe { Box::from_raw(block) }
    }

    /// Whether no slot is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Whether slot `r` holds a run, whole or in part.
    pub(super) fn holds(&self, r: usize) -> bool {
        self.held & (1 << r) != 0
    }

    /// The first chunk a slot holds, where the block's key is `key` (the block holds one).
    pub(super) fn first_chunk(&self, key: u64) -> u64 {
        key * BLOCK_RUNS + u64::from(self.held.trailing_zeros())
    }

    /// The last chunk a slot holds, where the block's key is `key` (the block holds one).
    pub(super) fn last_chunk(&self, key: u64) -> u64 {
        key * BLOCK_RUNS + 63 - u64::from(self.held.leading_zeros())
    }

    /// How many pages the block holds.
    pub(super) fn pages(&self) -> u64 {
        self.slots().map(|r| u64::from(self.used[r])).sum()
    }

    /// The held slots, lowest first.
    pub(super) fn slots(&self) -> impl Iterator<Item = usize> {
        bits(self.held)
    }

    /// The first frame of slot `r`'s run, where it is whole.
    pub(super) fn run(&self, r: usize) -> Option<PhysAddr> {
        (self.whole & (1 << r) != 0).then(|| decode(self.first[r]))
    }

    /// Holds the run of [`CHUNK_PAGES`] frames from frame number `first` in slot `r`, which
    /// must be free.
    pub(super) fn set_run(&mut self, r: usize, first: u32) {
        debug_assert!(!self.holds(r), "a run over a held slot");
        self.held |= 1 << r;
        self.whole |= 1 << r;
        self.first[r] = first;
        self.used[r] = CHUNK_PAGES as u16;
    }

    /// The frame of page `i` of slot `r`, if held.
    pub(super) fn get(&self, r: usize, i: usize) -> Option<PhysAddr> {
        if !self.holds(r) {
            return None;
        }
        let whole = self.whole & (1 << r) != 0;
        (whole || self.present[r][i / 64] & (1 << (i % 64)) != 0)
            .then(|| decode(self.first[r] + i as u32))
    }

    /// The held pages of slot `r` in `[lo, hi)` with their frames, in order.
    pub(super) fn iter_slot(
        &self,
        r: usize,
        lo: usize,
        hi: usize,
    ) -> impl Iterator<Item = (usize, PhysAddr)> + '_ {
        let whole = self.whole & (1 << r) != 0;
        let first = self.first[r];
        // An empty range, or a free slot, meets no word.
        let words = if self.holds(r) && lo < hi {
            lo / 64..hi.div_ceil(64)
        } else {
            0..0
        };
        words
            .flat_map(move |w| {
                let mask = word_mask(w, lo, hi);
                let word = if whole { u64::MAX } else { self.present[r][w] };
                bits(word & mask).map(move |bit| w * 64 + bit)
            })
            .map(move |page| (page, decode(first + page as u32)))
    }

    /// Takes the held pages of slot `r` in `[lo, hi)` out: a whole run taken whole goes to
    /// `runs` as its first frame, other pages to `frames` one by one. Returns how many pages.
    /// Never allocates but to grow `runs` or `frames`.
    pub(super) fn remove(
        &mut self,
        r: usize,
        lo: usize,
        hi: usize,
        frames: &mut Vec<PhysAddr>,
        runs: &mut Vec<PhysAddr>,
    ) -> u64 {
        if !self.holds(r) || lo >= hi {
            return 0;
        }
        let bit = 1u64 << r;
        if self.whole & bit != 0 {
            if hi - lo == CHUNK_PAGES as usize {
                runs.push(decode(self.first[r]));
                self.held &= !bit;
                self.whole &= !bit;
                return CHUNK_PAGES;
            }
            // Some pages leave: the rest are tracked page by page from now on.
            self.present[r] = [u64::MAX; WORDS];
            self.whole &= !bit;
        }
        let first = self.first[r];
        let before = frames.len();
        for w in lo / 64..hi.div_ceil(64) {
            let taken = self.present[r][w] & word_mask(w, lo, hi);
            frames.extend(bits(taken).map(|b| decode(first + (w * 64 + b) as u32)));
            self.present[r][w] &= !taken;
        }
        let taken = (frames.len() - before) as u16;
        self.used[r] -= taken;
        if self.used[r] == 0 {
            self.held &= !bit;
        }
        u64::from(taken)
    }

    /// Takes slot `r` out as a chunk of the list's map, with the frames it holds, for a commit
    /// into one of its holes (which may allocate). The slot must be held.
    pub(super) fn take_chunk(&mut self, r: usize) -> Chunk {
        debug_assert!(self.holds(r));
        let bit = 1u64 << r;
        let present = if self.whole & bit != 0 {
            [u64::MAX; WORDS]
        } else {
            self.present[r]
        };
        self.held &= !bit;
        self.whole &= !bit;
        Chunk::from_run(present, u32::from(self.used[r]), self.first[r])
    }

    /// Gives every held frame back: whole runs into `runs` (the caller's batch of
    /// `Platform::free_runs` calls), the pages of partial ones in calls of up to
    /// [`FREE_BATCH`], through `batch`.
    ///
    /// # Safety
    /// As for [`crate::platform::Platform::free_frames`] and
    /// [`crate::platform::Platform::free_run`]: no page table or TLB may still reach any of
    /// the frames.
    pub(super) unsafe fn free(
        &self,
        platform: &dyn crate::platform::Platform,
        runs: &mut RunBatch<'_>,
        batch: &mut [PhysAddr; FREE_BATCH],
    ) {
        for r in bits(self.whole) {
            // SAFETY: forwarded from the caller: the run's frames are ours, all of them.
            unsafe { runs.push(decode(self.first[r])) };
        }
        let mut count = 0;
        for r in bits(self.held & !self.whole) {
            for (_, frame) in self.iter_slot(r, 0, CHUNK_PAGES as usize) {
                batch[count] = frame;
                count += 1;
                if count == FREE_BATCH {
                    // SAFETY: forwarded from the caller.
                    unsafe { platform.free_frames(&batch[..count]) };
                    count = 0;
                }
            }
        }
        if count > 0 {
            // SAFETY: forwarded from the caller.
            unsafe { platform.free_frames(&batch[..count]) };
        }
    }

    /// Every held frame, whole runs included.
    pub(super) fn frames(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.slots()
            .flat_map(move |r| self.iter_slot(r, 0, CHUNK_PAGES as usize))
            .map(|(_, frame)| frame)
    }
}

/// The set bits of `word`, lowest first.
fn bits(mut word: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        let bit = word.trailing_zeros() as usize;
        word &= word.wrapping_sub(1);
        (bit < 64).then_some(bit)
    })
}
