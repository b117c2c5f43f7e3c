//! A bare-metal test kernel for `zx-vm`, and the worked example of integrating the crate.
//!
//! It boots on QEMU (x86_64 through PVH, aarch64 on the `virt` machine) with several CPUs, gives the
//! crate a real [`zx_vm::Platform`], and runs the scenarios in [`scenarios`]: a VMO mapped in two
//! address spaces on different CPUs, decommitted while the other CPUs keep reading; a VMO
//! snapshotted while the other CPUs keep writing it ([`snapshot_scenario`]); 2 MiB leaves (a
//! physical VMO and a large-page VMO) split by protect, DECOMMIT and unmap while the other CPUs
//! use them ([`large_scenario`]); a negative
//! control that shows the harness can see a stale TLB entry; the crate's single-CPU integration
//! kit on the boot CPU ([`kit_scenario`]); and the host's contract tests, run on real CPUs. Before
//! them the boot CPU checks the translation regime with the crate's `arch::regime`. The run ends
//! with QEMU's exit status: success only if every check passed.
//!
//! Where the crate meets the kernel (search for "INTEGRATION POINT"):
//! 1. [`platform`]: the `Platform` implementation (frames, direct map, CPU id, IPIs, TLB).
//! 2. [`mm::switch_to`]: activation on context switch (`AddressSpace::activate`/`deactivate`).
//! 3. [`mm::page_fault`]: page faults routed to `AddressSpace::page_fault` from the exception
//!    handlers (`x86_64/interrupts.rs`, `aarch64/exceptions.rs`).
//! 4. [`platform::KernelPlatform::handle_shootdown_ipi`]: the IPI handler's body,
//!    `Tlb::handle_ipi`.
//!
//! Layout: `main.rs` (entry glue, `kmain`, panic), `platform.rs`, `mm.rs`, `smp.rs` (per-CPU state,
//! cross-CPU jobs), `bitmap.rs` (the page bitmap of both allocators), `frames.rs` (frame
//! allocator), `forward.rs` (the one forwarding platform the scenarios wrap the kernel's in),
//! `heap.rs` (global allocator), `sync.rs` (interrupt-safe spinlock), `console.rs`, `scenarios.rs`,
//! `snapshot_scenario.rs`, `large_scenario.rs`, `kit_scenario.rs`, `contract.rs` (the host contract tests' machine, on
//! real CPUs), and one directory per architecture.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

#[macro_use]
mod console;
mod bitmap;
mod contract;
mod forward;
mod frames;
mod heap;
mod kit_scenario;
mod large_scenario;
mod mm;
mod platform;
mod scenarios;
mod smp;
mod snapshot_scenario;
mod sync;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

use core::sync::atomic::{AtomicBool, Ordering};

/// The boot CPU's kernel main, entered from the architecture's boot code once memory, interrupts
/// and every CPU are up.
fn kmain() -> ! {
    println!(
        "zx-vm test kernel: {}, {} CPUs online, {} MiB in the frame pool{}{}{}",
        arch::NAME,
        smp::online_count(),
        (frames::FRAMES.total() * 4096) >> 20,
        if cfg!(feature = "break-remote-flush") {
            ", zx-vm built with break-remote-flush"
        } else {
            ""
        },
        if cfg!(feature = "break-write-protect") {
            ", zx-vm built with break-write-protect"
        } else {
            ""
        },
        if cfg!(feature = "break-split") {
            ", zx-vm built with break-split"
        } else {
            ""
        }
    );
    println!("TLB tags: {}", arch::tags_summary());
    let passed = scenarios::run_all();
    let c = &platform::COUNTERS;
    println!(
        "activations: {} tagged, {} untagged",
        c.tagged_activations.load(Ordering::Relaxed),
        c.untagged_activations.load(Ordering::Relaxed)
    );
    if passed {
        println!("RESULT: PASS");
    } else {
        println!("RESULT: FAIL");
    }
    arch::exit(passed)
}

static PANICKED: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::interrupts_disable();
    if PANICKED.swap(true, Ordering::SeqCst) {
        // Another CPU is already reporting; stop here.
        loop {
            core::hint::spin_loop();
        }
    }
    console::print_panic(format_args!(
        "\nPANIC on CPU {}: {info}\nRESULT: FAIL\n",
        arch::cpu_index()
    ));
    arch::exit(false)
}
