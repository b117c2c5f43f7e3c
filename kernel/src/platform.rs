//! INTEGRATION POINT 1: the kernel's implementation of [`zx_vm::Platform`].
//!
//! [`KernelPlatform`] is a zero-sized handle: all of its state (frame allocator, TLB-maintenance
//! state, counters, the CPUs' identities) lives in statics set up at boot, so the same platform is
//! reachable from the IPI handler, which has no `Arc` at hand.
//!
//! - frames: [`crate::frames::FRAMES`], which also hands out the aligned runs of 512 frames that
//!   large-page VMOs commit (`alloc_aligned_run`) and takes them back in one call (`free_run`);
//! - `phys_to_virt`: the kernel's direct map of physical memory (`arch::PHYS_OFFSET + pa`);
//! - `current_cpu`: a per-CPU register set at boot (x86_64 GS base, aarch64 TPIDR_EL1);
//! - `tlb`: the one [`Tlb`], made at boot by [`KernelPlatform::init`] with `Tlb::new(cpus, tags,
//!   Format::NATIVE)`; it is also the kernel's one record of how many CPUs there are
//!   ([`crate::smp::cpu_count`] reads it);
//! - `preempt_disable`/`preempt_enable`: the crate's defaults (nothing): the kernel never moves
//!   a thread to another CPU (there are no threads, only jobs that run to completion on the CPU
//!   they were posted to), so a [`zx_vm::platform::CpuPin`] needs no help to stay put;
//! - `send_ipi`: the interrupt controller (x86_64 local APIC, aarch64 GICv2 SGI); the handler
//!   calls [`zx_vm::tlb::Tlb::handle_ipi`] (see `arch::*::interrupts`);
//! - `invalidate_local`: `zx_vm::arch::native_tlb` (x86_64 INVLPG/CR3, or INVPCID with PCIDs, on
//!   the calling CPU; aarch64 `TLBI ...IS` broadcast, or local-only TLBI in IPI mode);
//! - `load_root`: the crate's bare-metal default, `native_tlb::load_root` (CR3, with the PCID and
//!   the no-flush bit when PCIDs are on; TTBR0_EL1 with the ASID);
//! - `load_kernel_root`: x86_64 loads the kernel's own PML4 (`x86_64/paging.rs`: no user
//!   mappings, PCID 0); aarch64 loads the empty table into TTBR0_EL1;
//! - `memory_attributes`: aarch64 user pages take MAIR_EL1 attribute 1 (normal write-back;
//!   attribute 0 is the devices' Device-nGnRnE); x86_64 ignores it;
//! - `prepare_root`: x86_64 copies the kernel's upper-half PML4 entries into every new root table
//!   (see `x86_64/paging.rs`); aarch64 needs nothing (the kernel runs from TTBR1_EL1).
//!
//! The crate, not the kernel, keeps which address space each CPU runs (`mm::switch_to` goes
//! through `AddressSpace::activate`/`deactivate`).

use crate::arch;
use crate::frames::FRAMES;
use crate::sync::Once;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use zx_vm::arch::{Format, MemoryAttributes};
use zx_vm::platform::{CpuPin, CpuSet, TlbInvalidate, TlbScope};
use zx_vm::tlb::{Tlb, TlbConfigError};
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
    /// Spans of entries requested at once (`TlbScope::Spans`: arm64 range TLBIs on a CPU with
    /// FEAT_TLBIRANGE), one per span per `invalidate_local` call.
    pub span_flushes: AtomicU64,
    /// Page faults the crate resolved.
    pub page_faults: AtomicU64,
    /// Activations of address spaces with a tag of their own (PCID or ASID).
    pub tagged_activations: AtomicU64,
    /// Activations of untagged address spaces (tag 0: none configured, or all in use).
    pub untagged_activations: AtomicU64,
}

/// The counters.
pub static COUNTERS: Counters = Counters {
    ipis_sent: AtomicU64::new(0),
    ipis_received: AtomicU64::new(0),
    page_flushes: AtomicU64::new(0),
    full_flushes: AtomicU64::new(0),
    span_flushes: AtomicU64::new(0),
    page_faults: AtomicU64::new(0),
    tagged_activations: AtomicU64::new(0),
    untagged_activations: AtomicU64::new(0),
};

/// A copy of [`COUNTERS`] at one moment, under the names the host simulation gives its counters
/// (`zx_vm::sim::CounterSnapshot`), so that the contract tests read it unchanged; the kernel's
/// scenarios use the same type. A real TLB cannot be asked for its hits and misses: those stay 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub frames_allocated: u64,
    pub frames_freed: u64,
    /// Shootdown rounds.
    pub shootdowns: u64,
    /// Shootdown IPIs sent.
    pub ipis: u64,
    /// Shootdown IPIs taken.
    pub ipis_received: u64,
    pub page_invalidations: u64,
    pub full_invalidations: u64,
    /// Spans invalidated at once (range TLBIs).
    pub span_invalidations: u64,
    pub tlb_hits: u64,
    pub tlb_misses: u64,
    pub page_faults: u64,
}

impl Snapshot {
    /// The counters now.
    pub fn take() -> Snapshot {
        let c = &COUNTERS;
        Snapshot {
            frames_allocated: FRAMES.allocated(),
            frames_freed: FRAMES.freed(),
            shootdowns: KernelPlatform.tlb().rounds(),
            ipis: c.ipis_sent.load(Ordering::Relaxed),
            ipis_received: c.ipis_received.load(Ordering::Relaxed),
            page_invalidations: c.page_flushes.load(Ordering::Relaxed),
            full_invalidations: c.full_flushes.load(Ordering::Relaxed),
            span_invalidations: c.span_flushes.load(Ordering::Relaxed),
            tlb_hits: 0,
            tlb_misses: 0,
            page_faults: c.page_faults.load(Ordering::Relaxed),
        }
    }

    /// The change from `earlier` to `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            frames_allocated: self.frames_allocated - earlier.frames_allocated,
            frames_freed: self.frames_freed - earlier.frames_freed,
            shootdowns: self.shootdowns - earlier.shootdowns,
            ipis: self.ipis - earlier.ipis,
            ipis_received: self.ipis_received - earlier.ipis_received,
            page_invalidations: self.page_invalidations - earlier.page_invalidations,
            full_invalidations: self.full_invalidations - earlier.full_invalidations,
            span_invalidations: self.span_invalidations - earlier.span_invalidations,
            tlb_hits: self.tlb_hits - earlier.tlb_hits,
            tlb_misses: self.tlb_misses - earlier.tlb_misses,
            page_faults: self.page_faults - earlier.page_faults,
        }
    }
}

impl KernelPlatform {
    /// Makes the TLB-maintenance state for `cpus` CPUs with `tags` ASIDs/PCIDs, in the native
    /// page-table format. Called once, by the boot CPU, after counting the CPUs and before any
    /// address space exists (or any other CPU runs kernel code). The crate refuses a CPU count
    /// outside 1..=`MAX_CPUS` or more tags than the format has; the caller reports that.
    pub fn init(cpus: usize, tags: u16) -> Result<(), TlbConfigError> {
        TLB.set(Tlb::new(cpus, tags, Format::NATIVE)?);
        Ok(())
    }

    /// The TLB-maintenance state, if [`KernelPlatform::init`] has made it.
    pub fn try_tlb() -> Option<&'static Tlb> {
        TLB.try_get()
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
    /// with interrupts disabled, then signals end-of-interrupt.
    ///
    /// `Tlb::handle_ipi` carries out the requests queued for this CPU (through
    /// `Platform::invalidate_local`) and acknowledges each. It takes no lock and allocates and
    /// frees nothing: the requests live on their initiators' stacks, and each initiator waits for
    /// every acknowledgement before its frame goes away. So the handler may interrupt any kernel
    /// code, even code holding the heap or frame-allocator lock.
    pub fn handle_shootdown_ipi() {
        COUNTERS.ipis_received.fetch_add(1, Ordering::Relaxed);
        KernelPlatform
            .tlb()
            .handle_ipi(&CpuPin::new(&KernelPlatform));
    }
}

// SAFETY: what the trait asks, point by point:
// - frames: `FRAMES` hands out frames of RAM above the kernel image (never the image, the boot
//   tables, the AP trampoline page or MMIO), each at most once until it is freed (a bitmap under
//   an interrupt-safe lock; single frames, contiguous runs and aligned runs alike), and only this
//   platform (and the stand-ins that forward to it) frees into it;
// - `phys_to_virt`: the direct map covers all RAM the allocator manages as normal write-back
//   memory, the type the table walks use, and is never unmapped (x86_64: physical 0-3 GiB in
//   1 GiB pages, and the allocator takes no RAM above 3 GiB, whose GiB is mapped uncached for the
//   local APIC; aarch64: physical 1-4 GiB, MAIR attribute 1 = write-back, and the allocator takes
//   no RAM above 4 GiB);
// - `current_cpu`: the index in the per-CPU block that the CPU's own register points at (x86_64
//   GS base, aarch64 TPIDR_EL1), set once per CPU at boot and below the count given to
//   `Tlb::new`; code never migrates between CPUs here, so it stays the same while pinned;
// - `tlb`: the one `Tlb` in a write-once cell;
// - `send_ipi`: the shootdown vector/SGI is delivered to each target once its interrupts are
//   enabled, and its handler (`handle_shootdown_ipi`) runs `Tlb::handle_ipi`; the heap's lock is
//   interrupt-safe, so the heap is usable from there;
// - `invalidate_local`: the architecture's own instructions (see `arch::invalidate`), complete
//   when they return (x86_64 INVLPG/INVPCID/CR3 are serialising; aarch64 ends with DSB and ISB),
//   broadcast only when `invalidation_is_broadcast` says so (aarch64 `TLBI ...IS` outside IPI
//   mode);
// - `load_root` is the crate's own; `load_kernel_root` loads a root without user mappings that
//   maps the kernel (see `arch::load_kernel_root`), and `prepare_root` copies only upper-half
//   (x86_64) entries, leaving the user range empty.
unsafe impl Platform for KernelPlatform {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        FRAMES.alloc(1)
    }

    fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
        FRAMES.alloc(count)
    }

    fn alloc_aligned_run(&self, count: usize) -> Option<PhysAddr> {
        FRAMES.alloc_aligned(count)
    }

    unsafe fn free_run(&self, base: PhysAddr, count: usize) {
        // One bitmap check and update for the run (the default frees frame by frame).
        FRAMES.free_run(base, count);
    }

    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        for &frame in frames {
            FRAMES.free(frame);
        }
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        arch::phys_to_virt(pa)
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
            TlbScope::Spans(spans) => COUNTERS
                .span_flushes
                .fetch_add(spans.len() as u64, Ordering::Relaxed),
            TlbScope::All => COUNTERS.full_flushes.fetch_add(1, Ordering::Relaxed),
        };
        arch::invalidate(request, Self::ipi_mode());
    }

    fn invalidation_is_broadcast(&self) -> bool {
        !Self::ipi_mode()
    }

    fn memory_attributes(&self) -> MemoryAttributes {
        // aarch64: MAIR_EL1 attribute 1, normal write-back (attribute 0 is Device-nGnRnE, see
        // `aarch64/boot.rs`); x86_64: the default, which it ignores.
        arch::MEMORY_ATTRIBUTES
    }

    fn prepare_root(&self, root: PhysAddr) {
        arch::prepare_root(root);
    }

    unsafe fn load_kernel_root(&self) {
        // x86_64: the kernel's own PML4 (PCID 0, which flushes what PCID 0 cached: untagged user
        // translations); aarch64: the empty table into TTBR0_EL1 (ASID 0).
        arch::load_kernel_root();
    }

    // `load_root` is the crate's bare-metal default (`native_tlb::load_root`): the root maps the
    // kernel (`prepare_root`), and the crate keeps the address space alive while it is loaded.
    // With PCIDs on (x86_64 with `pcid` on the kernel command line, which sets CR4.PCIDE on every
    // CPU at boot), it writes CR3 with the address space's PCID, and with the no-flush bit (63)
    // unless the crate asks for a flush.
}
