//! INTEGRATION POINT 1: the kernel's implementation of [`zx_vm::Platform`].
//!
//! [`KernelPlatform`] is a zero-sized handle: all of its state (frame allocator, TLB-maintenance
//! state, counters, the CPUs' identities) lives in statics set up at boot, so the same platform is
//! reachable from the IPI handler, which has no `Arc` at hand.
//!
//! - frames: [`crate::frames::FRAMES`];
//! - `phys_to_virt`: the kernel's direct map of physical memory (`arch::PHYS_OFFSET + pa`);
//! - `current_cpu`: a per-CPU register set at boot (x86_64 GS base, aarch64 TPIDR_EL1);
//! - `send_ipi`: the interrupt controller (x86_64 local APIC, aarch64 GICv2 SGI); the handler
//!   calls [`zx_vm::tlb::Tlb::handle_ipi`] (see `arch::*::interrupts`);
//! - `invalidate_local`: `zx_vm::arch::native_tlb` (x86_64 INVLPG/CR3 on the calling CPU; aarch64
//!   `TLBI ...IS` broadcast, or local-only TLBI when the kernel runs in IPI mode);
//! - `load_root`: the crate's bare-metal default, `native_tlb::load_root` (CR3 / TTBR0_EL1);
//! - `prepare_root`: x86_64 copies the kernel's upper-half PML4 entries into every new root table
//!   (see `x86_64/paging.rs`); aarch64 needs nothing (the kernel runs from TTBR1_EL1).

use crate::arch;
use crate::frames::FRAMES;
use crate::smp;
use crate::sync::Once;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use zx_vm::platform::{CpuSet, TlbInvalidate, TlbScope};
use zx_vm::tlb::Tlb;
use zx_vm::{PhysAddr, Platform};

/// The platform handle given to the crate.
pub struct KernelPlatform;

/// The machine's TLB-maintenance state, made once the CPUs are counted.
static TLB: Once<Tlb> = Once::new();

/// aarch64 only: invalidate by IPI and local `TLBI` instead of by `TLBI ...IS` broadcast.
static IPI_MODE: AtomicBool = AtomicBool::new(false);

/// What the kernel counts about TLB maintenance (all CPUs together).
pub struct Counters {
    /// Shootdown IPIs sent (one per target CPU).
    pub ipis_sent: AtomicU64,
    /// Shootdown IPIs taken.
    pub ipis_received: AtomicU64,
    /// Single-page invalidations requested (one per page per `invalidate_local` call).
    pub page_flushes: AtomicU64,
    /// Whole-address-space invalidations requested.
    pub full_flushes: AtomicU64,
    /// Page faults the crate resolved.
    pub page_faults: AtomicU64,
}

/// The counters.
pub static COUNTERS: Counters = Counters {
    ipis_sent: AtomicU64::new(0),
    ipis_received: AtomicU64::new(0),
    page_flushes: AtomicU64::new(0),
    full_flushes: AtomicU64::new(0),
    page_faults: AtomicU64::new(0),
};

/// A copy of [`COUNTERS`] at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub ipis_sent: u64,
    pub ipis_received: u64,
    pub page_flushes: u64,
    pub full_flushes: u64,
    pub page_faults: u64,
    pub rounds: u64,
    pub frames_allocated: u64,
    pub frames_freed: u64,
}

impl Snapshot {
    /// The counters now.
    pub fn take() -> Snapshot {
        let c = &COUNTERS;
        Snapshot {
            ipis_sent: c.ipis_sent.load(Ordering::Relaxed),
            ipis_received: c.ipis_received.load(Ordering::Relaxed),
            page_flushes: c.page_flushes.load(Ordering::Relaxed),
            full_flushes: c.full_flushes.load(Ordering::Relaxed),
            page_faults: c.page_faults.load(Ordering::Relaxed),
            rounds: KernelPlatform.tlb().rounds(),
            frames_allocated: FRAMES.allocated(),
            frames_freed: FRAMES.freed(),
        }
    }

    /// The change since `earlier`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            ipis_sent: self.ipis_sent - earlier.ipis_sent,
            ipis_received: self.ipis_received - earlier.ipis_received,
            page_flushes: self.page_flushes - earlier.page_flushes,
            full_flushes: self.full_flushes - earlier.full_flushes,
            page_faults: self.page_faults - earlier.page_faults,
            rounds: self.rounds - earlier.rounds,
            frames_allocated: self.frames_allocated - earlier.frames_allocated,
            frames_freed: self.frames_freed - earlier.frames_freed,
        }
    }
}

impl KernelPlatform {
    /// Makes the TLB-maintenance state for `cpus` CPUs with `tags` ASIDs/PCIDs. Called once, by the
    /// boot CPU, after counting the CPUs and before any address space exists.
    pub fn init(cpus: usize, tags: u16) {
        TLB.set(Tlb::new(cpus, tags));
    }

    /// aarch64: selects IPI mode (local `TLBI` on each target CPU, by IPI) or broadcast mode
    /// (`TLBI ...IS`). Only while no address space is in use. x86_64 is always in IPI mode.
    pub fn set_ipi_mode(on: bool) {
        IPI_MODE.store(on || cfg!(target_arch = "x86_64"), Ordering::SeqCst);
    }

    /// Whether invalidations go by IPI.
    pub fn ipi_mode() -> bool {
        cfg!(target_arch = "x86_64") || IPI_MODE.load(Ordering::SeqCst)
    }

    /// The shootdown IPI handler's body: INTEGRATION POINT 4. The interrupt entry code calls it
    /// with the IPI's interrupt masked, then signals end-of-interrupt.
    pub fn handle_shootdown_ipi() {
        COUNTERS.ipis_received.fetch_add(1, Ordering::Relaxed);
        KernelPlatform.tlb().handle_ipi(&KernelPlatform);
    }
}

impl Platform for KernelPlatform {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        FRAMES.alloc(1)
    }

    fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
        FRAMES.alloc(count)
    }

    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        for &frame in frames {
            FRAMES.free(frame);
        }
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        arch::phys_to_virt(pa)
    }

    fn cpu_count(&self) -> usize {
        smp::cpu_count()
    }

    fn current_cpu(&self) -> usize {
        arch::cpu_index()
    }

    fn tlb(&self) -> &Tlb {
        TLB.get()
    }

    fn send_ipi(&self, targets: CpuSet) {
        for cpu in targets.iter() {
            COUNTERS.ipis_sent.fetch_add(1, Ordering::Relaxed);
            arch::send_ipi(cpu, arch::Ipi::Shootdown);
        }
    }

    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        match request.scope {
            TlbScope::Pages(pages) => COUNTERS
                .page_flushes
                .fetch_add(pages.len() as u64, Ordering::Relaxed),
            TlbScope::All => COUNTERS.full_flushes.fetch_add(1, Ordering::Relaxed),
        };
        arch::invalidate(request, Self::ipi_mode());
    }

    fn invalidation_is_broadcast(&self) -> bool {
        !Self::ipi_mode()
    }

    fn prepare_root(&self, root: PhysAddr) {
        arch::prepare_root(root);
    }

    // `load_root` is the crate's bare-metal default (`native_tlb::load_root`): the root maps the
    // kernel (`prepare_root`), and `mm::switch_to` keeps the address space alive in the per-CPU
    // state while it is loaded.
}
