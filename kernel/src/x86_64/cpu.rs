//! x86_64 registers and descriptor tables: port I/O, MSRs, CPUID, the GDT and the IDT.

use core::arch::asm;
use core::cell::UnsafeCell;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port's device must accept the write with no memory-safety consequence.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device; OUT touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the device; IN touches no memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (otherwise #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR has no other effect.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it, and the change must not break the running
/// code's assumptions.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// CPUID leaf `leaf`, subleaf `sub`: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The IA32_GS_BASE MSR: the per-CPU pointer (the kernel never runs user mode, so no SWAPGS).
pub const IA32_GS_BASE: u32 = 0xC000_0101;
/// The IA32_APIC_BASE MSR.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// The IA32_EFER MSR (LME, NXE).
pub const IA32_EFER: u32 = 0xC000_0080;

/// Reads CR0.
pub fn cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR2 (the faulting address of the last #PF).
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3.
pub fn cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR4.
pub fn cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR4.
///
/// # Safety
/// Every bit set must be supported (else #GP) and allowed in the CPU's current state, and the
/// change must not break what the running code assumes.
pub unsafe fn set_cr4(value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Loads CR3.
///
/// # Safety
/// `value` names a PML4 that maps the running code, its stack and everything it touches next.
pub unsafe fn set_cr3(value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// A static that is written during single-threaded set-up and read by the CPU afterwards.
#[repr(C, align(4096))]
pub struct Table<T>(pub UnsafeCell<T>);

// SAFETY: the tables are written by the boot CPU before any other CPU starts (or by one CPU for
// its own entries), and afterwards only read, by the hardware.
unsafe impl<T> Sync for Table<T> {}

/// The kernel's GDT: null, 64-bit code (0x08), data (0x10). No TSS: the kernel never changes
/// privilege, and every exception runs on the current stack.
static GDT: [u64; 3] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the kernel's GDT (in the kernel window, unlike the boot GDT) and reloads the segments.
pub fn load_gdt() {
    let pointer = DescriptorPointer {
        limit: (size_of_val(&GDT) - 1) as u16,
        base: GDT.as_ptr() as u64,
    };
    // SAFETY: the GDT has the same selectors as the boot GDT, so reloading CS (by a far return)
    // and the data segments keeps every segment flat; the pointer outlives the LGDT.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            ptr = in(reg) &pointer,
            tmp = out(reg) _,
        )
    };
}

/// An IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

static IDT: Table<[Gate; 256]> = Table(UnsafeCell::new(
    [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    }; 256],
));

/// Fills the IDT: vector `v` goes to the stub at `stubs + 16 * v`, as an interrupt gate
/// (interrupts disabled on entry). Boot CPU, before interrupts are enabled anywhere.
pub fn init_idt(stubs: u64) {
    // SAFETY: single-threaded boot: no CPU has loaded the IDT yet.
    let idt = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in idt.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        *gate = Gate {
            offset_low: handler as u16,
            selector: 0x08,
            ist: 0,
            type_attr: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
}

/// Loads the IDT on the calling CPU.
pub fn load_idt() {
    let pointer = DescriptorPointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT was filled by `init_idt` and lives for ever.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(nostack, preserves_flags)) };
}
