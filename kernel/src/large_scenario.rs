//! Scenario 3: large leaves (2 MiB) split while the other CPUs use them.
//!
//! One process, active on every CPU, maps two regions at 2 MiB-aligned addresses:
//! - PHYS: a physical VMO over [`PHYS_RUNS`] runs of 2 MiB of RAM that the kernel reserves from its
//!   frame allocator (`FRAMES.alloc_aligned`) for the scenario's life, mapped with
//!   `ZX_VM_MAP_RANGE`: it must be mapped with one 2 MiB leaf per run at once;
//! - LARGE: a paged VMO made with `Vmo::create_large_pages` ([`LARGE_RUNS`] runs), which commits
//!   whole aligned runs through `Platform::alloc_aligned_run`: CPU 0's first touch of each run
//!   must fault it in as one 2 MiB leaf.
//!
//! The leaves are counted through `AddressSpace::leaf_counts`. Then, round after round
//! ([`ROUNDS`]), CPU 0 changes part of a leaf while every other CPU keeps reading the round's
//! pages and writing its own word of a page that stays writable:
//! - `zx_vmar_protect` of one page read-only: once the call returned, no CPU's store to it may
//!   succeed (it must fault with `AccessDenied`), and its data stays;
//! - `zx_vmar_op_range` DECOMMIT of one page of a run: once the call returned, every CPU reads 0
//!   from it (never the old data, never a freed frame's poison); and of a whole run, which the
//!   readers then fault back in as a new large leaf;
//! - `zx_vmar_unmap` of a 4 KiB hole: once the call returned, every read of it faults.
//!
//! As in the decommit scenario, a worker reads the "call returned" flag before each pass: every
//! access of a pass that saw it must see the change. Throughout, the other pages of the run keep
//! CPU 0's data, and each worker's stores to the page that stays writable all succeed and stick.
//! After each round the 2 MiB leaves are counted again; at the end every frame is back.
//!
//! With zx-vm's deliberately broken split (`break-split`), the changes made inside the table that
//! replaces a leaf are not invalidated: the page a DECOMMIT split off stays readable through the
//! other CPUs' stale translations (they read the freed frame's poison). (Protect and unmap split
//! their edges before they change anything, so their own invalidation still reaches the page; on
//! aarch64 the missing break-before-make is invisible here, QEMU modelling no TLB conflicts.)

use crate::frames::{FRAMES, FREED_POISON};
use crate::mm;
use crate::platform::{KernelPlatform, Snapshot};
use crate::smp;
use crate::sync::IrqSpinLock;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use zx_vm::abi::*;
use zx_vm::arch::{Format, LeafCounts};
use zx_vm::vmar::FaultError;
use zx_vm::{KernelObject, PhysAddr, Platform, Process, Rights, Vmo};

const MIB2: u64 = 2 << 20;
/// Pages in a 2 MiB run.
const RUN: u64 = MIB2 / PAGE_SIZE;
/// The physical VMO's 2 MiB runs.
const PHYS_RUNS: u64 = 2;
/// The large-page VMO's 2 MiB runs.
const LARGE_RUNS: u64 = 4;
/// At most this many pages of a round's range are watched (evenly spread).
const WATCHED: u64 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Protect,
    Decommit,
    Unmap,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Phys,
    Large,
}

/// One round: what CPU 0 does to which pages, the page of the same mapping that stays writable
/// (each worker stores into it), and the 2 MiB leaves expected once the round is over.
struct Round {
    op: Op,
    region: Region,
    /// The range changed: its first page (of the region) and its pages.
    first: u64,
    pages: u64,
    /// The page (of the region) that stays writable.
    writable: u64,
    /// 2 MiB leaves in the address space once the round is over.
    leaves_2m: usize,
}

/// [`Round`], in one line per round.
const fn round(
    op: Op,
    region: Region,
    first: u64,
    pages: u64,
    writable: u64,
    leaves_2m: usize,
) -> Round {
    Round {
        op,
        region,
        first,
        pages,
        writable,
        leaves_2m,
    }
}

/// The rounds, in order. The whole-run DECOMMIT's readers fault the run back in as a new large
/// leaf, which the last round splits again.
const ROUNDS: [Round; 7] = [
    round(Op::Protect, Region::Phys, 5, 1, 6, 5),
    round(Op::Protect, Region::Large, 3, 1, 4, 4),
    round(Op::Decommit, Region::Large, RUN + 7, 1, RUN + 8, 3),
    round(Op::Decommit, Region::Large, 2 * RUN, RUN, 3 * RUN + 1, 3),
    round(Op::Unmap, Region::Phys, RUN + 9, 1, RUN + 10, 2),
    round(
        Op::Decommit,
        Region::Large,
        3 * RUN + 100,
        1,
        3 * RUN + 101,
        1,
    ),
    round(
        Op::Decommit,
        Region::Large,
        2 * RUN + 200,
        1,
        2 * RUN + 201,
        0,
    ),
];

/// What CPU 0 stores in word 0 of the page at `va` before round `round`: never 0 nor poison.
fn pattern(round: usize, va: u64) -> u64 {
    0x1a76_0000_0000_0000 | ((round as u64) << 40) | (va >> 12)
}

/// A worker's store: round, CPU, sequence number (never 0).
fn tag(round: usize, cpu: usize, seq: u64) -> u64 {
    0x57 << 56 | ((round as u64) << 48) | ((cpu as u64) << 40) | seq
}

/// One wrong access.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Read through the Debug output.
struct BadAccess {
    round: usize,
    op: Op,
    cpu: usize,
    va: u64,
    read: Result<u64, FaultError>,
    after_call: bool,
    why: &'static str,
}

/// A round's pages, by address.
struct Plan {
    round: usize,
    op: Op,
    /// The start and length of the range CPU 0 changes.
    range: (u64, u64),
    /// The watched pages of the range.
    targets: Vec<u64>,
    /// The page each worker writes its own word of (word `cpu + 1`).
    writable: u64,
    /// Pages of the same runs that must keep their data (word 0): the runs' first and last.
    keep: Vec<u64>,
}

impl Plan {
    fn new(index: usize, r: &Round, base: u64) -> Plan {
        let stride = r.pages.div_ceil(WATCHED);
        let targets = (r.first..r.first + r.pages)
            .step_by(stride as usize)
            .map(|page| base + page * PAGE_SIZE)
            .collect();
        let run_of = |page: u64| page - page % RUN;
        let mut keep: Vec<u64> = [run_of(r.first), run_of(r.writable)]
            .into_iter()
            .flat_map(|run| [run, run + RUN - 1])
            .filter(|page| !(r.first..r.first + r.pages).contains(page) && *page != r.writable)
            .map(|page| base + page * PAGE_SIZE)
            .collect();
        keep.sort_unstable();
        keep.dedup();
        Plan {
            round: index,
            op: r.op,
            range: (base + r.first * PAGE_SIZE, r.pages * PAGE_SIZE),
            targets,
            writable: base + r.writable * PAGE_SIZE,
            keep,
        }
    }
}

/// What the CPUs share during a round.
struct Board {
    done: AtomicBool,
    started: AtomicUsize,
    passes: AtomicU64,
    /// Per CPU: its last value stored into the page that stays writable, and into the protected
    /// page (0: none).
    last_writable: Vec<AtomicU64>,
    last_target: Vec<AtomicU64>,
    failures: AtomicU64,
    first: IrqSpinLock<Vec<BadAccess>>,
}

impl Board {
    fn new(n: usize) -> Board {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Board {
            done: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            passes: AtomicU64::new(0),
            last_writable: zeros(),
            last_target: zeros(),
            failures: AtomicU64::new(0),
            first: IrqSpinLock::new(Vec::new()),
        }
    }

    fn reset(&self) {
        self.done.store(false, SeqCst);
        self.started.store(0, SeqCst);
        self.passes.store(0, SeqCst);
        for word in self.last_writable.iter().chain(&self.last_target) {
            word.store(0, SeqCst);
        }
    }

    fn record(&self, bad: BadAccess) {
        self.failures.fetch_add(1, SeqCst);
        let mut first = self.first.lock();
        if first.len() < 12 {
            first.push(bad);
        }
    }

    fn failures(&self) -> u64 {
        self.failures.load(SeqCst)
    }

    /// One pass of worker `cpu` over the plan's pages; `after`: it began after the call returned.
    fn pass(&self, cpu: usize, plan: &Plan, after: bool, seq: &mut u64) {
        let bad = |va: u64, read: Result<u64, FaultError>, why: &'static str| {
            self.record(BadAccess {
                round: plan.round,
                op: plan.op,
                cpu,
                va,
                read,
                after_call: after,
                why,
            })
        };
        for &va in &plan.targets {
            let old = pattern(plan.round, va);
            let read = mm::load(va);
            let good = match (plan.op, read, after) {
                (Op::Protect, Ok(value), _) => value == old,
                (Op::Decommit, Ok(0), _) | (Op::Unmap, Err(_), _) => true,
                (Op::Decommit | Op::Unmap, Ok(value), false) => value == old,
                _ => false,
            };
            if !good {
                bad(
                    va,
                    read,
                    "the changed range read wrong (stale or lost data)",
                );
            }
            if plan.op == Op::Protect {
                *seq += 1;
                let value = tag(plan.round, cpu, *seq);
                match mm::store(va + (cpu as u64 + 1) * 8, value) {
                    Ok(()) if after => {
                        bad(va, Ok(value), "a store succeeded after protect returned")
                    }
                    Ok(()) => self.last_target[cpu].store(value, SeqCst),
                    Err(FaultError::AccessDenied) => {}
                    Err(e) => bad(va, Err(e), "a store to the protected page failed oddly"),
                }
            }
        }
        *seq += 1;
        let value = tag(plan.round, cpu, *seq);
        match mm::store(plan.writable + (cpu as u64 + 1) * 8, value) {
            Ok(()) => self.last_writable[cpu].store(value, SeqCst),
            Err(e) => bad(plan.writable, Err(e), "a store to a writable page faulted"),
        }
        for &va in plan.keep.iter().chain([&plan.writable]) {
            let read = mm::load(va);
            if read != Ok(pattern(plan.round, va)) {
                bad(va, read, "a page of the run lost its data");
            }
        }
    }

    /// A worker's loop: passes until two have begun after the call returned.
    fn work(&self, cpu: usize, plan: &Plan) {
        self.started.fetch_add(1, SeqCst);
        let (mut after_passes, mut seq) = (0, 0);
        while after_passes < 2 {
            // Read before the pass: a pass that saw it began after the call returned.
            let after = self.done.load(SeqCst);
            self.pass(cpu, plan, after, &mut seq);
            self.passes.fetch_add(1, SeqCst);
            after_passes += u32::from(after);
        }
    }
}

/// The process, its regions and the RAM the physical VMO covers.
struct Fixture {
    process: Arc<Process>,
    /// The frames the physical VMO covers, reserved from the allocator.
    reserved: PhysAddr,
    phys: u64,
    large: u64,
    large_vmo: Arc<Vmo>,
}

impl Fixture {
    fn new() -> Fixture {
        let platform: Arc<dyn Platform> = Arc::new(KernelPlatform);
        let process = Process::new(platform.clone(), Format::NATIVE).expect("process");
        let frames = (PHYS_RUNS * RUN) as usize;
        let reserved = FRAMES.alloc_aligned(frames).expect("an aligned run of RAM");
        // The frames stay allocated (so no one else is handed them) until the VMO is gone.
        let phys_vmo = Vmo::create_physical(platform.clone(), reserved, PHYS_RUNS * MIB2)
            .expect("physical VMO");
        let large_vmo =
            Vmo::create_large_pages(platform, LARGE_RUNS * MIB2).expect("large-page VMO");
        let root = process.aspace().root_vmar();
        // 2 MiB-aligned addresses, with a free 2 MiB between the regions.
        let phys_at = (root.base() + MIB2) & !(MIB2 - 1);
        let large_at = phys_at + (PHYS_RUNS + 1) * MIB2;
        let phys = map(&process, phys_vmo, phys_at, PHYS_RUNS, ZX_VM_MAP_RANGE);
        let large = map(&process, large_vmo.clone(), large_at, LARGE_RUNS, 0);
        Fixture {
            process,
            reserved,
            phys,
            large,
            large_vmo,
        }
    }

    fn base(&self, region: Region) -> u64 {
        match region {
            Region::Phys => self.phys,
            Region::Large => self.large,
        }
    }

    fn leaves(&self) -> LeafCounts {
        self.process.aspace().leaf_counts()
    }
}

/// Maps `runs` 2 MiB runs of `vmo` read-write at `at` (2 MiB-aligned) with `extra` options.
fn map(process: &Process, vmo: Arc<Vmo>, at: u64, runs: u64, extra: u32) -> u64 {
    let rights = Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
    let handle = process
        .add_handle(KernelObject::Vmo(vmo), rights)
        .expect("handle");
    let root = process.aspace().root_vmar();
    let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC | extra;
    let (offset, len, mut addr) = (at - root.base(), runs * MIB2, 0);
    let status = zx_vm::syscall::zx_vmar_map(
        process,
        process.root_vmar_handle(),
        options,
        offset,
        handle,
        0,
        len,
        &mut addr,
    );
    assert_eq!(status, ZX_OK, "map at {at:#x}");
    assert_eq!(addr, at);
    assert_eq!(zx_vm::syscall::zx_handle_close(process, handle), ZX_OK);
    addr
}

/// CPU 0's part of a round: waits until every worker has made two passes, makes the call, and
/// says it returned.
fn operate(fx: &Fixture, board: &Board, plan: &Plan, workers: usize) {
    while board.started.load(SeqCst) < workers || board.passes.load(SeqCst) < 2 * workers as u64 {
        core::hint::spin_loop();
    }
    let (p, root) = (&*fx.process, fx.process.root_vmar_handle());
    let (va, len) = plan.range;
    let status = match plan.op {
        Op::Protect => zx_vm::syscall::zx_vmar_protect(p, root, ZX_VM_PERM_READ, va, len),
        Op::Decommit => {
            zx_vm::syscall::zx_vmar_op_range(p, root, ZX_VMAR_OP_DECOMMIT, va, len, 0, 0)
        }
        Op::Unmap => zx_vm::syscall::zx_vmar_unmap(p, root, va, len),
    };
    assert_eq!(status, ZX_OK, "{:?} at {va:#x}", plan.op);
    board.done.store(true, SeqCst);
}

/// Runs round `index`; false if it found a bad access or a wrong leaf count.
fn run_round(fx: &Fixture, board: &Board, index: usize, r: &Round) -> bool {
    let n = smp::cpu_count();
    let plan = Plan::new(index, r, fx.base(r.region));
    // CPU 0 writes this round's pattern into every page the round reads.
    smp::run_on(0, || {
        for &va in plan
            .targets
            .iter()
            .chain(&plan.keep)
            .chain([&plan.writable])
        {
            mm::store(va, pattern(index, va)).expect("pattern store");
        }
    });
    board.reset();
    smp::run_on_all(0..n, &|cpu| {
        if cpu == 0 {
            operate(fx, board, &plan, n - 1);
        } else {
            board.work(cpu, &plan);
        }
    });
    // Once more on every CPU, all quiet (CPU 0's stores go to word 1).
    smp::run_on_all(0..n, &|cpu| board.pass(cpu, &plan, true, &mut 0));
    // Every worker's stores stuck: its last to the writable page, and its last to a protected
    // page before the call returned.
    let mut words = alloc::vec![(plan.writable, &board.last_writable)];
    if plan.op == Op::Protect {
        words.push((plan.targets[0], &board.last_target));
    }
    for (page, last) in words {
        for cpu in 1..n {
            let last = last[cpu].load(SeqCst);
            let read = smp::run_on(0, || mm::load(page + (cpu as u64 + 1) * 8));
            if read != Ok(last) {
                board.record(BadAccess {
                    round: index,
                    op: plan.op,
                    cpu,
                    va: page,
                    read,
                    after_call: true,
                    why: "a worker's last store is not in memory",
                });
            }
        }
    }
    let leaves = fx.leaves();
    println!(
        "large pages: round {index}: {:?} of {:#x} bytes at {:#x}: leaves now {} x 2 MiB, {} x 4 KiB (expected {} x 2 MiB)",
        plan.op, plan.range.1, plan.range.0, leaves.large_2m, leaves.pages, r.leaves_2m
    );
    board.failures() == 0 && leaves.large_2m == r.leaves_2m && leaves.large_1g == 0
}

/// Checks the leaves after mapping: PHYS with one 2 MiB leaf per run at once (MAP_RANGE), LARGE
/// with one per run once CPU 0 touched each (and each run committed whole).
fn check_mapped(fx: &Fixture) -> bool {
    let at_map = fx.leaves();
    let before = Snapshot::take();
    smp::run_on(0, || {
        for run in 0..LARGE_RUNS {
            mm::store(fx.large + run * MIB2 + 8, run + 1).expect("touch");
        }
    });
    let delta = Snapshot::take().since(&before);
    let touched = fx.leaves();
    let committed = fx.large_vmo.committed_bytes();
    println!(
        "large pages: PHYS ({} MiB of RAM at {:#x}) mapped at {:#x} with MAP_RANGE: {} x 2 MiB, {} x 4 KiB; LARGE touched once per run at {:#x}: {} page faults, {} frames, {} x 2 MiB, {} x 4 KiB, {} MiB committed",
        PHYS_RUNS * 2,
        fx.reserved.0,
        fx.phys,
        at_map.large_2m,
        at_map.pages,
        fx.large,
        delta.page_faults,
        delta.frames_allocated,
        touched.large_2m,
        touched.pages,
        committed >> 20,
    );
    let phys_leaves = at_map.large_2m == PHYS_RUNS as usize && at_map.pages == 0;
    let large_leaves = touched.large_2m == (PHYS_RUNS + LARGE_RUNS) as usize && touched.pages == 0;
    phys_leaves && large_leaves && committed == LARGE_RUNS * MIB2 && delta.page_faults == LARGE_RUNS
}

/// Runs the scenario (aarch64: in broadcast mode, the only one with large leaves); true if it
/// passed.
pub fn run() -> bool {
    let n = smp::cpu_count();
    assert!(n >= 2, "the scenario needs at least 2 CPUs");
    let baseline = FRAMES.in_use();
    let fx = Fixture::new();
    smp::run_on_all(0..n, &|_| mm::switch_to(Some(fx.process.aspace())));
    let mut passed = check_mapped(&fx);
    let board = Board::new(n);
    let before = Snapshot::take();
    let mut rounds = 0;
    for (index, r) in ROUNDS.iter().enumerate() {
        rounds += 1;
        passed &= run_round(&fx, &board, index, r);
        if board.failures() != 0 {
            // A CPU that kept a stale translation must not write through it in the next round.
            break;
        }
    }
    let delta = Snapshot::take().since(&before);
    smp::run_on_all(0..n, &|_| mm::switch_to(None));
    let reserved = fx.reserved;
    drop(fx);
    FRAMES.free_run(reserved, (PHYS_RUNS * RUN) as usize);
    let leaked = FRAMES.in_use() - baseline;
    let bad = board.failures();
    println!(
        "large pages: {rounds} of {} rounds on {n} CPUs: {} shootdown rounds, {} IPIs sent, {} page flushes, {} span flushes, {} full flushes, {} page faults; {bad} bad accesses; {leaked} frames leaked",
        ROUNDS.len(),
        delta.shootdowns,
        delta.ipis,
        delta.page_invalidations,
        delta.span_invalidations,
        delta.full_invalidations,
        delta.page_faults,
    );
    for bad in board.first.lock().iter() {
        let poison = bad.read == Ok(FREED_POISON);
        println!(
            "  bad access: {bad:x?}{}",
            if poison {
                " (a freed frame's poison)"
            } else {
                ""
            }
        );
    }
    passed && bad == 0 && leaked == 0
}
