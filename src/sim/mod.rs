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

mod check;
mod cpu;
mod platform;
mod ranges;

use self::check::LargeCached;
pub use self::cpu::{Attached, SimCpu, TlbEntry};
use self::cpu::{CpuState, CpuTlb, NO_ROOT};

use crate::abi::PAGE_SIZE;
use crate::arch::MmuFlags;

use crate::arch::{entry_span, walk_format, Format, PteFormat, LARGE_LEVELS, X86_64};
use crate::platform::{CpuPin, CpuSet, PhysAddr, Platform, TlbFeatures, TlbInvalidate, TlbScope};
use crate::tlb::{Tlb, TlbConfigError};
use crate::vmar::{Access, AddressSpace, FaultError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
    /// Frames given back (changed only under the allocator's lock).
    pub frames_freed: AtomicU64,
    /// IPIs sent, summed over target CPUs.
    pub ipis: AtomicU64,
    /// Single-page invalidations carried out, summed over CPUs.
    pub page_invalidations: AtomicU64,
    /// Whole-address-space invalidations carried out, summed over CPUs.
    pub full_invalidations: AtomicU64,
    /// arm64 range invalidations (`TLBI RVAE1IS`/`RVALE1IS`) carried out, summed over CPUs.
    pub range_invalidations: AtomicU64,
    /// INVLPGB instructions issued (each reaches every CPU).
    pub broadcast_invalidations: AtomicU64,
    /// TLBSYNC instructions issued.
    pub tlbsyncs: AtomicU64,
    /// Single-page invalidations that also dropped cached walks (requests with `tables_freed`:
    /// `TLBI VAE1IS` rather than `VALE1IS`), summed over CPUs.
    pub table_invalidations: AtomicU64,
    /// Translations found in a TLB.
    pub tlb_hits: AtomicU64,
    /// Translations walked.
    pub tlb_misses: AtomicU64,
    /// Page faults raised into the crate.
    pub page_faults: AtomicU64,
    /// Aligned runs handed out by `alloc_aligned_run`.
    pub runs_allocated: AtomicU64,
    /// Runs given back whole by `free_run` or `free_runs` (changed only under the allocator's
    /// lock).
    pub runs_freed: AtomicU64,
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
    pub range_invalidations: u64,
    pub broadcast_invalidations: u64,
    pub tlbsyncs: u64,
    pub table_invalidations: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
    pub page_faults: u64,
    pub runs_allocated: u64,
    pub runs_freed: u64,
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
            range_invalidations: self.range_invalidations - earlier.range_invalidations,
            broadcast_invalidations: self.broadcast_invalidations - earlier.broadcast_invalidations,
            tlbsyncs: self.tlbsyncs - earlier.tlbsyncs,
            table_invalidations: self.table_invalidations - earlier.table_invalidations,
            tlb_hits: self.tlb_hits - earlier.tlb_hits,
            tlb_misses: self.tlb_misses - earlier.tlb_misses,
            page_faults: self.page_faults - earlier.page_faults,
            runs_allocated: self.runs_allocated - earlier.runs_allocated,
            runs_freed: self.runs_freed - earlier.runs_freed,
        }
    }
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
    /// What [`Platform::max_leaf_level`] answers (2 unless a test lowers it).
    max_leaf_level: AtomicUsize,
    /// What [`Platform::tlb_features`] answers ([`SimMachine::set_tlb_features`]).
    range: AtomicBool,
    ttl: AtomicBool,
    invlpgb: AtomicU32,
    broadcast: bool,
    tlb: Tlb,
    allocator: Mutex<FrameAllocator>,
    cpus: Vec<CpuState>,
    counters: Counters,
    /// The freed-frame check's list, kept so that the check allocates nothing once warm.
    check_scratch: Mutex<Vec<(PhysAddr, usize, u64, bool)>>,
    /// The freed-frame check's lists for large translations, kept warm as `check_scratch` is:
    /// the ranges cached (first frame, bytes, CPU, first page) and the frames freed, sorted.
    check_large: Mutex<(Vec<LargeCached>, Vec<PhysAddr>)>,
    /// Called at the start of every [`Platform::load_root`], as the CPU that loads: a test's way
    /// to run something in the middle of a context switch.
    load_root_hook: Mutex<Option<LoadRootHook>>,
    /// The shared zero page's address once [`SimMachine::enable_zero_page`] made one (0: none).
    zero_frame: AtomicU64,
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
            max_leaf_level: AtomicUsize::new(2),
            range: AtomicBool::new(false),
            ttl: AtomicBool::new(false),
            invlpgb: AtomicU32::new(0),
            broadcast: config.broadcast,
            tlb,
            allocator: Mutex::new(allocator),
            check_scratch: Mutex::new(Vec::new()),
            check_large: Mutex::new((Vec::new(), Vec::new())),
            load_root_hook: Mutex::new(None),
            zero_frame: AtomicU64::new(0),
            cpus: (0..config.cpus)
                .map(|_| CpuState {
                    tlb: Mutex::new(CpuTlb::default()),
                    ipi_pending: AtomicBool::new(false),
                    attached: AtomicBool::new(false),
                    interrupts: AtomicBool::new(true),
                    ipis_received: AtomicU64::new(0),
                    may_cache: AtomicBool::new(false),
                    loaded_root: AtomicU64::new(NO_ROOT),
                    unsynced: AtomicBool::new(false),
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
        self.cpus[cpu].root()
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
            range_invalidations: c.range_invalidations.load(Ordering::SeqCst),
            broadcast_invalidations: c.broadcast_invalidations.load(Ordering::SeqCst),
            tlbsyncs: c.tlbsyncs.load(Ordering::SeqCst),
            table_invalidations: c.table_invalidations.load(Ordering::SeqCst),
            tlb_hits: c.tlb_hits.load(Ordering::SeqCst),
            tlb_misses: c.tlb_misses.load(Ordering::SeqCst),
            page_faults: c.page_faults.load(Ordering::SeqCst),
            runs_allocated: c.runs_allocated.load(Ordering::SeqCst),
            runs_freed: c.runs_freed.load(Ordering::SeqCst),
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

    /// Gives the machine a shared zero page ([`Platform::zero_frame`]): one frame taken from its
    /// memory for good, zeroed, not counted as allocated (the leak check does not expect it
    /// back). From then on, a read fault on an uncommitted page maps it read-only. The machine
    /// refuses to free it, panics on any store that reaches it, and checks, when dropped, that it
    /// still holds zeroes. Call it before the machine's first process; calling it again returns
    /// the same frame.
    pub fn enable_zero_page(&self) -> PhysAddr {
        let known = self.zero_frame.load(Ordering::SeqCst);
        if known != 0 {
            return PhysAddr(known);
        }
        let frame = self.alloc_frame().expect("a frame for the zero page");
        self.counters
            .frames_allocated
            .fetch_sub(1, Ordering::SeqCst);
        let first = self.frame_index(frame) * WORDS_PER_FRAME;
        for word in &self.memory[first..first + WORDS_PER_FRAME] {
            word.store(0, Ordering::Relaxed);
        }
        self.zero_frame.store(frame.0, Ordering::SeqCst);
        frame
    }

    /// The zero page, if [`SimMachine::enable_zero_page`] made one.
    pub(crate) fn zero_page(&self) -> Option<PhysAddr> {
        let frame = self.zero_frame.load(Ordering::Relaxed);
        (frame != 0).then_some(PhysAddr(frame))
    }

    /// Panics if a store is about to reach the zero page.
    pub(crate) fn check_not_zero_page(&self, frame: PhysAddr, access: Access) {
        assert!(
            access != Access::Write || self.zero_page() != Some(frame),
            "a store reached the shared zero page"
        );
    }

    /// Whether [`Platform::alloc_aligned_run`] of `count` frames would succeed now (a free run
    /// aligned to `count` frames, within the allocation budget), without allocating: for a test
    /// model that must know whether a fault commits a whole run.
    pub fn has_aligned_run(&self, count: usize) -> bool {
        count.is_power_of_two()
            && self
                .free_aligned_run(&lock(&self.allocator), count)
                .is_some()
    }

    /// The first frame of the lowest free run of `count` frames aligned to `count` frames that
    /// the budget allows, if any. Frame 0 is never handed out: the first candidate starts at
    /// `count`.
    fn free_aligned_run(&self, allocator: &FrameAllocator, count: usize) -> Option<usize> {
        if allocator.budget.is_some_and(|b| b < count as u64) {
            return None;
        }
        (count..self.frames.saturating_sub(count - 1))
            .step_by(count)
            .find(|&first| (first..first + count).all(|f| !allocator.is_used(f)))
    }

    /// Lets only `frames` more frame allocations succeed (`None`: no limit).
    pub fn set_allocation_budget(&self, frames: Option<u64>) {
        lock(&self.allocator).budget = frames;
    }

    /// Sets what [`Platform::max_leaf_level`] answers: 0 keeps every mapping in 4 KiB pages, 1
    /// allows 2 MiB leaves, 2 (the default) 1 GiB leaves too.
    pub fn set_max_leaf_level(&self, level: usize) {
        self.max_leaf_level.store(level, Ordering::Relaxed);
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
                    tlb.invalidate(request.asid, va);
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
            TlbScope::Spans(spans) => self.invalidate_spans(&mut tlb, request, spans),
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
        if let Some(zero) = self.zero_page() {
            let first = self.frame_index(zero) * WORDS_PER_FRAME;
            assert!(
                self.memory[first..first + WORDS_PER_FRAME]
                    .iter()
                    .all(|word| word.load(Ordering::Relaxed) == 0),
                "the shared zero page was written"
            );
        }
    }
}
