//! The simulation's check that no frame is freed while a CPU can still reach it: through a
//! translation of any size its TLB holds under the tag it runs, a cached walk, or its root.

use super::*;

/// A large translation some CPU can use, for the freed-frame check: its first frame, its size in
/// bytes, the CPU, and its first page number.
pub(super) type LargeCached = (PhysAddr, u64, usize, u64);

impl SimMachine {
    /// Panics if a CPU's TLB can still use a translation to one of `frames`: the crate freed a
    /// frame before the invalidation that covers it. Checked on every free. Translations under a
    /// tag the CPU is not using are stale but unusable; the crate must flush them before the tag
    /// is used again, which [`Platform::load_root`] checks.
    pub(super) fn check_not_cached(&self, frames: &[PhysAddr]) {
        if frames.is_empty() || self.nothing_cached(|root| frames.contains(&root)) {
            return;
        }
        let mut cached = lock(&self.check_scratch);
        let mut large_scratch = lock(&self.check_large);
        let (large, freed) = &mut *large_scratch;
        self.collect_cached(&mut cached, large);
        if !large.is_empty() {
            freed.clear();
            freed.extend_from_slice(frames);
            freed.sort_unstable();
            for &(start, bytes, cpu, first) in large.iter() {
                let at = freed.partition_point(|frame| frame.0 < start.0);
                if let Some(&frame) = freed.get(at) {
                    Self::check_large_miss(frame, start, bytes, cpu, first);
                }
            }
        }
        // The usable translations are usually far fewer than the frames freed: index those.
        for frame in frames {
            let at = cached.partition_point(|&(cached_frame, ..)| cached_frame < *frame);
            if let Some(&(cached_frame, cpu, vpn, walk)) = cached.get(at) {
                Self::check_small_miss(*frame, cached_frame, cpu, vpn, walk);
            }
        }
    }

    /// [`SimMachine::check_not_cached`] for runs of `count` frames from each of `bases`, by
    /// range.
    pub(super) fn check_runs_not_cached(&self, bases: &[PhysAddr], count: usize) {
        let bytes = count as u64 * PAGE_SIZE;
        let freed = |pa: PhysAddr| {
            bases
                .iter()
                .any(|base| (base.0..base.0 + bytes).contains(&pa.0))
        };
        if self.nothing_cached(freed) {
            return;
        }
        let mut cached = lock(&self.check_scratch);
        let mut large_scratch = lock(&self.check_large);
        let (large, _) = &mut *large_scratch;
        self.collect_cached(&mut cached, large);
        for &base in bases {
            let end = base.0 + bytes;
            for &(start, bytes, cpu, first) in large.iter() {
                if start.0 < end {
                    Self::check_large_miss(PhysAddr(start.0.max(base.0)), start, bytes, cpu, first);
                }
            }
            let at = cached.partition_point(|&(frame, ..)| frame < base);
            if let Some(&(frame, cpu, vpn, walk)) = cached.get(at) {
                if frame.0 < end {
                    Self::check_small_miss(frame, frame, cpu, vpn, walk);
                }
            }
        }
    }

    /// Whether no CPU caches any translation or walk at all (after a full flush, say), so that
    /// there is nothing to search. Panics as [`SimMachine::collect_cached`] does if a CPU has a
    /// frame that `freed` says is being freed loaded as its root table. A CPU whose TLB was
    /// found empty and has cached nothing since costs no lock ([`CpuState::may_cache`]).
    fn nothing_cached(&self, freed: impl Fn(PhysAddr) -> bool) -> bool {
        assert!(
            !self.cpus[self.current_cpu()]
                .unsynced
                .load(Ordering::SeqCst),
            "frames freed on CPU {} after INVLPGB without TLBSYNC",
            self.current_cpu()
        );
        let mut nothing = true;
        for (index, cpu) in self.cpus.iter().enumerate() {
            if let Some(root) = cpu.root() {
                assert!(
                    !freed(root),
                    "page-table page {root:?} freed while CPU {index} still has it loaded as its root"
                );
            }
            if !cpu.may_cache.load(Ordering::Acquire) {
                continue;
            }
            let tlb = lock(&cpu.tlb);
            if tlb.entries.is_empty() && tlb.large.is_empty() && tlb.walks.is_empty() {
                cpu.may_cache.store(false, Ordering::Release);
            } else {
                nothing = false;
            }
        }
        nothing
    }

    /// The translations and walks each CPU can use now (under the tag it runs), sorted by frame
    /// into `cached` (frame, CPU, page, whether a walk), and its large translations into `large`
    /// (first frame, bytes, CPU, first page). (The loaded roots are checked by
    /// [`SimMachine::nothing_cached`], which every caller asks first.)
    fn collect_cached(
        &self,
        cached: &mut Vec<(PhysAddr, usize, u64, bool)>,
        large: &mut Vec<LargeCached>,
    ) {
        cached.clear();
        large.clear();
        for (index, cpu) in self.cpus.iter().enumerate() {
            let tlb = lock(&cpu.tlb);
            // Only the tag the CPU runs: a range of each map, which is keyed by tag first.
            let Some(tag) = tlb.tag else { continue };
            cached.extend(
                tlb.entries
                    .range((tag, 0)..=(tag, u64::MAX))
                    .map(|(&(_, vpn), entry)| (entry.frame, index, vpn, false)),
            );
            large.extend(
                tlb.large
                    .range((tag, 0, 0)..=(tag, usize::MAX, u64::MAX))
                    .map(|(&(_, level, first), entry)| {
                        (entry.frame, entry_span(level), index, first)
                    }),
            );
            cached.extend(
                tlb.walks
                    .range((tag, 0, 0)..=(tag, usize::MAX, u64::MAX))
                    .map(|(&(_, _, base), &(table, _))| (table, index, base / PAGE_SIZE, true)),
            );
        }
        if cached.len() > 1 {
            cached.sort_unstable();
        }
    }

    /// Panics if `frame`, freed, lies in the large translation of `bytes` from `start`.
    fn check_large_miss(frame: PhysAddr, start: PhysAddr, bytes: u64, cpu: usize, first: u64) {
        assert!(
            frame.0 < start.0 || frame.0 >= start.0 + bytes,
            "frame {frame:?} freed while CPU {cpu}'s TLB still maps page {:#x} to it (through a \
             large translation)",
            first * PAGE_SIZE + (frame.0 - start.0)
        );
    }

    /// Panics if `frame`, freed, is `cached_frame`, which CPU `cpu` caches for page `vpn`.
    fn check_small_miss(frame: PhysAddr, cached_frame: PhysAddr, cpu: usize, vpn: u64, walk: bool) {
        assert!(
            cached_frame != frame || walk,
            "frame {frame:?} freed while CPU {cpu}'s TLB still maps page {:#x} to it",
            vpn * PAGE_SIZE
        );
        assert!(
            cached_frame != frame,
            "page-table page {frame:?} freed while CPU {cpu}'s walk cache still points to it (for \
             addresses from {:#x})",
            vpn * PAGE_SIZE
        );
    }
}
