//! Pages taken out of a page list on their way back to the platform: whole maps, whole
//! chunks and run blocks, whole runs, single frames; runs given back in batches.

use super::chunk::FREE_BATCH;
use super::{Chunk, RunBlock, CHUNK_PAGES};
use crate::platform::PhysAddr;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Pages taken out of a [`super::PageList`]: whole maps, whole chunks and run blocks, whole
/// runs, and single frames from partial chunks and runs.
#[derive(Default)]
pub struct RemovedPages {
    /// Whole lists' chunk maps, when a range took every chunk of a list: moved in one step.
    pub maps: Vec<BTreeMap<u64, Chunk>>,
    /// Whole lists' run-block maps, when a range took every run of a list: moved in one step.
    pub run_maps: Vec<BTreeMap<u64, Box<RunBlock>>>,
    /// Chunks that left whole.
    pub chunks: Vec<Chunk>,
    /// Run blocks that left whole.
    pub blocks: Vec<Box<RunBlock>>,
    /// The first frames of whole runs that left alone.
    pub runs: Vec<PhysAddr>,
    /// Frames that left one by one.
    pub frames: Vec<PhysAddr>,
}

impl RemovedPages {
    /// Gives every frame back to `platform`, without a list of them all (the single frames in
    /// one call, each whole chunk's in calls of up to 64, whole runs in
    /// [`crate::platform::Platform::free_runs`] calls of up to 64 runs), then forgets them,
    /// keeping the lists' capacity.
    ///
    /// # Safety
    /// As for [`crate::platform::Platform::free_frames`]: no page table or TLB may still reach any of the frames.
    pub unsafe fn free(&mut self, platform: &dyn crate::platform::Platform) {
        if !self.frames.is_empty() {
            // SAFETY: forwarded from the caller.
            unsafe { platform.free_frames(&self.frames) };
            self.frames.clear();
        }
        let mut batch = [PhysAddr(0); FREE_BATCH];
        let whole = self.maps.iter().flat_map(BTreeMap::values);
        for chunk in self.chunks.iter().chain(whole) {
            // SAFETY: forwarded from the caller.
            unsafe { chunk.free(platform, &mut batch) };
        }
        let mut runs = RunBatch::new(platform);
        for &base in &self.runs {
            // SAFETY: forwarded from the caller: every frame of the run is one of ours.
            unsafe { runs.push(base) };
        }
        let blocks = self.run_maps.iter().flat_map(BTreeMap::values);
        for block in self.blocks.iter().chain(blocks) {
            // SAFETY: forwarded from the caller: every frame the block holds, and every frame
            // of its whole runs, is one of ours.
            unsafe { block.free(platform, &mut runs, &mut batch) };
        }
        // SAFETY: forwarded from the caller.
        unsafe { runs.flush() };
        self.clear();
    }

    /// Every frame taken out.
    pub fn frames(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        let whole = self.maps.iter().flat_map(|map| map.values());
        let chunks = self.chunks.iter().chain(whole).flat_map(Chunk::frames);
        let blocks = self.run_maps.iter().flat_map(|map| map.values());
        let blocks = self
            .blocks
            .iter()
            .chain(blocks)
            .flat_map(|block| block.frames());
        let runs = self.runs.iter().flat_map(|&base| {
            (0..CHUNK_PAGES).map(move |i| PhysAddr(base.0 + i * crate::abi::PAGE_SIZE))
        });
        self.frames
            .iter()
            .copied()
            .chain(chunks)
            .chain(blocks)
            .chain(runs)
    }

    /// Forgets what was taken out (after it was freed), keeping the lists' capacity.
    pub fn clear(&mut self) {
        self.maps.clear();
        self.run_maps.clear();
        self.chunks.clear();
        self.blocks.clear();
        self.runs.clear();
        self.frames.clear();
    }

    /// Whether nothing was taken out.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
            && self.run_maps.is_empty()
            && self.chunks.is_empty()
            && self.blocks.is_empty()
            && self.runs.is_empty()
            && self.frames.is_empty()
    }
}

/// Whole runs on their way back to the platform, up to [`FREE_BATCH`] in one
/// [`crate::platform::Platform::free_runs`] call.
pub(super) struct RunBatch<'a> {
    platform: &'a dyn crate::platform::Platform,
    bases: [PhysAddr; FREE_BATCH],
    len: usize,
}

impl<'a> RunBatch<'a> {
    fn new(platform: &'a dyn crate::platform::Platform) -> Self {
        RunBatch {
            platform,
            bases: [PhysAddr(0); FREE_BATCH],
            len: 0,
        }
    }

    /// Adds the run of [`CHUNK_PAGES`] frames from `base`, giving the batch back when full.
    ///
    /// # Safety
    /// As for [`crate::platform::Platform::free_run`].
    pub(super) unsafe fn push(&mut self, base: PhysAddr) {
        self.bases[self.len] = base;
        self.len += 1;
        if self.len == FREE_BATCH {
            // SAFETY: forwarded from the callers of `push`.
            unsafe { self.flush() };
        }
    }

    /// Gives back the runs pushed since the last call.
    ///
    /// # Safety
    /// As for [`crate::platform::Platform::free_run`], for each run pushed.
    unsafe fn flush(&mut self) {
        if self.len > 0 {
            // SAFETY: forwarded from the callers of `push`.
            unsafe {
                self.platform
                    .free_runs(&self.bases[..self.len], CHUNK_PAGES as usize)
            };
            self.len = 0;
        }
    }
}
