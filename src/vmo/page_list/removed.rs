//! Pages taken out of a page list on their way back to the platform: whole lists, whole
//! chunks, single frames, and whole runs given back in batches.

use super::chunk::FREE_BATCH;
use super::{Chunk, CHUNK_PAGES};
use crate::platform::PhysAddr;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Pages taken out of a [`super::PageList`]: whole lists, whole chunks, and single frames from partial
/// chunks.
#[derive(Default)]
pub struct RemovedPages {
    /// Whole lists' chunk maps, when a range took every page of a list: moved in one step.
    pub maps: Vec<BTreeMap<u64, Chunk>>,
    /// Chunks that left whole.
    pub chunks: Vec<Chunk>,
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
        if self.chunks.is_empty() && self.maps.is_empty() {
            return;
        }
        let mut batch = [PhysAddr(0); FREE_BATCH];
        let mut runs = RunBatch::new(platform);
        let whole = self.maps.iter().flat_map(BTreeMap::values);
        for chunk in self.chunks.iter().chain(whole) {
            match chunk.run() {
                // SAFETY: forwarded from the caller: every frame of the run is one of ours.
                Some(base) => unsafe { runs.push(base) },
                // SAFETY: forwarded from the caller.
                None => unsafe { chunk.free(platform, &mut batch) },
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { runs.flush() };
        self.clear();
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

/// Whole runs on their way back to the platform, up to [`FREE_BATCH`] in one
/// [`crate::platform::Platform::free_runs`] call.
struct RunBatch<'a> {
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
    unsafe fn push(&mut self, base: PhysAddr) {
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
