//! The scenarios the kernel runs, in order:
//!
//! 1. [`decommit_while_reading`]: one VMO mapped in two address spaces, A active on the first half
//!    of the CPUs and B on the second; every CPU touches every page; then, round after round, one
//!    CPU decommits a range through `zx_vmar_op_range` while all the others keep reading. After the
//!    call returns, every CPU must read zero from the decommitted pages and the old data elsewhere
//!    (and never a freed frame's poison); at the end every frame is back in the allocator.
//! 2. [`crate::snapshot_scenario`]: one CPU snapshots a VMO (`zx_vmo_create_child`) over and over
//!    while the others keep writing it through writable mappings in two address spaces; no child
//!    may hold a value stored after its snapshot call returned.
//! 3. [`crate::large_scenario`]: 2 MiB leaves of a physical VMO (`ZX_VM_MAP_RANGE`) and of a
//!    large-page VMO, split by `zx_vmar_protect` of one page, DECOMMIT of one page (and of a whole
//!    run) and `zx_vmar_unmap` of a 4 KiB hole while the other CPUs read and write them; after each
//!    call no CPU may write the protected page, read the decommitted data or reach the hole.
//!    aarch64 runs it in broadcast mode only (the only mode with large leaves).
//! 4. [`stale_tlb_negative_control`]: a page-table entry changed with no invalidation is still
//!    read through on another CPU: the harness can see a stale TLB entry (the test expects it).
//! 5. [`crate::kit_scenario`]: the crate's single-CPU integration kit (`SingleCpu`, `NativeCpu`,
//!    `FreeListFrames` over a bump source) on the boot CPU, with a user range of its own.
//! 6. The host's contract tests, on real CPUs ([`crate::contract`]).
//!
//! Scenarios 1 and 2 run in every invalidation mode the architecture has: x86_64 by IPI; aarch64
//! by `TLBI ...IS` broadcast (the crate sends no IPIs) and by IPI with local `TLBI`.

use crate::arch;
use crate::contract;
use crate::forward::{Forward, Hooks};
use crate::frames::{FRAMES, FREED_POISON};
use crate::mm;
use crate::platform::{KernelPlatform, Snapshot};
use crate::smp;
use crate::sync::IrqSpinLock;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags, USER_ADDRESS_LIMIT};
use zx_vm::platform::CpuSet;
use zx_vm::syscall::*;
use zx_vm::tlb::PendingFlush;
use zx_vm::{PhysAddr, Platform, Process};

/// Runs every scenario; true if all passed.
pub fn run_all() -> bool {
    let mut passed = true;
    let modes: &[bool] = if cfg!(target_arch = "aarch64") {
        &[false, true]
    } else {
        &[true]
    };
    for &ipi_mode in modes {
        KernelPlatform::set_ipi_mode(ipi_mode);
        passed &= report("decommit while reading", decommit_while_reading());
        passed &= report("snapshot while writing", crate::snapshot_scenario::run());
    }
    // Large leaves: aarch64 makes them only with broadcast invalidation (x86_64 is always in IPI
    // mode).
    KernelPlatform::set_ipi_mode(false);
    passed &= report("large pages", crate::large_scenario::run());
    // aarch64 runs the rest in its default mode, broadcast (unless the broken build asks for IPIs).
    KernelPlatform::set_ipi_mode(cfg!(feature = "break-remote-flush"));
    passed &= report("stale TLB negative control", stale_tlb_negative_control());
    passed &= report("single-CPU kit", crate::kit_scenario::run());
    let tests = contract::run();
    println!("contract: {tests} tests of tests/contract.rs passed (native format)");
    passed
}

fn report(name: &str, passed: bool) -> bool {
    println!("{name}: {}", if passed { "PASS" } else { "FAIL" });
    passed
}

pub(crate) fn mode_name() -> &'static str {
    if KernelPlatform::ipi_mode() {
        "IPI mode"
    } else {
        "broadcast mode (TLBI IS)"
    }
}

// =================================================================================================
// 1. Decommit while the other CPUs read.
// =================================================================================================

const PAGES: u64 = 64;
/// The first page and page count of each round's decommit. Up to 32 pages the crate invalidates
/// page by page; past that, the whole address space.
const RANGES: [(u64, u64); 6] = [(0, 1), (5, 3), (10, 16), (0, 32), (8, 40), (0, 64)];

/// What a page holds in `round`: never 0 and never the poison.
fn pattern(round: u64, page: u64) -> u64 {
    0x5eed_0000_0000_0000 | (round << 16) | page
}

/// One wrong read.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Read through the Debug output.
struct BadRead {
    round: u64,
    cpu: usize,
    page: u64,
    read: u64,
    expected: u64,
    after_decommit: bool,
}

struct Failures {
    count: AtomicU64,
    first: IrqSpinLock<Vec<BadRead>>,
}

impl Failures {
    fn record(&self, bad: BadRead) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock();
        if first.len() < 8 {
            first.push(bad);
        }
    }
}

fn decommit_while_reading() -> bool {
    let n = smp::cpu_count();
    assert!(n >= 2, "the scenario needs at least 2 CPUs");
    let baseline = FRAMES.in_use();
    let platform: Arc<dyn Platform> = Arc::new(KernelPlatform);
    let a = Process::new(platform.clone(), Format::NATIVE).expect("process A");
    let b = Process::new(platform, Format::NATIVE).expect("process B");
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&a, PAGES * PAGE_SIZE, 0, &mut vmo), ZX_OK);
    let object = a.handle(vmo).expect("VMO handle");
    let vmo_b = b
        .add_handle(object.object, object.rights)
        .expect("handle in B");
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let (mut addr_a, mut addr_b) = (0, 0);
    let len = PAGES * PAGE_SIZE;
    assert_eq!(
        zx_vmar_map(&a, a.root_vmar_handle(), rw, 0, vmo, 0, len, &mut addr_a),
        ZX_OK
    );
    assert_eq!(
        zx_vmar_map(&b, b.root_vmar_handle(), rw, 0, vmo_b, 0, len, &mut addr_b),
        ZX_OK
    );
    // CPUs 0..n/2 run A, the rest B.
    let in_a = |cpu: usize| cpu < n / 2;
    let base = |cpu: usize| if in_a(cpu) { addr_a } else { addr_b };
    smp::run_on_all(0..n, &|cpu| {
        mm::switch_to(Some(if in_a(cpu) { a.aspace() } else { b.aspace() }))
    });
    println!(
        "decommit ({}): {PAGES}-page VMO mapped at {addr_a:#x} in A (CPUs 0..{}) and {addr_b:#x} in B (CPUs {}..{n})",
        mode_name(),
        n / 2,
        n / 2
    );
    // aarch64: the crate's leaf descriptors carry the AttrIndx of `Platform::memory_attributes`
    // (MAIR_EL1 attribute 1 here); the MMU must apply normal write-back memory to user pages.
    #[cfg(target_arch = "aarch64")]
    let attributes_ok = {
        mm::store(addr_a, 1).expect("store");
        let attr = arch::attribute_of(addr_a);
        println!(
            "decommit ({}): user page {addr_a:#x}: AT S1E1R attribute {}",
            mode_name(),
            arch::attribute_name(attr)
        );
        attr == Some(0xff)
    };
    #[cfg(not(target_arch = "aarch64"))]
    let attributes_ok = true;

    let failures = Failures {
        count: AtomicU64::new(0),
        first: IrqSpinLock::new(Vec::new()),
    };
    let done = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    let passes = AtomicU64::new(0);
    let before = Snapshot::take();
    let mut rounds = 0;
    for (round, &(first, count)) in RANGES.iter().cycle().take(2 * RANGES.len()).enumerate() {
        let round = round as u64;
        rounds += 1;
        let decommitted = |page: u64| (first..first + count).contains(&page);
        // Even rounds: CPU 0 decommits through A; odd rounds: the last CPU, through B.
        let (decommitter, process, addr) = if round.is_multiple_of(2) {
            (0, &a, addr_a)
        } else {
            (n - 1, &b, addr_b)
        };

        // Touch: CPU 0 writes every page (faulting them in), then every CPU reads every page, so
        // that every TLB holds every translation.
        smp::run_on(0, || {
            for page in 0..PAGES {
                mm::store(addr_a + page * PAGE_SIZE, pattern(round, page)).expect("store");
            }
        });
        smp::run_on_all(0..n, &|cpu| {
            for page in 0..PAGES {
                let read = mm::load(base(cpu) + page * PAGE_SIZE).expect("load");
                let expected = pattern(round, page);
                if read != expected {
                    failures.record(BadRead {
                        round,
                        cpu,
                        page,
                        read,
                        expected,
                        after_decommit: false,
                    });
                }
            }
        });

        // Decommit on one CPU while the others read, and check what each read after the call
        // returned: zero in the range, the pattern elsewhere.
        done.store(false, Ordering::SeqCst);
        started.store(0, Ordering::SeqCst);
        passes.store(0, Ordering::SeqCst);
        let check = |cpu: usize, after: bool| {
            for page in 0..PAGES {
                let read = mm::load(base(cpu) + page * PAGE_SIZE).unwrap_or(FREED_POISON);
                let old = pattern(round, page);
                let good = match (decommitted(page), after) {
                    (true, true) => read == 0,
                    (true, false) => read == 0 || read == old,
                    (false, _) => read == old,
                };
                if !good {
                    let expected = if decommitted(page) && after { 0 } else { old };
                    failures.record(BadRead {
                        round,
                        cpu,
                        page,
                        read,
                        expected,
                        after_decommit: after,
                    });
                }
            }
        };
        smp::run_on_all(0..n, &|cpu| {
            if cpu == decommitter {
                while started.load(Ordering::SeqCst) < n - 1
                    || passes.load(Ordering::SeqCst) < 2 * (n as u64 - 1)
                {
                    core::hint::spin_loop();
                }
                let status = zx_vmar_op_range(
                    process,
                    process.root_vmar_handle(),
                    ZX_VMAR_OP_DECOMMIT,
                    addr + first * PAGE_SIZE,
                    count * PAGE_SIZE,
                    0,
                    0,
                );
                assert_eq!(status, ZX_OK, "decommit");
                done.store(true, Ordering::SeqCst);
                check(cpu, true);
            } else {
                started.fetch_add(1, Ordering::SeqCst);
                let mut after = 0;
                while after < 2 {
                    // `done` is read before the pass: a pass that saw it began after the call
                    // returned, so every read in it must see the decommit.
                    let is_done = done.load(Ordering::SeqCst);
                    check(cpu, is_done);
                    passes.fetch_add(1, Ordering::SeqCst);
                    if is_done {
                        after += 1;
                    }
                }
            }
        });
        // And once more on every CPU, all quiet.
        smp::run_on_all(0..n, &|cpu| check(cpu, true));
        if failures.count.load(Ordering::SeqCst) != 0 {
            // Stop at the first bad round: a CPU that kept a stale translation must not write
            // through it in the next round's set-up.
            break;
        }
    }
    let delta = Snapshot::take().since(&before);

    smp::run_on_all(0..n, &|_| mm::switch_to(None));
    drop((a, b));
    let leaked = FRAMES.in_use() - baseline;
    let bad = failures.count.load(Ordering::SeqCst);
    println!(
        "decommit ({}): {rounds} rounds on {n} CPUs: {} shootdown rounds, {} IPIs sent, {} IPIs taken, {} page flushes, {} span flushes, {} full flushes, {} page faults; {bad} bad reads; {leaked} frames leaked ({} frames allocated and freed)",
        mode_name(),
        delta.shootdowns,
        delta.ipis,
        delta.ipis_received,
        delta.page_invalidations,
        delta.span_invalidations,
        delta.full_invalidations,
        delta.page_faults,
        delta.frames_allocated,
    );
    for bad in failures.first.lock().iter() {
        println!("  bad read: {bad:x?}");
    }
    let ipis_as_expected = if KernelPlatform::ipi_mode() {
        delta.ipis > 0 && delta.ipis_received >= delta.ipis
    } else {
        delta.ipis == 0
    };
    if !ipis_as_expected {
        println!("  unexpected IPI counts for {}", mode_name());
    }
    bad == 0 && leaked == 0 && ipis_as_expected && attributes_ok
}

// =================================================================================================
// 4. The negative control: a stale TLB entry is visible.
// =================================================================================================

/// Records the frames a page table the kernel builds itself takes, so that they can be freed
/// after `PageTableOps::release` (whose list of freed tables is crate-private).
struct Recording {
    frames: IrqSpinLock<Vec<PhysAddr>>,
}

impl Hooks for Recording {
    fn allocated(&self, first: PhysAddr, count: usize) {
        let mut frames = self.frames.lock();
        frames.extend((0..count as u64).map(|i| PhysAddr(first.0 + i * PAGE_SIZE)));
    }
}

fn fill(frame: PhysAddr, value: u64) {
    let words = arch::phys_to_virt(frame) as *mut u64;
    for i in 0..(PAGE_SIZE / 8) as usize {
        // SAFETY: a frame this scenario allocated and owns, through the direct map.
        unsafe { words.add(i).write_volatile(value) };
    }
}

/// Builds a page table with the crate's walker (`zx_vm::arch::new_page_table_for`, with the
/// platform's memory attributes, as an address space would), maps a page to
/// frame OLD, lets every other CPU read it through its TLB, then points the entry at frame NEW
/// with no invalidation at all. Each CPU must still read OLD (the stale translation), and NEW
/// once it invalidated the page itself.
fn stale_tlb_negative_control() -> bool {
    const OLD: u64 = 0x01d0_01d0_01d0_01d0;
    const NEW: u64 = 0x0ee0_0ee0_0ee0_0ee0;
    const VA: u64 = 0x4000_0000;
    let n = smp::cpu_count();
    let baseline = FRAMES.in_use();
    let recording = Forward {
        inner: KernelPlatform,
        hooks: Recording {
            frames: IrqSpinLock::new(Vec::new()),
        },
    };
    let mut table = zx_vm::arch::new_page_table_for(
        &recording,
        Format::NATIVE,
        0,
        USER_ADDRESS_LIMIT,
        recording.memory_attributes(),
    )
    .expect("page table");
    let root = table.root();
    // As `AddressSpace::new` does: the kernel's mappings go in before the table is used.
    recording.prepare_root(root);
    let (old, new) = (
        FRAMES.alloc(1).expect("frame"),
        FRAMES.alloc(1).expect("frame"),
    );
    fill(old, OLD);
    fill(new, NEW);
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    table.map(&recording, VA, old, rw).expect("map");
    // A second page in the same last-level table, so that unmapping the first frees no table.
    table.map(&recording, VA + PAGE_SIZE, old, rw).expect("map");
    let (asid, _) = KernelPlatform.tlb().asids().alloc();

    let read = |_cpu: usize| arch::probe_read(VA);
    let first: Vec<_> = (1..n)
        .map(|cpu| {
            smp::run_on(cpu, || {
                // SAFETY: `root` maps the kernel (`prepare_root` on x86_64; the kernel runs from
                // TTBR1_EL1 on aarch64) and lives until this CPU loads the kernel root, below.
                unsafe { arch::load_root_raw(root, asid) };
                read(cpu)
            })
        })
        .collect();

    // Re-point the entry, without any invalidation.
    let mut pending = PendingFlush::new();
    table.unmap(&recording, VA, VA + PAGE_SIZE, &mut pending);
    table.map(&recording, VA, new, rw).expect("map");
    arch::publish_table_stores();

    let stale: Vec<_> = (1..n).map(|cpu| smp::run_on(cpu, || read(cpu))).collect();
    let fixed: Vec<_> = (1..n)
        .map(|cpu| {
            smp::run_on(cpu, || {
                arch::invalidate_page_local(VA, asid);
                let value = read(cpu);
                arch::load_kernel_root();
                value
            })
        })
        .collect();

    let mut release = PendingFlush::new();
    table.release(&recording, &mut release);
    drop(table);
    // No CPU has the table loaded any more, and each flushed it when it loaded the kernel root
    // (x86_64 CR3 reload; aarch64 below).
    arch::flush_asid_everywhere(asid);
    KernelPlatform.tlb().asids().free(asid, CpuSet::EMPTY);
    let mut frames = core::mem::take(&mut *recording.hooks.frames.lock());
    frames.extend([old, new]);
    // SAFETY: the table is released and no CPU has it loaded or cached (see above); the frames
    // were allocated here and are freed once each.
    unsafe { KernelPlatform.free_frames(&frames) };
    let leaked = FRAMES.in_use() - baseline;

    let mut passed = leaked == 0;
    for (i, cpu) in (1..n).enumerate() {
        let ok = first[i] == Ok(OLD) && stale[i] == Ok(OLD) && fixed[i] == Ok(NEW);
        println!(
            "stale TLB: CPU {cpu}: before {:x?}, after the unsynchronised change {:x?} ({}), after a local invalidation {:x?}",
            first[i],
            stale[i],
            if stale[i] == Ok(OLD) { "stale, as expected" } else { "NOT stale: the harness cannot see stale TLBs" },
            fixed[i],
        );
        passed &= ok;
    }
    println!("stale TLB: {leaked} frames leaked");
    passed
}
