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
//!
//! The harness (set-up helpers, [`Workload`] and its timed region, criterion with a wall-clock
//! budget per case, the profile mode) and the fault-path workloads are in `benches/common/mod.rs`,
//! shared with `benches/children.rs`.

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{CounterSnapshot, SimMachine};
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

/// The page counts of the single-mapping curve (ranges either side of the flush threshold, and
/// the fully committed VMOs of 1 MiB, 64 MiB and 1 GiB).
const CURVE: [u64; 8] = [1, 16, 32, 33, 256, 512, 16384, 262144];
/// The VMO the sub-range cases decommit from: 1024 pages, fully committed and mapped.
const RANGE_VMO_PAGES: u64 = 1024;
/// Ranges decommitted out of it.
const RANGES: [u64; 5] = [1, 16, 32, 33, 512];

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

fn main() {
    common::run(cases(), "zx-vm-extra.json", memory_report);
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
