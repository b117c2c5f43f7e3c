//! Several CPUs: simulated CPUs on threads of their own read and write while others decommit,
//! resize or snapshot, on both page-table formats and in both invalidation modes (x86_64-style
//! IPIs, aarch64-style broadcast). The counts of shootdowns, IPIs and flushes are pinned, and so
//! is the tag logic.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{SimConfig, SimMachine, FREED_POISON};
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;
use zx_vm::{KernelObject, Platform, Process, Rights};

fn smp_machine(cpus: usize, tags: u16, broadcast: bool) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames: 8192,
        cpus,
        poison_freed: true,
        tags,
        broadcast,
    })
}

fn new_process(machine: &Arc<SimMachine>, format: Format) -> Arc<Process> {
    let platform: Arc<dyn Platform> = machine.clone();
    Process::new(platform, format).unwrap()
}

/// Two processes with one VMO of [`PAGES`] pages (made with `options`) mapped read-write in each:
/// the processes, the VMO's handle in the first, and the two mappings' addresses.
fn shared_vmo(
    machine: &Arc<SimMachine>,
    format: Format,
    options: u32,
) -> (Arc<Process>, Arc<Process>, zx_handle_t, u64, u64) {
    let a = new_process(machine, format);
    let b = new_process(machine, format);
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(&a, PAGES * PAGE_SIZE, options, &mut vmo),
        ZX_OK
    );
    let object = a.handle(vmo).unwrap();
    let vmo_b = b.add_handle(object.object, object.rights).unwrap();
    let addr_a = map_rw(&a, a.root_vmar_handle(), vmo, 0, PAGES);
    let addr_b = map_rw(&b, b.root_vmar_handle(), vmo_b, 0, PAGES);
    (a, b, vmo, addr_a, addr_b)
}

/// Sets the flag when dropped, even by a panic, so that no thread waits for a dead one.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PAGES: u64 = 16;
/// Pages `PROTECTED..PAGES` are never decommitted: no write to them may ever be lost.
const PROTECTED: u64 = 12;

/// Three CPUs read and write their own word of every page of a VMO mapped in two address spaces
/// while a fourth decommits random ranges (through either address space or the VMO) and zeroes
/// random byte ranges (`ZX_VMO_OP_ZERO`). A CPU must read back, in each page, either the last
/// value it wrote there or zero (the page was decommitted or zeroed since), never another value
/// and never the poison of a freed frame; in the protected pages, always the last value.
fn stress(format: Format, broadcast: bool, rounds: u64, decommits: u64) {
    stress_on(
        smp_machine(4, 8, broadcast),
        format,
        broadcast,
        rounds,
        decommits,
    );
}

/// [`stress`] on a machine with a shared zero page: the workers' loads of decommitted pages map
/// it, and each store replaces it, shooting its read-only translations down on every CPU.
fn stress_with_zero_page(format: Format, broadcast: bool, rounds: u64, decommits: u64) {
    let machine = smp_machine(4, 8, broadcast);
    machine.enable_zero_page();
    stress_on(machine, format, broadcast, rounds, decommits);
}

fn stress_on(
    machine: Arc<SimMachine>,
    format: Format,
    broadcast: bool,
    rounds: u64,
    decommits: u64,
) {
    let (a, b, vmo, addr_a, addr_b) = shared_vmo(&machine, format, 0);

    let start = Arc::new(Barrier::new(4));
    let done = Arc::new(AtomicBool::new(false));
    // Accesses made by the workers, so the decommitter can wait for them between calls.
    let accesses = Arc::new(AtomicU64::new(0));
    let spaces = [(0usize, &a, addr_a), (1, &a, addr_a), (2, &b, addr_b)];
    let workers = spawn_workers(
        &machine,
        format,
        spaces,
        (&start, &done, &accesses),
        rounds,
        false,
    );
    let decommitter = {
        let (machine, a, b, start, done, accesses) = (
            machine.clone(),
            a.clone(),
            b.clone(),
            start.clone(),
            done.clone(),
            accesses.clone(),
        );
        std::thread::spawn(move || {
            let cpu = machine.cpu(3);
            let _attached = cpu.attach();
            let _done = SetOnDrop(done);
            start.wait();
            let mut rng = Rng(42);
            for call in 0..decommits {
                let first = rng.below(PROTECTED);
                let count = 1 + rng.below(PROTECTED - first);
                let status = match call % 4 {
                    0 => zx_vmar_op_range(
                        &a,
                        a.root_vmar_handle(),
                        ZX_VMAR_OP_DECOMMIT,
                        addr_a + first * PAGE_SIZE,
                        count * PAGE_SIZE,
                        0,
                        0,
                    ),
                    1 => zx_vmar_op_range(
                        &b,
                        b.root_vmar_handle(),
                        ZX_VMAR_OP_DECOMMIT,
                        addr_b + first * PAGE_SIZE,
                        count * PAGE_SIZE,
                        0,
                        0,
                    ),
                    2 => zx_vmo_op_range(
                        &a,
                        vmo,
                        ZX_VMO_OP_DECOMMIT,
                        first * PAGE_SIZE,
                        count * PAGE_SIZE,
                        0,
                        0,
                    ),
                    // A byte range inside the same pages: whole pages go back, the ends are
                    // written over.
                    _ => {
                        // Whole words, so that a word reads its last value or zero.
                        let (head, tail) =
                            (rng.below(PAGE_SIZE / 16) * 8, rng.below(PAGE_SIZE / 16) * 8);
                        zx_vmo_op_range(
                            &a,
                            vmo,
                            ZX_VMO_OP_ZERO,
                            first * PAGE_SIZE + head,
                            count * PAGE_SIZE - head - tail,
                            0,
                            0,
                        )
                    }
                };
                assert_eq!(status, ZX_OK);
                // Let the workers touch pages again between calls, however busy the machine is.
                let seen = accesses.load(Ordering::Relaxed);
                while accesses.load(Ordering::Relaxed) < seen + 48 {
                    cpu.poll();
                    std::thread::yield_now();
                }
            }
        })
    };
    for worker in workers {
        assert_eq!(worker.join().expect("worker"), 0, "no access past the end");
    }
    decommitter.join().expect("decommitter");
    let counters = machine.counters();
    // Most calls found committed pages: the CPUs really raced with the shootdowns.
    assert!(counters.shootdowns >= decommits / 4, "{counters:?}");
    if broadcast {
        assert_eq!(counters.ipis, 0, "broadcast invalidation needs no IPIs");
    }
    drop((a, b));
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn stress_x86_64_ipis_zero_page() {
    stress_with_zero_page(Format::X86_64, false, 2000, 100);
}

#[test]
fn stress_aarch64_broadcast_zero_page() {
    stress_with_zero_page(Format::Aarch64, true, 2000, 100);
}

#[test]
fn stress_x86_64_ipis() {
    stress(Format::X86_64, false, 5_000, 600);
}

#[test]
fn stress_aarch64_broadcast() {
    stress(Format::Aarch64, true, 5_000, 600);
}

#[test]
fn stress_aarch64_ipis() {
    stress(Format::Aarch64, false, 5_000, 600);
}

#[test]
fn stress_x86_64_broadcast() {
    stress(Format::X86_64, true, 5_000, 600);
}

/// One shootdown round per call whatever the page count; single pages up to the threshold, then
/// one full flush; IPIs only to the CPUs where the address space is active.
#[test]
fn one_round_per_call_and_ipis_only_where_active() {
    for format in Format::ALL {
        let machine = smp_machine(4, 8, false);
        let a = new_process(&machine, format);
        let b = new_process(&machine, format);
        let vmo = patterned_vmo(&a, 64);
        let addr = map_rw(&a, a.root_vmar_handle(), vmo, 0, 64);
        // CPUs 0 and 1 run A, CPU 2 runs B, CPU 3 runs nothing.
        let cpus: Vec<_> = (0..4).map(|i| machine.cpu(i)).collect();
        cpus[0].switch_to(Some(a.aspace()));
        cpus[1].switch_to(Some(a.aspace()));
        cpus[2].switch_to(Some(b.aspace()));
        for pages in [1u64, 16, 32, 33, 64] {
            for cpu in &cpus[..2] {
                for page in 0..pages {
                    cpu.load(addr + page * PAGE_SIZE).unwrap();
                }
            }
            cpus[0].enter();
            let before = machine.counters();
            let status = zx_vmar_op_range(
                &a,
                a.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                addr,
                pages * PAGE_SIZE,
                0,
                0,
            );
            assert_eq!(status, ZX_OK);
            let delta = machine.counters().since(&before);
            assert_eq!(delta.shootdowns, 1, "{format:?} {pages} pages");
            assert_eq!(
                delta.ipis, 1,
                "{format:?} {pages} pages: only CPU 1 is interrupted"
            );
            if pages as usize <= zx_vm::tlb::FULL_FLUSH_THRESHOLD {
                assert_eq!(
                    delta.page_invalidations,
                    2 * pages,
                    "{format:?} {pages} pages, on 2 CPUs"
                );
                assert_eq!(delta.full_invalidations, 0, "{format:?} {pages} pages");
            } else {
                assert_eq!(delta.page_invalidations, 0, "{format:?} {pages} pages");
                assert_eq!(
                    delta.full_invalidations, 2,
                    "{format:?} {pages} pages: one per CPU"
                );
            }
            for cpu in &cpus[..2] {
                for page in 0..pages {
                    assert!(cpu.tlb_entry(addr + page * PAGE_SIZE).is_none());
                }
            }
        }
        assert_eq!(machine.ipis_received(0), 0);
        assert_eq!(
            machine.ipis_received(2),
            0,
            "{format:?}: B's CPU is never interrupted for A"
        );
        assert_eq!(
            machine.ipis_received(3),
            0,
            "{format:?}: an idle CPU is never interrupted"
        );
        for cpu in &cpus {
            cpu.switch_to(None);
        }
    }
}

/// A CPU that ran the address space and moved on is not interrupted; it flushes the tag when it
/// comes back, and then reads the decommitted page as zero.
#[test]
fn a_cpu_that_left_flushes_when_it_returns() {
    for format in Format::ALL {
        let machine = smp_machine(2, 8, false);
        let a = new_process(&machine, format);
        let b = new_process(&machine, format);
        let vmo = patterned_vmo(&a, 2);
        let addr = map_rw(&a, a.root_vmar_handle(), vmo, 0, 2);
        let cpu = machine.cpu(1);
        cpu.switch_to(Some(a.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        assert_eq!(cpu.load(addr + PAGE_SIZE).unwrap(), pattern(1, 0));
        cpu.switch_to(Some(b.aspace()));
        assert!(
            cpu.tlb_len() > 0,
            "A's translations stay cached under its tag"
        );

        machine.cpu(0).enter();
        let before = machine.counters();
        assert_eq!(
            zx_vmar_op_range(
                &a,
                a.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                addr,
                PAGE_SIZE,
                0,
                0
            ),
            ZX_OK
        );
        let delta = machine.counters().since(&before);
        assert_eq!(delta.ipis, 0, "{format:?}: CPU 1 does not run A");
        assert_eq!(
            delta.frames_freed, 1,
            "{format:?}: the page; page 1 keeps the tables"
        );

        // Back to A: the tag is flushed on the way in (the machine checks no stale entry survives).
        let before = machine.counters();
        cpu.switch_to(Some(a.aspace()));
        let delta = machine.counters().since(&before);
        assert_eq!(delta.full_invalidations, 1, "{format:?} {delta:?}");
        assert_eq!(cpu.load(addr).unwrap(), 0, "{format:?}");
        assert_eq!(cpu.load(addr + PAGE_SIZE).unwrap(), pattern(1, 0));
        // A second return without a decommit in between keeps the tag's translations.
        cpu.switch_to(Some(b.aspace()));
        let before = machine.counters();
        cpu.switch_to(Some(a.aspace()));
        assert_eq!(
            machine.counters().since(&before).full_invalidations,
            0,
            "{format:?}"
        );
        cpu.switch_to(None);
    }
}

/// Tags run out into "untagged", which flushes at every activation, and a tag that comes back
/// from a dead address space is flushed before its new owner runs.
#[test]
fn tags_run_out_and_are_reused_safely() {
    for format in Format::ALL {
        let machine = smp_machine(2, 2, false);
        let cpu = machine.cpu(0);
        let processes: Vec<_> = (0..4).map(|_| new_process(&machine, format)).collect();
        let tags: Vec<u16> = processes.iter().map(|p| p.aspace().asid()).collect();
        assert_eq!(tags, [1, 2, 0, 0], "{format:?}");
        let mut addrs = Vec::new();
        for (i, p) in processes.iter().enumerate() {
            let vmo = patterned_vmo(p, 1);
            assert_eq!(zx_vmo_write(p, vmo, &(i as u64).to_le_bytes(), 0), ZX_OK);
            addrs.push(map_rw(p, p.root_vmar_handle(), vmo, 0, 1));
        }
        // Every process sees its own page through the shared or untagged tags.
        for _ in 0..2 {
            for (i, p) in processes.iter().enumerate() {
                cpu.switch_to(Some(p.aspace()));
                assert_eq!(
                    cpu.load(addrs[i]).unwrap(),
                    i as u64,
                    "{format:?} process {i}"
                );
            }
        }
        // Drop the process with tag 1 while CPU 0 still caches its translations.
        cpu.switch_to(Some(processes[1].aspace()));
        let mut processes = processes;
        let dead = processes.remove(0);
        drop(dead);
        let newcomer = new_process(&machine, format);
        assert_eq!(newcomer.aspace().asid(), 1, "{format:?}: the tag is reused");
        let vmo = patterned_vmo(&newcomer, 1);
        let addr = map_rw(&newcomer, newcomer.root_vmar_handle(), vmo, 0, 1);
        let before = machine.counters();
        cpu.switch_to(Some(newcomer.aspace()));
        assert_eq!(
            machine.counters().since(&before).full_invalidations,
            1,
            "{format:?}: flushed first"
        );
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        cpu.switch_to(None);
    }
}

/// Two CPUs that decommit at each other's address space at once, taking IPIs only from inside
/// their own wait loops (as with interrupts disabled), both finish.
#[test]
fn mutual_shootdowns_do_not_deadlock() {
    for format in Format::ALL {
        let machine = smp_machine(2, 8, false);
        let p = new_process(&machine, format);
        let vmo = patterned_vmo(&p, 8);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 8);
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let (machine, p, start) = (machine.clone(), p.clone(), start.clone());
                std::thread::spawn(move || {
                    let cpu = machine.cpu(i);
                    let _attached = cpu.attach();
                    cpu.switch_to(Some(p.aspace()));
                    // From here on IPIs are only taken inside the crate's own wait loop.
                    cpu.set_interrupts(false);
                    start.wait();
                    for round in 0..500u64 {
                        let page = (round + i as u64 * 4) % 8;
                        // Touch (mapping the page on both CPUs' side), then decommit.
                        cpu.store(addr + page * PAGE_SIZE, round).unwrap();
                        let status = zx_vmar_op_range(
                            &p,
                            p.root_vmar_handle(),
                            ZX_VMAR_OP_DECOMMIT,
                            addr + page * PAGE_SIZE,
                            PAGE_SIZE,
                            0,
                            0,
                        );
                        assert_eq!(status, ZX_OK);
                    }
                    cpu.set_interrupts(true);
                    cpu.switch_to(None);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(
            machine.counters().ipis > 0,
            "{format:?}: the CPUs did interrupt each other"
        );
    }
}

/// Page faults, maps, unmaps, protects and decommits on the same VMO and address space from four
/// CPUs at once: nothing deadlocks, nothing reads a freed frame, every status is one the call may
/// return, and every frame comes back at the end.
#[test]
fn the_object_model_under_concurrency() {
    for (format, broadcast) in [
        (Format::X86_64, false),
        (Format::Aarch64, true),
        (Format::X86_64, true),
        (Format::Aarch64, false),
    ] {
        if std::env::var("ONLY").is_ok_and(|only| only != format!("{format:?}{broadcast}")) {
            continue;
        }
        let machine = smp_machine(4, 4, broadcast);
        let p = new_process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, PAGES);
        let shared = map_rw(&p, root, vmo, 0, PAGES);
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4usize)
            .map(|i| {
                let (machine, p, start) = (machine.clone(), p.clone(), start.clone());
                std::thread::spawn(move || {
                    let cpu = machine.cpu(i);
                    let _attached = cpu.attach();
                    cpu.switch_to(Some(p.aspace()));
                    start.wait();
                    let mut rng = Rng(7 + i as u64);
                    for _ in 0..1_500 {
                        let page = rng.below(PAGES);
                        let va = shared + page * PAGE_SIZE + 8 * i as u64;
                        match rng.below(7) {
                            0 | 1 => {
                                let value = cpu.load(va).unwrap();
                                assert_ne!(value, FREED_POISON, "{format:?}");
                            }
                            // A store may meet a page another CPU just made read-only.
                            2 => {
                                let _ = cpu.store(va, 1);
                            }
                            3 => {
                                let perms = if rng.below(2) == 0 {
                                    ZX_VM_PERM_READ
                                } else {
                                    ZX_VM_PERM_READ | ZX_VM_PERM_WRITE
                                };
                                let status = zx_vmar_protect(
                                    &p,
                                    root,
                                    perms,
                                    shared + page * PAGE_SIZE,
                                    PAGE_SIZE,
                                );
                                assert_eq!(status, ZX_OK, "{format:?}");
                            }
                            4 => {
                                let status = zx_vmar_op_range(
                                    &p,
                                    root,
                                    ZX_VMAR_OP_DECOMMIT,
                                    shared + page * PAGE_SIZE,
                                    PAGE_SIZE,
                                    0,
                                    0,
                                );
                                assert_eq!(status, ZX_OK, "{format:?}");
                            }
                            5 => {
                                // A private mapping of the same VMO: touch it and unmap it.
                                let mut addr = 0;
                                let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
                                let status = zx_vmar_map(
                                    &p,
                                    root,
                                    rw,
                                    0,
                                    vmo,
                                    page * PAGE_SIZE,
                                    PAGE_SIZE,
                                    &mut addr,
                                );
                                assert_eq!(status, ZX_OK, "{format:?}");
                                assert_ne!(cpu.load(addr).unwrap(), FREED_POISON);
                                assert_eq!(zx_vmar_unmap(&p, root, addr, PAGE_SIZE), ZX_OK);
                                // Another CPU may already have mapped something at the same place.
                                if let Ok(value) = cpu.load(addr) {
                                    assert_ne!(value, FREED_POISON, "{format:?}");
                                }
                            }
                            _ => {
                                let status = zx_vmo_op_range(
                                    &p,
                                    vmo,
                                    ZX_VMO_OP_COMMIT,
                                    0,
                                    PAGES * PAGE_SIZE,
                                    0,
                                    0,
                                );
                                assert_eq!(status, ZX_OK, "{format:?}");
                            }
                        }
                    }
                    cpu.switch_to(None);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(p);
        assert_eq!(machine.frames_in_use(), 0, "{format:?}");
    }
}

/// Three CPUs read and write their own word of every page of a resizable VMO mapped in two
/// address spaces while a fourth shrinks it to random byte sizes and grows it back. An access
/// past the end faults `OutOfRange`; any other reads the CPU's last value or zero (the page went
/// with a shrink, or the tail of the last page was zeroed), never another value and never a freed
/// frame: every shrink's shootdown covers every CPU that may cache a page past the new end.
fn resize_stress(format: Format, broadcast: bool, resizes: u64) {
    let machine = smp_machine(4, 8, broadcast);
    let (a, b, vmo, addr_a, addr_b) = shared_vmo(&machine, format, ZX_VMO_RESIZABLE);
    let start = Arc::new(Barrier::new(4));
    let done = Arc::new(AtomicBool::new(false));
    let accesses = Arc::new(AtomicU64::new(0));
    let spaces = [(0usize, &a, addr_a), (1, &a, addr_a), (2, &b, addr_b)];
    let workers = spawn_workers(
        &machine,
        format,
        spaces,
        (&start, &done, &accesses),
        0,
        true,
    );
    let resizer = {
        let (machine, a, start, done, accesses) = (
            machine.clone(),
            a.clone(),
            start.clone(),
            done.clone(),
            accesses.clone(),
        );
        std::thread::spawn(move || {
            let cpu = machine.cpu(3);
            let _attached = cpu.attach();
            let _done = SetOnDrop(done);
            start.wait();
            let mut rng = Rng(7);
            for call in 0..resizes {
                // Whole words, so that a word reads its last value or zero (the bytes past the
                // size in the last page are zeroed).
                let size = if call % 2 == 0 {
                    rng.below(PAGES * PAGE_SIZE / 8) * 8
                } else {
                    PAGES * PAGE_SIZE
                };
                assert_eq!(zx_vmo_set_size(&a, vmo, size), ZX_OK);
                let seen = accesses.load(Ordering::Relaxed);
                while accesses.load(Ordering::Relaxed) < seen + 48 {
                    cpu.poll();
                    std::thread::yield_now();
                }
            }
        })
    };
    let faults: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    resizer.join().expect("resizer");
    // The workers really met the end of the VMO, and the shrinks really shot down.
    assert!(faults > 0, "{format:?}: no access ever went past the end");
    assert!(machine.counters().shootdowns >= resizes / 4);
    drop((a, b));
    assert_eq!(machine.frames_in_use(), 0);
}

/// Spawns the stress workers, one per `(cpu, process, base)`: each reads and writes its own word
/// of random pages of the mapping at `base` until `done` is set and it made at least `rounds`
/// accesses, counting them in `accesses`. A load must read the word's last value or zero (the
/// page was decommitted, zeroed or cut off since), never another value and never a freed frame;
/// in the pages from [`PROTECTED`] on, always the last value unless `resizing`. Only while
/// `resizing` may an access fault, and then only as past the end: each worker returns how many
/// did.
fn spawn_workers(
    machine: &Arc<SimMachine>,
    format: Format,
    spaces: [(usize, &Arc<Process>, u64); 3],
    (start, done, accesses): (&Arc<Barrier>, &Arc<AtomicBool>, &Arc<AtomicU64>),
    rounds: u64,
    resizing: bool,
) -> Vec<std::thread::JoinHandle<u64>> {
    let mut workers = Vec::new();
    for (cpu, process, base) in spaces {
        let (machine, process, start, done, accesses) = (
            machine.clone(),
            process.clone(),
            start.clone(),
            done.clone(),
            accesses.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let cpu_handle = machine.cpu(cpu);
            let _attached = cpu_handle.attach();
            cpu_handle.switch_to(Some(process.aspace()));
            start.wait();
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1));
            let mut last = [0u64; PAGES as usize];
            let (mut round, mut faults) = (0u64, 0u64);
            // Run until the other side is done, and at least `rounds` accesses.
            while round < rounds || !done.load(Ordering::SeqCst) {
                round += 1;
                let page = rng.below(PAGES);
                let va = base + page * PAGE_SIZE + cpu as u64 * 8;
                let expected = last[page as usize];
                match cpu_handle.load(va) {
                    Ok(seen) => {
                        assert_ne!(seen, FREED_POISON, "{format:?} CPU {cpu} read a freed frame");
                        if page >= PROTECTED && !resizing {
                            assert_eq!(seen, expected, "{format:?} CPU {cpu}: write lost in page {page}");
                        } else {
                            assert!(
                                seen == expected || seen == 0,
                                "{format:?} CPU {cpu}: page {page} read {seen:#x}, last wrote {expected:#x}"
                            );
                        }
                    }
                    Err(fault) => {
                        assert!(resizing, "{format:?} CPU {cpu}: {fault:?}");
                        assert_eq!(fault, FaultError::OutOfRange, "{format:?} CPU {cpu}");
                        faults += 1;
                    }
                }
                let value = ((cpu as u64 + 1) << 56) | round;
                match cpu_handle.store(va, value) {
                    Ok(()) => last[page as usize] = value,
                    Err(fault) => assert!(
                        resizing && fault == FaultError::OutOfRange,
                        "{format:?} CPU {cpu}: {fault:?}"
                    ),
                }
                accesses.fetch_add(1, Ordering::Relaxed);
            }
            cpu_handle.switch_to(None);
            faults
        }));
    }
    workers
}

#[test]
fn resize_stress_x86_64_ipis() {
    resize_stress(Format::X86_64, false, 300);
}

#[test]
fn resize_stress_aarch64_broadcast() {
    resize_stress(Format::Aarch64, true, 300);
}

// The snapshot stress: writers on a parent while another CPU snapshots it.

/// A word the snapshot stress stores: the epoch it was stored in (bits 40..), who stored it
/// (bits 24..40) and a count (bits 0..24). Per word and source, later stores are larger.
fn tagged(epoch: u64, source: u64, count: u64) -> u64 {
    (epoch << 40) | (source << 24) | (count & 0xff_ffff)
}

fn epoch_of(value: u64) -> u64 {
    value >> 40
}

fn source_of(value: u64) -> u64 {
    (value >> 24) & 0xffff
}

/// A tagged word, for a failure message.
fn describe(value: u64) -> String {
    if value == 0 {
        return "0 (never written)".into();
    }
    format!(
        "{value:#x} (epoch {}, source {}, #{})",
        epoch_of(value),
        source_of(value),
        value & 0xff_ffff
    )
}

/// Words at the start of each page that the snapshot stress uses: 0 and 1 are the parent
/// writers' (CPUs 0 and 1), 2 and 3 a child's own (2 through CPU 2's mapping of it, 3 through
/// `zx_vmo_write` by the snapshotter). A parent's words 2 and 3 stay zero.
const SNAP_WORDS: usize = 4;

/// One snapshot child, as the stress knows it.
struct Snap {
    /// Its source number (in the tag of the words it writes itself): 16 and up.
    id: u64,
    /// Its handle in the snapshotter's process (closed when it leaves the live list).
    handle: zx_handle_t,
    /// The epoch in which it was made: a store tagged later than this by any other VMO never
    /// shows in it.
    epoch: u64,
    /// Per source that may show in it (the writers of its ancestors): the last epoch whose
    /// stores may.
    caps: std::collections::BTreeMap<u64, u64>,
    /// Its words as read right after the call: words 0 and 1 never change afterwards, and
    /// words 2 and 3 only by its own writes.
    frozen: Vec<[u64; SNAP_WORDS]>,
    /// Its own last store to words 2 and 3 of each page, published once the store is done.
    own: [Vec<AtomicU64>; 2],
}

impl Snap {
    /// Checks word `word` of page `page`, read as `value`: words 0 and 1 are as at the call;
    /// words 2 and 3 as at the call or the child's own (at least `published`, the owner's last
    /// store as loaded before the read; exactly `exact` when the reader is the owner and
    /// stored there).
    fn check(&self, who: &str, page: usize, word: usize, value: u64, published: u64, exact: u64) {
        let frozen = self.frozen[page][word];
        let own = source_of(value) == self.id;
        let ok = match word {
            0 | 1 => value == frozen,
            _ if exact != 0 => value == exact,
            _ if published != 0 => own && value >= published,
            _ => value == frozen || own,
        };
        if ok {
            return;
        }
        let why = if own || value == frozen {
            "the child lost a store of its own".to_string()
        } else {
            match self.caps.get(&source_of(value)) {
                Some(&cap) if epoch_of(value) > cap => format!(
                    "a store made after the snapshot returned shows in it (its source's stores \
                     may show up to epoch {cap}): a translation stayed writable"
                ),
                Some(_) => "it changed since the call".to_string(),
                None => "a store by a VMO that is not its ancestor shows in it".to_string(),
            }
        };
        panic!(
            "{who}: snapshot {} (made in epoch {}): page {page} word {word} reads {}: {why}; at \
             the call it read {}, its own last store there is {}",
            self.id,
            self.epoch,
            describe(value),
            describe(frozen),
            describe(published.max(exact)),
        );
    }

    /// Reads the child with `zx_vmo_read` and checks every word.
    fn check_all(&self, process: &Process) {
        // The owners' stores published before the read: the read sees them, or later ones.
        let published: Vec<[u64; 2]> = (0..PAGES as usize)
            .map(|page| std::array::from_fn(|w| self.own[w][page].load(Ordering::SeqCst)))
            .collect();
        let words = snap_words(process, self.handle);
        for (page, words) in words.iter().enumerate() {
            for (word, &value) in words.iter().enumerate() {
                let published = match word {
                    0 | 1 => 0,
                    _ => published[page][word - 2],
                };
                // Word 3 is the snapshotter's own: it is the caller here, so exact.
                let exact = if word == 3 { published } else { 0 };
                self.check("zx_vmo_read", page, word, value, published, exact);
            }
        }
    }
}

/// The first [`SNAP_WORDS`] words of each of the [`PAGES`] pages of a VMO, with `zx_vmo_read`.
fn snap_words(process: &Process, vmo: zx_handle_t) -> Vec<[u64; SNAP_WORDS]> {
    let mut bytes = vec![0u8; (PAGES * PAGE_SIZE) as usize];
    assert_eq!(zx_vmo_read(process, vmo, &mut bytes, 0), ZX_OK);
    (0..PAGES as usize)
        .map(|page| {
            let at = page * PAGE_SIZE as usize;
            std::array::from_fn(|word| {
                let word = &bytes[at + 8 * word..at + 8 * word + 8];
                u64::from_le_bytes(word.try_into().unwrap())
            })
        })
        .collect()
}

/// What the snapshot stress's threads share.
struct SnapShared {
    /// Bumped after each snapshot call returns: a store tagged with a later epoch than the one
    /// a snapshot was made in was made after the snapshot.
    epoch: AtomicU64,
    /// The parent writers' last store to their word of each page, published once done.
    published: [Vec<AtomicU64>; 2],
    /// The newest child handed to CPU 2, with its handle in CPU 2's process.
    slot: std::sync::Mutex<Option<(Arc<Snap>, zx_handle_t)>>,
    /// The snapshotter asks the other CPUs to stop between accesses (for an audit)...
    pause: AtomicBool,
    /// ...and they say that they did.
    parked: AtomicU64,
    /// The snapshotter finished (or a thread died): everyone stops.
    done: Arc<AtomicBool>,
    accesses: AtomicU64,
    /// Stores the simulated CPU refused after three faults (see [`store_retrying`]).
    refused: AtomicU64,
}

impl SnapShared {
    /// Between accesses: parks while the snapshotter audits.
    fn park_if_asked(&self, cpu: &zx_vm::sim::SimCpu) {
        if !self.pause.load(Ordering::SeqCst) {
            return;
        }
        self.parked.fetch_add(1, Ordering::SeqCst);
        while self.pause.load(Ordering::SeqCst) && !self.done.load(Ordering::SeqCst) {
            cpu.poll();
            std::thread::yield_now();
        }
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits (serving `cpu`'s IPIs) until `ready` or a thread died; answers `ready()`.
    fn wait_for(&self, cpu: &zx_vm::sim::SimCpu, ready: impl Fn() -> bool) -> bool {
        while !ready() {
            if self.done.load(Ordering::SeqCst) {
                return false;
            }
            cpu.poll();
            std::thread::yield_now();
        }
        true
    }
}

/// Stores `value` at `va` through a writable mapping, as a CPU re-executes a faulting store for
/// as long as the fault handler returns.
///
/// The simulated CPU refuses an access (`AccessDenied`) after three faults in a row, taking a
/// handled fault without a new translation for no progress; but the crate's fault path returns
/// without mapping, for the access to fault again, while a shootdown round of the tree is under
/// way (a snapshot's write-protect, another CPU's copy): under contention that happens more
/// than three times. Counted in `refused`, and bounded.
fn store_retrying(
    cpu: &zx_vm::sim::SimCpu,
    shared: &SnapShared,
    va: u64,
    value: u64,
) -> Result<(), FaultError> {
    for _ in 0..100_000 {
        match cpu.store(va, value) {
            Err(FaultError::AccessDenied) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
            result => return result,
        }
    }
    cpu.store(va, value)
}

/// A parent writer: CPU `cpu` (0 or 1) stores tagged values to its word of random pages of the
/// parent, through the mapping at `base` of `process`, for as long as the snapshotter runs (so
/// its TLB keeps writable entries of the parent's pages). Each load of its own word reads its
/// last store (no write is lost to a copy); the other writer's word reads at least that
/// writer's last published store; the children's words read zero (no child's write shows in
/// the parent).
fn spawn_parent_writer(
    machine: &Arc<SimMachine>,
    shared: &Arc<SnapShared>,
    start: &Arc<Barrier>,
    (cpu, process, base): (usize, &Arc<Process>, u64),
) -> std::thread::JoinHandle<()> {
    let (machine, shared, start, process) = (
        machine.clone(),
        shared.clone(),
        start.clone(),
        process.clone(),
    );
    std::thread::spawn(move || {
        let cpu_handle = machine.cpu(cpu);
        let _attached = cpu_handle.attach();
        let _done = SetOnDrop(shared.done.clone());
        cpu_handle.switch_to(Some(process.aspace()));
        start.wait();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (cpu as u64 + 1));
        let mut last = [0u64; PAGES as usize];
        let mut count = 0;
        while !shared.done.load(Ordering::SeqCst) {
            shared.park_if_asked(&cpu_handle);
            let page = rng.below(PAGES) as usize;
            let at = base + page as u64 * PAGE_SIZE;
            let va = at + cpu as u64 * 8;
            let seen = cpu_handle.load(va).expect("a parent writer's load");
            assert_eq!(
                seen,
                last[page],
                "CPU {cpu}: the parent's page {page} lost a write: {} after {}",
                describe(seen),
                describe(last[page])
            );
            let other = 1 - cpu;
            let floor = shared.published[other][page].load(Ordering::SeqCst);
            let theirs = cpu_handle.load(at + other as u64 * 8).unwrap();
            assert!(
                theirs >= floor,
                "CPU {cpu}: the parent's page {page} reads {} for CPU {other}, which stored {}",
                describe(theirs),
                describe(floor)
            );
            let child_word = 2 + rng.below(2);
            let child = cpu_handle.load(at + child_word * 8).unwrap();
            assert_eq!(
                child,
                0,
                "CPU {cpu}: a child's write shows in the parent's page {page}: {}",
                describe(child)
            );
            count += 1;
            let value = tagged(shared.epoch.load(Ordering::SeqCst), cpu as u64 + 1, count);
            if let Err(fault) = store_retrying(&cpu_handle, &shared, va, value) {
                panic!("CPU {cpu}: a store to the parent's page {page} faulted: {fault:?}");
            }
            last[page] = value;
            shared.published[cpu][page].store(value, Ordering::SeqCst);
            shared.accesses.fetch_add(1, Ordering::Relaxed);
        }
        cpu_handle.switch_to(None);
    })
}

/// CPU 2: maps the newest child the snapshotter hands it (in its own process, read-write),
/// reads its words from there and stores to word 2 of random pages: copy-on-write faults that
/// race with the parent's writers and with snapshots of the child itself. The handle is closed
/// once mapped, so the child may die when the mapping goes (the snapshotter closes its own at
/// any time).
fn spawn_child_worker(
    machine: &Arc<SimMachine>,
    shared: &Arc<SnapShared>,
    start: &Arc<Barrier>,
    c: &Arc<Process>,
) -> std::thread::JoinHandle<()> {
    let (machine, shared, start, c) = (machine.clone(), shared.clone(), start.clone(), c.clone());
    std::thread::spawn(move || {
        let cpu = machine.cpu(2);
        let _attached = cpu.attach();
        let _done = SetOnDrop(shared.done.clone());
        cpu.switch_to(Some(c.aspace()));
        start.wait();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut current: Option<(Arc<Snap>, u64, [u64; PAGES as usize])> = None;
        let mut count = 0;
        let len = PAGES * PAGE_SIZE;
        while !shared.done.load(Ordering::SeqCst) {
            shared.park_if_asked(&cpu);
            let handed = shared.slot.lock().unwrap().take();
            if let Some((snap, handle)) = handed {
                if let Some((_, addr, _)) = current.take() {
                    assert_eq!(zx_vmar_unmap(&c, c.root_vmar_handle(), addr, len), ZX_OK);
                }
                let addr = map_rw(&c, c.root_vmar_handle(), handle, 0, PAGES);
                assert_eq!(zx_handle_close(&c, handle), ZX_OK);
                current = Some((snap, addr, [0; PAGES as usize]));
            }
            let Some((snap, addr, last)) = current.as_mut() else {
                std::thread::yield_now();
                continue;
            };
            let page = rng.below(PAGES) as usize;
            let at = *addr + page as u64 * PAGE_SIZE;
            for word in 0..SNAP_WORDS {
                let published = match word {
                    0 | 1 => 0,
                    _ => snap.own[word - 2][page].load(Ordering::SeqCst),
                };
                let value = cpu.load(at + word as u64 * 8).expect("a child's load");
                let exact = if word == 2 { last[page] } else { 0 };
                snap.check("CPU 2", page, word, value, published, exact);
            }
            count += 1;
            let value = tagged(shared.epoch.load(Ordering::SeqCst), snap.id, count);
            if let Err(fault) = store_retrying(&cpu, &shared, at + 16, value) {
                panic!(
                    "CPU 2: a store to snapshot {}'s page {page} faulted: {fault:?}",
                    snap.id
                );
            }
            last[page] = value;
            snap.own[0][page].store(value, Ordering::SeqCst);
            shared.accesses.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((_, addr, _)) = current {
            assert_eq!(zx_vmar_unmap(&c, c.root_vmar_handle(), addr, len), ZX_OK);
        }
        cpu.switch_to(None);
    })
}

/// Snapshots while writers write: CPUs 0 and 1 store tagged values through writable mappings
/// of a parent VMO in two address spaces; CPU 3 snapshots it (and sometimes one of its
/// snapshots), bumping an epoch after each call returns, and no child may ever read a store
/// tagged with a later epoch than its own, nor change afterwards except by its own writes.
/// The children are written too (copy-on-write faults through CPU 2's mapping, racing with the
/// parent's writers; `zx_vmo_write` by CPU 3), closed in random order, and audited with the
/// address spaces at quiescent points; every frame comes back at the end.
///
/// A snapshot that left a writable translation of the parent in any TLB (the
/// `break-write-protect` build) lets a writer's later store into the page the child now
/// shares: the child reads a value from a later epoch.
fn snapshot_stress(format: Format, broadcast: bool, snapshots: u64) {
    let machine = smp_machine(4, 8, broadcast);
    let (a, b, vmo, addr_a, addr_b) = shared_vmo(&machine, format, 0);
    let c = new_process(&machine, format);
    let shared = Arc::new(SnapShared {
        epoch: AtomicU64::new(1),
        published: std::array::from_fn(|_| (0..PAGES).map(|_| AtomicU64::new(0)).collect()),
        slot: std::sync::Mutex::new(None),
        pause: AtomicBool::new(false),
        parked: AtomicU64::new(0),
        done: Arc::new(AtomicBool::new(false)),
        accesses: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let start = Arc::new(Barrier::new(4));
    let workers = [
        spawn_parent_writer(&machine, &shared, &start, (0, &a, addr_a)),
        spawn_parent_writer(&machine, &shared, &start, (1, &b, addr_b)),
        spawn_child_worker(&machine, &shared, &start, &c),
    ];
    let snapshotter = {
        let (machine, shared, a, b, c) = (
            machine.clone(),
            shared.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
        );
        std::thread::spawn(move || {
            let cpu = machine.cpu(3);
            let _attached = cpu.attach();
            let _done = SetOnDrop(shared.done.clone());
            start.wait();
            let (made, audits) = snapshotter(&machine, &shared, [&a, &b, &c], vmo, snapshots);
            (made, audits)
        })
    };
    let results: Vec<_> = workers.into_iter().map(|worker| worker.join()).collect();
    let (made, audits) = snapshotter.join().expect("snapshotter");
    for result in results {
        result.expect("worker");
    }
    assert!(made >= snapshots, "{format:?}: {made} snapshots");
    assert!(audits > 0, "{format:?}");
    eprintln!(
        "{format:?} broadcast {broadcast}: {made} snapshots, {audits} audits, {} accesses, \
         {} stores refused and retried, {:?}",
        shared.accesses.load(Ordering::Relaxed),
        shared.refused.load(Ordering::Relaxed),
        machine.counters()
    );
    // The parent holds each writer's last store.
    let words = snap_words(&a, vmo);
    for (page, words) in words.iter().enumerate() {
        for (writer, published) in shared.published.iter().enumerate() {
            assert_eq!(
                words[writer],
                published[page].load(Ordering::SeqCst),
                "{format:?}: page {page}"
            );
        }
    }
    for process in [&a, &b, &c] {
        assert_eq!(process.aspace().audit(), Ok(()), "{format:?}");
    }
    drop((a, b, c));
    assert_eq!(
        machine.frames_in_use(),
        0,
        "{format:?}: every frame came back"
    );
}

/// The snapshotter's loop (CPU 3, calling as the parent's process `a`); returns how many
/// snapshots it made and how many quiescent audits it ran.
fn snapshotter(
    machine: &Arc<SimMachine>,
    shared: &SnapShared,
    [a, b, c]: [&Arc<Process>; 3],
    parent: zx_handle_t,
    snapshots: u64,
) -> (u64, u64) {
    const LIVE: usize = 5;
    let cpu = machine.cpu(3);
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    let mut live: Vec<Arc<Snap>> = Vec::new();
    let (mut made, mut audits) = (0, 0);
    let writer_caps: std::collections::BTreeMap<u64, u64> =
        [(1, u64::MAX), (2, u64::MAX)].into_iter().collect();
    for round in 0..snapshots {
        if shared.done.load(Ordering::SeqCst) {
            break;
        }
        // Mostly the parent; a third of the time one of its snapshots.
        let from = (!live.is_empty() && rng.below(3) == 0)
            .then(|| live[rng.below(live.len() as u64) as usize].clone());
        // What the child must at least hold: each store completed before the call.
        let floor: Vec<[u64; SNAP_WORDS]> = (0..PAGES as usize)
            .map(|page| match &from {
                None => [
                    shared.published[0][page].load(Ordering::SeqCst),
                    shared.published[1][page].load(Ordering::SeqCst),
                    0,
                    0,
                ],
                Some(snap) => [
                    snap.frozen[page][0],
                    snap.frozen[page][1],
                    snap.own[0][page].load(Ordering::SeqCst),
                    snap.own[1][page].load(Ordering::SeqCst),
                ],
            })
            .collect();
        let offset = rng.below(4);
        let options = [
            ZX_VMO_CHILD_SNAPSHOT,
            ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
            ZX_VMO_CHILD_SNAPSHOT_MODIFIED,
        ][rng.below(3) as usize];
        let epoch = shared.epoch.load(Ordering::SeqCst);
        let mut handle = 0;
        let status = zx_vmo_create_child(
            a,
            from.as_ref().map_or(parent, |snap| snap.handle),
            options,
            offset * PAGE_SIZE,
            PAGES * PAGE_SIZE,
            &mut handle,
        );
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        assert_eq!(status, ZX_OK, "snapshot {round}");
        made += 1;
        // Source numbers 16 and up: the parent's writers are 1 and 2.
        let id = 16 + round;
        // Who may show in the child, up to which epoch: whoever may in its parent, up to the
        // call, and the parent itself (a snapshot) up to the call.
        let mut caps: std::collections::BTreeMap<u64, u64> = match &from {
            None => writer_caps.clone(),
            Some(snap) => snap.caps.clone(),
        };
        for cap in caps.values_mut() {
            *cap = (*cap).min(epoch);
        }
        if let Some(snap) = &from {
            caps.insert(snap.id, epoch);
        }
        let words = snap_words(a, handle);
        for (page, words) in words.iter().enumerate() {
            let above = page + offset as usize;
            for (word, &value) in words.iter().enumerate() {
                let fail = |what: &str| -> ! {
                    panic!(
                        "snapshot {id} of {} made in epoch {epoch}: page {page} (the parent's \
                         {above}) word {word} reads {}: {what}",
                        from.as_ref()
                            .map_or("the parent".into(), |s| format!("snapshot {}", s.id)),
                        describe(value),
                    )
                };
                if above >= PAGES as usize {
                    if value != 0 {
                        fail("past the parent's end, it must read zero");
                    }
                    continue;
                }
                if value != 0 {
                    match caps.get(&source_of(value)) {
                        None => fail("a store by a VMO that is not the child's ancestor"),
                        Some(&cap) if epoch_of(value) > cap => fail(&format!(
                            "a store made after the snapshot returned (epoch {cap} at most)"
                        )),
                        Some(_) => {}
                    }
                }
                let floor = floor[above][word];
                let ok = match (&from, word) {
                    (None, 0 | 1) => {
                        value >= floor && (floor == 0 || source_of(value) == source_of(floor))
                    }
                    (None, _) => value == 0,
                    (Some(_), 0 | 1) => value == floor,
                    (Some(snap), _) if floor != 0 => source_of(value) == snap.id && value >= floor,
                    (Some(snap), _) => {
                        value == snap.frozen[above][word] || source_of(value) == snap.id
                    }
                };
                if !ok {
                    fail(&format!(
                        "the parent held {} before the call",
                        describe(floor)
                    ));
                }
            }
        }
        let snap = Arc::new(Snap {
            id,
            handle,
            epoch,
            caps,
            frozen: words,
            own: std::array::from_fn(|_| (0..PAGES).map(|_| AtomicU64::new(0)).collect()),
        });
        live.push(snap.clone());
        // Copy-on-write by zx_vmo_write: word 3 of a few pages of a few children.
        for _ in 0..3 {
            let target = &live[rng.below(live.len() as u64) as usize];
            let page = rng.below(PAGES) as usize;
            let value = tagged(shared.epoch.load(Ordering::SeqCst), target.id, round);
            let offset = page as u64 * PAGE_SIZE + 24;
            assert_eq!(
                zx_vmo_write(a, target.handle, &value.to_le_bytes(), offset),
                ZX_OK
            );
            target.own[1][page].store(value, Ordering::SeqCst);
        }
        // Every other child goes to CPU 2, which maps it (the one it had may die then).
        if round % 2 == 0 {
            let object = a.handle(snap.handle).unwrap();
            let in_c = c.add_handle(object.object, object.rights).unwrap();
            let old = shared.slot.lock().unwrap().replace((snap.clone(), in_c));
            if let Some((_, old)) = old {
                assert_eq!(zx_handle_close(c, old), ZX_OK);
            }
        }
        // The living children still read as at their calls.
        for snap in &live {
            snap.check_all(a);
        }
        // Too many: close one, any.
        while live.len() > LIVE {
            let gone = live.remove(rng.below(live.len() as u64) as usize);
            assert_eq!(zx_handle_close(a, gone.handle), ZX_OK);
        }
        if round % 16 == 15 {
            if !quiescent_audit(shared, &cpu, [a, b, c]) {
                break;
            }
            audits += 1;
        }
        // Let the writers store between snapshots, however busy the machine is.
        let seen = shared.accesses.load(Ordering::Relaxed);
        if !shared.wait_for(&cpu, || {
            shared.accesses.load(Ordering::Relaxed) >= seen + 32
        }) {
            break;
        }
    }
    // Close the rest in random order; the survivors still read as at their calls.
    while !live.is_empty() {
        let gone = live.remove(rng.below(live.len() as u64) as usize);
        assert_eq!(zx_handle_close(a, gone.handle), ZX_OK);
        for snap in &live {
            snap.check_all(a);
        }
    }
    (made, audits)
}

/// Stops the other CPUs between accesses, audits the three address spaces (every translation
/// is its VMO's page; none that is shared with a snapshot relative is writable; the trees'
/// invariants), and lets them go on. False if a thread died meanwhile.
fn quiescent_audit(
    shared: &SnapShared,
    cpu: &zx_vm::sim::SimCpu,
    processes: [&Arc<Process>; 3],
) -> bool {
    shared.pause.store(true, Ordering::SeqCst);
    let parked = shared.wait_for(cpu, || shared.parked.load(Ordering::SeqCst) == 3);
    if parked {
        for (index, process) in processes.iter().enumerate() {
            if let Err(error) = process.aspace().audit() {
                shared.pause.store(false, Ordering::SeqCst);
                panic!("process {index}: audit: {error:?}");
            }
        }
    }
    shared.pause.store(false, Ordering::SeqCst);
    parked
}

#[test]
fn snapshot_stress_x86_64_ipis() {
    snapshot_stress(Format::X86_64, false, 100);
}

#[test]
fn snapshot_stress_aarch64_broadcast() {
    snapshot_stress(Format::Aarch64, true, 100);
}

// =================================================================================================
// Large pages: 2 MiB leaves split under CPUs that use them
// =================================================================================================

const MIB2: u64 = 2 << 20;
/// Pages of the large-page VMO: two runs.
const LARGE_PAGES: u64 = 2 * MIB2 / PAGE_SIZE;
/// Pages from here on (the end of the second run) are never decommitted: no write to them may
/// ever be lost. Whole-run DECOMMITs take the first run only.
const LARGE_KEPT: u64 = LARGE_PAGES - 8;
/// Pages the splitter works on and the workers favour, so that they meet.
const LARGE_HOT: [u64; 12] = [0, 1, 2, 255, 510, 511, 512, 513, 700, 1013, 1015, 1020];

/// What the workers and the splitter share: per address space and page, generations that are
/// odd while the page may be read-only (from just before `zx_vmar_protect` makes it so until the
/// one that makes it writable again returned), while it must be read-only (from when the first
/// returned until just before the second), and while it may be unmapped.
struct LargeShared {
    may_be_read_only: Vec<Vec<AtomicU64>>,
    read_only: Vec<Vec<AtomicU64>>,
    unmapped: Vec<Vec<AtomicU64>>,
    /// Set when a worker ends (by a panic too): the splitter stops waiting for accesses.
    worker_ended: Arc<AtomicBool>,
    pause: AtomicBool,
    parked: AtomicU64,
    accesses: AtomicU64,
    done: AtomicBool,
}

impl LargeShared {
    fn new(spaces: usize) -> LargeShared {
        let pages = || (0..LARGE_PAGES).map(|_| AtomicU64::new(0)).collect();
        LargeShared {
            may_be_read_only: (0..spaces).map(|_| pages()).collect(),
            worker_ended: Arc::new(AtomicBool::new(false)),
            read_only: (0..spaces).map(|_| pages()).collect(),
            unmapped: (0..spaces).map(|_| pages()).collect(),
            pause: AtomicBool::new(false),
            parked: AtomicU64::new(0),
            accesses: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

/// Maps `len` bytes of `vmo` from `vmo_offset` at `addr` exactly, read-write.
fn map_at(p: &Process, addr: u64, vmo: zx_handle_t, vmo_offset: u64, len: u64) -> zx_status_t {
    let base = p.aspace().root_vmar().base();
    let mut out = 0;
    let status = zx_vmar_map(
        p,
        p.root_vmar_handle(),
        ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC,
        addr - base,
        vmo,
        vmo_offset,
        len,
        &mut out,
    );
    assert!(status != ZX_OK || out == addr);
    status
}

/// Three CPUs read and write their own word of the pages of a large-page VMO of two runs, mapped
/// 2 MiB aligned in two address spaces (so that the runs are mapped with 2 MiB leaves), while a
/// fourth splits the leaves: it makes single pages read-only and writable again, DECOMMITs
/// single pages (through either address space or the VMO) and the whole first run, and unmaps
/// single pages and whole runs and maps them again; every few calls it stops the workers and
/// audits both address spaces. A worker reads, in each page, the last value it wrote there or
/// zero (decommitted since; never the poison of a freed frame), and in the pages from
/// [`LARGE_KEPT`] on always the last value; a store to a page made read-only in its address
/// space, between `zx_vmar_protect` returning and the page being made writable again, must
/// fault; a fault is only ever for a page read-only or unmapped meanwhile. With `break-split`
/// (a split that leaves the 2 MiB translation in the TLBs) this fails.
fn large_page_stress(format: Format, broadcast: bool, calls: u64) {
    let machine = smp_machine(4, 8, broadcast);
    let platform: Arc<dyn Platform> = machine.clone();
    let a = new_process(&machine, format);
    let b = new_process(&machine, format);
    let vmo = zx_vm::Vmo::create_large_pages(platform, LARGE_PAGES * PAGE_SIZE).unwrap();
    let rights = Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
    let vmo_a = a
        .add_handle(KernelObject::Vmo(vmo.clone()), rights)
        .unwrap();
    let vmo_b = b.add_handle(KernelObject::Vmo(vmo), rights).unwrap();
    let aligned = |p: &Process| (p.aspace().root_vmar().base() + 4 * MIB2) & !(MIB2 - 1);
    let (addr_a, addr_b) = (aligned(&a), aligned(&b));
    assert_eq!(map_at(&a, addr_a, vmo_a, 0, 2 * MIB2), ZX_OK);
    assert_eq!(map_at(&b, addr_b, vmo_b, 0, 2 * MIB2), ZX_OK);
    let shared = Arc::new(LargeShared::new(2));
    let start = Arc::new(Barrier::new(4));
    let spaces = [
        (0usize, &a, addr_a, 0usize),
        (1, &a, addr_a, 0),
        (2, &b, addr_b, 1),
    ];
    let mut workers = Vec::new();
    for (cpu, process, base, space) in spaces {
        let (machine, process, start, shared) = (
            machine.clone(),
            process.clone(),
            start.clone(),
            shared.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let cpu_handle = machine.cpu(cpu);
            let _attached = cpu_handle.attach();
            let _ended = SetOnDrop(shared.worker_ended.clone());
            cpu_handle.switch_to(Some(process.aspace()));
            start.wait();
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1));
            let mut last = vec![0u64; LARGE_PAGES as usize];
            let mut round = 0u64;
            let (read_only, unmapped) = (&shared.read_only[space], &shared.unmapped[space]);
            while !shared.done.load(Ordering::SeqCst) {
                if shared.pause.load(Ordering::SeqCst) {
                    shared.parked.fetch_add(1, Ordering::SeqCst);
                    while shared.pause.load(Ordering::SeqCst) && !shared.done.load(Ordering::SeqCst)
                    {
                        cpu_handle.poll();
                        std::thread::yield_now();
                    }
                    shared.parked.fetch_sub(1, Ordering::SeqCst);
                }
                round += 1;
                let page = if rng.below(2) == 0 {
                    LARGE_HOT[rng.below(LARGE_HOT.len() as u64) as usize]
                } else {
                    rng.below(LARGE_PAGES)
                };
                let va = base + page * PAGE_SIZE + cpu as u64 * 8;
                let (ro, hole) = (&read_only[page as usize], &unmapped[page as usize]);
                let may_ro = &shared.may_be_read_only[space][page as usize];
                let hole_before = hole.load(Ordering::SeqCst);
                let loaded = cpu_handle.load(va);
                let hole_moved = |before: u64| before % 2 == 1 || hole.load(Ordering::SeqCst) != before;
                match loaded {
                    Ok(seen) => {
                        assert_ne!(seen, FREED_POISON, "{format:?} CPU {cpu} read a freed frame");
                        let expected = last[page as usize];
                        if page >= LARGE_KEPT {
                            assert_eq!(seen, expected, "{format:?} CPU {cpu}: write lost in page {page}");
                        } else {
                            assert!(
                                seen == expected || seen == 0,
                                "{format:?} CPU {cpu}: page {page} read {seen:#x}, last wrote {expected:#x}"
                            );
                        }
                    }
                    Err(fault) => assert!(
                        fault == FaultError::NotMapped && hole_moved(hole_before),
                        "{format:?} CPU {cpu}: load of page {page}: {fault:?}"
                    ),
                }
                let value = ((cpu as u64 + 1) << 56) | round;
                let (may_before, ro_before) = (may_ro.load(Ordering::SeqCst), ro.load(Ordering::SeqCst));
                let hole_before = hole.load(Ordering::SeqCst);
                let stored = cpu_handle.store(va, value);
                let (ro_after, may_after) = (ro.load(Ordering::SeqCst), may_ro.load(Ordering::SeqCst));
                match stored {
                    Ok(()) => {
                        assert!(
                            !(ro_before % 2 == 1 && ro_after == ro_before),
                            "{format:?} CPU {cpu}: a store to page {page} succeeded while it was read-only"
                        );
                        last[page as usize] = value;
                    }
                    Err(FaultError::AccessDenied) => assert!(
                        may_before % 2 == 1 || may_after != may_before,
                        "{format:?} CPU {cpu}: store to writable page {page} denied"
                    ),
                    Err(FaultError::NotMapped) => assert!(
                        hole_moved(hole_before),
                        "{format:?} CPU {cpu}: store to mapped page {page} not mapped"
                    ),
                    Err(fault) => panic!("{format:?} CPU {cpu}: store to page {page}: {fault:?}"),
                }
                shared.accesses.fetch_add(1, Ordering::Relaxed);
            }
            cpu_handle.switch_to(None);
        }));
    }
    let splitter = {
        let (machine, a, b, start, shared) = (
            machine.clone(),
            a.clone(),
            b.clone(),
            start.clone(),
            shared.clone(),
        );
        std::thread::spawn(move || {
            let cpu = machine.cpu(3);
            let _attached = cpu.attach();
            start.wait();
            let finish = || shared.done.store(true, Ordering::SeqCst);
            struct Finish<F: Fn()>(F);
            impl<F: Fn()> Drop for Finish<F> {
                fn drop(&mut self) {
                    (self.0)()
                }
            }
            let _finish = Finish(finish);
            let spaces = [(&a, addr_a, vmo_a), (&b, addr_b, vmo_b)];
            let mut rng = Rng(7);
            let wait_for_workers = |count: u64| {
                let seen = shared.accesses.load(Ordering::Relaxed);
                while shared.accesses.load(Ordering::Relaxed) < seen + count {
                    assert!(!shared.worker_ended.load(Ordering::SeqCst), "a worker died");
                    cpu.poll();
                    std::thread::yield_now();
                }
            };
            for call in 0..calls {
                let space = rng.below(2) as usize;
                let (p, base, vmo) = spaces[space];
                let root = p.root_vmar_handle();
                let page = LARGE_HOT[rng.below(LARGE_HOT.len() as u64) as usize];
                let va = base + page * PAGE_SIZE;
                match call % 6 {
                    // One page read-only while the workers run, then writable again.
                    0 | 1 => {
                        let may_ro = &shared.may_be_read_only[space][page as usize];
                        let ro = &shared.read_only[space][page as usize];
                        may_ro.fetch_add(1, Ordering::SeqCst);
                        let status = zx_vmar_protect(p, root, ZX_VM_PERM_READ, va, PAGE_SIZE);
                        assert_eq!(status, ZX_OK, "{format:?}");
                        ro.fetch_add(1, Ordering::SeqCst);
                        wait_for_workers(24);
                        ro.fetch_add(1, Ordering::SeqCst);
                        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
                        assert_eq!(zx_vmar_protect(p, root, rw, va, PAGE_SIZE), ZX_OK);
                        may_ro.fetch_add(1, Ordering::SeqCst);
                    }
                    // DECOMMIT of one page, through an address space or the VMO.
                    2 if page < LARGE_KEPT => {
                        let status = if rng.below(2) == 0 {
                            zx_vmar_op_range(p, root, ZX_VMAR_OP_DECOMMIT, va, PAGE_SIZE, 0, 0)
                        } else {
                            let offset = page * PAGE_SIZE;
                            zx_vmo_op_range(p, vmo, ZX_VMO_OP_DECOMMIT, offset, PAGE_SIZE, 0, 0)
                        };
                        assert_eq!(status, ZX_OK, "{format:?}");
                    }
                    // DECOMMIT of the whole first run.
                    3 => {
                        let status = zx_vmo_op_range(p, vmo, ZX_VMO_OP_DECOMMIT, 0, MIB2, 0, 0);
                        assert_eq!(status, ZX_OK, "{format:?}");
                    }
                    // A hole of one page, mapped again.
                    4 => {
                        let hole = &shared.unmapped[space][page as usize];
                        hole.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(zx_vmar_unmap(p, root, va, PAGE_SIZE), ZX_OK, "{format:?}");
                        wait_for_workers(12);
                        assert_eq!(map_at(p, va, vmo, page * PAGE_SIZE, PAGE_SIZE), ZX_OK);
                        hole.fetch_add(1, Ordering::SeqCst);
                    }
                    // A whole run unmapped and mapped again (a 2 MiB leaf on the next fault).
                    _ => {
                        let run = rng.below(2);
                        let first = run * (LARGE_PAGES / 2);
                        let holes = &shared.unmapped[space];
                        for page in first..first + LARGE_PAGES / 2 {
                            holes[page as usize].fetch_add(1, Ordering::SeqCst);
                        }
                        let run_va = base + first * PAGE_SIZE;
                        assert_eq!(zx_vmar_unmap(p, root, run_va, MIB2), ZX_OK, "{format:?}");
                        wait_for_workers(12);
                        assert_eq!(map_at(p, run_va, vmo, first * PAGE_SIZE, MIB2), ZX_OK);
                        for page in first..first + LARGE_PAGES / 2 {
                            holes[page as usize].fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                wait_for_workers(48);
                if call % 16 == 15 {
                    // Stop the workers between accesses and audit both address spaces.
                    shared.pause.store(true, Ordering::SeqCst);
                    while shared.parked.load(Ordering::SeqCst) < 3 {
                        assert!(!shared.worker_ended.load(Ordering::SeqCst), "a worker died");
                        cpu.poll();
                        std::thread::yield_now();
                    }
                    for (p, _, _) in spaces {
                        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
                    }
                    shared.pause.store(false, Ordering::SeqCst);
                }
            }
        })
    };
    let splitter = splitter.join();
    for worker in workers {
        worker.join().expect("worker");
    }
    splitter.expect("splitter");
    assert_eq!(a.aspace().audit(), Ok(()));
    assert_eq!(b.aspace().audit(), Ok(()));
    let counters = machine.counters();
    // The whole-run DECOMMITs gave runs back, and the workers' faults committed them again.
    assert!(counters.runs_allocated >= 3, "{counters:?}");
    if broadcast {
        assert_eq!(counters.ipis, 0, "broadcast invalidation needs no IPIs");
    }
    drop((a, b));
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn large_page_stress_x86_64_ipis() {
    large_page_stress(Format::X86_64, false, 64);
}

#[test]
fn large_page_stress_aarch64_broadcast() {
    large_page_stress(Format::Aarch64, true, 64);
}
