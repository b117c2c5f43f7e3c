//! The kernel's side of address spaces: context switch and page faults.
//!
//! INTEGRATION POINT 2, activation: [`switch_to`] is what a scheduler's context switch does for
//! memory. It pins the CPU (`CpuPin`) and calls `AddressSpace::activate`, which joins the address
//! space's active CPU set (the CPUs its shootdowns interrupt), flushes a stale tag, loads the root
//! through `Platform::load_root`, and only then leaves the previous address space's active set.
//! Switching to no address space is `AddressSpace::deactivate`: `Platform::load_kernel_root`
//! first, then leave. The crate keeps which address space each CPU runs, and holds it alive while
//! it is loaded, so the kernel keeps no per-CPU record of its own: [`current`] asks the crate.
//! (The root already maps the kernel: `Platform::prepare_root` put the kernel's upper half into it
//! when the crate made it, on x86_64; on aarch64 the kernel runs from TTBR1_EL1.)
//!
//! INTEGRATION POINT 3, page faults: the architecture's fault handler (x86_64 #PF, aarch64 data
//! abort) decodes the fault with the crate's kit (`kit::x86`, `kit::aarch64_esr`) and calls
//! [`page_fault`] with the faulting address and access; it forwards to the current address
//! space's `AddressSpace::page_fault`, which commits the VMO page and maps it. On CPU 0 the
//! current address space may also be the single-CPU kit scenario's, on a platform of its own
//! ([`set_single_cpu_platform`]).
//!
//! The scenarios run at kernel privilege on the user mappings (see `arch` for why that works:
//! x86_64 leaves CR4.SMAP off, aarch64 leaves PSTATE.PAN off); [`load`] and [`store`] are their
//! user-memory accessors, which return the crate's [`FaultError`] instead of crashing when a
//! fault cannot be resolved.

use crate::arch;
use crate::platform::{KernelPlatform, COUNTERS};
use crate::sync::IrqSpinLock;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use zx_vm::platform::CpuPin;
use zx_vm::vmar::{Access, FaultError};
use zx_vm::{AddressSpace, Platform};

/// A second platform, for CPU 0 only: the single-CPU kit scenario's `SingleCpu`, whose `Tlb` (and
/// so whose record of the address space CPU 0 runs) is its own. While it is set, a fault on CPU 0
/// that `KernelPlatform`'s record does not claim goes to the address space this platform records.
static SINGLE_CPU: IrqSpinLock<Option<Arc<dyn Platform>>> = IrqSpinLock::new(None);

/// The faults resolved through [`SINGLE_CPU`]'s address space.
pub static SINGLE_CPU_FAULTS: AtomicU64 = AtomicU64::new(0);

/// Sets (or clears) the single-CPU platform whose address space CPU 0 may run.
pub fn set_single_cpu_platform(platform: Option<Arc<dyn Platform>>) {
    let previous = core::mem::replace(&mut *SINGLE_CPU.lock(), platform);
    // Dropped outside the lock (the scenario still holds the platform: never the last one).
    drop(previous);
}

/// The address space CPU 0 runs on the single-CPU platform, if any, when `va` is in its range.
fn single_cpu_current(va: u64) -> Option<Arc<AddressSpace>> {
    if arch::cpu_index() != 0 {
        return None;
    }
    let platform = SINGLE_CPU.lock().clone()?;
    let aspace = AddressSpace::current(&CpuPin::new(&*platform))?;
    let (base, size) = aspace.user_range();
    (base..base + size).contains(&va).then_some(aspace)
}

/// Switches the calling CPU to `next` (or to no user address space).
pub fn switch_to(next: Option<&Arc<AddressSpace>>) {
    match next {
        Some(next) => {
            if next.asid() == 0 {
                COUNTERS
                    .untagged_activations
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                COUNTERS.tagged_activations.fetch_add(1, Ordering::Relaxed);
            }
            // Pinned on the address space's own platform (a contract test's stand-in forwards to
            // `KernelPlatform` and shares its `Tlb`).
            let pin = CpuPin::new(&**next.platform());
            // SAFETY: the kernel stays mapped under every root the crate loads: on x86_64
            // `prepare_root` copied the kernel's PML4 slot into it, on aarch64 the kernel runs
            // from TTBR1_EL1, which the switch leaves alone. This CPU loads user roots only here
            // and in the `None` arm (the negative control's raw root is not a crate address
            // space, and goes back to the kernel root before anything else runs). The pin was
            // made on `next`'s platform.
            unsafe { next.activate(&pin) };
        }
        None => {
            let pin = CpuPin::new(&KernelPlatform);
            // SAFETY: as above for the kernel's mappings (the kernel root maps the kernel); the
            // caller touches no user address until it switches to an address space again (a
            // stray access would fault with no current address space, and fail cleanly).
            unsafe { AddressSpace::deactivate(&pin) };
        }
    }
}

/// The calling CPU's user address space (the crate's record).
pub fn current() -> Option<Arc<AddressSpace>> {
    AddressSpace::current(&CpuPin::new(&KernelPlatform))
}

/// Resolves a fault at `va` through the current address space. Called by the architecture's
/// fault handler with interrupts disabled.
pub fn page_fault(va: u64, access: Access) -> Result<(), FaultError> {
    // Lock-free: the crate's per-CPU record is an atomic pointer that only this CPU changes, so
    // the fault handler may read it whatever it interrupted. The reference it takes cannot be
    // the last (the record holds one), so dropping it here tears nothing down.
    if let Some(aspace) = current() {
        let result = aspace.page_fault(va, access);
        if result.is_ok() {
            COUNTERS.page_faults.fetch_add(1, Ordering::Relaxed);
        }
        return result;
    }
    // The single-CPU platform's address space (the same references argument holds: its platform
    // and its record each keep one).
    let aspace = single_cpu_current(va).ok_or(FaultError::NotMapped)?;
    let result = aspace.page_fault(va, access);
    if result.is_ok() {
        SINGLE_CPU_FAULTS.fetch_add(1, Ordering::Relaxed);
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
