//! A walk through `zx_vmar_op_range(ZX_VMAR_OP_DECOMMIT)` on the simulated machine: create a VMO,
//! map it into two address spaces on two CPUs, touch it, decommit part of it, and show what
//! happened to pages, translations and frames.
//!
//! Run: `cargo run --example demo` (both page-table formats), or add `-- x86_64` / `-- aarch64`.

use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{CounterSnapshot, SimConfig, SimMachine};
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
    // Each format runs the way its hardware invalidates: aarch64 by broadcast TLBI ...IS (no IPIs),
    // x86_64 by a local flush plus an IPI to each other CPU where the address space is active.
    let broadcast = format == Format::Aarch64;
    let machine = SimMachine::new(SimConfig {
        frames: 4096,
        cpus: 2,
        poison_freed: true,
        broadcast,
        ..SimConfig::default()
    });
    if broadcast {
        println!("invalidation: broadcast to every CPU (TLBI ...IS), as on aarch64");
    } else {
        println!("invalidation: local flush plus IPIs to other CPUs, as on x86_64");
    }
    let platform: Arc<dyn Platform> = machine.clone();
    let a = Process::new(platform.clone(), format).expect("process A");
    let b = Process::new(platform, format).expect("process B");

    println!("create a {PAGES}-page VMO and map it in two processes");
    let mut vmo = 0;
    check(
        &format!("zx_vmo_create({} KiB)", PAGES * PAGE_SIZE / 1024),
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
    let ipis_before: Vec<u64> = (0..2).map(|cpu| machine.ipis_received(cpu)).collect();
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
    let ipi_targets: Vec<String> = (0..2)
        .filter(|&cpu| machine.ipis_received(cpu) > ipis_before[cpu])
        .map(|cpu| format!("CPU {cpu}"))
        .collect();
    println!(
        "  committed now {} KiB; frames freed {}; shootdown rounds {} for 1 call",
        committed(&a, vmo) / 1024,
        delta.frames_freed,
        delta.shootdowns,
    );
    println!(
        "  IPIs {}{}; single-page invalidations {} (summed over CPUs), full flushes {}",
        delta.ipis,
        if ipi_targets.is_empty() {
            String::new()
        } else {
            format!(" (to {})", ipi_targets.join(", "))
        },
        delta.page_invalidations,
        delta.full_invalidations
    );

    println!("both CPUs read every page again");
    let (mut zero, mut kept) = ([0u64; 2], [0u64; 2]);
    for page in 0..PAGES {
        let expected = if (first..first + count).contains(&page) {
            0
        } else {
            0x1000 + page
        };
        for (i, (cpu, addr)) in [(&cpu0, addr_a), (&cpu1, addr_b)].into_iter().enumerate() {
            let value = cpu.load(addr + page * PAGE_SIZE).expect("load");
            assert_eq!(value, expected);
            if value == 0 {
                zero[i] += 1;
            } else if value == 0x1000 + page {
                kept[i] += 1;
            }
        }
    }
    println!(
        "  pages reading 0: {} in A, {} in B; pages keeping their data: {} in A, {} in B",
        zero[0], zero[1], kept[0], kept[1]
    );

    println!("a failed call");
    let before = machine.counters();
    let committed_before = committed(&a, vmo);
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
    let after = machine.counters().since(&before);
    let committed_after = committed(&a, vmo);
    println!(
        "  committed {} KiB before, {} KiB after; frames freed {}, shootdown rounds {}, IPIs {}, \
         invalidations {}",
        committed_before / 1024,
        committed_after / 1024,
        after.frames_freed,
        after.shootdowns,
        after.ipis,
        after.page_invalidations + after.full_invalidations
    );
    assert_eq!(committed_after, committed_before);
    assert_eq!(
        after,
        CounterSnapshot::default(),
        "a failed call changed counters"
    );

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
