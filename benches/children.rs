//! Snapshot-child benchmarks: `zx_vmo_create_child(ZX_VMO_CHILD_SNAPSHOT)` and its copy-on-write
//! faults through the host simulation, each case side by side with a peer measured in the same
//! run (BENCHMARKS.md, "Snapshot children"):
//!
//! - `snapshot/ours/close-4KiB` against `snapshot/ours/close-2MiB`: a snapshot of a fully
//!   committed (every page written), unmapped VMO, and the close of the child, both timed. The
//!   VMO took one snapshot and closed it before the first iteration, so that every iteration
//!   starts from the steady state (a hidden node with a dead side, collapsed by the next
//!   snapshot). Target: 2 MiB within 2x of 4 KiB (a cost independent of the size).
//! - `fault/ours-<format>/cow-write-64` against `fault/ours-<format>/zero-fill-write-64`: 64
//!   write faults through `AddressSpace::page_fault` on a fresh snapshot child's mapping, each
//!   copying a page it shares with its parent, against 64 first-touch write faults on a plain
//!   VMO (zero-fill; the workload of `fault/*/first-touch-64` in `benches/decommit.rs`).
//!   `cow-write-protected-64` is the parent's side: 64 write faults on the parent's own mapping,
//!   write-protected by the snapshot, each copying the page and clearing its read-only entry in
//!   a round of its own, then faulting again to map the copy (what the retried access does).
//! - `snapshot/ours-<format>/64MiB-4spaces` against `snapshot/ours-<format>/protect-64MiB-4spaces`:
//!   a 64 MiB VMO, committed, mapped writable in 4 address spaces each active on its own CPU,
//!   every page touched through every CPU (so each TLB holds 16384 writable entries); timed: the
//!   snapshot, which must write-protect all 4 mappings in one shootdown round; the peer, on an
//!   identical machine, makes the 4 mappings read-only with `zx_vmar_protect` (the same entries
//!   rewritten, but one round per call). `64MiB-4spaces-again` times the snapshot of the same
//!   VMO when its previous snapshot was closed and the parent then took every page back by
//!   writing it (here: `ZX_VMO_OP_COMMIT`), the state a fork-like loop leaves.
//!
//! Every case's counters are checked after each iteration, outside timing (rounds, IPIs, frames
//! allocated and freed), and written to `target/criterion/zx-vm-children-extra.json` for
//! `benches/plot.py`. The harness is `benches/common/mod.rs`, shared with `benches/decommit.rs`:
//! `ZXVM_BENCH_PROFILE=<case> ZXVM_BENCH_ITERS=<n>` runs one case without criterion (for
//! `valgrind --tool=callgrind --toggle-collect='*timed_region*'`), `ZXVM_BENCH_PROFILE=list`
//! lists the cases.

mod common;

use common::*;
use std::hint::black_box;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{CounterSnapshot, SimMachine};
use zx_vm::syscall::*;
use zx_vm::vmar::Access;
use zx_vm::Process;

/// The byte that fills page `page` of a written VMO (never zero).
fn page_byte(page: u64) -> u8 {
    0x80 | (page % 128) as u8
}

/// The word a load from page `page` of a written VMO reads.
fn page_word(page: u64) -> u64 {
    u64::from_ne_bytes([page_byte(page); 8])
}

/// Writes every page of `vmo` (`pages` pages) with `zx_vmo_write`: all committed, none zero.
fn write_all(process: &Process, vmo: zx_handle_t, pages: u64) {
    let mut buffer = vec![0u8; (pages * PAGE_SIZE) as usize];
    for (page, bytes) in buffer.chunks_exact_mut(PAGE_SIZE as usize).enumerate() {
        bytes.fill(page_byte(page as u64));
    }
    assert_eq!(zx_vmo_write(process, vmo, &buffer, 0), ZX_OK);
}

/// A snapshot child of all `pages` pages of `vmo`.
fn snapshot(process: &Process, vmo: zx_handle_t, pages: u64) -> zx_handle_t {
    let mut child = 0;
    let status = zx_vmo_create_child(
        process,
        vmo,
        ZX_VMO_CHILD_SNAPSHOT,
        0,
        pages * PAGE_SIZE,
        &mut child,
    );
    assert_eq!(status, ZX_OK);
    child
}

fn vmo_info(process: &Process, vmo: zx_handle_t) -> zx_info_vmo_t {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(process, vmo, &mut info), ZX_OK);
    info
}

fn close(process: &Process, handle: zx_handle_t) {
    assert_eq!(zx_handle_close(process, handle), ZX_OK);
}

// ---------------------------------------------------------------------------------------------
// Snapshot and close of an unmapped, fully committed VMO.

/// Back-to-back snapshot+close pairs under one pair of clock reads.
const CLOSE_SLOTS: usize = 16;

/// One VMO of `pages`, every page written, never mapped; a run makes a snapshot child of all of
/// it and closes the child.
struct SnapshotClose {
    pages: u64,
    machine: Arc<SimMachine>,
    process: Arc<Process>,
    vmo: zx_handle_t,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

impl SnapshotClose {
    fn new(pages: u64) -> SnapshotClose {
        let machine = machine(frames_for(pages, 1), 1);
        let process = process(&machine, Format::X86_64);
        machine.cpu(0).enter();
        let vmo = vmo_create(&process, pages);
        write_all(&process, vmo, pages);
        // One pair first: from then on every snapshot finds the hidden node that the last one
        // left with a dead side, and collapses it, as in a loop of them.
        close(&process, snapshot(&process, vmo, pages));
        SnapshotClose {
            pages,
            machine,
            process,
            vmo,
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }
}

impl Workload for SnapshotClose {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn slots(&self) -> usize {
        CLOSE_SLOTS
    }

    fn prepare(&mut self, slot: usize) {
        if slot == 0 {
            self.machine.cpu(0).enter();
            self.before = self.machine.counters();
        }
    }

    fn run(&mut self, _slot: usize) {
        let child = snapshot(&self.process, black_box(self.vmo), self.pages);
        close(&self.process, black_box(child));
    }

    fn check(&mut self, _slot: usize) {
        // Cumulative over the batch: nothing is copied, freed or invalidated.
        let delta = self.machine.counters().since(&self.before);
        self.last = delta;
        assert_eq!(delta.frames_allocated, 0, "a snapshot copies nothing");
        assert_eq!(delta.frames_freed, 0, "the parent still sees every page");
        assert_eq!(delta.shootdowns, 0, "no mapping: nothing to write-protect");
        let info = vmo_info(&self.process, self.vmo);
        assert_eq!(info.num_children, 0, "the child was closed");
        assert_eq!(info.committed_bytes, self.pages * PAGE_SIZE);
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

// ---------------------------------------------------------------------------------------------
// Copy-on-write faults.

/// Which side of a fresh snapshot takes the write faults.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The child, through a new mapping of it with no translation yet: each fault copies the
    /// page from the hidden node and maps the copy writable.
    Child,
    /// The parent, through its own mapping, whose entries the snapshot made read-only: each page
    /// takes a fault that copies it and clears its entry (one round), and a second that maps the
    /// copy writable.
    Parent,
}

/// A VMO of [`FAULT_PAGES`], every page written, in a process on CPU 0; before each run a snapshot
/// child of it is made (the last run's closed first).
struct CowWrite {
    writer: Writer,
    machine: Arc<SimMachine>,
    process: Arc<Process>,
    parent: zx_handle_t,
    /// The parent's mapping (written through before the first run: writable entries).
    parent_addr: u64,
    /// The current child and, for [`Writer::Child`], its mapping.
    child: Option<(zx_handle_t, Option<u64>)>,
    /// Where the faults are taken.
    addr: u64,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

impl CowWrite {
    fn new(format: Format, writer: Writer) -> CowWrite {
        // The parent's pages, the copies, and the hidden pages a closed child leaves to free.
        let machine = machine(frames_for(3 * FAULT_PAGES, 2), 1);
        let process = process(&machine, format);
        machine.cpu(0).switch_to(Some(process.aspace()));
        let parent = vmo_create(&process, FAULT_PAGES);
        write_all(&process, parent, FAULT_PAGES);
        let parent_addr = map_anywhere(&process, parent, 0, FAULT_PAGES);
        if writer == Writer::Parent {
            let cpu = machine.cpu(0);
            for page in 0..FAULT_PAGES {
                cpu.store(parent_addr + page * PAGE_SIZE, page_word(page))
                    .expect("a writable mapping");
            }
        }
        CowWrite {
            writer,
            machine,
            process,
            parent,
            parent_addr,
            child: None,
            addr: parent_addr,
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }
}

impl Workload for CowWrite {
    fn pages(&self) -> u64 {
        FAULT_PAGES
    }

    fn prepare(&mut self, _slot: usize) {
        let root = self.process.root_vmar_handle();
        if let Some((child, mapped)) = self.child.take() {
            if let Some(addr) = mapped {
                let len = FAULT_PAGES * PAGE_SIZE;
                assert_eq!(zx_vmar_unmap(&self.process, root, addr, len), ZX_OK);
            }
            close(&self.process, child);
        }
        let child = snapshot(&self.process, self.parent, FAULT_PAGES);
        let mapped = match self.writer {
            Writer::Child => Some(map_anywhere(&self.process, child, 0, FAULT_PAGES)),
            Writer::Parent => None,
        };
        self.addr = mapped.unwrap_or(self.parent_addr);
        self.child = Some((child, mapped));
        self.machine.cpu(0).enter();
        self.before = self.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        let aspace = self.process.aspace();
        let faults = match self.writer {
            Writer::Child => 1,
            Writer::Parent => 2,
        };
        for page in 0..FAULT_PAGES {
            let va = black_box(self.addr + page * PAGE_SIZE);
            for _ in 0..faults {
                aspace
                    .page_fault(va, Access::Write)
                    .expect("a fault in a mapping resolves");
            }
        }
    }

    fn check(&mut self, _slot: usize) {
        let delta = self.machine.counters().since(&self.before);
        self.last = delta;
        assert!(delta.frames_allocated >= FAULT_PAGES, "a copy per page");
        assert_eq!(delta.frames_freed, 0);
        let rounds = match self.writer {
            Writer::Child => 0,
            Writer::Parent => FAULT_PAGES,
        };
        assert_eq!(
            delta.shootdowns, rounds,
            "a round per cleared read-only entry"
        );
        let (child, _) = self.child.expect("made in prepare");
        let writer = match self.writer {
            Writer::Child => child,
            Writer::Parent => self.parent,
        };
        assert_eq!(
            committed_bytes(&self.process, writer),
            FAULT_PAGES * PAGE_SIZE,
            "every page is the writer's own"
        );
        // Every page is mapped writable now, to a copy of the shared page: the stores take no
        // fault, and the loads read what the parent wrote.
        let cpu = self.machine.cpu(0);
        let faults = self.machine.counters().page_faults;
        for page in 0..FAULT_PAGES {
            let va = self.addr + page * PAGE_SIZE;
            assert_eq!(cpu.load(va).expect("mapped"), page_word(page));
            cpu.store(va, page_word(page)).expect("mapped writable");
        }
        assert_eq!(self.machine.counters().page_faults, faults, "no fault left");
        self.machine.cpu(0).enter();
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for CowWrite {
    fn drop(&mut self) {
        self.machine.cpu(0).switch_to(None);
    }
}

// ---------------------------------------------------------------------------------------------
// A 64 MiB VMO mapped writable in 4 address spaces, active on 4 CPUs.

/// Address spaces (and CPUs) of the 4-space cases.
const SPACES: usize = 4;
/// Pages of the 4-space cases' VMO: 64 MiB.
const SPACE_PAGES: u64 = 16384;

/// What a 4-space run times.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FourOp {
    /// A snapshot of a VMO in no tree (its last snapshot closed and the VMO out of the tree
    /// again: a one-page DECOMMIT leaves it, and the page is committed again).
    Snapshot,
    /// A snapshot of a VMO whose last snapshot was closed and which then took every page back
    /// (as writes do): the hidden node above it holds no page and a split bit per page.
    SnapshotAgain,
    /// `zx_vmar_protect` of each of the 4 mappings to read-only (a VMO in no tree).
    Protect,
}

/// One VMO of [`SPACE_PAGES`], committed, mapped read-write whole in [`SPACES`] processes, each
/// active on a CPU of its own; before each run every mapping's entries are writable and every
/// page is touched through every CPU.
struct FourSpaces {
    op: FourOp,
    machine: Arc<SimMachine>,
    processes: Vec<Arc<Process>>,
    /// The VMO's handle in each process.
    handles: Vec<zx_handle_t>,
    /// Each process's mapping of it.
    addrs: Vec<u64>,
    /// The snapshot child of the last run.
    child: Option<zx_handle_t>,
    before: CounterSnapshot,
    last: CounterSnapshot,
}

impl FourSpaces {
    fn new(format: Format, op: FourOp) -> FourSpaces {
        let machine = machine(frames_for(SPACE_PAGES, SPACES as u64), SPACES);
        let processes: Vec<_> = (0..SPACES).map(|_| process(&machine, format)).collect();
        let vmo = vmo_create(&processes[0], SPACE_PAGES);
        let len = SPACE_PAGES * PAGE_SIZE;
        let status = zx_vmo_op_range(&processes[0], vmo, ZX_VMO_OP_COMMIT, 0, len, 0, 0);
        assert_eq!(status, ZX_OK);
        let object = processes[0].handle(vmo).expect("vmo handle");
        let mut handles = Vec::new();
        let mut addrs = Vec::new();
        for (index, p) in processes.iter().enumerate() {
            let handle = if index == 0 {
                vmo
            } else {
                p.add_handle(object.object.clone(), object.rights)
                    .expect("handle")
            };
            // Every committed page entered, writable.
            let addr = map_anywhere(p, handle, 0, SPACE_PAGES);
            remap(p, handle, 0, addr, SPACE_PAGES);
            handles.push(handle);
            addrs.push(addr);
        }
        for (cpu, p) in processes.iter().enumerate() {
            machine.cpu(cpu).switch_to(Some(p.aspace()));
        }
        machine.cpu(0).enter();
        FourSpaces {
            op,
            machine,
            processes,
            handles,
            addrs,
            child: None,
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
        }
    }

    /// Every page of every mapping writable in the page tables.
    fn make_writable(&mut self) {
        let p0 = &self.processes[0];
        let len = SPACE_PAGES * PAGE_SIZE;
        match self.op {
            FourOp::Protect => {
                for (p, &addr) in self.processes.iter().zip(&self.addrs) {
                    let status = zx_vmar_protect(p, p.root_vmar_handle(), RW, addr, len);
                    assert_eq!(status, ZX_OK);
                }
                return;
            }
            FourOp::Snapshot => {
                if let Some(child) = self.child.take() {
                    close(p0, child);
                    // Out of the tree: a DECOMMIT collapses the hidden node the closed child
                    // left (its pages come back in one step) and takes the VMO out of the tree.
                    let vmo = self.handles[0];
                    for op in [ZX_VMO_OP_DECOMMIT, ZX_VMO_OP_COMMIT] {
                        let status = zx_vmo_op_range(p0, vmo, op, 0, PAGE_SIZE, 0, 0);
                        assert_eq!(status, ZX_OK);
                    }
                }
            }
            FourOp::SnapshotAgain => {
                if let Some(child) = self.child.take() {
                    close(p0, child);
                    // Every page taken back from the hidden node, as a write to each would.
                    let vmo = self.handles[0];
                    let status = zx_vmo_op_range(p0, vmo, ZX_VMO_OP_COMMIT, 0, len, 0, 0);
                    assert_eq!(status, ZX_OK);
                }
            }
        }
        // The pages are the VMO's own again; entries made read-only by a snapshot stay so until
        // a write fault: map them again, writable.
        for ((p, &handle), &addr) in self.processes.iter().zip(&self.handles).zip(&self.addrs) {
            remap(p, handle, 0, addr, SPACE_PAGES);
        }
    }

    /// Every page touched for writing through every CPU: each TLB holds a writable entry per page.
    fn touch(&self) {
        let faults = self.machine.counters().page_faults;
        for (cpu, &addr) in self.addrs.iter().enumerate() {
            let cpu = self.machine.cpu(cpu);
            for page in 0..SPACE_PAGES {
                cpu.store(addr + page * PAGE_SIZE, page)
                    .expect("mapped writable");
            }
        }
        assert_eq!(
            self.machine.counters().page_faults,
            faults,
            "writable entries"
        );
        self.machine.cpu(0).enter();
    }
}

impl Workload for FourSpaces {
    fn pages(&self) -> u64 {
        SPACE_PAGES
    }

    fn prepare(&mut self, _slot: usize) {
        self.make_writable();
        self.touch();
        self.before = self.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        match self.op {
            FourOp::Snapshot | FourOp::SnapshotAgain => {
                let p0 = &self.processes[0];
                self.child = Some(snapshot(p0, black_box(self.handles[0]), SPACE_PAGES));
            }
            FourOp::Protect => {
                let len = SPACE_PAGES * PAGE_SIZE;
                for (p, &addr) in self.processes.iter().zip(&self.addrs) {
                    let read = ZX_VM_PERM_READ;
                    let status =
                        zx_vmar_protect(p, p.root_vmar_handle(), read, black_box(addr), len);
                    assert_eq!(status, ZX_OK);
                }
            }
        }
    }

    fn check(&mut self, _slot: usize) {
        let delta = self.machine.counters().since(&self.before);
        self.last = delta;
        let rounds = match self.op {
            FourOp::Snapshot | FourOp::SnapshotAgain => 1,
            FourOp::Protect => SPACES as u64,
        };
        assert_eq!(delta.shootdowns, rounds, "rounds per run");
        if rounds == 1 {
            assert_eq!(delta.ipis, SPACES as u64 - 1, "one IPI per remote CPU");
        }
        assert_eq!(delta.frames_allocated, 0);
        assert_eq!(delta.frames_freed, 0);
        assert_eq!(delta.page_faults, 0);
        // No CPU may still hold a writable translation of the VMO.
        for (cpu, &addr) in self.addrs.iter().enumerate() {
            let cpu = self.machine.cpu(cpu);
            for page in 0..SPACE_PAGES {
                let entry = cpu.tlb_entry(addr + page * PAGE_SIZE);
                assert!(
                    entry.is_none_or(|e| !e.flags.contains(zx_vm::arch::MmuFlags::WRITE)),
                    "a writable TLB entry survived"
                );
            }
        }
        if self.op != FourOp::Protect {
            let info = vmo_info(&self.processes[0], self.handles[0]);
            assert_eq!(info.num_children, 1);
        }
        self.machine.cpu(0).enter();
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for FourSpaces {
    fn drop(&mut self) {
        // The CPUs hold their address spaces alive (and those the machine): switch them away so
        // that everything, the machine last, is torn down and its leak check runs.
        for cpu in 0..SPACES {
            self.machine.cpu(cpu).switch_to(None);
        }
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
    // Snapshot and close: 4 KiB and 2 MiB side by side.
    for (param, pages) in [("close-4KiB", 1u64), ("close-2MiB", 512)] {
        add(
            "snapshot",
            "ours".to_string(),
            param,
            Box::new(move || Box::new(SnapshotClose::new(pages))),
        );
    }
    for format in Format::ALL {
        let f = format!("ours-{}", format.name());
        // The 64 MiB snapshot in 4 address spaces, and its peer.
        for (param, op) in [
            ("64MiB-4spaces", FourOp::Snapshot),
            ("64MiB-4spaces-again", FourOp::SnapshotAgain),
            ("protect-64MiB-4spaces", FourOp::Protect),
        ] {
            add(
                "snapshot",
                f.clone(),
                param,
                Box::new(move || Box::new(FourSpaces::new(format, op))),
            );
        }
        // Copy-on-write faults against zero-fill faults.
        add(
            "fault",
            f.clone(),
            &format!("cow-write-{FAULT_PAGES}"),
            Box::new(move || Box::new(CowWrite::new(format, Writer::Child))),
        );
        add(
            "fault",
            f.clone(),
            &format!("cow-write-protected-{FAULT_PAGES}"),
            Box::new(move || Box::new(CowWrite::new(format, Writer::Parent))),
        );
        add(
            "fault",
            f.clone(),
            &format!("zero-fill-write-{FAULT_PAGES}"),
            Box::new(move || Box::new(FirstTouch::new(format, false))),
        );
    }
    out
}

fn main() {
    common::run(cases(), "zx-vm-children-extra.json", |_| {});
}
