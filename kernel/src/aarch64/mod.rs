//! aarch64 on QEMU `virt`: EL1, PL011, GICv2 SGIs, PSCI through HVC, the kernel in TTBR1_EL1.
//!
//! ADDRESS SPACES. The kernel runs from TTBR1_EL1 (the upper half: the kernel image and a direct
//! map of RAM and devices at [`PHYS_OFFSET`]); TTBR0_EL1 holds the crate's user tables, loaded by
//! `native_tlb::load_root` with the address space's ASID, or an empty table when no user address
//! space is active. Kernel and user mappings never share a table, so `Platform::prepare_root` has
//! nothing to do.
//!
//! PRIVILEGE. The scenarios run at EL1 and touch the crate's user mappings (AP[1] = EL0 access)
//! directly: the CPU (Cortex-A72, ARMv8.0) has no PAN, and SCTLR_EL1.SPAN keeps PSTATE.PAN clear on
//! newer ones, so EL1 may access EL0 pages; read-only pages are read-only at EL1 too.
//!
//! INVALIDATION. By default `TLBI ...IS` reaches every CPU by itself (`native_tlb::
//! invalidate_broadcast`, `invalidation_is_broadcast() == true`, no IPIs). The kernel can also run
//! in IPI mode: local `TLBI` (non-shareable) on each target CPU, reached by SGI, as on x86_64; the
//! scenarios run both, and the `break-remote-flush` build uses IPI mode, where there is a remote
//! flush for the broken crate to skip.
//!
//! MEMORY ATTRIBUTES. MAIR_EL1 attribute 0 is Device-nGnRnE and attribute 1 normal write-back
//! (`boot.rs`): RAM, the kernel's and the crate's user pages alike, is attribute 1, which
//! [`MEMORY_ATTRIBUTES`] gives the crate through `Platform::memory_attributes`. The boot CPU
//! checks the translation regime with the crate's `arch::regime::check_translation_regime` before
//! the first address space, and shows the attributes the MMU really applies (`AT S1E1R`, PAR_EL1).
//!
//! TAGS. 8-bit ASIDs (TCR_EL1.AS = 0): the crate's `arch::regime::detect_asid_tags()` reads
//! ID_AA64MMFR0_EL1 and TCR_EL1 and answers 255, capped at [`MAX_TAGS`]:
//! `Tlb::new(cpus, tags, Format::Aarch64)`.

mod boot;
mod exceptions;
mod fdt;
mod gic;

use crate::frames::FRAMES;
use crate::mm;
use crate::platform::KernelPlatform;
use crate::smp::{self, PERCPU};
use alloc::vec;
use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use zx_vm::arch::{MemoryAttributes, Shareability};
use zx_vm::platform::tlbi::{arm_span_ops, ArmTlbi};
use zx_vm::platform::{TlbInvalidate, TlbScope, MAX_CPUS};
use zx_vm::vmar::FaultError;
use zx_vm::PhysAddr;

/// The architecture's name, for messages.
pub const NAME: &str = "aarch64";
/// The most ASIDs the kernel gives the crate, whatever `detect_asid_tags` answers: 8-bit ASIDs
/// (TCR_EL1.AS = 0, so the hardware answer is 255 anyway; with AS set it would be 65535).
pub const MAX_TAGS: u16 = 255;
/// The ASIDs given to the crate (set once, at boot).
static TAGS: AtomicU16 = AtomicU16::new(0);
/// The memory attributes of the crate's user pages: MAIR_EL1 attribute 1 (normal write-back,
/// see `boot.rs`), inner shareable like the kernel's RAM.
pub const MEMORY_ATTRIBUTES: MemoryAttributes = MemoryAttributes {
    mair_index: boot::ATTR_NORMAL as u8,
    shareability: Shareability::Inner,
};

/// A line about the TLB tags and memory attributes, for the kernel's banner.
pub fn tags_summary() -> alloc::string::String {
    let asid_bits = if (sysreg_id_aa64mmfr0() >> 4) & 0xf == 0b0010 {
        16
    } else {
        8
    };
    alloc::format!(
        "{} ASIDs (detect_asid_tags: {}, capped at {MAX_TAGS}; ID_AA64MMFR0_EL1.ASIDBits: \
         {asid_bits} bits, TCR_EL1.AS = {}); user pages: MAIR_EL1 attribute index {} \
         (Platform::memory_attributes)",
        TAGS.load(Ordering::Relaxed),
        zx_vm::arch::regime::detect_asid_tags(),
        (sysreg_tcr() >> 36) & 1,
        MEMORY_ATTRIBUTES.mair_index,
    )
}

fn sysreg_tcr() -> u64 {
    let value: u64;
    // SAFETY: reading TCR_EL1 has no side effect.
    unsafe { asm!("mrs {}, tcr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

fn sysreg_mair() -> u64 {
    let value: u64;
    // SAFETY: reading MAIR_EL1 has no side effect.
    unsafe { asm!("mrs {}, mair_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

fn sysreg_id_aa64mmfr0() -> u64 {
    let value: u64;
    // SAFETY: reading ID_AA64MMFR0_EL1 has no side effect.
    unsafe {
        asm!("mrs {}, id_aa64mmfr0_el1", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The MAIR_EL1 attribute byte the MMU applies to a read of `va` at EL1 (`AT S1E1R`, PAR_EL1
/// bits 63:56), or `None` if the translation faults.
pub fn attribute_of(va: u64) -> Option<u8> {
    let par: u64;
    // SAFETY: AT only translates (it never faults: a failed walk sets PAR_EL1.F) and writes
    // PAR_EL1, which nothing else uses; IRQs are masked so that no handler's AT (there is none)
    // could overwrite PAR_EL1 before it is read.
    unsafe {
        let irqs = interrupts_disable();
        asm!("at s1e1r, {va}", "isb", "mrs {par}, par_el1", va = in(reg) va, par = out(reg) par,
             options(nostack, preserves_flags));
        interrupts_restore(irqs);
    }
    (par & 1 == 0).then_some((par >> 56) as u8)
}

/// Where the direct map (and the kernel image, at its physical address) starts in TTBR1_EL1.
pub const PHYS_OFFSET: u64 = 0xFFFF_0000_0000_0000;

/// The kernel's address for physical address `pa` (the direct map).
pub fn phys_to_virt(pa: PhysAddr) -> *mut u8 {
    (PHYS_OFFSET + pa.0) as *mut u8
}

fn kernel_virt_to_phys(va: u64) -> u64 {
    va - PHYS_OFFSET
}

// ---- serial (PL011) and exit ----------------------------------------------------------------

const UART: u64 = 0x0900_0000;

/// Writes one byte to the PL011.
pub fn serial_write_byte(byte: u8) {
    let base = PHYS_OFFSET + UART;
    // SAFETY: the PL011's flag register (offset 0x18) in the device mapping; reading has no side
    // effect. Bit 5: the transmit FIFO is full.
    while unsafe { ((base + 0x18) as *const u32).read_volatile() } & (1 << 5) != 0 {
        core::hint::spin_loop();
    }
    // SAFETY: the data register; writing queues the byte.
    unsafe { (base as *mut u32).write_volatile(u32::from(byte)) };
}

/// Ends the QEMU run through semihosting `SYS_EXIT` (`-semihosting`): exit status 0 for success,
/// 1 for failure.
pub fn exit(success: bool) -> ! {
    // ADP_Stopped_ApplicationExit and the exit code.
    let block: [u64; 2] = [0x2_0026, u64::from(!success)];
    // SAFETY: the semihosting call reads the two words at x1 and ends the emulation; without a
    // debugger or `-semihosting` it is an undefined-instruction trap, which panics (still a stop).
    unsafe { asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") &block, options(nostack)) };
    loop {
        interrupts_disable();
        // SAFETY: waiting for an event has no effect on memory.
        unsafe { asm!("wfe", options(nomem, nostack)) };
    }
}

// ---- per-CPU register and interrupts ----------------------------------------------------------

/// The calling CPU's index (the `index` field of the `PerCpu` that TPIDR_EL1 points at).
pub fn cpu_index() -> usize {
    let index: usize;
    // SAFETY: TPIDR_EL1 points at this CPU's `PerCpu` (set before anything calls this), whose
    // first field is the index.
    unsafe {
        asm!("mrs {0}, tpidr_el1", "ldr {0}, [{0}]", out(reg) index, options(nostack, readonly, preserves_flags))
    };
    index
}

fn set_percpu(index: usize) {
    // SAFETY: TPIDR_EL1 is the kernel's to use; nothing else reads it.
    unsafe { asm!("msr tpidr_el1, {}", in(reg) &PERCPU[index], options(nostack, preserves_flags)) };
}

/// Masks IRQs; returns whether they were unmasked.
pub fn interrupts_disable() -> bool {
    let daif: u64;
    // SAFETY: masking IRQs only affects this CPU's interrupt delivery.
    unsafe {
        asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nomem, nostack, preserves_flags))
    };
    daif & (1 << 7) == 0
}

/// Unmasks IRQs if `enabled`.
pub fn interrupts_restore(enabled: bool) {
    if enabled {
        // SAFETY: the vectors are installed before IRQs are first unmasked.
        unsafe { asm!("msr daifclr, #2", options(nomem, nostack, preserves_flags)) };
    }
}

/// Sleeps until an interrupt is pending, then unmasks IRQs so that it is taken. Called with IRQs
/// masked: WFI wakes on a pending interrupt even while it is masked, so none is missed.
pub fn enable_interrupts_and_wait() {
    // SAFETY: as in `interrupts_restore`.
    unsafe {
        asm!(
            "wfi",
            "msr daifclr, #2",
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// The kernel's IPIs.
#[derive(Clone, Copy, Debug)]
pub enum Ipi {
    /// Run the crate's shootdown handler.
    Shootdown,
    /// Wake up to look for a job.
    Wake,
}

/// Sends `ipi` to CPU `cpu`.
pub fn send_ipi(cpu: usize, ipi: Ipi) {
    gic::send_sgi(
        cpu,
        match ipi {
            Ipi::Shootdown => gic::SHOOTDOWN_SGI,
            Ipi::Wake => gic::WAKE_SGI,
        },
    );
}

// ---- TLB and address spaces -------------------------------------------------------------------

/// `Platform::invalidate_local`: broadcast (`TLBI ...IS`, every CPU) or, in IPI mode, this CPU only.
pub fn invalidate(request: &TlbInvalidate<'_>, ipi_mode: bool) {
    if !ipi_mode {
        zx_vm::arch::native_tlb::invalidate_broadcast(request);
        return;
    }
    let asid = u64::from(request.asid) << 48;
    // Barrier: the descriptors another CPU cleared are visible here (its DSB before the SGI, our
    // acquire of the request) before this CPU's walker may refill from them.
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    match request.scope {
        TlbScope::Pages(pages) => {
            for &va in pages {
                let operand = asid | ((va >> 12) & ((1 << 44) - 1));
                if request.tables_freed {
                    // SAFETY: TLBI VAE1 drops this CPU's translations (walk caches too) of one VA
                    // and ASID; it cannot fault or touch memory.
                    unsafe {
                        asm!("tlbi vae1, {}", in(reg) operand, options(nostack, preserves_flags))
                    };
                } else {
                    // SAFETY: TLBI VALE1 drops this CPU's last-level translation of one VA.
                    unsafe {
                        asm!("tlbi vale1, {}", in(reg) operand, options(nostack, preserves_flags))
                    };
                }
            }
        }
        TlbScope::Spans(spans) => {
            for &span in spans {
                let hint = !request.tables_freed;
                for op in arm_span_ops(request.asid, span, request.features, hint) {
                    invalidate_local_op(op, request.tables_freed);
                }
            }
        }
        // SAFETY: TLBI ASIDE1 drops this CPU's translations of one ASID.
        TlbScope::All => unsafe {
            asm!("tlbi aside1, {}", in(reg) asid, options(nostack, preserves_flags))
        },
    }
    // SAFETY: barriers: the invalidations complete, then the instruction stream resynchronises.
    unsafe { asm!("dsb nsh", "isb", options(nostack, preserves_flags)) };
}

/// One TLBI by address on this CPU only (the non-broadcast forms), walks too where tables were
/// freed: what `invalidate` runs in IPI mode for a span.
fn invalidate_local_op(op: ArmTlbi, tables_freed: bool) {
    // SAFETY (each arm): a TLBI by address drops this CPU's cached translations (and walks, in
    // the non-leaf forms) for the addresses and ASID of its operand; it cannot fault or touch
    // memory. The range forms come only from a span the crate encoded with
    // `TlbFeatures::range`, which the CPU reported (ID_AA64ISAR0_EL1.TLB).
    match (op, tables_freed) {
        // SAFETY: see above.
        (ArmTlbi::Page(x), true) => unsafe {
            asm!("tlbi vae1, {}", in(reg) x, options(nostack, preserves_flags))
        },
        // SAFETY: see above.
        (ArmTlbi::Page(x), false) => unsafe {
            asm!("tlbi vale1, {}", in(reg) x, options(nostack, preserves_flags))
        },
        // SAFETY: see above.
        (ArmTlbi::Range(x), true) => unsafe {
            asm!(".arch armv8.4-a", "tlbi rvae1, {}", in(reg) x, options(nostack, preserves_flags))
        },
        // SAFETY: see above.
        (ArmTlbi::Range(x), false) => unsafe {
            asm!(".arch armv8.4-a", "tlbi rvale1, {}", in(reg) x, options(nostack, preserves_flags))
        },
    }
}

/// Drops the calling CPU's translation of `va` under `asid`.
pub fn invalidate_page_local(va: u64, asid: u16) {
    let operand = (u64::from(asid) << 48) | ((va >> 12) & ((1 << 44) - 1));
    // SAFETY: DSB ISH makes earlier descriptor stores visible to the walker; TLBI VALE1 only drops
    // a cached translation; DSB NSH and ISB complete it for the following accesses.
    unsafe {
        asm!("dsb ish", "tlbi vale1, {}", "dsb nsh", "isb", in(reg) operand, options(nostack, preserves_flags))
    };
}

/// Drops every CPU's translations under `asid`.
pub fn flush_asid_everywhere(asid: u16) {
    let operand = u64::from(asid) << 48;
    // SAFETY: TLBI ASIDE1IS only drops cached translations, on every CPU; the barriers complete it.
    unsafe {
        asm!("dsb ishst", "tlbi aside1is, {}", "dsb ish", "isb", in(reg) operand, options(nostack, preserves_flags))
    };
}

/// Makes page-table stores visible to every CPU's table walker.
pub fn publish_table_stores() {
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// The calling CPU's TTBR0_EL1: the user root table and its ASID.
pub fn ttbr0() -> (PhysAddr, u16) {
    let ttbr0: u64;
    // SAFETY: reading TTBR0_EL1 has no side effect.
    unsafe { asm!("mrs {}, ttbr0_el1", out(reg) ttbr0, options(nomem, nostack, preserves_flags)) };
    (
        PhysAddr(ttbr0 & 0x0000_ffff_ffff_f000),
        (ttbr0 >> 48) as u16,
    )
}

/// The kernel's root table (TTBR1_EL1's).
pub fn kernel_root() -> PhysAddr {
    let ttbr1: u64;
    // SAFETY: reading TTBR1_EL1 has no side effect.
    unsafe { asm!("mrs {}, ttbr1_el1", out(reg) ttbr1, options(nomem, nostack, preserves_flags)) };
    PhysAddr(ttbr1 & 0x0000_ffff_ffff_f000)
}

/// `Platform::prepare_root`: nothing, the kernel's mappings are in TTBR1_EL1.
pub fn prepare_root(_root: PhysAddr) {}

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; 512]>);

// SAFETY: the table is all zeroes for ever: only the hardware reads it.
unsafe impl Sync for Table {}

/// The user table when no user address space is active: no translations at all.
static EMPTY_L0: Table = Table(UnsafeCell::new([0; 512]));

/// Loads the empty user table (ASID 0) on the calling CPU.
pub fn load_kernel_root() {
    let empty = kernel_virt_to_phys(EMPTY_L0.0.get() as u64);
    // SAFETY: the kernel runs from TTBR1_EL1, so replacing TTBR0_EL1 does not unmap it; ISB makes
    // the following accesses use the new table.
    unsafe { asm!("msr ttbr0_el1, {}", "isb", in(reg) empty, options(nostack, preserves_flags)) };
}

/// Loads `root` (a table the kernel built itself) with `asid` on this CPU, dropping the ASID's
/// old translations here.
///
/// # Safety
/// `root` stays alive until [`load_kernel_root`].
pub unsafe fn load_root_raw(root: PhysAddr, asid: u16) {
    // SAFETY: forwarded from the caller; the kernel runs from TTBR1_EL1.
    unsafe { zx_vm::arch::native_tlb::load_root(root, asid, true) };
}

/// Loads the user word at `va`; a fault the crate cannot resolve resumes at label 3 with the
/// error code in x10 (see `exceptions::synchronous`).
pub fn probe_read(va: u64) -> Result<u64, FaultError> {
    let value: u64;
    let error: u64;
    // SAFETY: the load reads user memory through TTBR0_EL1. If it faults, the handler resolves
    // the fault through the crate (the load is retried) or moves ELR to the fixup label, recorded
    // in this CPU's `PerCpu::fixup` ([TPIDR_EL1, #8]) beforehand, with x10 set; the fixup is
    // cleared on both paths.
    unsafe {
        asm!(
            "mrs {p}, tpidr_el1",
            "adr {tmp}, 3f",
            "str {tmp}, [{p}, #8]",
            "mov x10, xzr",
            "2: ldr {value}, [{va}]",
            "3: str xzr, [{p}, #8]",
            p = out(reg) _,
            tmp = out(reg) _,
            va = in(reg) va,
            value = out(reg) value,
            out("x10") error,
            options(nostack),
        )
    };
    mm::fault_error_from_code(error).map(|()| value)
}

/// Stores `value` to the user word at `va`, as [`probe_read`].
pub fn probe_write(va: u64, value: u64) -> Result<(), FaultError> {
    let error: u64;
    // SAFETY: as in `probe_read`, for a store.
    unsafe {
        asm!(
            "mrs {p}, tpidr_el1",
            "adr {tmp}, 3f",
            "str {tmp}, [{p}, #8]",
            "mov x10, xzr",
            "2: str {value}, [{va}]",
            "3: str xzr, [{p}, #8]",
            p = out(reg) _,
            tmp = out(reg) _,
            va = in(reg) va,
            value = in(reg) value,
            out("x10") error,
            options(nostack),
        )
    };
    mm::fault_error_from_code(error)
}

// ---- boot ---------------------------------------------------------------------------------------

unsafe extern "C" {
    /// The end of the kernel image (linker script).
    static __kernel_end: u8;
}

/// The secondary CPUs' stack tops, read by `_secondary_start` (boot.rs) by CPU index.
#[unsafe(no_mangle)]
static AP_STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Per-CPU set-up common to every CPU, on the kernel's tables.
fn init_this_cpu(index: usize) {
    exceptions::init_this_cpu();
    set_percpu(index);
    load_kernel_root();
    // SAFETY: drops every translation this CPU cached from the boot identity map; the kernel
    // itself is in TTBR1_EL1, which stays.
    unsafe {
        asm!(
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// The boot CPU's Rust entry, from `_start`, with the MMU on.
#[unsafe(no_mangle)]
extern "C" fn aarch64_boot_main(dtb: u64, secondary_entry: u64) -> ! {
    init_this_cpu(0);
    let machine = fdt::parse(dtb);
    let (ram_base, ram_size) = machine.ram;
    assert!(ram_size != 0, "no memory in the device tree");
    let kernel_end = kernel_virt_to_phys(&raw const __kernel_end as u64);
    FRAMES.init(ram_base);
    // Only RAM the kernel's direct map covers (physical 1..4 GiB, see `boot.rs`).
    FRAMES.add_region(kernel_end, (ram_base + ram_size).min(4 << 30));

    gic::init_distributor();
    gic::init_this_cpu(0);
    let cpus = machine.cpus.len().clamp(1, MAX_CPUS);
    for (index, &mpidr) in machine.cpus.iter().take(cpus).enumerate() {
        PERCPU[index].hw_id.store(mpidr as usize, Ordering::Relaxed);
    }
    let tags = zx_vm::arch::regime::detect_asid_tags().min(MAX_TAGS);
    TAGS.store(tags, Ordering::Relaxed);
    check_translation_regime(tags);
    if let Err(error) = KernelPlatform::init(cpus, tags) {
        panic!("zx-vm refused the TLB configuration ({cpus} CPUs, {tags} ASIDs): {error}");
    }
    interrupts_restore(true);
    PERCPU[0].online.store(true, Ordering::Release);

    for index in 1..cpus {
        let stack = vec![0u8; 64 << 10].leak();
        AP_STACK_TOPS[index].store(stack.as_ptr_range().end as u64, Ordering::SeqCst);
        let mpidr = PERCPU[index].hw_id.load(Ordering::Relaxed) as u64;
        let status = psci_cpu_on(mpidr, secondary_entry, index as u64);
        assert_eq!(status, 0, "PSCI CPU_ON of CPU {index} failed");
        let mut spins = 0u64;
        while !PERCPU[index].online.load(Ordering::Acquire) {
            spins += 1;
            assert!(spins < 2_000_000_000, "CPU {index} did not come online");
            core::hint::spin_loop();
        }
    }
    crate::kmain()
}

/// Checks, before the first address space, that TCR_EL1 and MAIR_EL1 are what the crate's tables
/// need for `tags` ASIDs and user pages of [`MEMORY_ATTRIBUTES`]
/// (`zx_vm::arch::regime::check_translation_regime`), and stops the boot, failed, on a problem:
/// QEMU's TCG ignores memory types, so a Device attribute on RAM would pass here and break on
/// hardware. Also shows what the MMU applies (`AT S1E1R`): normal memory for the kernel's RAM,
/// Device for the UART; and, as a negative control, that the check names the Device attribute
/// at index 0 (the crate's default index, which this kernel must not use).
fn check_translation_regime(tags: u16) {
    use zx_vm::arch::regime;
    let (tcr, mair) = (sysreg_tcr(), sysreg_mair());
    if let Err(problems) = regime::check_translation_regime(MEMORY_ATTRIBUTES, tags) {
        println!(
            "translation regime: {problems} (TCR_EL1 {tcr:#x}, MAIR_EL1 {mair:#x})\nRESULT: FAIL"
        );
        exit(false);
    }
    let ram = attribute_of(&raw const TAGS as u64);
    let uart = attribute_of(PHYS_OFFSET + UART);
    let default_index = regime::check_translation_regime(MemoryAttributes::DEFAULT, tags);
    let refused = matches!(
        default_index.map_err(|problems| problems.iter().next()),
        Err(Some(regime::RegimeProblem::DeviceMemoryAttribute {
            index: 0,
            attr: 0
        }))
    );
    println!(
        "translation regime: OK (check_translation_regime(MAIR index {}, {tags} ASIDs): TCR_EL1 \
         {tcr:#x}, MAIR_EL1 {mair:#x}); AT S1E1R: kernel RAM attribute {}, UART {}; index 0 (the \
         crate's default) {}",
        MEMORY_ATTRIBUTES.mair_index,
        attribute_name(ram),
        attribute_name(uart),
        if refused {
            "refused as Device memory, as expected"
        } else {
            "NOT refused"
        }
    );
    if ram != Some(0xff) || uart != Some(0x00) || !refused {
        println!("translation regime: the attributes are not as programmed\nRESULT: FAIL");
        exit(false);
    }
    let features = zx_vm::platform::Platform::tlb_features(&crate::platform::KernelPlatform);
    println!(
        "TLB features: FEAT_TLBIRANGE {}, FEAT_TTL {} (spans past one page go as {})",
        if features.range { "yes" } else { "no" },
        if features.ttl { "yes" } else { "no" },
        if features.range {
            "range TLBIs"
        } else {
            "single-page TLBIs"
        }
    );
}

/// An attribute byte from [`attribute_of`], for messages.
pub fn attribute_name(attr: Option<u8>) -> alloc::string::String {
    match attr {
        Some(0xff) => "0xff (normal write-back)".into(),
        Some(0x00) => "0x00 (Device-nGnRnE)".into(),
        Some(other) => alloc::format!("{other:#04x}"),
        None => "none (the translation faults)".into(),
    }
}

/// PSCI `CPU_ON` (SMC Calling Convention, through HVC on QEMU's `virt` without EL2/EL3).
fn psci_cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    let status: i64;
    // SAFETY: CPU_ON starts another CPU at `entry` (physical, MMU off) with `context` in x0; it
    // touches none of this CPU's memory. The SMCCC may clobber x0-x17.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") 0xC400_0003u64 => status,
            in("x1") mpidr,
            in("x2") entry,
            in("x3") context,
            clobber_abi("C"),
            options(nostack),
        )
    };
    status
}

/// A secondary CPU's Rust entry, from `_secondary_start`, with the MMU on.
#[unsafe(no_mangle)]
extern "C" fn aarch64_ap_main(index: usize) -> ! {
    init_this_cpu(index);
    gic::init_this_cpu(index);
    interrupts_restore(true);
    smp::worker_loop()
}
