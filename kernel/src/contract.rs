//! The host's contract tests (`tests/contract.rs`), compiled into the kernel and run on real CPUs.
//!
//! `build.rs` copies the test file with three changes: `std::sync::Arc` comes from `alloc`, the
//! simulation's `SimConfig`/`SimMachine`/`SimCpu` come from [`sim`] below, and the `per_format!`
//! list becomes the table `TESTS`. The test functions themselves are the host's, unchanged.
//!
//! [`sim`] gives those names to the real machine: a `SimMachine` is the kernel's platform
//! ([`crate::forward::Forward`] over `KernelPlatform`) counting the frames its address spaces and
//! VMOs take and return; a `SimCpu` is a real CPU, whose loads and stores go through the MMU and fault into the crate through the
//! kernel's page-fault handler (on another CPU, by a cross-CPU job). Only the native page-table
//! format can run: a real MMU walks one format.

/// The stand-ins for `zx_vm::sim`.
pub mod sim {
    use crate::forward::{Forward, Hooks};
    use crate::frames::FRAMES;
    use crate::mm;
    use crate::platform::{KernelPlatform, Snapshot};
    use crate::smp;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU64, Ordering};
    use zx_vm::vmar::FaultError;
    use zx_vm::{AddressSpace, PhysAddr};

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

    /// The machine's counters, as the host simulation names them: the kernel's one snapshot
    /// type, which uses those names.
    pub type CounterSnapshot = Snapshot;

    /// Counts the frames one test's objects take and give back.
    pub struct FrameCount {
        allocated: AtomicU64,
        freed: AtomicU64,
    }

    impl Hooks for FrameCount {
        fn allocated(&self, _first: PhysAddr, count: usize) {
            self.allocated.fetch_add(count as u64, Ordering::SeqCst);
        }

        fn freed(&self, frames: &[PhysAddr]) {
            self.freed.fetch_add(frames.len() as u64, Ordering::SeqCst);
        }
    }

    impl Drop for FrameCount {
        fn drop(&mut self) {
            // As the host simulation's leak check: every frame the test's objects took came back.
            let (allocated, freed) = (
                self.allocated.load(Ordering::SeqCst),
                self.freed.load(Ordering::SeqCst),
            );
            assert_eq!(allocated, freed, "a contract test leaked frames");
        }
    }

    /// The real machine, seen by one test: the kernel's platform, its frames counted. The `Tlb`
    /// is `KernelPlatform`'s, so the crate's per-CPU records and mailboxes are the machine's one
    /// set whichever of the two platforms an address space was made on.
    pub type SimMachine = Forward<KernelPlatform, FrameCount>;

    impl Forward<KernelPlatform, FrameCount> {
        /// The machine for a test; it must have the CPUs and the frames the test asks for.
        pub fn new(config: SimConfig) -> Arc<SimMachine> {
            assert!(
                smp::online_count() >= config.cpus,
                "the test needs {} CPUs",
                config.cpus
            );
            assert!(FRAMES.total() >= config.frames as u64);
            Arc::new(Forward {
                inner: KernelPlatform,
                hooks: FrameCount {
                    allocated: AtomicU64::new(0),
                    freed: AtomicU64::new(0),
                },
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
            CounterSnapshot {
                frames_allocated: self.hooks.allocated.load(Ordering::SeqCst),
                frames_freed: self.hooks.freed.load(Ordering::SeqCst),
                ..Snapshot::take()
            }
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
