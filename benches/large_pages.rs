//! Large pages (issue 13), both formats side by side in one run:
//!
//! - `decommit-1GiB`: `zx_vmar_op_range(DECOMMIT)` over a fully committed, mapped 1 GiB VMO with
//!   large pages (`Vmo::create_large_pages`: 512 runs, 512 2 MiB leaves) against the same with
//!   4 KiB pages (`zx_vmo_create`: 262144 pages and entries). Re-committed and re-mapped
//!   (`ZX_VMO_OP_COMMIT`, then `ZX_VM_MAP_RANGE`) before each iteration, outside timing.
//! - `touch-2MiB`: a store to each of the 512 pages of a fresh 2 MiB range: 512 first-touch
//!   faults with 4 KiB pages, one fault (commit the run, map one 2 MiB leaf) and 511 TLB hits
//!   with large pages; and the large-page fault alone (one store).
//! - `split`: `zx_vmar_protect` of one 4 KiB page inside a 2 MiB leaf (split, then change)
//!   against the same protect in a 4 KiB-mapped range; and a 4 KiB DECOMMIT likewise.
//!
//! Each machine uses its architecture's own shootdown: IPIs on x86_64, broadcast invalidation on
//! aarch64 (which large leaves need there). Counter deltas per call are printed and written to
//! `target/criterion/zx-vm-large-pages-extra.json`.

mod common;

use common::*;
use std::hint::black_box;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::{Format, LeafCounts};
use zx_vm::sim::{CounterSnapshot, SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::{KernelObject, Process, Rights, Vmo};

const MIB2: u64 = 2 * MIB;
const RUN_PAGES: u64 = MIB2 / PAGE_SIZE;

/// Which kind of VMO a case uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pages {
    /// `Vmo::create_large_pages`: commits aligned 2 MiB runs, mapped with 2 MiB leaves.
    Large,
    /// `zx_vmo_create`: 4 KiB pages.
    Small,
}

impl Pages {
    fn name(self) -> &'static str {
        match self {
            Pages::Large => "large",
            Pages::Small => "4k",
        }
    }
}

/// A machine with the format's own shootdown (broadcast on aarch64, IPIs on x86_64), no poison.
fn lp_machine(format: Format, frames: usize, cpus: usize) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames,
        cpus,
        poison_freed: false,
        broadcast: format == Format::Aarch64,
        ..SimConfig::default()
    })
}

/// A machine, a process active on each of its CPUs (CPU 0 makes the calls), a VMO of `bytes`
/// mapped read-write (nothing committed, nothing entered) at a 2 MiB-aligned address.
struct Setup {
    machine: Arc<SimMachine>,
    process: Arc<Process>,
    vmo: zx_handle_t,
    addr: u64,
    cpus: usize,
}

impl Setup {
    fn new(format: Format, pages: Pages, bytes: u64, frames: usize, cpus: usize) -> Setup {
        let machine = lp_machine(format, frames, cpus);
        // This thread runs as CPU 0 (a previous case's machine may have left it as another).
        machine.cpu(0).enter();
        let process = process(&machine, format);
        let vmo = match pages {
            Pages::Small => vmo_create(&process, bytes / PAGE_SIZE),
            Pages::Large => {
                let object = Vmo::create_large_pages(machine.clone(), bytes).expect("VMO");
                process
                    .add_handle(
                        KernelObject::Vmo(object),
                        Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
                    )
                    .expect("handle")
            }
        };
        let base = root_base(&process);
        let target = (base + MIB2) & !(MIB2 - 1);
        let mut addr = 0;
        let status = zx_vmar_map(
            &process,
            process.root_vmar_handle(),
            RW | ZX_VM_SPECIFIC,
            target - base,
            vmo,
            0,
            bytes,
            &mut addr,
        );
        assert_eq!(status, ZX_OK);
        assert_eq!(addr, target);
        for cpu in 0..cpus {
            machine.cpu(cpu).switch_to(Some(process.aspace()));
        }
        machine.cpu(0).enter();
        Setup {
            machine,
            process,
            vmo,
            addr,
            cpus,
        }
    }

    fn vmo_op(&self, op: u32, first_page: u64, pages: u64) {
        let status = zx_vmo_op_range(
            &self.process,
            self.vmo,
            op,
            first_page * PAGE_SIZE,
            pages * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
    }

    fn leaves(&self) -> LeafCounts {
        self.process
            .aspace()
            .with_page_table_unsynchronized(|pt, m| pt.leaf_counts(m))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The CPUs hold the address space (and it the machine): switch them away so that the
        // machine is torn down last and its leak check runs.
        for cpu in 0..self.cpus {
            self.machine.cpu(cpu).switch_to(None);
        }
    }
}

/// The counter deltas the report prints and records.
fn counters_line(c: &CounterSnapshot) -> String {
    format!(
        "rounds {}, IPIs {}, page invalidations {}, full invalidations {}, table invalidations {}, frames freed {}, runs freed {}, frames allocated {}, runs allocated {}, faults {}",
        c.shootdowns,
        c.ipis,
        c.page_invalidations,
        c.full_invalidations,
        c.table_invalidations,
        c.frames_freed,
        c.runs_freed,
        c.frames_allocated,
        c.runs_allocated,
        c.page_faults
    )
}

// ---------------------------------------------------------------------------------------------
// 1. DECOMMIT of a fully committed, mapped 1 GiB VMO.

struct Decommit {
    setup: Setup,
    pages: Pages,
    label: String,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

const GIB_PAGES: u64 = GIB / PAGE_SIZE;

impl Decommit {
    fn new(format: Format, pages: Pages) -> Decommit {
        // 262144 data frames, room for the tables, and for the runs' alignment.
        let frames = (GIB_PAGES + 16 * RUN_PAGES) as usize;
        Decommit {
            setup: Setup::new(format, pages, GIB, frames, 2),
            pages,
            label: format!("decommit-1GiB/{}-{}", pages.name(), format.name()),
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }
}

impl Workload for Decommit {
    fn pages(&self) -> u64 {
        GIB_PAGES
    }

    fn prepare(&mut self, _slot: usize) {
        let s = &self.setup;
        s.vmo_op(ZX_VMO_OP_COMMIT, 0, GIB_PAGES);
        remap(&s.process, s.vmo, 0, s.addr, GIB_PAGES);
        let expected = match self.pages {
            Pages::Large => (0, 512),
            Pages::Small => (GIB_PAGES as usize, 0),
        };
        let leaves = s.leaves();
        assert_eq!((leaves.pages, leaves.large_2m), expected, "{}", self.label);
        s.machine.cpu(0).enter();
        self.before = s.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        let p = &self.setup.process;
        let status = zx_vmar_op_range(
            p,
            p.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            black_box(self.setup.addr),
            GIB,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
    }

    fn check(&mut self, _slot: usize) {
        let s = &self.setup;
        let delta = s.machine.counters().since(&self.before);
        self.last = delta;
        assert_eq!(delta.shootdowns, 1, "{}: one round", self.label);
        assert!(delta.frames_freed >= GIB_PAGES, "{}", self.label);
        assert_eq!(delta.frames_allocated, 0, "{}", self.label);
        if self.pages == Pages::Large {
            assert_eq!(delta.runs_freed, 512, "{}: a run per call", self.label);
        }
        assert_eq!(committed_bytes(&s.process, s.vmo), 0, "{}", self.label);
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for Decommit {
    fn drop(&mut self) {
        println!(
            "{}: per decommit: {}",
            self.label,
            counters_line(&self.last)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. First touch of a 2 MiB range.

struct Touch {
    setup: Setup,
    pages: Pages,
    /// Stores per run: 512 (one per page) or 1.
    stores: u64,
    label: String,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

impl Touch {
    fn new(format: Format, pages: Pages, stores: u64) -> Touch {
        Touch {
            setup: Setup::new(format, pages, MIB2, 4 * RUN_PAGES as usize, 1),
            pages,
            stores,
            label: format!("touch-2MiB/{}-{}/{stores}", pages.name(), format.name()),
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }
}

impl Workload for Touch {
    fn pages(&self) -> u64 {
        self.stores
    }

    fn prepare(&mut self, _slot: usize) {
        // Nothing committed, nothing mapped, nothing cached: the first store faults.
        let s = &self.setup;
        s.vmo_op(ZX_VMO_OP_DECOMMIT, 0, RUN_PAGES);
        s.machine.cpu(0).enter();
        assert!(s.machine.cpu(0).tlb_entry(s.addr).is_none());
        self.before = s.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        let cpu = self.setup.machine.cpu(0);
        for page in 0..self.stores {
            let va = black_box(self.setup.addr + page * PAGE_SIZE);
            cpu.store(va, page + 1).expect("a store in a mapping");
        }
    }

    fn check(&mut self, _slot: usize) {
        let s = &self.setup;
        let delta = s.machine.counters().since(&self.before);
        self.last = delta;
        let (faults, runs, leaves) = match self.pages {
            Pages::Large => (1, 1, (0, 1)),
            Pages::Small => (self.stores, 0, (self.stores as usize, 0)),
        };
        assert_eq!(delta.page_faults, faults, "{}", self.label);
        assert_eq!(delta.runs_allocated, runs, "{}", self.label);
        let l = s.leaves();
        assert_eq!((l.pages, l.large_2m), leaves, "{}", self.label);
        let cpu = s.machine.cpu(0);
        for page in [0, self.stores - 1] {
            assert_eq!(cpu.load(s.addr + page * PAGE_SIZE), Ok(page + 1));
        }
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for Touch {
    fn drop(&mut self) {
        println!("{}: per run: {}", self.label, counters_line(&self.last));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A split: protect or DECOMMIT one 4 KiB page inside a 2 MiB leaf, against the same inside
// 512 4 KiB entries.

/// Independent 2 MiB regions prepared before one timed batch: one. With several, the remote CPU
/// would cache a 2 MiB translation for each, and the simulation's check that no freed frame is
/// still cached (`SimMachine::check_not_cached`, run by every `free_frames`) expands each cached
/// 2 MiB translation into its 512 frames and sorts them: tens of µs per call (up to 16x the
/// 4 KiB side on aarch64 with 8 regions) that are the simulation's, not the crate's.
const SPLIT_SLOTS: usize = 1;
/// The page of each region the call changes (a remote CPU caches its translation).
const SPLIT_PAGE: u64 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SplitOp {
    Protect,
    Decommit,
}

struct Split {
    setup: Setup,
    pages: Pages,
    op: SplitOp,
    label: String,
    prepared: u64,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

impl Split {
    fn new(format: Format, pages: Pages, op: SplitOp) -> Split {
        let run_pages = RUN_PAGES * SPLIT_SLOTS as u64;
        let setup = Setup::new(
            format,
            pages,
            run_pages * PAGE_SIZE,
            4 * run_pages as usize,
            2,
        );
        let name = match op {
            SplitOp::Protect => "protect-4KiB",
            SplitOp::Decommit => "decommit-4KiB",
        };
        Split {
            setup,
            pages,
            op,
            label: format!("split/{}-{}/{name}", pages.name(), format.name()),
            prepared: 0,
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }

    fn region(&self, slot: usize) -> u64 {
        self.setup.addr + slot as u64 * MIB2
    }
}

impl Workload for Split {
    fn pages(&self) -> u64 {
        1
    }

    fn slots(&self) -> usize {
        SPLIT_SLOTS
    }

    fn prepare(&mut self, slot: usize) {
        let s = &self.setup;
        let first = slot as u64 * RUN_PAGES;
        if self.op == SplitOp::Decommit {
            // A fresh run (the page the last call decommitted came back as a lone frame).
            s.vmo_op(ZX_VMO_OP_DECOMMIT, first, RUN_PAGES);
        }
        s.vmo_op(ZX_VMO_OP_COMMIT, first, RUN_PAGES);
        // Re-mapped whole, read-write: one 2 MiB leaf, or 512 entries.
        let region = self.region(slot);
        remap(&s.process, s.vmo, first, region, RUN_PAGES);
        // A remote CPU caches the page's translation.
        let va = region + SPLIT_PAGE * PAGE_SIZE;
        s.machine.cpu(1).load(va).expect("mapped");
        let level = s.machine.cpu(1).tlb_translation(va).expect("cached").1;
        let expected = match self.pages {
            Pages::Large => 1,
            Pages::Small => 0,
        };
        assert_eq!(level, expected, "{}", self.label);
        s.machine.cpu(0).enter();
        if slot == 0 {
            self.prepared = 0;
        }
        self.prepared += 1;
        self.before = s.machine.counters();
    }

    fn run(&mut self, slot: usize) {
        let p = &self.setup.process;
        let va = black_box(self.region(slot) + SPLIT_PAGE * PAGE_SIZE);
        let status = match self.op {
            SplitOp::Protect => {
                zx_vmar_protect(p, p.root_vmar_handle(), ZX_VM_PERM_READ, va, PAGE_SIZE)
            }
            SplitOp::Decommit => zx_vmar_op_range(
                p,
                p.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                va,
                PAGE_SIZE,
                0,
                0,
            ),
        };
        assert_eq!(status, ZX_OK);
    }

    fn check(&mut self, slot: usize) {
        let s = &self.setup;
        if slot == 0 {
            let delta = s.machine.counters().since(&self.before);
            let n = self.prepared;
            assert_eq!(delta.shootdowns, n, "{}: a round per call", self.label);
            // A split takes one frame for the new table.
            let tables = u64::from(self.pages == Pages::Large);
            assert_eq!(delta.frames_allocated, tables * n, "{}", self.label);
            self.last = CounterSnapshot {
                frames_allocated: delta.frames_allocated / n,
                frames_freed: delta.frames_freed / n,
                shootdowns: delta.shootdowns / n,
                ipis: delta.ipis / n,
                page_invalidations: delta.page_invalidations / n,
                full_invalidations: delta.full_invalidations / n,
                range_invalidations: delta.range_invalidations / n,
                broadcast_invalidations: delta.broadcast_invalidations / n,
                tlbsyncs: delta.tlbsyncs / n,
                table_invalidations: delta.table_invalidations / n,
                tlb_hits: delta.tlb_hits / n,
                tlb_misses: delta.tlb_misses / n,
                page_faults: delta.page_faults / n,
                runs_allocated: delta.runs_allocated / n,
                runs_freed: delta.runs_freed / n,
            };
        }
        let region = self.region(slot);
        let cpu1 = s.machine.cpu(1);
        let va = region + SPLIT_PAGE * PAGE_SIZE;
        match self.op {
            SplitOp::Protect => {
                assert!(cpu1.store(va, 1).is_err(), "{}: read-only", self.label)
            }
            SplitOp::Decommit => assert!(cpu1.tlb_entry(va).is_none(), "{}", self.label),
        }
        cpu1.store(va + PAGE_SIZE, 2)
            .expect("the neighbour stays writable");
        s.machine.cpu(0).enter();
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        println!("{}: per call: {}", self.label, counters_line(&self.last));
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |group: &'static str,
                   function: String,
                   param: &str,
                   build: Box<dyn Fn() -> Box<dyn Workload>>| {
        out.push(Case {
            group,
            function,
            param: param.to_string(),
            build,
        })
    };
    for format in Format::ALL {
        for pages in [Pages::Large, Pages::Small] {
            add(
                "decommit-1GiB",
                format!("{}-{}", pages.name(), format.name()),
                "262144",
                Box::new(move || Box::new(Decommit::new(format, pages))),
            );
        }
    }
    for format in Format::ALL {
        for pages in [Pages::Large, Pages::Small] {
            add(
                "touch-2MiB",
                format!("{}-{}", pages.name(), format.name()),
                "512",
                Box::new(move || Box::new(Touch::new(format, pages, RUN_PAGES))),
            );
        }
        add(
            "touch-2MiB",
            format!("large-{}", format.name()),
            "1",
            Box::new(move || Box::new(Touch::new(format, Pages::Large, 1))),
        );
    }
    for format in Format::ALL {
        for (op, name) in [
            (SplitOp::Protect, "protect-4KiB"),
            (SplitOp::Decommit, "decommit-4KiB"),
        ] {
            for pages in [Pages::Large, Pages::Small] {
                add(
                    "split",
                    format!("{}-{}", pages.name(), format.name()),
                    name,
                    Box::new(move || Box::new(Split::new(format, pages, op))),
                );
            }
        }
    }
    out
}

fn main() {
    common::run(cases(), "zx-vm-large-pages-extra.json", |_| {});
}
