//! The GICv2 of QEMU's `virt` machine: software-generated interrupts (SGIs) carry the IPIs.

use super::PHYS_OFFSET;
use crate::platform::KernelPlatform;
use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};
use zx_vm::platform::MAX_CPUS;

const GICD: u64 = 0x0800_0000;
const GICC: u64 = 0x0801_0000;
const GICD_CTLR: u64 = 0x000;
const GICD_ISENABLER0: u64 = 0x100;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR0: u64 = 0x800;
const GICD_SGIR: u64 = 0xF00;
const GICC_CTLR: u64 = 0x000;
const GICC_PMR: u64 = 0x004;
const GICC_IAR: u64 = 0x00C;
const GICC_EOIR: u64 = 0x010;

/// The shootdown SGI.
pub const SHOOTDOWN_SGI: u32 = 0;
/// The wake-up SGI (a job was posted, see `smp`).
pub const WAKE_SGI: u32 = 1;
const SPURIOUS: u32 = 1023;

/// Each CPU's GIC CPU-interface mask (the SGI target list bit), read by the CPU itself.
static TARGET: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

fn read(pa: u64) -> u32 {
    // SAFETY: `pa` is a GIC register; the direct map maps the GIC's page as Device-nGnRnE, and
    // 32-bit reads of these registers have no side effect except IAR's acknowledge, which the
    // caller wants.
    unsafe { ((PHYS_OFFSET + pa) as *const u32).read_volatile() }
}

fn write(pa: u64, value: u32) {
    // SAFETY: as in `read`; the callers write values the register defines.
    unsafe { ((PHYS_OFFSET + pa) as *mut u32).write_volatile(value) };
}

/// Enables the distributor (boot CPU, once).
pub fn init_distributor() {
    write(GICD + GICD_CTLR, 1);
}

/// Enables the calling CPU's interface and its SGIs.
pub fn init_this_cpu(cpu: usize) {
    // The banked ITARGETSR0 reads back this CPU's own interface mask in each byte.
    TARGET[cpu].store(read(GICD + GICD_ITARGETSR0) as u8, Ordering::Relaxed);
    // Priority 0x80 for SGIs 0-3 (banked), enable SGIs 0 and 1.
    write(GICD + GICD_IPRIORITYR, 0x8080_8080);
    write(
        GICD + GICD_ISENABLER0,
        (1 << SHOOTDOWN_SGI) | (1 << WAKE_SGI),
    );
    write(GICC + GICC_PMR, 0xF0);
    write(GICC + GICC_CTLR, 1);
}

/// Sends SGI `sgi` to CPU `cpu`.
pub fn send_sgi(cpu: usize, sgi: u32) {
    let target = u32::from(TARGET[cpu].load(Ordering::Relaxed));
    // Barrier: the shootdown request was pushed with ordinary (release) stores to normal memory;
    // DSB makes them complete before the SGI, a Device write, can reach the target.
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    write(GICD + GICD_SGIR, (target << 16) | sgi);
}

/// The IRQ handler: acknowledge, dispatch, end of interrupt.
pub fn handle_irq() {
    let iar = read(GICC + GICC_IAR);
    let id = iar & 0x3FF;
    if id == SPURIOUS {
        return;
    }
    match id {
        // INTEGRATION POINT 4: the shootdown IPI runs the crate's handler body.
        SHOOTDOWN_SGI => KernelPlatform::handle_shootdown_ipi(),
        WAKE_SGI => {}
        _ => panic!("unexpected interrupt {id}"),
    }
    write(GICC + GICC_EOIR, iar);
}
