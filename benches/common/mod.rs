//! The harness the benchmark binaries share (`benches/decommit.rs`, `benches/children.rs`):
//! set-up helpers, the [`Workload`] trait and its timed region, criterion driven with a wall-clock
//! budget per case, the counters file for `benches/plot.py`, one case run without criterion for
//! callgrind (`ZXVM_BENCH_PROFILE`), and the fault-path workloads both binaries measure.
//!
//! Each binary uses a part of it.
#![allow(dead_code)]

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{CounterSnapshot, SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::{Platform, Process};

// ---------------------------------------------------------------------------------------------
// Set-up helpers (the shape of tests/common, which benches cannot import).

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const RW: u32 = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;

pub fn pages_of(bytes: u64) -> u64 {
    bytes / PAGE_SIZE
}

/// Frames for `data_pages` committed pages mapped into `aspaces` address spaces, with room for
/// every page-table page and some slack.
pub fn frames_for(data_pages: u64, aspaces: u64) -> usize {
    // Twice the tables: a re-map with ZX_VM_SPECIFIC_OVERWRITE builds the new tables before the
    // old ones are freed.
    (data_pages + 2 * aspaces * (data_pages / 512 + 16) + 256) as usize
}

pub fn machine(frames: usize, cpus: usize) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames,
        cpus,
        poison_freed: false,
        ..SimConfig::default()
    })
}

pub fn process(machine: &Arc<SimMachine>, format: Format) -> Arc<Process> {
    let platform: Arc<dyn Platform> = machine.clone();
    Process::new(platform, format).expect("process")
}

pub fn vmo_create(process: &Process, pages: u64) -> zx_handle_t {
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(process, pages * PAGE_SIZE, 0, &mut vmo),
        ZX_OK
    );
    vmo
}

/// Maps `pages` pages of `vmo` from page `first` read-write, anywhere; returns the address.
pub fn map_anywhere(process: &Process, vmo: zx_handle_t, first: u64, pages: u64) -> u64 {
    let mut addr = 0;
    let status = zx_vmar_map(
        process,
        process.root_vmar_handle(),
        RW,
        0,
        vmo,
        first * PAGE_SIZE,
        pages * PAGE_SIZE,
        &mut addr,
    );
    assert_eq!(status, ZX_OK);
    addr
}

pub fn root_base(process: &Process) -> u64 {
    process
        .vmar(process.root_vmar_handle())
        .expect("root VMAR")
        .0
        .base()
}

pub fn committed_bytes(process: &Process, vmo: zx_handle_t) -> u64 {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(process, vmo, &mut info), ZX_OK);
    info.committed_bytes
}

// ---------------------------------------------------------------------------------------------
// Workloads: something that can be made ready (untimed) and then run (timed).

/// One benchmarked job. `slots` independent instances can be prepared at once and run back to
/// back under one pair of clock reads, so that jobs of a few nanoseconds are not drowned by the
/// clock; each run is one iteration.
pub trait Workload {
    /// Pages of work in one run.
    fn pages(&self) -> u64;
    /// Independent instances that can be prepared before a timed batch.
    fn slots(&self) -> usize {
        1
    }
    /// Makes instance `slot` ready to run (untimed).
    fn prepare(&mut self, slot: usize);
    /// Runs instance `slot` (timed).
    fn run(&mut self, slot: usize);
    /// Checks what instance `slot`'s run did (untimed).
    fn check(&mut self, _slot: usize) {}
    /// The simulated machine's counter deltas over the last run (ours only).
    fn counters(&self) -> Option<CounterSnapshot> {
        None
    }
}

/// Runs `iters` iterations and returns the time spent in `run` alone.
pub fn timed_iterations(work: &mut dyn Workload, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(work.slots() as u64) as usize;
        for slot in 0..batch {
            work.prepare(slot);
        }
        total += timed_region(work, batch);
        for slot in 0..batch {
            work.check(slot);
        }
        left -= batch as u64;
    }
    total
}

/// The timed region, kept out of line so that callgrind can collect it alone
/// (`--toggle-collect='*timed_region*'`).
#[inline(never)]
pub fn timed_region(work: &mut dyn Workload, batch: usize) -> Duration {
    let start = Instant::now();
    for slot in 0..batch {
        work.run(slot);
    }
    start.elapsed()
}

/// Maps `pages` pages of `vmo` from page `vmo_page` at exactly `addr`, replacing the mapping there,
/// with every committed page entered in the page table (`ZX_VM_MAP_RANGE`).
pub fn remap(process: &Process, vmo: zx_handle_t, vmo_page: u64, addr: u64, pages: u64) {
    let mut mapped = 0;
    // Zircon refuses SPECIFIC_OVERWRITE with MAP_RANGE: unmap, then map at the same place.
    let root = process.root_vmar_handle();
    assert_eq!(zx_vmar_unmap(process, root, addr, pages * PAGE_SIZE), ZX_OK);
    let status = zx_vmar_map(
        process,
        root,
        RW | ZX_VM_SPECIFIC | ZX_VM_MAP_RANGE,
        addr - root_base(process),
        vmo,
        vmo_page * PAGE_SIZE,
        pages * PAGE_SIZE,
        &mut mapped,
    );
    assert_eq!(status, ZX_OK);
    assert_eq!(mapped, addr);
}

/// A named case: how to build its workload.
pub struct Case {
    pub group: &'static str,
    pub function: String,
    pub param: String,
    pub build: Box<dyn Fn() -> Box<dyn Workload>>,
}

pub fn case_id(case: &Case) -> String {
    format!("{}/{}/{}", case.group, case.function, case.param)
}

// ---------------------------------------------------------------------------------------------
// Running: criterion, with each case's iteration count planned from a calibration run.

/// Wall-clock time to spend measuring one case, set-up included.
pub const WALL_BUDGET: Duration = Duration::from_millis(2500);
pub const SAMPLES: usize = 10;

/// What a calibration run found: seconds of set-up and of timed work per iteration.
pub struct Calibration {
    setup: f64,
    timed: f64,
}

pub fn calibrate(work: &mut dyn Workload) -> Calibration {
    let slots = work.slots() as u64;
    let start = Instant::now();
    let mut timed = timed_iterations(work, slots).as_secs_f64();
    let mut wall = start.elapsed().as_secs_f64();
    let mut iters = slots;
    // Small cases: a few more rounds for a steadier estimate.
    while wall < 0.05 && iters < 64 * slots {
        let start = Instant::now();
        timed += timed_iterations(work, slots).as_secs_f64();
        wall += start.elapsed().as_secs_f64();
        iters += slots;
    }
    Calibration {
        setup: ((wall - timed) / iters as f64).max(0.0),
        timed: (timed / iters as f64).max(1e-9),
    }
}

/// Extra facts for the report, gathered outside timing: counter deltas, memory.
#[derive(Default)]
pub struct Extra {
    json: String,
}

impl Extra {
    pub fn add(&mut self, key: &str, value: String) {
        if !self.json.is_empty() {
            self.json.push_str(",\n");
        }
        let _ = write!(self.json, "  \"{key}\": {value}");
    }

    fn write(&self, file: &str) {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
        let dir = std::path::Path::new(&dir).join("criterion");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(file), format!("{{\n{}\n}}\n", self.json));
    }
}

pub fn counters_json(c: &CounterSnapshot) -> String {
    format!(
        "{{\"shootdowns\": {}, \"ipis\": {}, \"page_invalidations\": {}, \"full_invalidations\": {}, \"range_invalidations\": {}, \"broadcast_invalidations\": {}, \"tlbsyncs\": {}, \"table_invalidations\": {}, \"frames_freed\": {}, \"runs_freed\": {}, \"frames_allocated\": {}, \"runs_allocated\": {}, \"page_faults\": {}}}",
        c.shootdowns,
        c.ipis,
        c.page_invalidations,
        c.full_invalidations,
        c.range_invalidations,
        c.broadcast_invalidations,
        c.tlbsyncs,
        c.table_invalidations,
        c.frames_freed,
        c.runs_freed,
        c.frames_allocated,
        c.runs_allocated,
        c.page_faults
    )
}

pub fn bench_case(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    case: &Case,
    extra: &mut Extra,
) {
    let mut work = (case.build)();
    let cal = calibrate(&mut *work);
    // Criterion plans its iterations from the wall-clock time of its warm-up, set-up included,
    // so the measurement time given to it is a wall-clock budget: enough iterations to fill
    // WALL_BUDGET, and at least two per sample.
    let per_iter = cal.setup + cal.timed;
    let per_sample = ((WALL_BUDGET.as_secs_f64() / per_iter) as u64 / SAMPLES as u64).max(2);
    let measurement = Duration::from_secs_f64(per_iter * (per_sample * SAMPLES as u64) as f64);
    group.measurement_time(measurement.max(Duration::from_millis(1)));
    group.warm_up_time(Duration::from_secs_f64((per_iter * 2.0).clamp(0.05, 0.3)));
    group.throughput(Throughput::Elements(work.pages()));
    group.bench_function(BenchmarkId::new(&case.function, &case.param), |b| {
        b.iter_custom(|iters| timed_iterations(&mut *work, iters))
    });
    if let Some(deltas) = work.counters() {
        extra.add(
            &format!("counters/{}", case_id(case)),
            counters_json(&deltas),
        );
    }
    extra.add(
        &format!("calibration/{}", case_id(case)),
        format!(
            "{{\"setup_s\": {:.9}, \"timed_s\": {:.9}, \"pages\": {}}}",
            cal.setup,
            cal.timed,
            work.pages()
        ),
    );
}

/// A bench binary's `main`: with `ZXVM_BENCH_PROFILE` set, runs one case without criterion
/// ([`profile_case`]); otherwise runs every case criterion's filter selects, group by group in
/// the order of `cases`, after `before` (which may add facts of its own to the extra file), and
/// writes the counters of each case to `target/criterion/<extra_file>` for `benches/plot.py`.
pub fn run(cases: Vec<Case>, extra_file: &str, before: impl FnOnce(&mut Extra)) {
    let profile = std::env::var("ZXVM_BENCH_PROFILE").ok();
    if let Some(case) = profile {
        return profile_case(&cases, &case);
    }
    let mut extra = Extra::default();
    before(&mut extra);

    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .nresamples(10_000)
        .configure_from_args();
    let mut groups: Vec<&'static str> = Vec::new();
    for case in &cases {
        if !groups.contains(&case.group) {
            groups.push(case.group);
        }
    }
    for name in groups {
        let mut group = criterion.benchmark_group(name);
        group.sampling_mode(SamplingMode::Flat);
        for case in cases.iter().filter(|c| c.group == name) {
            // Criterion's own filter: skip building a case it will not run.
            if !filter_matches(&case_id(case)) {
                continue;
            }
            bench_case(&mut group, case, &mut extra);
        }
        group.finish();
    }
    extra.write(extra_file);
    criterion.final_summary();
}

/// Whether criterion's positional filter (if any) matches `id`.
pub fn filter_matches(id: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filter = None;
    let mut skip_next = false;
    for arg in &args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if arg.starts_with("--") {
            // Options that take a value.
            skip_next = matches!(
                arg.as_str(),
                "--save-baseline"
                    | "--baseline"
                    | "--baseline-lenient"
                    | "--load-baseline"
                    | "--sample-size"
                    | "--warm-up-time"
                    | "--measurement-time"
                    | "--nresamples"
                    | "--noise-threshold"
                    | "--confidence-level"
                    | "--significance-level"
                    | "--profile-time"
                    | "--output-format"
                    | "--plotting-backend"
                    | "--color"
            );
            continue;
        }
        filter = Some(arg.clone());
    }
    filter.is_none_or(|f| id.contains(&f))
}

// ---------------------------------------------------------------------------------------------
// Profiling one case without criterion.

pub fn profile_case(cases: &[Case], name: &str) {
    if name == "list" {
        for case in cases {
            println!("{}", case_id(case));
        }
        return;
    }
    let case = cases
        .iter()
        .find(|c| case_id(c) == name)
        .unwrap_or_else(|| panic!("no case {name}; ZXVM_BENCH_PROFILE=list lists them"));
    let iters: u64 = std::env::var("ZXVM_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut work = (case.build)();
    // Run by hand (one instance at a time), counting the host page faults taken inside the
    // timed region as well.
    let mut timed = Duration::ZERO;
    let mut faults = 0;
    for _ in 0..iters {
        work.prepare(0);
        let before = minor_faults();
        timed += timed_region(&mut *work, 1);
        faults += minor_faults() - before;
        work.check(0);
    }
    let pages = work.pages();
    println!(
        "{name}: {iters} iterations, {:.3} us each, {:.3} ns/page, {:.1} host page faults per run",
        timed.as_secs_f64() * 1e6 / iters as f64,
        timed.as_secs_f64() * 1e9 / (iters * pages) as f64,
        faults as f64 / iters as f64
    );
}

/// Minor page faults the process has taken so far.
pub fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(status, 0);
    // SAFETY: getrusage succeeded and filled it.
    unsafe { usage.assume_init() }.ru_minflt
}

// ---------------------------------------------------------------------------------------------
// The fault path: a first-touch write fault (commit a zeroed frame, map it) against a plain 4 KiB
// zeroing loop.

/// Pages each fault-path run touches.
pub const FAULT_PAGES: u64 = 64;

/// A VMO of [`FAULT_PAGES`] mapped read-write with nothing committed, in a process that runs on
/// CPU 0; a run takes one fault per page through `AddressSpace::page_fault`, as a kernel's
/// page-fault handler would: write faults (commit a zeroed frame and map it), or, on a machine
/// with a shared zero page, read faults (map the zero page read-only, commit nothing).
pub struct FirstTouch {
    /// Read faults on a machine with a zero page.
    zero_page: bool,
    machine: Arc<SimMachine>,
    process: Arc<Process>,
    vmo: zx_handle_t,
    addr: u64,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

impl FirstTouch {
    pub fn new(format: Format, zero_page: bool) -> FirstTouch {
        let machine = machine(frames_for(FAULT_PAGES, 1), 1);
        if zero_page {
            machine.enable_zero_page();
        }
        let process = process(&machine, format);
        machine.cpu(0).switch_to(Some(process.aspace()));
        let vmo = vmo_create(&process, FAULT_PAGES);
        let addr = map_anywhere(&process, vmo, 0, FAULT_PAGES);
        FirstTouch {
            zero_page,
            machine,
            process,
            vmo,
            addr,
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }
}

impl Workload for FirstTouch {
    fn pages(&self) -> u64 {
        FAULT_PAGES
    }

    fn prepare(&mut self, _slot: usize) {
        // Nothing committed and nothing mapped: every page faults.
        let len = FAULT_PAGES * PAGE_SIZE;
        let status = zx_vmo_op_range(&self.process, self.vmo, ZX_VMO_OP_DECOMMIT, 0, len, 0, 0);
        assert_eq!(status, ZX_OK);
        self.machine.cpu(0).enter();
        self.before = self.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        let aspace = self.process.aspace();
        let access = if self.zero_page {
            zx_vm::vmar::Access::Read
        } else {
            zx_vm::vmar::Access::Write
        };
        for page in 0..FAULT_PAGES {
            let va = black_box(self.addr + page * PAGE_SIZE);
            aspace
                .page_fault(va, access)
                .expect("a fault in a mapping resolves");
        }
    }

    fn check(&mut self, _slot: usize) {
        let delta = self.machine.counters().since(&self.before);
        self.last = delta;
        assert_eq!(delta.shootdowns, 0, "a first touch replaces nothing");
        if self.zero_page {
            assert!(delta.frames_allocated < FAULT_PAGES, "page tables only");
            assert_eq!(committed_bytes(&self.process, self.vmo), 0);
        } else {
            assert!(delta.frames_allocated >= FAULT_PAGES, "a frame per page");
            assert_eq!(
                committed_bytes(&self.process, self.vmo),
                FAULT_PAGES * PAGE_SIZE
            );
        }
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for FirstTouch {
    fn drop(&mut self) {
        self.machine.cpu(0).switch_to(None);
    }
}

/// The fault path's peer: zeroing [`FAULT_PAGES`] 4 KiB pages of host memory that is already
/// present, one fill per page (what the fault path must do at least: a new frame is
/// zeroed before it is mapped).
pub struct ZeroLoop {
    pub buffer: Vec<u8>,
}

impl Workload for ZeroLoop {
    fn pages(&self) -> u64 {
        FAULT_PAGES
    }

    fn prepare(&mut self, _slot: usize) {
        self.buffer.fill(0xa5);
    }

    fn run(&mut self, _slot: usize) {
        for page in self.buffer.chunks_exact_mut(PAGE_SIZE as usize) {
            black_box(page).fill(0);
        }
    }

    fn check(&mut self, _slot: usize) {
        assert!(self.buffer.iter().all(|&b| b == 0));
    }
}
