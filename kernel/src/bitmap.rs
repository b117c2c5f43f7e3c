//! A bitmap of pages in use, searched first-fit for runs of free pages: the frame allocator's
//! (`frames.rs`, over physical frames) and the heap's (`heap.rs`, over its own pages).

/// `WORDS * 64` pages, each in use or free.
pub struct Bitmap<const WORDS: usize> {
    used: [u64; WORDS],
}

impl<const WORDS: usize> Bitmap<WORDS> {
    /// Pages the bitmap can track.
    pub const PAGES: usize = WORDS * 64;

    /// Every page in use (`true`) or free.
    pub const fn new(all_used: bool) -> Self {
        Bitmap {
            used: [if all_used { u64::MAX } else { 0 }; WORDS],
        }
    }

    pub fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    pub fn set(&mut self, page: usize, used: bool) {
        if used {
            self.used[page / 64] |= 1 << (page % 64);
        } else {
            self.used[page / 64] &= !(1 << (page % 64));
        }
    }

    /// Marks `count` pages from `first`.
    pub fn set_run(&mut self, first: usize, count: usize, used: bool) {
        for page in first..first + count {
            self.set(page, used);
        }
    }

    /// The first run of `count` free pages below `limit` that starts at a multiple of `align`
    /// pages, searched from `hint` and then, if none is found there, from 0.
    pub fn find_run(&self, hint: usize, limit: usize, count: usize, align: usize) -> Option<usize> {
        self.find_from(hint, limit, count, align)
            .or_else(|| self.find_from(0, limit, count, align))
    }

    fn find_from(&self, from: usize, limit: usize, count: usize, align: usize) -> Option<usize> {
        let align = align.max(1);
        let limit = limit.min(Self::PAGES);
        let mut start = from.next_multiple_of(align);
        while start + count <= limit {
            // From the top: a page in use near the end skips the most.
            match (start..start + count).rev().find(|&p| self.is_used(p)) {
                Some(used) => start = (used + 1).next_multiple_of(align),
                None => return Some(start),
            }
        }
        None
    }
}
