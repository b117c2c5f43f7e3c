//! The host's contract tests (`tests/contract.rs`), compiled into the kernel and run on real CPUs.
//!
//! `build.rs` copies the test file with three changes: `std::sync::Arc` comes from `alloc`, the
//! simulation's `SimConfig`/`SimMachine`/`SimCpu` come from [`sim`] below, and the `per_format!`
//! list becomes the table `TESTS`. The test functions themselves are the host's, unchanged.
//!
//! [`sim`] gives those names to the real machine: a `SimMachine` is a [`Platform`] that forwards to
//! [`KernelPlatform`] and counts the frames its address spaces and VMOs take and return; a `SimCpu`
//! is a real CPU, whose loads and stores go through the MMU and fault into the crate through the
//! kernel's page-fault handler (on another CPU, by a cross-CPU job). Only the native page-table
//! format can run: a real MMU walks one format.

/// The stand-ins for `zx_vm::sim`.
pub mod sim {
    use crate::frames::FRAMES;
    use crate::mm;
    use crate::platform::{KernelPlatform, Snapshot};
    use crate::smp;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU64, Ordering};
    use zx_vm::arch::MemoryAttributes;
    use zx_vm::platform::{CpuSet, TlbInvalidate};
    use zx_vm::tlb::Tlb;
    use zx_vm::vmar::FaultError;
    use zx_vm::{AddressSpace, PhysAddr, Platform};

    /// How the tests describe their machine; the kernel checks that it has the CPUs and frames.
    /// The other fields are accepted as they are: the kernel always poisons freed frames, and its
    /// tags and invalidation mode are the machine's own.
    #[derive(Clone, Copy, Debug)]
    #[allow(dead_code)]
    pub struct SimConfig {
        pub frames: usize,
        pub cpus: usize,
        pub poison_freed: bool,
        pub tags: u16,
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

    /// The machine's counters, as the host simulation names them.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CounterSnapshot {
        pub frames_allocated: u64,
        pub frames_freed: u64,
        pub shootdowns: u64,
        pub ipis: u64,
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
                shootdowns: self.shootdowns - earlier.shootdowns,
                ipis: self.ipis - earlier.ipis,
                page_invalidations: self.page_invalidations - earlier.page_invalidations,
                full_invalidations: self.full_invalidations - earlier.full_invalidations,
                tlb_hits: 0,
                tlb_misses: 0,
                page_faults: self.page_faults - earlier.page_faults,
            }
        }
    }

    /// The real machine, seen by one test.
    pub struct SimMachine {
        allocated: AtomicU64,
        freed: AtomicU64,
    }

    impl SimMachine {
        /// The machine for a test; it must have the CPUs and the frames the test asks for.
        pub fn new(config: SimConfig) -> Arc<SimMachine> {
            assert!(
                smp::online_count() >= config.cpus,
                "the test needs {} CPUs",
                config.cpus
            );
            assert!(FRAMES.total() >= config.frames as u64);
            Arc::new(SimMachine {
                allocated: AtomicU64::new(0),
                freed: AtomicU64::new(0),
            })
        }

        /// CPU `index`.
        pub fn cpu(self: &Arc<Self>, index: usize) -> SimCpu {
            assert!(index < smp::cpu_count());
            SimCpu {
                _machine: self.clone(),
                index,
            }
        }

        /// The counters: frames are this machine's, TLB maintenance is the whole kernel's (no
        /// other CPU works while a contract test runs).
        pub fn counters(&self) -> CounterSnapshot {
            let now = Snapshot::take();
            CounterSnapshot {
                frames_allocated: self.allocated.load(Ordering::SeqCst),
                frames_freed: self.freed.load(Ordering::SeqCst),
                shootdowns: now.rounds,
                ipis: now.ipis_sent,
                page_invalidations: now.page_flushes,
                full_invalidations: now.full_flushes,
                tlb_hits: 0,
                tlb_misses: 0,
                page_faults: now.page_faults,
            }
        }
    }

    impl Drop for SimMachine {
        fn drop(&mut self) {
            // As the host simulation's leak check: every frame the test's objects took came back.
            let (allocated, freed) = (
                self.allocated.load(Ordering::SeqCst),
                self.freed.load(Ordering::SeqCst),
            );
            assert_eq!(allocated, freed, "a contract test leaked frames");
        }
    }

    // SAFETY: every method forwards to `KernelPlatform` (whose implementation carries the
    // argument); `alloc_frame`, `alloc_contiguous` and `free_frames` only also count. The `Tlb`
    // is `KernelPlatform`'s, so the crate's per-CPU records and mailboxes are the machine's one
    // set whichever of the two platforms an address space was made on.
    unsafe impl Platform for SimMachine {
        fn alloc_frame(&self) -> Option<PhysAddr> {
            let frame = KernelPlatform.alloc_frame();
            if frame.is_some() {
                self.allocated.fetch_add(1, Ordering::SeqCst);
            }
            frame
        }

        fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
            let frames = KernelPlatform.alloc_contiguous(count);
            if frames.is_some() {
                self.allocated.fetch_add(count as u64, Ordering::SeqCst);
            }
            frames
        }

        unsafe fn free_frames(&self, frames: &[PhysAddr]) {
            self.freed.fetch_add(frames.len() as u64, Ordering::SeqCst);
            // SAFETY: forwarded from the crate, which calls this under the same contract.
            unsafe { KernelPlatform.free_frames(frames) };
        }

        fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
            KernelPlatform.phys_to_virt(pa)
        }

        fn current_cpu(&self) -> usize {
            KernelPlatform.current_cpu()
        }

        fn tlb(&self) -> &Tlb {
            KernelPlatform.tlb()
        }

        fn send_ipi(&self, targets: CpuSet) {
            KernelPlatform.send_ipi(targets)
        }

        fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
            KernelPlatform.invalidate_local(request)
        }

        fn invalidation_is_broadcast(&self) -> bool {
            KernelPlatform.invalidation_is_broadcast()
        }

        fn memory_attributes(&self) -> MemoryAttributes {
            KernelPlatform.memory_attributes()
        }

        unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
            // SAFETY: forwarded under the same contract.
            unsafe { KernelPlatform.load_root(root, asid, flush) }
        }

        unsafe fn load_kernel_root(&self) {
            // SAFETY: forwarded under the same contract.
            unsafe { KernelPlatform.load_kernel_root() }
        }

        fn prepare_root(&self, root: PhysAddr) {
            KernelPlatform.prepare_root(root)
        }
    }

    /// A real CPU.
    #[derive(Clone)]
    pub struct SimCpu {
        _machine: Arc<SimMachine>,
        index: usize,
    }

    impl SimCpu {
        /// Runs `f` on this CPU (here, or by a cross-CPU job).
        fn on<R: Send>(&self, f: impl Fn() -> R + Sync) -> R {
            if self.index == crate::arch::cpu_index() {
                f()
            } else {
                smp::run_on(self.index, f)
            }
        }

        /// Switches the CPU to `aspace`, as a context switch does ([`mm::switch_to`]).
        pub fn switch_to(&self, aspace: Option<&Arc<AddressSpace>>) {
            self.on(|| mm::switch_to(aspace));
        }

        /// Loads the word at `va` through the MMU.
        pub fn load(&self, va: u64) -> Result<u64, FaultError> {
            self.on(|| mm::load(va))
        }

        /// Stores `value` to the word at `va` through the MMU.
        pub fn store(&self, va: u64, value: u64) -> Result<(), FaultError> {
            self.on(|| mm::store(va, value))
        }
    }
}

#[allow(dead_code, unused_macros, clippy::all)]
mod host {
    include!(concat!(env!("OUT_DIR"), "/contract.rs"));
}

use crate::frames::FRAMES;
use zx_vm::arch::Format;

/// Runs every contract test on the native format; a failed check panics (and fails the run).
/// Returns how many ran.
pub fn run() -> usize {
    for (name, test) in host::TESTS {
        let before = FRAMES.in_use();
        test(Format::NATIVE);
        let after = FRAMES.in_use();
        assert_eq!(
            after,
            before,
            "contract test {name} leaked {} frames",
            after - before
        );
        println!("  contract {name}: ok");
    }
    host::TESTS.len()
}
