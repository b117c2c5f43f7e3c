//! Decommit benchmarks: `zx_vmar_op_range(ZX_VMAR_OP_DECOMMIT)` through the host simulation, on
//! both page-table formats, measured in pages per second against three peers doing the same amount
//! of work in the same run:
//!
//! - the `x86_64` crate's `OffsetPageTable`, unmapping page by page over page tables in host memory
//!   (what a Rust kernel author writes without this crate);
//! - Linux `madvise(MADV_DONTNEED)` on a touched anonymous mapping (what the host kernel does);
//! - the floor: a loop that clears 8-byte entries and pushes each frame onto a free stack.
//!
//! Every timed decommit does the whole realistic job: the pages are committed *and* mapped in the
//! page tables (re-committed with `ZX_VMO_OP_COMMIT` and re-mapped with `ZX_VM_MAP_RANGE` before each
//! iteration, outside the timed region). After each iteration, outside timing, the machine's
//! counters are checked: exactly one shootdown round per call (none when nothing was committed),
//! the expected IPIs, and every committed frame freed.
//!
//! The binary also measures heap bytes of metadata (a counting global allocator) and writes them,
//! with the counter deltas of each case, to `target/criterion/zx-vm-extra.json` for
//! `benches/plot.py`.
//!
//! `ZXVM_BENCH_PROFILE=<case> ZXVM_BENCH_ITERS=<n>` runs one case without criterion (for
//! `valgrind --tool=callgrind --toggle-collect='*timed_region*'`); `<case>` is one of the ids
//! printed by `ZXVM_BENCH_PROFILE=list`.

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{CounterSnapshot, SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::{Platform, Process};

// ---------------------------------------------------------------------------------------------
// A counting global allocator: live heap bytes, as requested and as the C allocator rounds them.

struct CountingAlloc;

/// Live bytes, as requested by `Layout`s.
static LIVE_REQUESTED: AtomicI64 = AtomicI64::new(0);
/// Live bytes as `malloc_usable_size` reports them (only counted while `COUNT_USABLE` is set).
static LIVE_USABLE: AtomicI64 = AtomicI64::new(0);
static COUNT_USABLE: AtomicBool = AtomicBool::new(false);

fn usable(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` is a live block from the system allocator (malloc, or posix_memalign for
    // large alignments), which is what malloc_usable_size accepts.
    unsafe { libc::malloc_usable_size(ptr.cast()) as i64 }
}

// SAFETY: every method forwards to `System` with the same arguments and only adds bookkeeping.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_REQUESTED.fetch_add(layout.size() as i64, Ordering::Relaxed);
            if COUNT_USABLE.load(Ordering::Relaxed) {
                LIVE_USABLE.fetch_add(usable(ptr), Ordering::Relaxed);
            }
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_REQUESTED.fetch_add(layout.size() as i64, Ordering::Relaxed);
            if COUNT_USABLE.load(Ordering::Relaxed) {
                LIVE_USABLE.fetch_add(usable(ptr), Ordering::Relaxed);
            }
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_REQUESTED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        if COUNT_USABLE.load(Ordering::Relaxed) {
            LIVE_USABLE.fetch_sub(usable(ptr), Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let counting = COUNT_USABLE.load(Ordering::Relaxed);
        let old_usable = if counting { usable(ptr) } else { 0 };
        // SAFETY: forwarded from the caller.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_REQUESTED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            if counting {
                LIVE_USABLE.fetch_add(usable(new) - old_usable, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Live heap bytes (requested, usable) now. Usable bytes are counted only between
/// [`HeapProbe::start`] and its end, so they are meaningful only as a difference inside it.
fn heap_now() -> (i64, i64) {
    (
        LIVE_REQUESTED.load(Ordering::SeqCst),
        LIVE_USABLE.load(Ordering::SeqCst),
    )
}

/// Measures the heap growth of whatever happens between `start` and `delta`.
struct HeapProbe {
    start: (i64, i64),
}

impl HeapProbe {
    fn start() -> Self {
        COUNT_USABLE.store(true, Ordering::SeqCst);
        HeapProbe { start: heap_now() }
    }

    /// (requested, usable) bytes allocated and still live since `start`.
    fn delta(&self) -> (i64, i64) {
        let now = heap_now();
        (now.0 - self.start.0, now.1 - self.start.1)
    }
}

impl Drop for HeapProbe {
    fn drop(&mut self) {
        // Blocks allocated while counting and freed later would make the usable count drift; it
        // is only ever read as a difference inside one probe.
        COUNT_USABLE.store(false, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up helpers (the shape of tests/common, which benches cannot import).

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RW: u32 = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;

fn pages_of(bytes: u64) -> u64 {
    bytes / PAGE_SIZE
}

/// Frames for `data_pages` committed pages mapped into `aspaces` address spaces, with room for
/// every page-table page and some slack.
fn frames_for(data_pages: u64, aspaces: u64) -> usize {
    // Twice the tables: a re-map with ZX_VM_SPECIFIC_OVERWRITE builds the new tables before the
    // old ones are freed.
    (data_pages + 2 * aspaces * (data_pages / 512 + 16) + 256) as usize
}

fn machine(frames: usize, cpus: usize) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames,
        cpus,
        poison_freed: false,
        ..SimConfig::default()
    })
}

fn process(machine: &Arc<SimMachine>, format: Format) -> Arc<Process> {
    let platform: Arc<dyn Platform> = machine.clone();
    Process::new(platform, format).expect("process")
}

fn vmo_create(process: &Process, pages: u64) -> zx_handle_t {
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(process, pages * PAGE_SIZE, 0, &mut vmo),
        ZX_OK
    );
    vmo
}

/// Maps `pages` pages of `vmo` from page `first` read-write, anywhere; returns the address.
fn map_anywhere(process: &Process, vmo: zx_handle_t, first: u64, pages: u64) -> u64 {
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

fn root_base(process: &Process) -> u64 {
    process
        .vmar(process.root_vmar_handle())
        .expect("root VMAR")
        .0
        .base()
}

fn committed_bytes(process: &Process, vmo: zx_handle_t) -> u64 {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(process, vmo, &mut info), ZX_OK);
    info.committed_bytes
}

// ---------------------------------------------------------------------------------------------
// Workloads: something that can be made ready (untimed) and then run (timed).

/// One benchmarked job. `slots` independent instances can be prepared at once and run back to
/// back under one pair of clock reads, so that jobs of a few nanoseconds are not drowned by the
/// clock; each run is one iteration.
trait Workload {
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
fn timed_iterations(work: &mut dyn Workload, iters: u64) -> Duration {
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
fn timed_region(work: &mut dyn Workload, batch: usize) -> Duration {
    let start = Instant::now();
    for slot in 0..batch {
        work.run(slot);
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Ours: a decommit through zx_vmar_op_range on the simulated machine.

/// How a VMO's pages are committed before each run.
#[derive(Clone, Copy)]
enum Commit {
    /// Every page.
    All,
    /// Page 0 and every `n`th page after it.
    Every(u64),
    /// None.
    Nothing,
}

/// One mapping to re-establish before each run.
struct MapSpec {
    /// Index into `Scenario::processes`.
    process: usize,
    vmo: zx_handle_t,
    vmo_page: u64,
    addr: u64,
    pages: u64,
}

/// A machine, processes, one VMO and its mappings, and the decommit to time.
struct Scenario {
    machine: Arc<SimMachine>,
    processes: Vec<Arc<Process>>,
    /// The VMO's handle in `processes[0]`.
    vmo: zx_handle_t,
    /// The VMO pages that each run re-commits: `[first, first + pages)`.
    commit_first: u64,
    commit_pages: u64,
    commit: Commit,
    maps: Vec<MapSpec>,
    /// The decommit: `[addr, addr + pages)` through `processes[0]`'s root VMAR.
    addr: u64,
    pages: u64,
    /// Pages committed when the decommit runs (all of them are freed by it).
    committed: u64,
    /// CPUs the address spaces are active on (empty: none is).
    active_cpus: usize,
    before: CounterSnapshot,
    /// The VMO's committed bytes before the run.
    committed_before: u64,
    /// The counter deltas of the last run.
    last: CounterSnapshot,
}

impl Scenario {
    /// One process, one VMO of `vmo_pages`, `mappings` adjacent mappings of `vmo_pages /
    /// mappings` pages each covering it; the decommit covers pages `[first, first + pages)` of
    /// the first mapping's address range onwards.
    fn single(
        format: Format,
        vmo_pages: u64,
        mappings: u64,
        commit: Commit,
        first: u64,
        pages: u64,
    ) -> Scenario {
        let machine = machine(frames_for(vmo_pages, 1), 1);
        let process = process(&machine, format);
        // The process runs on CPU 0, which makes the call: the round invalidates there.
        machine.cpu(0).switch_to(Some(process.aspace()));
        let vmo = vmo_create(&process, vmo_pages);
        let per_map = vmo_pages / mappings;
        let mut maps = Vec::new();
        for i in 0..mappings {
            let addr = map_anywhere(&process, vmo, i * per_map, per_map);
            if let Some(previous) = maps.last() {
                let previous: &MapSpec = previous;
                assert_eq!(addr, previous.addr + previous.pages * PAGE_SIZE, "adjacent");
            }
            maps.push(MapSpec {
                process: 0,
                vmo,
                vmo_page: i * per_map,
                addr,
                pages: per_map,
            });
        }
        let base = maps[0].addr;
        if first != 0 || pages != vmo_pages {
            // A sub-range: only its pages are re-committed and re-mapped (the mapping is split
            // there once, on the first run, and stays so).
            maps = vec![MapSpec {
                process: 0,
                vmo,
                vmo_page: first,
                addr: base + first * PAGE_SIZE,
                pages,
            }];
        }
        let committed = match commit {
            Commit::All => pages,
            Commit::Every(n) => pages.div_ceil(n),
            Commit::Nothing => 0,
        };
        // The rest of the VMO is committed and mapped once, so that a sub-range decommit works
        // inside a fully populated mapping.
        if pages != vmo_pages {
            assert_eq!(
                zx_vmo_op_range(
                    &process,
                    vmo,
                    ZX_VMO_OP_COMMIT,
                    0,
                    vmo_pages * PAGE_SIZE,
                    0,
                    0
                ),
                ZX_OK
            );
            remap(&process, vmo, 0, base, vmo_pages);
        }
        Scenario {
            machine,
            processes: vec![process],
            vmo,
            commit_first: first,
            commit_pages: pages,
            commit,
            maps,
            addr: base + first * PAGE_SIZE,
            pages,
            committed,
            active_cpus: 1,
            before: CounterSnapshot::default(),
            committed_before: 0,
            last: CounterSnapshot::default(),
        }
    }

    /// One VMO of `pages`, fully committed, mapped whole into `spaces` address spaces, each active
    /// on a CPU of its own; the decommit runs on CPU 0 through the first.
    fn shared(format: Format, pages: u64, spaces: usize) -> Scenario {
        let machine = machine(frames_for(pages, spaces as u64), spaces);
        let processes: Vec<_> = (0..spaces).map(|_| process(&machine, format)).collect();
        let vmo = vmo_create(&processes[0], pages);
        let object = processes[0].handle(vmo).expect("vmo handle");
        let mut maps = Vec::new();
        for (index, p) in processes.iter().enumerate() {
            let handle = if index == 0 {
                vmo
            } else {
                p.add_handle(object.object.clone(), object.rights)
                    .expect("handle")
            };
            let addr = map_anywhere(p, handle, 0, pages);
            maps.push(MapSpec {
                process: index,
                vmo: handle,
                vmo_page: 0,
                addr,
                pages,
            });
        }
        for (cpu, p) in processes.iter().enumerate() {
            machine.cpu(cpu).switch_to(Some(p.aspace()));
        }
        machine.cpu(0).enter();
        let addr = maps[0].addr;
        Scenario {
            machine,
            processes,
            vmo,
            commit_first: 0,
            commit_pages: pages,
            commit: Commit::All,
            maps,
            addr,
            pages,
            committed: pages,
            active_cpus: spaces,
            before: CounterSnapshot::default(),
            committed_before: 0,
            last: CounterSnapshot::default(),
        }
    }

    fn commit(&self) {
        let p = &self.processes[0];
        let commit = |first: u64, pages: u64| {
            let status = zx_vmo_op_range(
                p,
                self.vmo,
                ZX_VMO_OP_COMMIT,
                first * PAGE_SIZE,
                pages * PAGE_SIZE,
                0,
                0,
            );
            assert_eq!(status, ZX_OK);
        };
        match self.commit {
            Commit::All => commit(self.commit_first, self.commit_pages),
            Commit::Every(n) => {
                let end = self.commit_first + self.commit_pages;
                for page in (self.commit_first..end).step_by(n as usize) {
                    commit(page, 1);
                }
            }
            Commit::Nothing => {}
        }
    }
}

/// Maps `pages` pages of `vmo` from page `vmo_page` at exactly `addr`, replacing the mapping there,
/// with every committed page entered in the page table (`ZX_VM_MAP_RANGE`).
fn remap(process: &Process, vmo: zx_handle_t, vmo_page: u64, addr: u64, pages: u64) {
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

impl Workload for Scenario {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn prepare(&mut self, _slot: usize) {
        self.commit();
        for m in &self.maps {
            remap(
                &self.processes[m.process],
                m.vmo,
                m.vmo_page,
                m.addr,
                m.pages,
            );
        }
        self.machine.cpu(0).enter();
        self.committed_before = committed_bytes(&self.processes[0], self.vmo);
        self.before = self.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        let p = &self.processes[0];
        let status = zx_vmar_op_range(
            p,
            p.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            black_box(self.addr),
            self.pages * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
    }

    fn check(&mut self, _slot: usize) {
        let delta = self.machine.counters().since(&self.before);
        self.last = delta;
        let rounds = u64::from(self.committed > 0);
        assert_eq!(delta.shootdowns, rounds, "one shootdown round per call");
        let remote = self.active_cpus.saturating_sub(1) as u64;
        assert_eq!(delta.ipis, rounds * remote, "one IPI per remote active CPU");
        assert!(delta.frames_freed >= self.committed, "every frame freed");
        assert_eq!(delta.frames_allocated, 0);
        assert_eq!(delta.page_faults, 0);
        assert_eq!(
            committed_bytes(&self.processes[0], self.vmo),
            self.committed_before - self.committed * PAGE_SIZE,
            "the range's pages were decommitted"
        );
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // The CPUs hold their address spaces alive (and those the machine): switch them away so
        // that everything, the machine last, is torn down and its leak check runs.
        for cpu in 0..self.active_cpus {
            self.machine.cpu(cpu).switch_to(None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Peer 1: the x86_64 crate's OffsetPageTable over page tables in host memory.

mod x86_peer {
    use super::{Workload, PAGE_SIZE};
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use x86_64::structures::paging::{
        FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame,
        Size4KiB,
    };
    use x86_64::{PhysAddr, VirtAddr};

    /// "Physical memory" for the page tables: an aligned host buffer whose physical address 0 is
    /// its first byte, so that the physical-memory offset is the buffer's address. Frame 0 is
    /// the level-4 table.
    struct HostPhys {
        base: *mut u8,
        layout: Layout,
    }

    impl Drop for HostPhys {
        fn drop(&mut self) {
            // SAFETY: allocated in `X86Peer::new` with this layout.
            unsafe { dealloc(self.base, self.layout) };
        }
    }

    /// Hands out frames 1.. of the buffer as page tables.
    struct Bump {
        frames: u64,
        next: u64,
    }

    // SAFETY: each frame of the buffer is handed out once, and the buffer outlives the tables.
    unsafe impl FrameAllocator<Size4KiB> for Bump {
        fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
            if self.next == self.frames {
                return None;
            }
            let frame = PhysFrame::containing_address(PhysAddr::new(self.next * PAGE_SIZE));
            self.next += 1;
            Some(frame)
        }
    }

    /// Where the peer's pages start (the same user base as ours).
    const BASE: u64 = 0x0100_0000;
    /// Data frames are fake physical addresses past the table buffer; nothing dereferences them.
    const DATA_PHYS: u64 = 1 << 40;

    /// `slots` ranges of `pages` pages each, mapped at `BASE + slot * stride` and unmapped page by
    /// page with `Mapper::unmap`, each frame pushed onto a free stack.
    pub struct X86Peer {
        phys: HostPhys,
        tables: Bump,
        pages: u64,
        slots: usize,
        stride: u64,
        free: Vec<PhysFrame<Size4KiB>>,
    }

    impl X86Peer {
        pub fn new(pages: u64, slots: usize) -> X86Peer {
            let stride = (pages * PAGE_SIZE).next_multiple_of(2 << 20);
            let total = pages * slots as u64;
            let frames = total / 512 + 8 * slots as u64 + 16;
            let layout = Layout::from_size_align((frames * PAGE_SIZE) as usize, PAGE_SIZE as usize)
                .expect("layout");
            // SAFETY: the layout has a non-zero size.
            let base = unsafe { alloc_zeroed(layout) };
            assert!(!base.is_null());
            X86Peer {
                phys: HostPhys { base, layout },
                tables: Bump { frames, next: 1 },
                pages,
                slots,
                stride,
                free: Vec::with_capacity(total as usize),
            }
        }

        /// The mapper over the buffer, made for one call.
        fn mapper(&self) -> OffsetPageTable<'static> {
            // SAFETY: frame 0 of the buffer is the level-4 table, zeroed at allocation and changed
            // only through mappers made here, one at a time; every table a mapper reaches is a
            // frame of the buffer at its physical address plus the buffer's base. The mapper never
            // outlives the buffer: it is made for one `prepare` or `run` and dropped there.
            unsafe {
                OffsetPageTable::new(
                    &mut *(self.phys.base as *mut PageTable),
                    VirtAddr::new(self.phys.base as u64),
                )
            }
        }

        fn page(&self, slot: usize, i: u64) -> Page<Size4KiB> {
            Page::containing_address(VirtAddr::new(
                BASE + slot as u64 * self.stride + i * PAGE_SIZE,
            ))
        }
    }

    impl Workload for X86Peer {
        fn pages(&self) -> u64 {
            self.pages
        }

        fn slots(&self) -> usize {
            self.slots
        }

        fn prepare(&mut self, slot: usize) {
            if slot == 0 {
                self.free.clear();
            }
            let flags = PageTableFlags::PRESENT
                | PageTableFlags::WRITABLE
                | PageTableFlags::USER_ACCESSIBLE
                | PageTableFlags::NO_EXECUTE;
            let mut mapper = self.mapper();
            for i in 0..self.pages {
                let page = self.page(slot, i);
                let frame = PhysFrame::containing_address(PhysAddr::new(
                    DATA_PHYS + (slot as u64 * self.pages + i) * PAGE_SIZE,
                ));
                // SAFETY: the data frame is never dereferenced: no CPU runs on these tables.
                let flush = unsafe { mapper.map_to(page, frame, flags, &mut self.tables) };
                // A new mapping needs no invalidation.
                flush.expect("map_to").ignore();
            }
        }

        fn run(&mut self, slot: usize) {
            let mut mapper = self.mapper();
            for i in 0..self.pages {
                let page = self.page(slot, i);
                let (frame, flush) = mapper.unmap(page).expect("mapped");
                // INVLPG faults in user mode, so the host cannot run it: the flush token is
                // dropped with `ignore()`. A kernel would `flush()`: one INVLPG per page.
                flush.ignore();
                self.free.push(frame);
            }
        }

        fn check(&mut self, slot: usize) {
            assert!(self.free.len() as u64 >= (slot as u64 + 1) * self.pages);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Peer 2: Linux madvise(MADV_DONTNEED) on a touched anonymous mapping.

struct Madvise {
    ptr: *mut u8,
    pages: u64,
}

impl Madvise {
    fn new(pages: u64) -> Madvise {
        let len = (pages * PAGE_SIZE) as usize;
        // SAFETY: a fresh private anonymous mapping; the arguments are valid.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // 4 KiB pages, as ours: no transparent huge pages in this range.
        // SAFETY: the range is the mapping just made.
        assert_eq!(unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) }, 0);
        Madvise {
            ptr: ptr.cast(),
            pages,
        }
    }

    fn len(&self) -> usize {
        (self.pages * PAGE_SIZE) as usize
    }
}

impl Workload for Madvise {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn prepare(&mut self, _slot: usize) {
        for page in 0..self.pages {
            // SAFETY: inside the mapping, which is readable and writable.
            unsafe { self.ptr.add((page * PAGE_SIZE) as usize).write_volatile(1) };
        }
    }

    fn run(&mut self, _slot: usize) {
        // SAFETY: the range is our own anonymous mapping.
        let status = unsafe { libc::madvise(self.ptr.cast(), self.len(), libc::MADV_DONTNEED) };
        assert_eq!(status, 0);
    }

    fn check(&mut self, _slot: usize) {
        // SAFETY: inside the mapping; after MADV_DONTNEED a private anonymous page reads zero.
        assert_eq!(unsafe { self.ptr.read_volatile() }, 0);
    }
}

impl Drop for Madvise {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len()) };
    }
}

// ---------------------------------------------------------------------------------------------
// Peer 3: the floor.

/// `slots` arrays of `pages` present 8-byte entries; a run clears one array's entries and pushes
/// each frame onto a free stack.
struct Floor {
    entries: Vec<u64>,
    free: Vec<u64>,
    pages: u64,
    slots: usize,
}

const PTE_PRESENT: u64 = 1;
const PTE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

impl Floor {
    fn new(pages: u64, slots: usize) -> Floor {
        let total = (pages * slots as u64) as usize;
        Floor {
            entries: vec![0; total],
            free: Vec::with_capacity(total),
            pages,
            slots,
        }
    }

    fn slot(&mut self, slot: usize) -> &mut [u64] {
        let n = self.pages as usize;
        &mut self.entries[slot * n..(slot + 1) * n]
    }
}

impl Workload for Floor {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn slots(&self) -> usize {
        self.slots
    }

    fn prepare(&mut self, slot: usize) {
        if slot == 0 {
            self.free.clear();
        }
        let first = (slot as u64 * self.pages + 0x1000) << 12;
        for (i, entry) in self.slot(slot).iter_mut().enumerate() {
            *entry = (first + ((i as u64) << 12)) | 0x8000_0000_0000_0067;
        }
    }

    #[inline(never)]
    fn run(&mut self, slot: usize) {
        let n = self.pages as usize;
        let entries = black_box(&mut self.entries[slot * n..(slot + 1) * n]);
        for entry in entries.iter_mut() {
            let value = *entry;
            if value & PTE_PRESENT != 0 {
                *entry = 0;
                self.free.push(value & PTE_ADDRESS);
            }
        }
        black_box(&mut self.free);
    }

    fn check(&mut self, slot: usize) {
        assert_eq!(self.slot(slot)[0], 0);
    }
}

// ---------------------------------------------------------------------------------------------
// The platform's share: the simulation's own `free_frames` for the same number of frames.

/// What `SimMachine::free_frames` alone costs for `pages` frames, allocated as a decommit's are
/// (in allocation order, wrapping round the machine as repeated commits do). Subtracted from ours,
/// it leaves the crate's own cost.
struct SimFree {
    machine: Arc<SimMachine>,
    frames: Vec<zx_vm::PhysAddr>,
    pages: u64,
}

impl SimFree {
    fn new(pages: u64) -> SimFree {
        SimFree {
            machine: machine((pages + pages / 2 + 64) as usize, 1),
            frames: Vec::with_capacity(pages as usize),
            pages,
        }
    }
}

impl Workload for SimFree {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn prepare(&mut self, _slot: usize) {
        self.frames.clear();
        for _ in 0..self.pages {
            self.frames.push(self.machine.alloc_frame().expect("frame"));
        }
    }

    fn run(&mut self, _slot: usize) {
        // SAFETY: the frames were just allocated, are listed once, and no page table or TLB
        // refers to them.
        unsafe { self.machine.free_frames(&self.frames) };
    }

    fn check(&mut self, _slot: usize) {
        assert_eq!(self.machine.frames_in_use(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

// ---------------------------------------------------------------------------------------------
// The fault path: a first-touch write fault (commit a zeroed frame, map it) against a plain 4 KiB
// zeroing loop.

/// Pages each fault-path run touches.
const FAULT_PAGES: u64 = 64;

/// A VMO of [`FAULT_PAGES`] mapped read-write with nothing committed, in a process that runs on
/// CPU 0; a run takes one fault per page through `AddressSpace::page_fault`, as a kernel's
/// page-fault handler would: write faults (commit a zeroed frame and map it), or, on a machine
/// with a shared zero page, read faults (map the zero page read-only, commit nothing).
struct FirstTouch {
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
    fn new(format: Format, zero_page: bool) -> FirstTouch {
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
struct ZeroLoop {
    buffer: Vec<u8>,
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

/// The page counts of the single-mapping curve (ranges either side of the flush threshold, and
/// the fully committed VMOs of 1 MiB, 64 MiB and 1 GiB).
const CURVE: [u64; 8] = [1, 16, 32, 33, 256, 512, 16384, 262144];
/// The VMO the sub-range cases decommit from: 1024 pages, fully committed and mapped.
const RANGE_VMO_PAGES: u64 = 1024;
/// Ranges decommitted out of it.
const RANGES: [u64; 5] = [1, 16, 32, 33, 512];

/// A named case: how to build its workload.
struct Case {
    group: &'static str,
    function: String,
    param: String,
    build: Box<dyn Fn() -> Box<dyn Workload>>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |group: &'static str,
                   function: String,
                   param: String,
                   build: Box<dyn Fn() -> Box<dyn Workload>>| {
        out.push(Case {
            group,
            function,
            param,
            build,
        })
    };
    for format in Format::ALL {
        let f = format.name();
        // One mapping over a fully committed VMO: 1 MiB, 64 MiB, 1 GiB.
        for bytes in [MIB, 64 * MIB, GIB] {
            let pages = pages_of(bytes);
            add(
                "full",
                format!("ours-{f}"),
                format!("{pages}"),
                Box::new(move || {
                    Box::new(Scenario::single(format, pages, 1, Commit::All, 0, pages))
                }),
            );
        }
        // Sub-ranges of a 1024-page mapping, either side of FULL_FLUSH_THRESHOLD.
        for pages in RANGES {
            add(
                "range",
                format!("ours-{f}"),
                format!("{pages}"),
                Box::new(move || {
                    Box::new(Scenario::single(
                        format,
                        RANGE_VMO_PAGES,
                        1,
                        Commit::All,
                        0,
                        pages,
                    ))
                }),
            );
        }
        // Sparse: a 1 GiB range with 1 page in 16 committed, and with nothing committed.
        let gib = pages_of(GIB);
        add(
            "sparse",
            format!("ours-{f}"),
            "1in16".to_string(),
            Box::new(move || Box::new(Scenario::single(format, gib, 1, Commit::Every(16), 0, gib))),
        );
        add(
            "sparse",
            format!("ours-{f}"),
            "empty".to_string(),
            Box::new(move || Box::new(Scenario::single(format, gib, 1, Commit::Nothing, 0, gib))),
        );
        // Fuchsia's matrix: 1, 4 and 32 adjacent mappings of 1, 128 and 1024 pages each.
        for mappings in [1u64, 4, 32] {
            for per_map in [1u64, 128, 1024] {
                add(
                    "matrix",
                    format!("ours-{f}"),
                    format!("{mappings}x{per_map}"),
                    Box::new(move || {
                        let pages = mappings * per_map;
                        Box::new(Scenario::single(
                            format,
                            pages,
                            mappings,
                            Commit::All,
                            0,
                            pages,
                        ))
                    }),
                );
            }
        }
        // One VMO mapped into 4 address spaces, active on 4 CPUs.
        for pages in [256u64, 16384] {
            add(
                "aspaces4",
                format!("ours-{f}"),
                format!("{pages}"),
                Box::new(move || Box::new(Scenario::shared(format, pages, 4))),
            );
        }
    }
    // The fault path: 64 first-touch write faults, against zeroing 64 pages; and 64 read faults
    // that map the shared zero page.
    for format in Format::ALL {
        add(
            "fault",
            format!("ours-{}", format.name()),
            format!("first-touch-{FAULT_PAGES}"),
            Box::new(move || Box::new(FirstTouch::new(format, false))),
        );
        add(
            "fault",
            format!("ours-{}", format.name()),
            format!("zero-page-read-{FAULT_PAGES}"),
            Box::new(move || Box::new(FirstTouch::new(format, true))),
        );
    }
    add(
        "fault",
        "zero-4k".to_string(),
        format!("{FAULT_PAGES}"),
        Box::new(|| {
            Box::new(ZeroLoop {
                buffer: vec![0xa5; (FAULT_PAGES * PAGE_SIZE) as usize],
            })
        }),
    );
    // The simulation's share of ours: its free_frames alone.
    for pages in [256u64, 16384, 262144] {
        add(
            "platform",
            "sim-free_frames".to_string(),
            format!("{pages}"),
            Box::new(move || Box::new(SimFree::new(pages))),
        );
    }
    // The peers, on the same amounts of work as the single-mapping curve.
    for pages in CURVE {
        let slots = (4096 / pages).clamp(1, 64) as usize;
        add(
            "peers",
            "x86_64-crate".to_string(),
            format!("{pages}"),
            Box::new(move || Box::new(x86_peer::X86Peer::new(pages, slots))),
        );
        add(
            "peers",
            "madvise".to_string(),
            format!("{pages}"),
            Box::new(move || Box::new(Madvise::new(pages))),
        );
        add(
            "peers",
            "floor".to_string(),
            format!("{pages}"),
            Box::new(move || Box::new(Floor::new(pages, slots))),
        );
    }
    out
}

fn case_id(case: &Case) -> String {
    format!("{}/{}/{}", case.group, case.function, case.param)
}

// ---------------------------------------------------------------------------------------------
// Running: criterion, with each case's iteration count planned from a calibration run.

/// Wall-clock time to spend measuring one case, set-up included.
const WALL_BUDGET: Duration = Duration::from_millis(2500);
const SAMPLES: usize = 10;

/// What a calibration run found: seconds of set-up and of timed work per iteration.
struct Calibration {
    setup: f64,
    timed: f64,
}

fn calibrate(work: &mut dyn Workload) -> Calibration {
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
struct Extra {
    json: String,
}

impl Extra {
    fn add(&mut self, key: &str, value: String) {
        if !self.json.is_empty() {
            self.json.push_str(",\n");
        }
        let _ = write!(self.json, "  \"{key}\": {value}");
    }

    fn write(&self) {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
        let dir = std::path::Path::new(&dir).join("criterion");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join("zx-vm-extra.json"),
            format!("{{\n{}\n}}\n", self.json),
        );
    }
}

fn counters_json(c: &CounterSnapshot) -> String {
    format!(
        "{{\"shootdowns\": {}, \"ipis\": {}, \"page_invalidations\": {}, \"full_invalidations\": {}, \"frames_freed\": {}}}",
        c.shootdowns, c.ipis, c.page_invalidations, c.full_invalidations, c.frames_freed
    )
}

fn bench_case(
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

fn main() {
    let profile = std::env::var("ZXVM_BENCH_PROFILE").ok();
    if let Some(case) = profile {
        return profile_case(&case);
    }
    let mut extra = Extra::default();
    memory_report(&mut extra);

    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .nresamples(10_000)
        .configure_from_args();
    let cases = cases();
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
    extra.write();
    criterion.final_summary();
}

/// Whether criterion's positional filter (if any) matches `id`.
fn filter_matches(id: &str) -> bool {
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
// Memory: heap bytes of metadata, measured with the counting allocator.

fn memory_report(extra: &mut Extra) {
    println!("memory (heap bytes, measured with a counting global allocator):");
    for (label, pages, commit) in [
        ("1MiB-full", pages_of(MIB), Commit::All),
        ("64MiB-full", pages_of(64 * MIB), Commit::All),
        ("1GiB-full", pages_of(GIB), Commit::All),
        ("1GiB-1in16", pages_of(GIB), Commit::Every(16)),
    ] {
        let machine = machine(frames_for(pages, 1), 1);
        let p = process(&machine, Format::X86_64);
        let vmo = vmo_create(&p, pages);
        let object = p.vmo(vmo).expect("vmo").0;
        let probe = HeapProbe::start();
        let committed = match commit {
            Commit::All => {
                assert_eq!(
                    zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, 0, pages * PAGE_SIZE, 0, 0),
                    ZX_OK
                );
                pages
            }
            Commit::Every(n) => {
                for page in (0..pages).step_by(n as usize) {
                    assert_eq!(
                        zx_vmo_op_range(
                            &p,
                            vmo,
                            ZX_VMO_OP_COMMIT,
                            page * PAGE_SIZE,
                            PAGE_SIZE,
                            0,
                            0
                        ),
                        ZX_OK
                    );
                }
                pages.div_ceil(n)
            }
            Commit::Nothing => 0,
        };
        let (requested, usable) = probe.delta();
        drop(probe);
        let list = object.page_list_heap_bytes();
        let row = format!(
            "{{\"committed_pages\": {committed}, \"heap_requested\": {requested}, \"heap_usable\": {usable}, \"page_list_heap_bytes\": {list}, \"requested_per_page\": {:.3}, \"usable_per_page\": {:.3}, \"page_list_per_page\": {:.3}}}",
            requested as f64 / committed as f64,
            usable as f64 / committed as f64,
            list as f64 / committed as f64
        );
        println!(
            "  VMO {label}: {committed} pages committed: {requested} B requested ({:.2} B/page), {usable} B malloc-usable ({:.2} B/page); page_list_heap_bytes() = {list} ({:.2} B/page)",
            requested as f64 / committed as f64,
            usable as f64 / committed as f64,
            list as f64 / committed as f64
        );
        extra.add(&format!("memory/vmo/{label}"), row);
        drop(object);
        drop(p);
        drop(machine);
    }
    // A VMO object itself, and mappings.
    let machine = machine(frames_for(32 * 1024, 1), 1);
    let p = process(&machine, Format::X86_64);
    let probe = HeapProbe::start();
    let vmo = vmo_create(&p, 32 * 1024);
    let (vmo_req, vmo_usable) = probe.delta();
    drop(probe);
    println!("  a VMO (object and handle, nothing committed): {vmo_req} B requested, {vmo_usable} B usable");
    extra.add(
        "memory/vmo_object",
        format!("{{\"heap_requested\": {vmo_req}, \"heap_usable\": {vmo_usable}}}"),
    );
    for count in [1u64, 32] {
        let per_map = 1024 / count.min(1024);
        let tables_before = p.aspace().page_table_pages();
        let probe = HeapProbe::start();
        let mut addrs = Vec::with_capacity(count as usize);
        let (list_req, list_usable) = probe.delta();
        for i in 0..count {
            addrs.push(map_anywhere(&p, vmo, i * per_map, per_map));
        }
        let (req, usable) = probe.delta();
        drop(probe);
        let (req, usable) = (req - list_req, usable - list_usable);
        let tables = p.aspace().page_table_pages() - tables_before;
        println!(
            "  {count} mapping(s): {:.1} B requested, {:.1} B usable per mapping (page-table pages, in simulated memory, not heap: {tables})",
            req as f64 / count as f64,
            usable as f64 / count as f64
        );
        extra.add(
            &format!("memory/mapping/{count}"),
            format!(
                "{{\"per_mapping_requested\": {:.1}, \"per_mapping_usable\": {:.1}}}",
                req as f64 / count as f64,
                usable as f64 / count as f64
            ),
        );
        for addr in addrs {
            assert_eq!(
                zx_vmar_unmap(&p, p.root_vmar_handle(), addr, per_map * PAGE_SIZE),
                ZX_OK
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Profiling one case without criterion.

fn profile_case(name: &str) {
    let cases = cases();
    if name == "list" {
        for case in &cases {
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
fn minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(status, 0);
    // SAFETY: getrusage succeeded and filled it.
    unsafe { usage.assume_init() }.ru_minflt
}
