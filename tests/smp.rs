//! Several CPUs: simulated CPUs on threads of their own read and write while others decommit, on
//! both page-table formats and in both invalidation modes (x86_64-style IPIs, aarch64-style
//! broadcast). The counts of shootdowns, IPIs and flushes are pinned, and so is the tag logic.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{SimConfig, SimMachine, FREED_POISON};
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;
use zx_vm::{Platform, Process};

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
