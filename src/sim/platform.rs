//! The simulated machine as a [`Platform`]: frames from its bitmap allocator, its memory as the
//! direct map, its CPUs' TLBs for the invalidations, and IPIs between its CPUs.

use super::*;

// SAFETY: frames come from the machine's own bitmap allocator (each handed out once until
// freed); `phys_to_virt` points into the machine's memory, which lives as long as the machine;
// `current_cpu` is the calling thread's simulated CPU, which only `SimCpu::enter` changes (a
// thread does not migrate on its own); the TLB operations act on the simulated TLBs as their
// documentation says; `prepare_root` fills only slot 511.
unsafe impl Platform for SimMachine {
    fn zero_frame(&self) -> Option<PhysAddr> {
        self.zero_page()
    }

    fn alloc_frame(&self) -> Option<PhysAddr> {
        let mut allocator = lock(&self.allocator);
        if allocator.budget == Some(0) {
            return None;
        }
        let start = allocator.hint;
        let words = allocator.used.len();
        for step in 0..=words {
            let word_index = (start / 64 + step) % words;
            let word = allocator.used[word_index];
            if word == u64::MAX {
                continue;
            }
            let frame = word_index * 64 + (!word).trailing_zeros() as usize;
            if frame >= self.frames {
                continue;
            }
            allocator.set(frame, true);
            allocator.hint = frame + 1;
            if let Some(budget) = allocator.budget.as_mut() {
                *budget -= 1;
            }
            self.counters
                .frames_allocated
                .fetch_add(1, Ordering::SeqCst);
            return Some(PhysAddr::from_frame_number(frame as u64));
        }
        None
    }

    fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
        let mut allocator = lock(&self.allocator);
        if count == 0 || allocator.budget.is_some_and(|b| b < count as u64) {
            return None;
        }
        let mut run = 0;
        for frame in 1..self.frames {
            run = if allocator.is_used(frame) { 0 } else { run + 1 };
            if run == count {
                let first = frame + 1 - count;
                for f in first..=frame {
                    allocator.set(f, true);
                }
                if let Some(budget) = allocator.budget.as_mut() {
                    *budget -= count as u64;
                }
                self.counters
                    .frames_allocated
                    .fetch_add(count as u64, Ordering::SeqCst);
                return Some(PhysAddr::from_frame_number(first as u64));
            }
        }
        None
    }

    fn alloc_aligned_run(&self, count: usize) -> Option<PhysAddr> {
        if !count.is_power_of_two() {
            return None;
        }
        let mut allocator = lock(&self.allocator);
        let first = self.free_aligned_run(&allocator, count)?;
        for f in first..first + count {
            allocator.set(f, true);
        }
        if let Some(budget) = allocator.budget.as_mut() {
            *budget -= count as u64;
        }
        self.counters
            .frames_allocated
            .fetch_add(count as u64, Ordering::SeqCst);
        self.counters.runs_allocated.fetch_add(1, Ordering::SeqCst);
        Some(PhysAddr::from_frame_number(first as u64))
    }

    unsafe fn free_run(&self, base: PhysAddr, count: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_runs(&[base], count) };
    }

    unsafe fn free_runs(&self, bases: &[PhysAddr], count: usize) {
        // By range, word by word: what a real allocator's run free costs, not `count` frees;
        // one lock and one freed-frame check for the whole batch.
        for &base in bases {
            let first = self.frame_index(base);
            assert!(
                first + count <= self.frames,
                "a run past the machine's frames"
            );
            if let Some(zero) = self.zero_page() {
                assert!(
                    !(first..first + count).contains(&self.frame_index(zero)),
                    "the shared zero page was freed"
                );
            }
        }
        self.check_runs_not_cached(bases, count);
        if self.poison_freed.load(Ordering::Relaxed) {
            for &base in bases {
                let first = self.frame_index(base) * WORDS_PER_FRAME;
                for word in &self.memory[first..first + count * WORDS_PER_FRAME] {
                    word.store(FREED_POISON, Ordering::Relaxed);
                }
            }
        }
        let mut allocator = lock(&self.allocator);
        for &base in bases {
            let first = self.frame_index(base);
            clear_range(&mut allocator, first, first + count);
        }
        add_locked(
            &self.counters.frames_freed,
            (bases.len() * count) as u64,
            &allocator,
        );
        add_locked(&self.counters.runs_freed, bases.len() as u64, &allocator);
    }

    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        if let Some(zero) = self.zero_page() {
            assert!(!frames.contains(&zero), "the shared zero page was freed");
        }
        self.check_not_cached(frames);
        let poison = self.poison_freed.load(Ordering::Relaxed);
        if poison {
            for &pa in frames {
                let first = self.frame_index(pa) * WORDS_PER_FRAME;
                for word in &self.memory[first..first + WORDS_PER_FRAME] {
                    word.store(FREED_POISON, Ordering::Relaxed);
                }
            }
        }
        let mut allocator = lock(&self.allocator);
        // Clear a bitmap word's bits together: consecutive frames share a word.
        let mut word = usize::MAX;
        let mut mask = 0u64;
        let clear = |allocator: &mut FrameAllocator, word: usize, mask: u64| {
            if mask != 0 {
                assert!(
                    allocator.used[word] & mask == mask,
                    "double free in bitmap word {word}"
                );
                allocator.used[word] &= !mask;
            }
        };
        for &pa in frames {
            let index = self.frame_index(pa);
            if index / 64 != word {
                clear(&mut allocator, word, mask);
                word = index / 64;
                mask = 0;
            }
            let bit = 1u64 << (index % 64);
            assert!(mask & bit == 0, "double free of {pa:?}");
            mask |= bit;
        }
        clear(&mut allocator, word, mask);
        add_locked(&self.counters.frames_freed, frames.len() as u64, &allocator);
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        let index = self.frame_index(pa);
        // Pointer arithmetic from the whole memory's pointer, not a fresh slice per call: Miri
        // would otherwise re-check the rest of memory at every call.
        self.memory.as_ptr().wrapping_add(index * WORDS_PER_FRAME) as *mut u8
    }

    fn current_cpu(&self) -> usize {
        CURRENT_CPU.with(|cpu| cpu.get())
    }

    fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    fn send_ipi(&self, targets: CpuSet) {
        for cpu in targets.iter().filter(|&cpu| cpu < self.cpus.len()) {
            let state = &self.cpus[cpu];
            self.counters.ipis.fetch_add(1, Ordering::SeqCst);
            state.ipis_received.fetch_add(1, Ordering::SeqCst);
            state.ipi_pending.store(true, Ordering::SeqCst);
            if !state.attached.load(Ordering::SeqCst) {
                // No thread takes interrupts for this CPU: take the IPI now, on its behalf. (If
                // its thread detached just now, both may take it; the second finds nothing.)
                state.ipi_pending.store(false, Ordering::SeqCst);
                Self::as_cpu(cpu, || self.tlb.handle_ipi(&CpuPin::new(self)));
            }
        }
    }

    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        if self.broadcast {
            for cpu in 0..self.cpus.len() {
                self.invalidate_on(cpu, request);
            }
        } else {
            self.invalidate_on(self.current_cpu(), request);
        }
    }

    fn max_leaf_level(&self) -> usize {
        self.max_leaf_level.load(Ordering::Relaxed)
    }

    fn tlb_features(&self) -> TlbFeatures {
        self.features()
    }

    fn invalidate_broadcast(&self, request: &TlbInvalidate<'_>) {
        self.broadcast(request);
    }

    fn sync_broadcast(&self) {
        self.sync();
    }

    fn invalidation_is_broadcast(&self) -> bool {
        self.broadcast
    }

    fn wait_hint(&self) {
        // The targets are threads too, perhaps on this core: let them run.
        std::thread::yield_now();
    }

    unsafe fn load_kernel_root(&self) {
        self.unload_root();
    }

    fn prepare_root(&self, root: PhysAddr) {
        // The simulated kernel's entry in slot 511, as an x86_64 kernel copies its upper half.
        // (In an aarch64-format root it is an unused TTBR0 slot: no user address reaches it.)
        let entry = X86_64::table_entry(KERNEL_TABLE);
        self.word(PhysAddr(root.0 + KERNEL_SLOT as u64 * 8))
            .store(entry, Ordering::Relaxed);
    }

    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        let cpu = self.current_cpu();
        if let Some(hook) = lock(&self.load_root_hook).as_ref() {
            hook(cpu);
        }
        let mut tlb = lock(&self.cpus[cpu].tlb);
        self.cpus[cpu].loaded_root.store(root.0, Ordering::Release);
        if flush {
            tlb.drop_tag(asid);
            self.counters
                .full_invalidations
                .fetch_add(1, Ordering::SeqCst);
        }
        tlb.tag = Some(asid);
        // Whatever the CPU can now use under this tag must still be memory the translation
        // was made for: a frame that was freed means a flush the crate forgot.
        let allocator = lock(&self.allocator);
        for (&(tag, vpn), entry) in tlb.entries.iter() {
            assert!(
                tag != asid || allocator.is_used(self.frame_index(entry.frame)),
                "CPU {cpu} switched to tag {asid} with a stale translation of {:#x} to freed {:?}",
                vpn * PAGE_SIZE,
                entry.frame
            );
        }
        for (&(tag, _, first), entry) in tlb.large.iter() {
            assert!(
                tag != asid || allocator.is_used(self.frame_index(entry.frame)),
                "CPU {cpu} switched to tag {asid} with a stale large translation of {:#x} to \
                 freed {:?}",
                first * PAGE_SIZE,
                entry.frame
            );
        }
        for (&(tag, _, base), &(table, _)) in tlb.walks.iter() {
            assert!(
                tag != asid || allocator.is_used(self.frame_index(table)),
                "CPU {cpu} switched to tag {asid} with a cached walk for {base:#x} through freed \
                 page-table page {table:?}"
            );
        }
    }
}

// (continued) the rest of the Platform methods.
impl SimMachine {
    pub(super) fn unload_root(&self) {
        let cpu = self.current_cpu();
        let mut tlb = lock(&self.cpus[cpu].tlb);
        self.cpus[cpu].loaded_root.store(NO_ROOT, Ordering::Release);
        tlb.tag = None;
    }
}

/// Adds `n` to a counter that changes only under the allocator's lock (`_held` proves it is
/// held): the lock orders its writers, so a plain load and store do, with no locked instruction
/// on the free path. (Readers load it atomically, as every counter.)
fn add_locked(counter: &AtomicU64, n: u64, _held: &FrameAllocator) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// Marks frames `[first, last)` free in the bitmap: whole words at a time where the range covers
/// them (an aligned run always does). Panics on a double free.
fn clear_range(allocator: &mut FrameAllocator, first: usize, last: usize) {
    let mut frame = first;
    if frame % 64 == 0 {
        let whole = (last - frame) / 64;
        let words = &mut allocator.used[frame / 64..frame / 64 + whole];
        assert!(
            words.iter().all(|&word| word == u64::MAX),
            "double free in bitmap words from {}",
            frame / 64
        );
        words.fill(0);
        frame += whole * 64;
    }
    while frame < last {
        let bits = (last - frame).min(64 - frame % 64);
        let mask = if bits == 64 {
            u64::MAX
        } else {
            ((1u64 << bits) - 1) << (frame % 64)
        };
        let word = frame / 64;
        assert!(
            allocator.used[word] & mask == mask,
            "double free in bitmap word {word}"
        );
        allocator.used[word] &= !mask;
        frame += bits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_used(words: usize) -> FrameAllocator {
        FrameAllocator {
            used: alloc::vec![u64::MAX; words],
            hint: 0,
            budget: None,
        }
    }

    /// `clear_range` frees exactly `[first, last)`, whatever the range's alignment: whole words,
    /// a part of a word at either end, inside one word.
    #[test]
    fn clear_range_frees_exactly_the_range() {
        let ranges = [
            (0, 64),
            (0, 512),
            (3, 5),
            (60, 70),
            (64, 200),
            (1, 191),
            (128, 129),
            (5, 64),
            (448, 512),
            (1, 5),
        ];
        for (first, last) in ranges {
            let mut allocator = all_used(8);
            clear_range(&mut allocator, first, last);
            for frame in 0..512 {
                assert_eq!(
                    allocator.is_used(frame),
                    !(first..last).contains(&frame),
                    "{first}..{last}: frame {frame}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn clear_range_refuses_a_double_free_in_part_of_a_word() {
        let mut allocator = all_used(8);
        clear_range(&mut allocator, 3, 5);
        clear_range(&mut allocator, 4, 6);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn clear_range_refuses_a_double_free_in_whole_words() {
        let mut allocator = all_used(8);
        clear_range(&mut allocator, 0, 128);
        clear_range(&mut allocator, 64, 192);
    }
}
