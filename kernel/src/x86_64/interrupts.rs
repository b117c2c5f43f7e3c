//! x86_64 exception and interrupt entry: 256 stubs, one common path, and the Rust dispatcher.
//!
//! Every vector has a 16-byte stub at `isr_stubs + 16 * vector` that pushes a zero error code (if
//! the CPU pushed none) and the vector, then jumps to `isr_common`, which saves the general
//! registers into a [`Frame`] and calls [`x86_64_interrupt`]. The gates are interrupt gates, so
//! every handler runs with interrupts disabled. The kernel is built soft-float (the target's
//! default), so there is no SSE state to save.

use super::{apic, cpu};
use crate::mm;
use crate::platform::KernelPlatform;
use crate::smp::this_cpu;
use core::arch::global_asm;
use core::sync::atomic::Ordering;
use zx_vm::arch::USER_ADDRESS_LIMIT;
use zx_vm::kit::x86;

/// The TLB-shootdown IPI.
pub const SHOOTDOWN_VECTOR: u8 = 0xF0;
/// The wake-up IPI (a job was posted, see `smp`).
pub const WAKE_VECTOR: u8 = 0xF1;
const PAGE_FAULT: u64 = 14;

global_asm!(
    r#"
    .section .text.isr, "ax"
    .balign 16
    .global isr_stubs
isr_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    push $0
    .endif
    push $vector
    jmp isr_common
    .set vector, vector + 1
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call x86_64_interrupt
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// The first stub (see the module docs).
    static isr_stubs: u8;
}

/// The address of the stubs, for the IDT.
pub fn stubs() -> u64 {
    &raw const isr_stubs as u64
}

/// What `isr_common` saved: the general registers, then the stub's and the CPU's pushes.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The dispatcher, called by `isr_common` with interrupts disabled.
#[unsafe(no_mangle)]
extern "C" fn x86_64_interrupt(frame: &mut Frame) {
    match frame.vector {
        PAGE_FAULT => page_fault(frame),
        v if v == u64::from(SHOOTDOWN_VECTOR) => {
            // INTEGRATION POINT 4: the shootdown IPI runs the crate's handler body.
            KernelPlatform::handle_shootdown_ipi();
            apic::eoi();
        }
        v if v == u64::from(WAKE_VECTOR) => apic::eoi(),
        v if v == u64::from(apic::SPURIOUS_VECTOR) => {}
        _ => panic!(
            "unexpected exception on CPU {}: {frame:#x?}",
            super::cpu_index()
        ),
    }
}

/// INTEGRATION POINT 3 on x86_64: #PF, decoded with the crate's kit (`kit::x86`): the error
/// code's W/R and I/D bits give the access, and a fault whose code names something the crate's
/// entries never cause (a reserved bit set in a paging entry, protection keys, shadow stacks, SGX)
/// is not routed to the crate.
fn page_fault(frame: &mut Frame) {
    let va = cpu::cr2();
    let access = x86::decode_page_fault(frame.error);
    if va >= USER_ADDRESS_LIMIT || !x86::routes_to_page_fault(frame.error) {
        panic!(
            "kernel page fault at {va:#x} ({access:?}, error code {:#x}) on CPU {}: {frame:#x?}",
            frame.error,
            super::cpu_index()
        );
    }
    // The #PF itself dropped any TLB entry for `va` on this CPU, so a resolved fault is simply
    // retried by IRETQ.
    let Err(error) = mm::page_fault(va, access) else {
        return;
    };
    // Not resolvable: resume at the accessor's fixup (see `probe_read`), reporting the error.
    let fixup = this_cpu().fixup.swap(0, Ordering::Relaxed);
    if fixup == 0 {
        panic!(
            "unresolved page fault at {va:#x} ({access:?}, {error:?}) on CPU {}: {frame:#x?}",
            super::cpu_index()
        );
    }
    frame.rip = fixup as u64;
    frame.rdx = mm::fault_error_code(error);
}
