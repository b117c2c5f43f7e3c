//! aarch64 exception entry: the vector table, one common path that saves every general and
//! FP/SIMD register into a [`Frame`], and the Rust dispatcher.
//!
//! The kernel runs at EL1 on SP_EL1, so only the "current EL with SPx" vectors are expected:
//! synchronous (data aborts: page faults) and IRQ (the GIC's SGIs). The FP/SIMD registers are
//! saved because the compiler uses them freely (the target enables NEON). Every handler runs with
//! IRQs masked (the hardware masks them on entry).

use super::gic;
use crate::mm;
use crate::smp::this_cpu;
use core::arch::{asm, global_asm};
use core::sync::atomic::Ordering;
use zx_vm::arch::USER_ADDRESS_LIMIT;
use zx_vm::kit::aarch64_esr::decode_esr;

global_asm!(
    r#"
    .equ FRAME_SIZE, 800

    .macro VECTOR kind
    .balign 0x80
    sub sp, sp, #FRAME_SIZE
    stp x0, x1, [sp, #0]
    mov x0, #\kind
    b exception_common
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    // Current EL with SP0, current EL with SPx, lower EL AArch64, lower EL AArch32;
    // each: synchronous, IRQ, FIQ, SError. Kinds 0-15 in that order.
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

exception_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x2, x3, [sp, #248]
    mrs x2, fpsr
    mrs x3, fpcr
    stp x2, x3, [sp, #264]
    add x2, sp, #288
    stp q0, q1, [x2, #0]
    stp q2, q3, [x2, #32]
    stp q4, q5, [x2, #64]
    stp q6, q7, [x2, #96]
    stp q8, q9, [x2, #128]
    stp q10, q11, [x2, #160]
    stp q12, q13, [x2, #192]
    stp q14, q15, [x2, #224]
    stp q16, q17, [x2, #256]
    stp q18, q19, [x2, #288]
    stp q20, q21, [x2, #320]
    stp q22, q23, [x2, #352]
    stp q24, q25, [x2, #384]
    stp q26, q27, [x2, #416]
    stp q28, q29, [x2, #448]
    stp q30, q31, [x2, #480]
    mov x1, x0
    mov x0, sp
    bl aarch64_exception
    add x2, sp, #288
    ldp q0, q1, [x2, #0]
    ldp q2, q3, [x2, #32]
    ldp q4, q5, [x2, #64]
    ldp q6, q7, [x2, #96]
    ldp q8, q9, [x2, #128]
    ldp q10, q11, [x2, #160]
    ldp q12, q13, [x2, #192]
    ldp q14, q15, [x2, #224]
    ldp q16, q17, [x2, #256]
    ldp q18, q19, [x2, #288]
    ldp q20, q21, [x2, #320]
    ldp q22, q23, [x2, #352]
    ldp q24, q25, [x2, #384]
    ldp q26, q27, [x2, #416]
    ldp q28, q29, [x2, #448]
    ldp q30, q31, [x2, #480]
    ldp x2, x3, [sp, #264]
    msr fpsr, x2
    msr fpcr, x3
    ldp x2, x3, [sp, #248]
    msr elr_el1, x2
    msr spsr_el1, x3
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldr x30, [sp, #240]
    ldp x0, x1, [sp, #0]
    add sp, sp, #FRAME_SIZE
    eret
"#
);

unsafe extern "C" {
    static exception_vectors: u8;
}

/// What `exception_common` saved.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub fpsr: u64,
    pub fpcr: u64,
    _pad: u64,
    pub q: [u128; 32],
}

const _: () = assert!(size_of::<Frame>() == 800);

/// Installs the vector table on the calling CPU.
pub fn init_this_cpu() {
    let vectors = &raw const exception_vectors as u64;
    // SAFETY: the table is a valid, 2 KiB-aligned vector table that lives for ever.
    unsafe { asm!("msr vbar_el1, {}", "isb", in(reg) vectors, options(nostack, preserves_flags)) };
}

/// Current EL with SPx: synchronous and IRQ.
const SYNC: u64 = 4;
const IRQ: u64 = 5;

#[unsafe(no_mangle)]
extern "C" fn aarch64_exception(frame: &mut Frame, kind: u64) {
    match kind {
        SYNC => synchronous(frame),
        IRQ => gic::handle_irq(),
        _ => panic!(
            "unexpected exception kind {kind} on CPU {}: {frame:#x?}",
            super::cpu_index()
        ),
    }
}

fn esr_far() -> (u64, u64) {
    let (esr, far): (u64, u64);
    // SAFETY: reading the syndrome and fault address registers has no side effect.
    unsafe {
        asm!("mrs {}, esr_el1", "mrs {}, far_el1", out(reg) esr, out(reg) far, options(nomem, nostack, preserves_flags))
    };
    (esr, far)
}

/// INTEGRATION POINT 3 on aarch64: a data abort from EL1 on a user address is a page fault.
/// `ESR_EL1` is decoded with the crate's kit (`kit::aarch64_esr::decode_esr`): the access (WnR,
/// and CM for cache maintenance) and the fault class; only translation and permission faults
/// with a valid FAR go to the crate.
fn synchronous(frame: &mut Frame) {
    let (esr, va) = esr_far();
    let routed = decode_esr(esr).filter(|kind| {
        kind.routes_to_page_fault() && !kind.from_lower_el && va < USER_ADDRESS_LIMIT
    });
    let Some(kind) = routed else {
        panic!(
            "unexpected synchronous exception on CPU {}: ESR {esr:#x} ({:?}), FAR {va:#x}: {frame:#x?}",
            super::cpu_index(),
            decode_esr(esr)
        );
    };
    let access = kind.access;
    match mm::page_fault(va, access) {
        // Nothing to invalidate: a translation fault's invalid descriptor was never cached, and
        // when the crate finds the entry already valid (a permission fault on a narrower
        // translation this CPU may still cache) it drops that translation here itself
        // (`AddressSpace::page_fault`, see `kit::aarch64_esr`). It also published the new entry
        // (DSB ISHST; ISB) before returning.
        Ok(()) => {}
        Err(error) => {
            let fixup = this_cpu().fixup.swap(0, Ordering::Relaxed);
            if fixup == 0 {
                panic!(
                    "unresolved page fault at {va:#x} ({access:?}, {error:?}) on CPU {}: {frame:#x?}",
                    super::cpu_index()
                );
            }
            // Resume at the accessor's fixup with the error in x10 (see `probe_read`).
            frame.elr = fixup as u64;
            frame.x[10] = mm::fault_error_code(error);
        }
    }
}
