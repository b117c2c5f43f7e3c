//! The local APIC in xAPIC mode (MMIO; QEMU's TCG has no x2APIC): IPIs, INIT-SIPI-SIPI, EOI.

use super::cpu::{rdmsr, IA32_APIC_BASE};
use super::PHYS_OFFSET;
use core::sync::atomic::{AtomicU64, Ordering};

const ID: usize = 0x20;
const TPR: usize = 0x80;
const EOI: usize = 0xB0;
const SVR: usize = 0xF0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const DELIVERY_PENDING: u32 = 1 << 12;
const LEVEL_ASSERT: u32 = 1 << 14;
const INIT: u32 = 0b101 << 8;
const STARTUP: u32 = 0b110 << 8;

/// The spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// The APIC's registers in the direct map.
static BASE: AtomicU64 = AtomicU64::new(0);

fn reg(offset: usize) -> *mut u32 {
    (BASE.load(Ordering::Relaxed) as usize + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: `reg` points into the local APIC's 4 KiB MMIO page, mapped uncached in the direct
    // map; 32-bit aligned reads of its registers have no side effect.
    unsafe { reg(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; the callers write values the register defines.
    unsafe { reg(offset).write_volatile(value) };
}

/// Finds the APIC (all CPUs share its address) and enables it on the calling CPU.
pub fn init_this_cpu() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let base = unsafe { rdmsr(IA32_APIC_BASE) } & 0xF_FFFF_F000;
    BASE.store(PHYS_OFFSET + base, Ordering::Relaxed);
    write(TPR, 0);
    write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// The calling CPU's APIC ID.
pub fn id() -> u32 {
    read(ID) >> 24
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    write(EOI, 0);
}

fn send(apic_id: u32, command: u32) {
    // The ICR is two registers: keep the pair from being interleaved with an interrupt handler's
    // own IPI on this CPU.
    let interrupts = super::interrupts_disable();
    while read(ICR_LOW) & DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, command);
    while read(ICR_LOW) & DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    super::interrupts_restore(interrupts);
}

/// Sends the fixed interrupt `vector` to the CPU with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send(apic_id, LEVEL_ASSERT | u32::from(vector));
}

/// Sends INIT, then two STARTUPs with the trampoline's page, to the CPU with `apic_id`.
pub fn start_cpu(apic_id: u32, trampoline_page: u8) {
    send(apic_id, INIT | LEVEL_ASSERT);
    delay(10_000);
    for _ in 0..2 {
        send(apic_id, STARTUP | LEVEL_ASSERT | u32::from(trampoline_page));
        delay(200);
    }
}

/// Waits roughly `us` microseconds (port 0x80 writes take about 1 us on a PC; QEMU needs no delay
/// at all, but real hardware wants the INIT-SIPI-SIPI pauses).
fn delay(us: u32) {
    for _ in 0..us {
        // SAFETY: port 0x80 is the POST diagnostic port; writing it has no effect on memory.
        unsafe { super::cpu::outb(0x80, 0) };
    }
}
