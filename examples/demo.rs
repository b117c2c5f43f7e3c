//! A walk through `zx_vmar_op_range(ZX_VMAR_OP_DECOMMIT)` on the simulated machine: create a VMO,
//! map it into two address spaces on two CPUs, touch it, decommit part of it, and show what
//! happened to pages, translations and frames.
//!
//! Run: `cargo run --example demo` (both page-table formats), or add `-- x86_64` / `-- aarch64`.

use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::{Platform, Process};

const PAGES: u64 = 64;

fn check(what: &str, status: zx_status_t) {
    println!("  {what:<58} -> {}", status_name(status));
    assert_eq!(status, ZX_OK, "{what}");
}

fn committed(process: &Process, vmo: zx_handle_t) -> u64 {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(process, vmo, &mut info), ZX_OK);
    info.committed_bytes
}

fn run(format: Format) {
    println!("== page tables: {} ==", format.name());
    let machine = SimMachine::new(SimConfig {
        frames: 4096,
        cpus: 2,
        poison_freed: true,
        ..SimConfig::default()
    });
    let platform: Arc<dyn Platform> = machine.clone();
    let a = Process::new(platform.clone(), format).expect("process A");
    let b = Process::new(platform, format).expect("process B");

    println!("create a {PAGES}-page VMO and map it in two processes");
    let mut vmo = 0;
    check(
        "zx_vmo_create(256 KiB)",
        zx_vmo_create(&a, PAGES * PAGE_SIZE, 0, &mut vmo),
    );
    let shared = a.handle(vmo).expect("vmo handle");
    let vmo_in_b = b
        .add_handle(shared.object, shared.rights)
        .expect("handle in B");
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let (mut addr_a, mut addr_b) = (0, 0);
    check(
        "zx_vmar_map(A root, READ|WRITE)",
        zx_vmar_map(
            &a,
            a.root_vmar_handle(),
            rw,
            0,
            vmo,
            0,
            PAGES * PAGE_SIZE,
            &mut addr_a,
        ),
    );
    check(
        "zx_vmar_map(B root, READ|WRITE)",
        zx_vmar_map(
            &b,
            b.root_vmar_handle(),
            rw,
            0,
            vmo_in_b,
            0,
            PAGES * PAGE_SIZE,
            &mut addr_b,
        ),
    );
    println!("  A maps it at {addr_a:#x}, B at {addr_b:#x}");

    println!("CPU 0 runs A and writes every page; CPU 1 runs B and reads them");
    let (cpu0, cpu1) = (machine.cpu(0), machine.cpu(1));
    cpu0.switch_to(Some(a.aspace()));
    cpu1.switch_to(Some(b.aspace()));
    for page in 0..PAGES {
        cpu0.store(addr_a + page * PAGE_SIZE, 0x1000 + page)
            .expect("store");
    }
    for page in 0..PAGES {
        assert_eq!(
            cpu1.load(addr_b + page * PAGE_SIZE).expect("load"),
            0x1000 + page
        );
    }
    let touched = machine.counters();
    println!(
        "  committed: {} KiB; page faults {}; TLB entries: CPU 0 {}, CPU 1 {}; frames in use {}",
        committed(&a, vmo) / 1024,
        touched.page_faults,
        cpu0.tlb_len(),
        cpu1.tlb_len(),
        machine.frames_in_use()
    );

    let (first, count) = (8, 16);
    cpu0.enter(); // the syscall runs on CPU 0
    println!(
        "decommit pages {first}..{} through A's root VMAR",
        first + count
    );
    check(
        "zx_vmar_op_range(A root, ZX_VMAR_OP_DECOMMIT)",
        zx_vmar_op_range(
            &a,
            a.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            addr_a + first * PAGE_SIZE,
            count * PAGE_SIZE,
            0,
            0,
        ),
    );
    let delta = machine.counters().since(&touched);
    println!(
        "  committed now {} KiB; frames freed {}; shootdown rounds {} (one per call); IPIs {} \
         (to CPU 1, where B runs); single-page invalidations {}, full flushes {}",
        committed(&a, vmo) / 1024,
        delta.frames_freed,
        delta.shootdowns,
        delta.ipis,
        delta.page_invalidations,
        delta.full_invalidations
    );

    println!("both CPUs read the range again");
    for page in 0..PAGES {
        let expected = if (first..first + count).contains(&page) {
            0
        } else {
            0x1000 + page
        };
        assert_eq!(
            cpu0.load(addr_a + page * PAGE_SIZE).expect("load"),
            expected
        );
        assert_eq!(
            cpu1.load(addr_b + page * PAGE_SIZE).expect("load"),
            expected
        );
    }
    println!(
        "  decommitted pages read 0 in A and in B; the other {} pages kept their data",
        PAGES - count
    );

    println!("a failed call changes nothing");
    let before = machine.counters();
    let status = zx_vmar_op_range(
        &a,
        a.root_vmar_handle(),
        ZX_VMAR_OP_DECOMMIT,
        addr_a,
        (PAGES + 1) * PAGE_SIZE,
        0,
        0,
    );
    println!(
        "  decommit one page past the mapping -> {}",
        status_name(status)
    );
    assert_eq!(status, ZX_ERR_BAD_STATE);
    assert_eq!(machine.counters().since(&before).frames_freed, 0);

    cpu0.switch_to(None);
    cpu1.switch_to(None);
    drop((a, b));
    println!(
        "processes gone: frames still in use {}\n",
        machine.frames_in_use()
    );
    assert_eq!(machine.frames_in_use(), 0);
}

fn main() {
    let formats: Vec<Format> = match std::env::args().nth(1).as_deref() {
        None => Format::ALL.to_vec(),
        Some("x86_64") => vec![Format::X86_64],
        Some("aarch64") => vec![Format::Aarch64],
        Some(other) => {
            eprintln!("unknown format {other:?}: use x86_64 or aarch64");
            std::process::exit(2);
        }
    };
    for format in formats {
        run(format);
    }
}
