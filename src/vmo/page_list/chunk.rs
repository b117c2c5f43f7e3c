//! One chunk of a page list: which of [`CHUNK_PAGES`] consecutive pages are committed, and
//! their frames, packed while few and one slot per page when many.

use super::CHUNK_PAGES;
use crate::platform::PhysAddr;
use alloc::vec::Vec;

/// Words of a chunk's presence bitmap.
pub(super) const WORDS: usize = (CHUNK_PAGES / 64) as usize;

/// Above this many committed pages a chunk keeps one slot per page instead of packing.
const PACKED_MAX: usize = 128;

/// Where a chunk keeps its frame numbers.
enum Slots {
    /// Up to [`PACKED_MAX`] pages: only the committed pages' frame numbers, in page order:
    /// `numbers[k]` is the frame of the page of the `k`-th set bit.
    Packed(Vec<u32>),
    /// More: one slot per page up to the highest page committed so far (a VMO smaller than a
    /// chunk pays for its own pages only), meaningful where the page's bit is set. A chunk stays
    /// direct, and its slots stay, until it empties (shrinking would allocate on the decommit
    /// path).
    Direct(Vec<u32>),
}

/// The frames of the committed pages among [`CHUNK_PAGES`] consecutive pages.
pub struct Chunk {
    /// Bit `i` is set where the chunk's page `i` is committed.
    present: [u64; WORDS],
    /// How many bits are set; never 0 in a list.
    used: u32,
    /// The frame numbers.
    slots: Slots,
}

impl Chunk {
    pub(super) fn new() -> Self {
        Chunk {
            present: [0; WORDS],
            used: 0,
            slots: Slots::Packed(Vec::new()),
        }
    }

    /// A chunk holding the pages of `present` (`used` of them) from the run of consecutive
    /// frames from frame number `first`: a run that leaves its block for a commit into one of
    /// its holes (which may allocate). Its frames go into slots.
    pub(super) fn from_run(present: [u64; WORDS], used: u32, first: u32) -> Self {
        let top = Chunk::pages_of(&present, 0, CHUNK_PAGES as usize)
            .last()
            .map_or(0, |page| page + 1);
        let slots = if used as usize <= PACKED_MAX {
            Slots::Packed(
                Chunk::pages_of(&present, 0, CHUNK_PAGES as usize)
                    .map(|page| first + page as u32)
                    .collect(),
            )
        } else {
            Slots::Direct((0..top as u32).map(|page| first + page).collect())
        };
        Chunk {
            present,
            used,
            slots,
        }
    }

    /// The frames in the chunk, in page order.
    pub fn frames(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.iter_range(0, CHUNK_PAGES as usize)
            .map(|(_, frame)| frame)
    }

    /// How many pages are committed.
    pub(super) fn used(&self) -> u64 {
        u64::from(self.used)
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        self.present[i / 64] & (1 << (i % 64)) != 0
    }

    /// How many committed pages lie below page `i` (`i` up to [`CHUNK_PAGES`]).
    fn rank(&self, i: usize) -> usize {
        Chunk::rank_of(&self.present, i)
    }

    /// [`Chunk::rank`] over a bitmap alone, for when the slots are borrowed apart.
    fn rank_of(present: &[u64; WORDS], i: usize) -> usize {
        let (word, bit) = (i / 64, i % 64);
        let below: u32 = present[..word].iter().map(|w| w.count_ones()).sum();
        // (No word at `i` = CHUNK_PAGES; an empty mask at bit 0.)
        let partial = present
            .get(word)
            .map_or(0, |&w| (w & ((1u64 << bit) - 1)).count_ones());
        (below + partial) as usize
    }

    /// The set bits of `[lo, hi)`, lowest first.
    fn pages(&self, lo: usize, hi: usize) -> impl Iterator<Item = usize> + '_ {
        Chunk::pages_of(&self.present, lo, hi)
    }

    pub(super) fn get(&self, i: usize) -> Option<PhysAddr> {
        if !self.contains(i) {
            return None;
        }
        Some(decode(match &self.slots {
            Slots::Packed(numbers) => numbers[self.rank(i)],
            Slots::Direct(slots) => slots[i],
        }))
    }

    pub(super) fn insert(&mut self, i: usize, frame: u32) {
        debug_assert!(!self.contains(i), "page {i} of the chunk committed twice");
        match &mut self.slots {
            Slots::Packed(numbers) if numbers.len() < PACKED_MAX => {
                numbers.insert(Chunk::rank_of(&self.present, i), frame);
            }
            Slots::Packed(numbers) => {
                let top = Chunk::pages_of(&self.present, 0, CHUNK_PAGES as usize)
                    .last()
                    .map_or(i, |page| page.max(i));
                let mut slots = alloc::vec![0; top + 1];
                let pages = Chunk::pages_of(&self.present, 0, CHUNK_PAGES as usize);
                for (page, &number) in pages.zip(numbers.iter()) {
                    slots[page] = number;
                }
                slots[i] = frame;
                self.slots = Slots::Direct(slots);
            }
            Slots::Direct(slots) => {
                if i >= slots.len() {
                    slots.resize(i + 1, 0);
                }
                slots[i] = frame;
            }
        }
        self.present[i / 64] |= 1 << (i % 64);
        self.used += 1;
    }

    /// Takes the committed pages in `[lo, hi)` (`hi` up to [`CHUNK_PAGES`]) out into `out`;
    /// returns how many. Never allocates but to grow `out`.
    pub(super) fn remove_range(&mut self, lo: usize, hi: usize, out: &mut Vec<PhysAddr>) -> u64 {
        if hi - lo == 1 {
            // One page (the common small decommit): no range walk.
            if !self.contains(lo) {
                return 0;
            }
            let number = match &mut self.slots {
                Slots::Packed(numbers) => numbers.remove(Chunk::rank_of(&self.present, lo)),
                Slots::Direct(slots) => slots[lo],
            };
            out.push(decode(number));
            self.present[lo / 64] &= !(1 << (lo % 64));
            self.used -= 1;
            return 1;
        }
        let taken = match &mut self.slots {
            Slots::Packed(numbers) => {
                let rank = |i| Chunk::rank_of(&self.present, i);
                let (first, last) = (rank(lo), rank(hi));
                out.extend(numbers.drain(first..last).map(decode));
                last - first
            }
            Slots::Direct(slots) => {
                let before = out.len();
                let pages = Chunk::pages_of(&self.present, lo, hi);
                out.extend(pages.map(|page| decode(slots[page])));
                out.len() - before
            }
        };
        for w in lo / 64..hi.div_ceil(64) {
            self.present[w] &= !word_mask(w, lo, hi);
        }
        self.used -= taken as u32;
        taken as u64
    }

    /// [`Chunk::pages`] over a bitmap alone, for when the slots are borrowed apart.
    fn pages_of(present: &[u64; WORDS], lo: usize, hi: usize) -> impl Iterator<Item = usize> + '_ {
        // An empty range meets at most one word, in no bit.
        (lo / 64..hi.div_ceil(64)).flat_map(move |w| {
            let mut bits = present[w] & word_mask(w, lo, hi);
            core::iter::from_fn(move || {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits.wrapping_sub(1);
                (bit < 64).then_some(w * 64 + bit)
            })
        })
    }

    /// The committed pages in `[lo, hi)` of the chunk with their frames, in order.
    pub(super) fn iter_range(
        &self,
        lo: usize,
        hi: usize,
    ) -> impl Iterator<Item = (usize, PhysAddr)> + '_ {
        let mut k = self.rank(lo);
        self.pages(lo, hi).map(move |i| {
            let number = match &self.slots {
                Slots::Packed(numbers) => {
                    k += 1;
                    numbers[k - 1]
                }
                Slots::Direct(slots) => slots[i],
            };
            (i, decode(number))
        })
    }

    /// Gives the chunk's frames back to `platform` in calls of up to [`FREE_BATCH`], through
    /// `batch`.
    ///
    /// # Safety
    /// As for [`crate::platform::Platform::free_frames`].
    pub(super) unsafe fn free(
        &self,
        platform: &dyn crate::platform::Platform,
        batch: &mut [PhysAddr; FREE_BATCH],
    ) {
        /// Up to [`FREE_BATCH`] frames in one call.
        ///
        /// # Safety
        /// As for [`crate::platform::Platform::free_frames`].
        unsafe fn give(
            platform: &dyn crate::platform::Platform,
            batch: &mut [PhysAddr; FREE_BATCH],
            numbers: impl Iterator<Item = u32>,
        ) {
            let mut count = 0;
            for (slot, number) in batch.iter_mut().zip(numbers) {
                *slot = decode(number);
                count += 1;
            }
            // SAFETY: forwarded from the caller.
            unsafe { platform.free_frames(&batch[..count]) };
        }
        match &self.slots {
            Slots::Packed(numbers) => {
                for part in numbers.chunks(FREE_BATCH) {
                    // SAFETY: forwarded from the caller.
                    unsafe { give(platform, batch, part.iter().copied()) };
                }
            }
            // One call per bitmap word: a full word's slots are its frames as they lie (all 64
            // of them lie below the highest committed page, so inside the slots).
            Slots::Direct(slots) => {
                for (w, &bits) in self.present.iter().enumerate() {
                    if bits == u64::MAX {
                        let word = &slots[w * 64..w * 64 + 64];
                        // SAFETY: forwarded from the caller.
                        unsafe { give(platform, batch, word.iter().copied()) };
                    } else if bits != 0 {
                        let pages = Chunk::pages_of(&self.present, w * 64, w * 64 + 64);
                        // SAFETY: forwarded from the caller.
                        unsafe { give(platform, batch, pages.map(|page| slots[page])) };
                    }
                }
            }
        }
    }

    /// Heap bytes of the chunk: its box and its frame numbers.
    pub(super) fn heap_bytes(&self) -> usize {
        core::mem::size_of::<Chunk>()
            + match &self.slots {
                Slots::Packed(numbers) => numbers.capacity() * core::mem::size_of::<u32>(),
                Slots::Direct(slots) => slots.capacity() * core::mem::size_of::<u32>(),
            }
    }
}

/// The bits of bitmap word `w` that `[lo, hi)` covers (the range must meet the word).
pub(super) fn word_mask(w: usize, lo: usize, hi: usize) -> u64 {
    let a = lo.max(w * 64) - w * 64;
    let b = hi.min(w * 64 + 64) - w * 64;
    if b - a == 64 {
        u64::MAX
    } else {
        ((1u64 << (b - a)) - 1) << a
    }
}

/// Frames handed to the platform per call when a chunk is freed.
pub(super) const FREE_BATCH: usize = 64;

/// The frame whose number is `frame`.
pub(super) fn decode(frame: u32) -> PhysAddr {
    PhysAddr::from_frame_number(u64::from(frame))
}

#[cfg(test)]
impl Chunk {
    /// Whether the chunk keeps one slot per page.
    pub(super) fn is_direct(&self) -> bool {
        matches!(self.slots, Slots::Direct(_))
    }

    /// The frame numbers' capacity, whichever the form.
    pub(super) fn slot_capacity(&self) -> usize {
        match &self.slots {
            Slots::Packed(numbers) | Slots::Direct(numbers) => numbers.capacity(),
        }
    }
}
