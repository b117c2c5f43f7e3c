//! A simulated machine for the host: physical memory, a frame allocator, and CPUs whose MMU walks
//! the crate's real page tables (in either format) through a TLB that keeps every translation until
//! it is invalidated.
//!
//! Because a simulated TLB forgets nothing on its own, a missing or late invalidation shows up as a
//! stale read (or a read of a freed frame, which is filled with [`FREED_POISON`]). The machine counts
//! what happened: frames allocated and freed, invalidation requests, page and full invalidations,
//! TLB hits, misses and faults.
//!
//! Enabled by the `sim` feature, which uses `std`; the tests, the demo and the benchmarks use it.

extern crate std;

use crate::abi::PAGE_SIZE;
use crate::arch::MmuFlags;
use crate::platform::{PhysAddr, Platform, TlbInvalidate, TlbScope};
use crate::vmar::{Access, AddressSpace, FaultError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;

/// What a freed frame is filled with when poisoning is on: a read through a stale translation of a
/// freed frame returns this.
pub const FREED_POISON: u64 = 0xdead_f4ee_dead_f4ee;

const WORDS_PER_FRAME: usize = (PAGE_SIZE / 8) as usize;

std::thread_local! {
    static CURRENT_CPU: Cell<usize> = const { Cell::new(0) };
}

/// How to build a [`SimMachine`].
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// Frames of simulated physical memory (frame 0 is never handed out).
    pub frames: usize,
    /// Simulated CPUs.
    pub cpus: usize,
    /// Fill freed frames with [`FREED_POISON`] (on by default; benchmarks turn it off).
    pub poison_freed: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            frames: 4096,
            cpus: 1,
            poison_freed: true,
        }
    }
}

/// The machine's counters, all since it was built.
#[derive(Default, Debug)]
pub struct Counters {
    /// Frames handed out.
    pub frames_allocated: AtomicU64,
    /// Frames given back.
    pub frames_freed: AtomicU64,
    /// Calls of [`Platform::invalidate_tlb`]: one per address space per operation.
    pub invalidate_requests: AtomicU64,
    /// Single-page invalidations carried out, summed over CPUs.
    pub page_invalidations: AtomicU64,
    /// Whole-address-space invalidations carried out, summed over CPUs.
    pub full_invalidations: AtomicU64,
    /// Translations found in a TLB.
    pub tlb_hits: AtomicU64,
    /// Translations walked.
    pub tlb_misses: AtomicU64,
    /// Page faults raised into the crate.
    pub page_faults: AtomicU64,
}

/// A snapshot of [`Counters`]; the fields mean what they mean there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CounterSnapshot {
    pub frames_allocated: u64,
    pub frames_freed: u64,
    pub invalidate_requests: u64,
    pub page_invalidations: u64,
    pub full_invalidations: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
    pub page_faults: u64,
}

impl CounterSnapshot {
    /// The change from `earlier` to `self`.
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            frames_allocated: self.frames_allocated - earlier.frames_allocated,
            frames_freed: self.frames_freed - earlier.frames_freed,
            invalidate_requests: self.invalidate_requests - earlier.invalidate_requests,
            page_invalidations: self.page_invalidations - earlier.page_invalidations,
            full_invalidations: self.full_invalidations - earlier.full_invalidations,
            tlb_hits: self.tlb_hits - earlier.tlb_hits,
            tlb_misses: self.tlb_misses - earlier.tlb_misses,
            page_faults: self.page_faults - earlier.page_faults,
        }
    }
}

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// The frame.
    pub frame: PhysAddr,
    /// Its permissions.
    pub flags: MmuFlags,
}

struct CpuState {
    /// Virtual page number -> translation, for the current address space.
    tlb: Mutex<BTreeMap<u64, TlbEntry>>,
    current: Mutex<Option<Arc<AddressSpace>>>,
}

struct FrameAllocator {
    /// One bit per frame: set while allocated.
    used: Vec<u64>,
    /// Where the next search starts.
    hint: usize,
    /// Frames still allowed before allocation fails (for exhaustion tests).
    budget: Option<u64>,
}

impl FrameAllocator {
    fn is_used(&self, frame: usize) -> bool {
        self.used[frame / 64] & (1 << (frame % 64)) != 0
    }

    fn set(&mut self, frame: usize, used: bool) {
        if used {
            self.used[frame / 64] |= 1 << (frame % 64);
        } else {
            self.used[frame / 64] &= !(1 << (frame % 64));
        }
    }
}

/// The simulated machine. It implements [`Platform`], so the crate runs on it as on a kernel.
pub struct SimMachine {
    memory: Box<[AtomicU64]>,
    frames: usize,
    poison_freed: AtomicBool,
    allocator: Mutex<FrameAllocator>,
    cpus: Vec<CpuState>,
    counters: Counters,
}

impl SimMachine {
    /// A machine as `config` says.
    pub fn new(config: SimConfig) -> Arc<SimMachine> {
        assert!(config.cpus >= 1 && config.cpus <= crate::platform::MAX_CPUS);
        assert!(config.frames >= 2);
        // Zeroed memory from the host allocator is mapped lazily, so a large machine costs only
        // what it touches.
        let words: Box<[u64]> = vec![0u64; config.frames * WORDS_PER_FRAME].into_boxed_slice();
        let raw = Box::into_raw(words) as *mut [AtomicU64];
        // SAFETY: `AtomicU64` has the same size, alignment and bit validity as `u64`, so the
        // allocation made for `[u64]` is a valid `[AtomicU64]` of the same length, and Box frees it
        // with the same layout.
        let memory = unsafe { Box::from_raw(raw) };
        let mut allocator = FrameAllocator {
            used: vec![0; config.frames.div_ceil(64)],
            hint: 1,
            budget: None,
        };
        // Frame 0 stays reserved, so that physical address 0 is never a valid frame.
        allocator.set(0, true);
        Arc::new(SimMachine {
            memory,
            frames: config.frames,
            poison_freed: AtomicBool::new(config.poison_freed),
            allocator: Mutex::new(allocator),
            cpus: (0..config.cpus)
                .map(|_| CpuState {
                    tlb: Mutex::new(BTreeMap::new()),
                    current: Mutex::new(None),
                })
                .collect(),
            counters: Counters::default(),
        })
    }

    /// A one-CPU machine with `frames` frames.
    pub fn with_frames(frames: usize) -> Arc<SimMachine> {
        Self::new(SimConfig {
            frames,
            ..SimConfig::default()
        })
    }

    /// CPU `index`.
    pub fn cpu(self: &Arc<Self>, index: usize) -> SimCpu {
        assert!(index < self.cpus.len(), "no CPU {index}");
        SimCpu {
            machine: self.clone(),
            index,
        }
    }

    /// The counters.
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.counters;
        CounterSnapshot {
            frames_allocated: c.frames_allocated.load(Ordering::SeqCst),
            frames_freed: c.frames_freed.load(Ordering::SeqCst),
            invalidate_requests: c.invalidate_requests.load(Ordering::SeqCst),
            page_invalidations: c.page_invalidations.load(Ordering::SeqCst),
            full_invalidations: c.full_invalidations.load(Ordering::SeqCst),
            tlb_hits: c.tlb_hits.load(Ordering::SeqCst),
            tlb_misses: c.tlb_misses.load(Ordering::SeqCst),
            page_faults: c.page_faults.load(Ordering::SeqCst),
        }
    }

    /// Frames allocated and not yet freed.
    pub fn frames_in_use(&self) -> u64 {
        let c = self.counters();
        c.frames_allocated - c.frames_freed
    }

    /// Lets only `frames` more frame allocations succeed (`None`: no limit).
    pub fn set_allocation_budget(&self, frames: Option<u64>) {
        self.allocator.lock().budget = frames;
    }

    /// Turns poisoning of freed frames on or off.
    pub fn set_poison_freed(&self, on: bool) {
        self.poison_freed.store(on, Ordering::Relaxed);
    }

    /// The word at physical address `pa` (8-aligned).
    pub fn read_phys(&self, pa: PhysAddr) -> u64 {
        self.word(pa).load(Ordering::Relaxed)
    }

    fn word(&self, pa: PhysAddr) -> &AtomicU64 {
        assert!(pa.0.is_multiple_of(8), "unaligned physical access {pa:?}");
        &self.memory[(pa.0 / 8) as usize]
    }

    /// Panics if a CPU's TLB still translates to one of `frames`: the crate freed a frame before
    /// the invalidation that covers it. Checked on every free.
    fn check_not_cached(&self, frames: &[PhysAddr]) {
        if frames.is_empty() {
            return;
        }
        let mut sorted: Vec<PhysAddr> = frames.to_vec();
        sorted.sort_unstable();
        for (index, cpu) in self.cpus.iter().enumerate() {
            for (vpn, entry) in cpu.tlb.lock().iter() {
                assert!(
                    sorted.binary_search(&entry.frame).is_err(),
                    "frame {:?} freed while CPU {index}'s TLB still maps page {:#x} to it",
                    entry.frame,
                    vpn * PAGE_SIZE
                );
            }
        }
    }

    fn frame_index(&self, pa: PhysAddr) -> usize {
        let index = pa.frame_number() as usize;
        assert!(
            index < self.frames && pa.0.is_multiple_of(PAGE_SIZE),
            "{pa:?} is not a frame of this machine"
        );
        index
    }
}

impl Drop for SimMachine {
    /// The leak check: once everything built on the machine is gone (every object holds the
    /// machine alive), every frame it handed out must have come back.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let c = self.counters();
        assert_eq!(
            c.frames_allocated, c.frames_freed,
            "frames leaked: {} allocated, {} freed",
            c.frames_allocated, c.frames_freed
        );
    }
}

impl Platform for SimMachine {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        let mut allocator = self.allocator.lock();
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
        let mut allocator = self.allocator.lock();
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

    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
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
        let mut allocator = self.allocator.lock();
        for &pa in frames {
            let index = self.frame_index(pa);
            assert!(allocator.is_used(index), "double free of {pa:?}");
            allocator.set(index, false);
        }
        self.counters
            .frames_freed
            .fetch_add(frames.len() as u64, Ordering::SeqCst);
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        let index = self.frame_index(pa);
        self.memory[index * WORDS_PER_FRAME..].as_ptr() as *mut u8
    }

    fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    fn current_cpu(&self) -> usize {
        CURRENT_CPU.with(|cpu| cpu.get())
    }

    fn invalidate_tlb(&self, request: &TlbInvalidate<'_>) {
        self.counters
            .invalidate_requests
            .fetch_add(1, Ordering::SeqCst);
        for cpu in request.cpus.iter().filter(|&cpu| cpu < self.cpus.len()) {
            let mut tlb = self.cpus[cpu].tlb.lock();
            match request.scope {
                TlbScope::Pages(pages) => {
                    for &va in pages {
                        tlb.remove(&(va / PAGE_SIZE));
                    }
                    self.counters
                        .page_invalidations
                        .fetch_add(pages.len() as u64, Ordering::SeqCst);
                }
                TlbScope::All => {
                    tlb.clear();
                    self.counters
                        .full_invalidations
                        .fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// A simulated CPU. Its loads and stores translate through its TLB, walk the page tables of the
/// address space it runs on when the TLB misses, and raise page faults into the crate.
#[derive(Clone)]
pub struct SimCpu {
    machine: Arc<SimMachine>,
    index: usize,
}

impl SimCpu {
    fn state(&self) -> &CpuState {
        &self.machine.cpus[self.index]
    }

    fn enter(&self) {
        CURRENT_CPU.with(|cpu| cpu.set(self.index));
    }

    /// The CPU's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Switches the CPU to `aspace` (or to none), as a context switch does: leaves the old
    /// address space's active set, drops the TLB (a root-table load without tags), joins the new.
    pub fn switch_to(&self, aspace: Option<&Arc<AddressSpace>>) {
        self.enter();
        let mut current = self.state().current.lock();
        if let Some(old) = current.take() {
            old.deactivate(self.index);
        }
        self.state().tlb.lock().clear();
        if let Some(new) = aspace {
            new.activate(self.index);
            *current = Some(new.clone());
        }
    }

    /// Translates `va` for `access`, faulting into the crate as needed.
    fn translate(&self, va: u64, access: Access) -> Result<PhysAddr, FaultError> {
        self.enter();
        let aspace = self
            .state()
            .current
            .lock()
            .clone()
            .ok_or(FaultError::NotMapped)?;
        let counters = &self.machine.counters;
        let vpn = va / PAGE_SIZE;
        let offset = va % PAGE_SIZE;
        let needed = match access {
            Access::Read => MmuFlags::READ,
            Access::Write => MmuFlags::WRITE,
            Access::Execute => MmuFlags::EXECUTE,
        };
        // A fault handler that made progress is retried; two faults in a row without progress
        // mean the access is refused.
        for _ in 0..3 {
            let cached = self.state().tlb.lock().get(&vpn).copied();
            if let Some(entry) = cached {
                if entry.flags.contains(needed) {
                    counters.tlb_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(PhysAddr(entry.frame.0 + offset));
                }
                // A permission fault on a cached entry: the hardware rewalks after the fault, so
                // drop the entry, as a fault handler's local invalidation would.
                self.state().tlb.lock().remove(&vpn);
            }
            counters.tlb_misses.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the simulated memory is never unmapped, so every table stays readable; a
            // table freed under the walk reads as stale or poisoned data, as on hardware.
            let walked = unsafe { aspace.translate(va) };
            match walked {
                Some((frame, flags)) if flags.contains(needed) => {
                    self.state()
                        .tlb
                        .lock()
                        .insert(vpn, TlbEntry { frame, flags });
                    return Ok(PhysAddr(frame.0 + offset));
                }
                _ => {
                    counters.page_faults.fetch_add(1, Ordering::Relaxed);
                    aspace.page_fault(va, access)?;
                }
            }
        }
        Err(FaultError::AccessDenied)
    }

    /// Loads the 8-aligned word at `va`.
    pub fn load(&self, va: u64) -> Result<u64, FaultError> {
        assert!(va.is_multiple_of(8), "unaligned load at {va:#x}");
        let pa = self.translate(va, Access::Read)?;
        Ok(self.machine.word(pa).load(Ordering::Relaxed))
    }

    /// Stores `value` to the 8-aligned word at `va`.
    pub fn store(&self, va: u64, value: u64) -> Result<(), FaultError> {
        assert!(va.is_multiple_of(8), "unaligned store at {va:#x}");
        let pa = self.translate(va, Access::Write)?;
        self.machine.word(pa).store(value, Ordering::Relaxed);
        Ok(())
    }

    /// The translation of `va` cached in this CPU's TLB, if any.
    pub fn tlb_entry(&self, va: u64) -> Option<TlbEntry> {
        self.state().tlb.lock().get(&(va / PAGE_SIZE)).copied()
    }

    /// How many translations this CPU's TLB holds.
    pub fn tlb_len(&self) -> usize {
        self.state().tlb.lock().len()
    }

    /// Invalidates this CPU's translation of `va`, as INVLPG would.
    pub fn invalidate_page(&self, va: u64) {
        self.state().tlb.lock().remove(&(va / PAGE_SIZE));
    }
}
