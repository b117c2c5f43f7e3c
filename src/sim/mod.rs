//! A simulated machine for the host: physical memory, a frame allocator, and CPUs whose MMU walks
//! the crate's real page tables (in either format) through a tagged TLB that keeps every translation
//! until it is invalidated.
//!
//! Because a simulated TLB forgets nothing on its own, a missing or late invalidation shows up as a
//! stale read (or a read of a freed frame, which is filled with [`FREED_POISON`]), and the machine
//! refuses outright to free a frame that a CPU can still reach through its TLB.
//!
//! CPUs may run on threads of their own ([`SimCpu::attach`]). IPIs to such a CPU are taken between
//! its accesses, as an interrupt between instructions, through the crate's own handler body
//! ([`crate::tlb::Tlb::handle_ipi`]); a CPU that no thread drives takes them at once, on the
//! sender's thread. An access holds its CPU's TLB from lookup (and walk) to the memory access, so an
//! invalidation waits for accesses already under way, as on hardware. In broadcast mode the machine
//! behaves like aarch64 (`TLBI ...IS`: one instruction reaches every CPU, no IPIs); otherwise like
//! x86_64 (local INVLPG/INVPCID and IPIs).
//!
//! The machine counts what happened: frames allocated and freed, shootdown rounds, IPIs, page and
//! full invalidations, TLB hits, misses and faults.
//!
//! Enabled by the `sim` feature, which uses `std`; the tests, the demo and the benchmarks use it.

extern crate std;

use crate::abi::PAGE_SIZE;
use crate::arch::MmuFlags;

/// Bytes one entry of a table at `level` covers (level 0: a 4 KiB page).
const fn entry_span(level: usize) -> u64 {
    1 << (12 + 9 * level)
}
use crate::arch::{walk_format, Format, PteFormat, X86_64};
use crate::platform::{CpuPin, CpuSet, PhysAddr, Platform, TlbInvalidate, TlbScope};
use crate::tlb::{Tlb, TlbConfigError};
use crate::vmar::{Access, AddressSpace, FaultError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`; a panic elsewhere (a failed check) must not hide behind a poisoned lock.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    /// ASIDs/PCIDs available (0: every address space is untagged).
    pub tags: u16,
    /// Invalidations reach every CPU by themselves (aarch64) instead of by IPI (x86_64).
    pub broadcast: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            frames: 4096,
            cpus: 1,
            poison_freed: true,
            tags: 64,
            broadcast: false,
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
    /// IPIs sent, summed over target CPUs.
    pub ipis: AtomicU64,
    /// Single-page invalidations carried out, summed over CPUs.
    pub page_invalidations: AtomicU64,
    /// Whole-address-space invalidations carried out, summed over CPUs.
    pub full_invalidations: AtomicU64,
    /// Single-page invalidations that also dropped cached walks (requests with `tables_freed`:
    /// `TLBI VAE1IS` rather than `VALE1IS`), summed over CPUs.
    pub table_invalidations: AtomicU64,
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
    pub shootdowns: u64,
    pub ipis: u64,
    pub page_invalidations: u64,
    pub full_invalidations: u64,
    pub table_invalidations: u64,
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
            shootdowns: self.shootdowns - earlier.shootdowns,
            ipis: self.ipis - earlier.ipis,
            page_invalidations: self.page_invalidations - earlier.page_invalidations,
            full_invalidations: self.full_invalidations - earlier.full_invalidations,
            table_invalidations: self.table_invalidations - earlier.table_invalidations,
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

/// A CPU's TLB: translations by (tag, virtual page number), its walk caches, and the tag in use.
#[derive(Default)]
struct CpuTlb {
    entries: BTreeMap<(u16, u64), TlbEntry>,
    /// Cached upper-level entries (x86 paging-structure caches, arm64 walk caches): by (tag, level
    /// of the table they point to, first address that table covers), the table and the format
    /// of the walk that cached it. A TLB miss starts its walk at the deepest one that covers the
    /// address, so a table freed while cached here is walked through, as on hardware.
    walks: BTreeMap<(u16, usize, u64), (PhysAddr, Format)>,
    /// The tag of the loaded user root, if any.
    tag: Option<u16>,
    /// The loaded user root table, if any: the CPU's CR3 / TTBR0_EL1.
    root: Option<PhysAddr>,
}

impl CpuTlb {
    fn drop_tag(&mut self, tag: u16) {
        self.entries.retain(|&(t, _), _| t != tag);
        self.walks.retain(|&(t, _, _), _| t != tag);
    }

    /// The deepest cached walk covering `va` under `tag`: the table and its level.
    fn cached_walk(&self, tag: u16, va: u64) -> Option<(PhysAddr, usize, Format)> {
        (0..3).find_map(|level| {
            let base = va & !(entry_span(level + 1) - 1);
            self.walks
                .get(&(tag, level, base))
                .map(|&(table, format)| (table, level, format))
        })
    }

    /// Drops the walk-cache entries an invalidation of the page at `va` under `tag` reaches: on
    /// x86_64 (INVLPG, INVPCID) every one of the tag, whatever its address (Intel SDM 4.10.4.1);
    /// on aarch64 those on `va`'s walk, and only for a non-leaf invalidation (`TLBI VAE1IS`:
    /// `tables_freed`), since `TLBI VALE1IS` keeps them.
    fn drop_walks(&mut self, tag: u16, va: u64, tables_freed: bool) {
        let x86 = self
            .walks
            .iter()
            .any(|(&(t, _, _), &(_, format))| t == tag && format == Format::X86_64);
        if x86 {
            self.walks
                .retain(|&(t, _, _), &mut (_, format)| t != tag || format != Format::X86_64);
        }
        if tables_freed {
            for level in 0..3 {
                self.walks
                    .remove(&(tag, level, va & !(entry_span(level + 1) - 1)));
            }
        }
    }
}

struct CpuState {
    tlb: Mutex<CpuTlb>,
    /// An IPI waits to be taken.
    ipi_pending: AtomicBool,
    /// A thread drives this CPU and takes its IPIs.
    attached: AtomicBool,
    /// IPIs are taken between accesses (otherwise only in the crate's shootdown wait loop).
    interrupts: AtomicBool,
    ipis_received: AtomicU64,
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
    broadcast: bool,
    tlb: Tlb,
    allocator: Mutex<FrameAllocator>,
    cpus: Vec<CpuState>,
    counters: Counters,
    /// The freed-frame check's list, kept so that the check allocates nothing once warm.
    check_scratch: Mutex<Vec<(PhysAddr, usize, u64, bool)>>,
    /// Called at the start of every [`Platform::load_root`], as the CPU that loads: a test's way
    /// to run something in the middle of a context switch.
    load_root_hook: Mutex<Option<LoadRootHook>>,
}

/// A test's hook into [`Platform::load_root`]: called with the loading CPU's index.
pub type LoadRootHook = Box<dyn Fn(usize) + Send + Sync>;

/// The reserved frame that stands for the kernel's own page tables: [`Platform::prepare_root`]
/// links it into root slot 511 of every new root, as an x86_64 kernel links its upper half.
pub const KERNEL_TABLE: PhysAddr = PhysAddr(0x1000);

/// The root slot the simulated kernel occupies.
pub const KERNEL_SLOT: usize = 511;

impl SimMachine {
    /// A machine as `config` says.
    ///
    /// # Panics
    /// On a configuration [`SimMachine::try_new`] refuses.
    pub fn new(config: SimConfig) -> Arc<SimMachine> {
        Self::try_new(config).expect("a valid simulated machine")
    }

    /// A machine as `config` says, or why not: the CPU and tag counts are those a kernel passes
    /// to [`Tlb::new`] (tags are checked against aarch64's limit, the larger one; the simulated
    /// TLB keeps any tag), and the machine needs 3 frames at least.
    pub fn try_new(config: SimConfig) -> Result<Arc<SimMachine>, TlbConfigError> {
        let tlb = Tlb::new(config.cpus, config.tags, Format::Aarch64)?;
        assert!(
            config.frames >= 3,
            "a simulated machine needs 3 frames at least"
        );
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
        // Frame 0 stays reserved, so that physical address 0 is never a valid frame; frame 1 is
        // the simulated kernel's table (`KERNEL_TABLE`), zeroed.
        allocator.set(0, true);
        allocator.set(KERNEL_TABLE.frame_number() as usize, true);
        Ok(Arc::new(SimMachine {
            memory,
            frames: config.frames,
            poison_freed: AtomicBool::new(config.poison_freed),
            broadcast: config.broadcast,
            tlb,
            allocator: Mutex::new(allocator),
            check_scratch: Mutex::new(Vec::new()),
            load_root_hook: Mutex::new(None),
            cpus: (0..config.cpus)
                .map(|_| CpuState {
                    tlb: Mutex::new(CpuTlb::default()),
                    ipi_pending: AtomicBool::new(false),
                    attached: AtomicBool::new(false),
                    interrupts: AtomicBool::new(true),
                    ipis_received: AtomicU64::new(0),
                })
                .collect(),
            counters: Counters::default(),
        }))
    }

    /// Sets (or with `None` clears) the hook [`Platform::load_root`] calls first.
    pub fn set_load_root_hook(&self, hook: Option<LoadRootHook>) {
        *lock(&self.load_root_hook) = hook;
    }

    /// The root table CPU `cpu` has loaded, if any.
    pub fn loaded_root(&self, cpu: usize) -> Option<PhysAddr> {
        lock(&self.cpus[cpu].tlb).root
    }

    /// Runs `f` as CPU `cpu` on this thread, then goes back to the thread's own CPU: for a test
    /// that acts on another CPU's behalf (e.g. from a [`LoadRootHook`]).
    pub fn run_as<R>(&self, cpu: usize, f: impl FnOnce() -> R) -> R {
        assert!(cpu < self.cpus.len(), "no CPU {cpu}");
        Self::as_cpu(cpu, f)
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
            shootdowns: self.tlb.rounds(),
            ipis: c.ipis.load(Ordering::SeqCst),
            page_invalidations: c.page_invalidations.load(Ordering::SeqCst),
            full_invalidations: c.full_invalidations.load(Ordering::SeqCst),
            table_invalidations: c.table_invalidations.load(Ordering::SeqCst),
            tlb_hits: c.tlb_hits.load(Ordering::SeqCst),
            tlb_misses: c.tlb_misses.load(Ordering::SeqCst),
            page_faults: c.page_faults.load(Ordering::SeqCst),
        }
    }

    /// IPIs CPU `cpu` has been sent.
    pub fn ipis_received(&self, cpu: usize) -> u64 {
        self.cpus[cpu].ipis_received.load(Ordering::SeqCst)
    }

    /// Frames allocated and not yet freed.
    pub fn frames_in_use(&self) -> u64 {
        let c = self.counters();
        c.frames_allocated - c.frames_freed
    }

    /// Lets only `frames` more frame allocations succeed (`None`: no limit).
    pub fn set_allocation_budget(&self, frames: Option<u64>) {
        lock(&self.allocator).budget = frames;
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
        assert!(pa.0 % 8 == 0, "unaligned physical access {pa:?}");
        &self.memory[(pa.0 / 8) as usize]
    }

    /// Panics if a CPU's TLB can still use a translation to one of `frames`: the crate freed a
    /// frame before the invalidation that covers it. Checked on every free. Translations under a
    /// tag the CPU is not using are stale but unusable; the crate must flush them before the tag
    /// is used again, which [`Platform::load_root`] checks.
    fn check_not_cached(&self, frames: &[PhysAddr]) {
        if frames.is_empty() {
            return;
        }
        for (index, cpu) in self.cpus.iter().enumerate() {
            if let Some(root) = lock(&cpu.tlb).root {
                assert!(
                    !frames.contains(&root),
                    "page-table page {root:?} freed while CPU {index} still has it loaded as its root"
                );
            }
        }
        // The usable translations are usually far fewer than the frames freed: index those.
        let mut cached = lock(&self.check_scratch);
        cached.clear();
        for (index, cpu) in self.cpus.iter().enumerate() {
            let tlb = lock(&cpu.tlb);
            cached.extend(
                tlb.entries
                    .iter()
                    .filter(|(&(tag, _), _)| Some(tag) == tlb.tag)
                    .map(|(&(_, vpn), entry)| (entry.frame, index, vpn, false)),
            );
            cached.extend(
                tlb.walks
                    .iter()
                    .filter(|(&(tag, _, _), _)| Some(tag) == tlb.tag)
                    .map(|(&(_, _, base), &(table, _))| (table, index, base / PAGE_SIZE, true)),
            );
        }
        if cached.is_empty() {
            return;
        }
        cached.sort_unstable();
        let cached = &*cached;
        for frame in frames {
            let at = cached.partition_point(|&(cached_frame, ..)| cached_frame < *frame);
            if let Some(&(cached_frame, cpu, vpn, walk)) = cached.get(at) {
                assert!(
                    cached_frame != *frame || walk,
                    "frame {frame:?} freed while CPU {cpu}'s TLB still maps page {:#x} to it",
                    vpn * PAGE_SIZE
                );
                assert!(
                    cached_frame != *frame,
                    "page-table page {frame:?} freed while CPU {cpu}'s walk cache still points to \
                     it (for addresses from {:#x})",
                    vpn * PAGE_SIZE
                );
            }
        }
    }

    /// Runs `f` as CPU `cpu` on this thread (for IPIs taken on the sender's thread).
    fn as_cpu<R>(cpu: usize, f: impl FnOnce() -> R) -> R {
        let saved = CURRENT_CPU.with(|c| c.replace(cpu));
        let result = f();
        CURRENT_CPU.with(|c| c.set(saved));
        result
    }

    fn invalidate_on(&self, cpu: usize, request: &TlbInvalidate<'_>) {
        let mut tlb = lock(&self.cpus[cpu].tlb);
        match request.scope {
            TlbScope::Pages(pages) => {
                for &va in pages {
                    tlb.entries.remove(&(request.asid, va / PAGE_SIZE));
                    tlb.drop_walks(request.asid, va, request.tables_freed);
                }
                if request.tables_freed {
                    self.counters
                        .table_invalidations
                        .fetch_add(pages.len() as u64, Ordering::SeqCst);
                }
                self.counters
                    .page_invalidations
                    .fetch_add(pages.len() as u64, Ordering::SeqCst);
            }
            TlbScope::All => {
                tlb.drop_tag(request.asid);
                self.counters
                    .full_invalidations
                    .fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn frame_index(&self, pa: PhysAddr) -> usize {
        let index = pa.frame_number() as usize;
        assert!(
            index < self.frames && (pa.0 % PAGE_SIZE == 0),
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

// SAFETY: frames come from the machine's own bitmap allocator (each handed out once until
// freed); `phys_to_virt` points into the machine's memory, which lives as long as the machine;
// `current_cpu` is the calling thread's simulated CPU, which only `SimCpu::enter` changes (a
// thread does not migrate on its own); the TLB operations act on the simulated TLBs as their
// documentation says; `prepare_root` fills only slot 511.
unsafe impl Platform for SimMachine {
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
        self.counters
            .frames_freed
            .fetch_add(frames.len() as u64, Ordering::SeqCst);
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
        tlb.root = Some(root);
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
    fn unload_root(&self) {
        let cpu = self.current_cpu();
        let mut tlb = lock(&self.cpus[cpu].tlb);
        tlb.root = None;
        tlb.tag = None;
    }
}

/// A simulated CPU. Its loads and stores translate through its TLB, walk the page tables of the
/// address space it runs on when the TLB misses, and raise page faults into the crate.
#[derive(Clone)]
pub struct SimCpu {
    machine: Arc<SimMachine>,
    index: usize,
}

/// While alive, a thread drives the CPU: IPIs wait for it to take them between accesses.
pub struct Attached {
    cpu: SimCpu,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.cpu.state().attached.store(false, Ordering::SeqCst);
        self.cpu.set_interrupts(true);
        self.cpu.poll();
    }
}

impl SimCpu {
    fn state(&self) -> &CpuState {
        &self.machine.cpus[self.index]
    }

    /// Makes the calling thread run as this CPU: [`Platform::current_cpu`] answers its index,
    /// e.g. for syscalls made on the thread.
    pub fn enter(&self) {
        CURRENT_CPU.with(|cpu| cpu.set(self.index));
    }

    /// Makes the calling thread drive this CPU until the guard drops: IPIs are then taken by this
    /// thread, between accesses or in [`SimCpu::poll`], instead of on the sender's.
    pub fn attach(&self) -> Attached {
        self.enter();
        self.state().attached.store(true, Ordering::SeqCst);
        Attached { cpu: self.clone() }
    }

    /// Enables or disables this CPU's interrupts: while disabled, IPIs wait (the crate's own
    /// shootdown wait loop still serves them).
    pub fn set_interrupts(&self, enabled: bool) {
        self.state().interrupts.store(enabled, Ordering::SeqCst);
    }

    /// Takes a pending IPI, as an interrupt window does (nothing while interrupts are disabled).
    pub fn poll(&self) {
        if self.state().interrupts.load(Ordering::SeqCst)
            && self.state().ipi_pending.swap(false, Ordering::SeqCst)
        {
            SimMachine::as_cpu(self.index, || {
                self.machine.tlb.handle_ipi(&CpuPin::new(&*self.machine))
            });
        }
    }

    /// The CPU's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The machine.
    pub fn machine(&self) -> &Arc<SimMachine> {
        &self.machine
    }

    /// Switches the CPU to `aspace` (or to none), as a context switch does, through
    /// [`AddressSpace::activate`] and [`AddressSpace::deactivate`].
    pub fn switch_to(&self, aspace: Option<&Arc<AddressSpace>>) {
        self.enter();
        self.poll();
        let pin = CpuPin::new(&*self.machine);
        match aspace {
            // SAFETY: the simulated CPU runs no code through its tables (the "kernel" is the
            // host), and it loads roots only here.
            Some(new) => unsafe { new.activate(&pin) },
            // SAFETY: as above.
            None => unsafe { AddressSpace::deactivate(&pin) },
        }
    }

    /// The address space the CPU runs, if any.
    pub fn current(&self) -> Option<Arc<AddressSpace>> {
        self.enter();
        AddressSpace::current(&CpuPin::new(&*self.machine))
    }

    /// Translates `va` for `access` and runs `op` on the word, faulting into the crate as needed.
    fn access<R>(
        &self,
        va: u64,
        access: Access,
        op: impl Fn(&AtomicU64) -> R,
    ) -> Result<R, FaultError> {
        self.enter();
        let counters = &self.machine.counters;
        let vpn = va / PAGE_SIZE;
        let offset = va % PAGE_SIZE;
        let needed = match access {
            Access::Read => MmuFlags::READ,
            Access::Write => MmuFlags::WRITE,
            Access::Execute => MmuFlags::EXECUTE,
        };
        // A fault handler that made progress is retried; three faults in a row without progress
        // mean the access is refused.
        for _ in 0..3 {
            self.poll();
            let aspace = self.current().ok_or(FaultError::NotMapped)?;
            {
                // The TLB stays locked from lookup to access: an invalidation of this CPU waits
                // for the access under way, as TLB maintenance completion does on hardware.
                let mut tlb = lock(&self.state().tlb);
                let tag = tlb.tag.ok_or(FaultError::NotMapped)?;
                if let Some(entry) = tlb.entries.get(&(tag, vpn)).copied() {
                    if entry.flags.contains(needed) {
                        counters.tlb_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(op(self.machine.word(PhysAddr(entry.frame.0 + offset))));
                    }
                }
                // A permission fault on a cached entry faults without a walk. As on aarch64,
                // the entry stays in the TLB: the crate's fault path must invalidate it once it
                // resolved the fault, or the access faults again.
                let cached = tlb.entries.contains_key(&(tag, vpn));
                counters
                    .tlb_misses
                    .fetch_add(u64::from(!cached), Ordering::Relaxed);
                let walked = if cached {
                    None
                } else {
                    let root = tlb.root.ok_or(FaultError::NotMapped)?;
                    let format = aspace.format();
                    // The walk starts at the deepest cached entry that covers the address.
                    let (table, level) = match tlb.cached_walk(tag, va) {
                        Some((table, level, _)) => (table, level),
                        None => (root, 3),
                    };
                    let mut seen = [(0usize, PhysAddr(0)); 3];
                    let mut count = 0;
                    // SAFETY: the simulated memory is never unmapped, so every table stays
                    // readable; a table freed under the walk reads as stale or poisoned data, as
                    // on hardware.
                    let result = unsafe {
                        walk_format(format, &*self.machine, table, level, va, &mut |l, t| {
                            seen[count] = (l, t);
                            count += 1;
                        })
                    };
                    for &(level, table) in &seen[..count] {
                        let base = va & !(entry_span(level + 1) - 1);
                        tlb.walks.insert((tag, level, base), (table, format));
                    }
                    result
                };
                if let Some((frame, flags)) = walked {
                    if flags.contains(needed) {
                        tlb.entries.insert((tag, vpn), TlbEntry { frame, flags });
                        return Ok(op(self.machine.word(PhysAddr(frame.0 + offset))));
                    }
                }
            }
            counters.page_faults.fetch_add(1, Ordering::Relaxed);
            aspace.page_fault(va, access)?;
        }
        Err(FaultError::AccessDenied)
    }

    /// Loads the 8-aligned word at `va`.
    pub fn load(&self, va: u64) -> Result<u64, FaultError> {
        assert!(va % 8 == 0, "unaligned load at {va:#x}");
        self.access(va, Access::Read, |word| word.load(Ordering::Relaxed))
    }

    /// Stores `value` to the 8-aligned word at `va`.
    pub fn store(&self, va: u64, value: u64) -> Result<(), FaultError> {
        assert!(va % 8 == 0, "unaligned store at {va:#x}");
        self.access(va, Access::Write, |word| {
            word.store(value, Ordering::Relaxed)
        })
    }

    /// The translation of `va` this CPU's TLB holds under its current tag, if any.
    pub fn tlb_entry(&self, va: u64) -> Option<TlbEntry> {
        let tlb = lock(&self.state().tlb);
        let tag = tlb.tag?;
        tlb.entries.get(&(tag, va / PAGE_SIZE)).copied()
    }

    /// How many translations this CPU's TLB holds, under every tag.
    pub fn tlb_len(&self) -> usize {
        lock(&self.state().tlb).entries.len()
    }

    /// Invalidates this CPU's translation of `va` under its current tag, as INVLPG would.
    pub fn invalidate_page(&self, va: u64) {
        let mut tlb = lock(&self.state().tlb);
        if let Some(tag) = tlb.tag {
            tlb.entries.remove(&(tag, va / PAGE_SIZE));
        }
    }
}
