//! The kernel's side of address spaces: context switch and page faults.
//!
//! INTEGRATION POINT 2, activation: [`switch_to`] is what a scheduler's context switch does for
//! memory: `AddressSpace::activate`, which joins the address space's active CPU set (the CPUs its
//! shootdowns interrupt), flushes a stale tag, and loads the root through `Platform::load_root`.
//! (The root already maps the kernel: `Platform::prepare_root` put the kernel's upper half into it
//! when the crate made it, on x86_64; on aarch64 the kernel runs from TTBR1_EL1.)
//! Switching to no address space loads the kernel's own root first and then calls
//! `AddressSpace::deactivate`.
//!
//! INTEGRATION POINT 3, page faults: the architecture's fault handler (x86_64 #PF, aarch64 data
//! abort) calls [`page_fault`] with the faulting address and access; it forwards to the current
//! address space's `AddressSpace::page_fault`, which commits the VMO page and maps it.
//!
//! The scenarios run at kernel privilege on the user mappings (see `arch` for why that works:
//! x86_64 leaves CR4.SMAP off, aarch64 leaves PSTATE.PAN off); [`load`] and [`store`] are their
//! user-memory accessors, which return the crate's [`FaultError`] instead of crashing when a
//! fault cannot be resolved.

use crate::arch;
use crate::platform::COUNTERS;
use crate::smp::this_cpu;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use zx_vm::vmar::{Access, FaultError};
use zx_vm::AddressSpace;

/// Switches the calling CPU to `next` (or to no user address space).
pub fn switch_to(next: Option<&Arc<AddressSpace>>) {
    let cpu = this_cpu();
    let mut current = cpu.current.lock();
    let previous = current.take();
    match next {
        Some(next) => {
            next.activate(previous.as_deref());
            *current = Some(next.clone());
        }
        None => {
            if let Some(previous) = previous {
                // First stop using the tables, then leave the active set: a shootdown that no
                // longer interrupts this CPU must find it off the address space already.
                arch::load_kernel_root();
                previous.deactivate();
            }
        }
    }
}

/// The calling CPU's user address space.
pub fn current() -> Option<Arc<AddressSpace>> {
    this_cpu().current.lock().clone()
}

/// Resolves a fault at `va` through the current address space. Called by the architecture's
/// fault handler with interrupts disabled.
pub fn page_fault(va: u64, access: Access) -> Result<(), FaultError> {
    // The per-CPU lock is interrupt-safe and never held across a crate call by this CPU outside
    // `switch_to`, which touches no user memory, so taking it in the fault handler cannot deadlock.
    let aspace = current().ok_or(FaultError::NotMapped)?;
    let result = aspace.page_fault(va, access);
    if result.is_ok() {
        COUNTERS.page_faults.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Loads the 8-byte word at user address `va` (8-aligned), faulting pages in through the crate.
pub fn load(va: u64) -> Result<u64, FaultError> {
    assert!(va.is_multiple_of(8), "unaligned load at {va:#x}");
    arch::probe_read(va)
}

/// Stores `value` to the word at user address `va` (8-aligned), faulting pages in as needed.
pub fn store(va: u64, value: u64) -> Result<(), FaultError> {
    assert!(va.is_multiple_of(8), "unaligned store at {va:#x}");
    arch::probe_write(va, value)
}

/// Encodes a fault error for the architecture's fixup path (0 means no error).
pub fn fault_error_code(error: FaultError) -> u64 {
    match error {
        FaultError::NotMapped => 1,
        FaultError::AccessDenied => 2,
        FaultError::OutOfRange => 3,
        FaultError::NoMemory => 4,
    }
}

/// Decodes [`fault_error_code`].
pub fn fault_error_from_code(code: u64) -> Result<(), FaultError> {
    match code {
        0 => Ok(()),
        1 => Err(FaultError::NotMapped),
        2 => Err(FaultError::AccessDenied),
        3 => Err(FaultError::OutOfRange),
        _ => Err(FaultError::NoMemory),
    }
}
