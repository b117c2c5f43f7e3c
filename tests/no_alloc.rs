//! Once warm, decommit (of large leaves too, whole or split), unmap, protect (without a split) and
//! their shootdowns allocate nothing on the heap: a counting allocator watches every allocation
//! the calling thread makes (the simulated CPUs that take the IPIs run on the same thread), on 1
//! CPU and with the address space active on 4, on both page-table formats.

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::Process;

struct Counting;

std::thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the count is a thread-local that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations `f` made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

struct Setup {
    machine: Arc<SimMachine>,
    process: Arc<Process>,
    vmo: zx_handle_t,
    addr: u64,
    cpus: usize,
}

const PAGES: u64 = 128;

fn setup(format: Format, cpus: usize) -> Setup {
    let machine = SimMachine::new(SimConfig {
        frames: 4096,
        cpus,
        ..SimConfig::default()
    });
    let process = process(&machine, format);
    let vmo = patterned_vmo(&process, PAGES);
    let addr = map_rw(&process, process.root_vmar_handle(), vmo, 0, PAGES);
    for cpu in 0..cpus {
        machine.cpu(cpu).switch_to(Some(process.aspace()));
    }
    Setup {
        machine,
        process,
        vmo,
        addr,
        cpus,
    }
}

impl Setup {
    /// Every CPU touches every page, so that every TLB caches them and every table is there.
    fn touch(&self) {
        for cpu in (0..self.cpus).rev() {
            let cpu = self.machine.cpu(cpu);
            for page in 0..PAGES {
                cpu.store(self.addr + page * PAGE_SIZE, page + 1).unwrap();
            }
        }
        self.machine.cpu(0).enter();
    }

    fn decommit(&self, pages: u64) -> zx_status_t {
        let root = self.process.root_vmar_handle();
        zx_vmar_op_range(
            &self.process,
            root,
            ZX_VMAR_OP_DECOMMIT,
            self.addr,
            pages * PAGE_SIZE,
            0,
            0,
        )
    }

    fn finish(self) {
        for cpu in 0..self.cpus {
            self.machine.cpu(cpu).switch_to(None);
        }
    }
}

fn decommit_allocates_nothing(format: Format, cpus: usize) {
    let s = setup(format, cpus);
    for pages in [1, 16, 33, 64, PAGES] {
        // Warm: the first call of a size may grow the scratch lists.
        s.touch();
        assert_eq!(s.decommit(pages), ZX_OK);
        for _ in 0..3 {
            s.touch();
            let rounds = s.machine.counters().shootdowns;
            let mut status = ZX_OK;
            let count = allocations(|| status = s.decommit(pages));
            assert_eq!(status, ZX_OK);
            assert_eq!(s.machine.counters().shootdowns, rounds + 1, "one round");
            assert_eq!(
                count, 0,
                "{format:?}, {cpus} CPUs: decommit of {pages} pages allocated {count} times"
            );
            assert_eq!(committed(&s.process, s.vmo), (PAGES - pages) * PAGE_SIZE);
        }
    }
    s.finish();
}

fn protect_and_unmap_allocate_nothing(format: Format, cpus: usize) {
    let s = setup(format, cpus);
    let root = s.process.root_vmar_handle();
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    // Warm.
    s.touch();
    assert_eq!(
        zx_vmar_protect(&s.process, root, ZX_VM_PERM_READ, s.addr, PAGES * PAGE_SIZE),
        ZX_OK
    );
    assert_eq!(
        zx_vmar_protect(&s.process, root, rw, s.addr, PAGES * PAGE_SIZE),
        ZX_OK
    );
    for _ in 0..3 {
        s.touch();
        for perms in [ZX_VM_PERM_READ, rw] {
            let mut status = ZX_OK;
            let count = allocations(|| {
                status = zx_vmar_protect(&s.process, root, perms, s.addr, PAGES * PAGE_SIZE)
            });
            assert_eq!(status, ZX_OK);
            assert_eq!(
                count, 0,
                "{format:?}, {cpus} CPUs: protect allocated {count} times"
            );
        }
    }
    // Unmap whole mappings (no split): map again (which allocates) outside the count.
    let mut addr = s.addr;
    for round in 0..4 {
        s.touch_at(addr);
        let mut status = ZX_OK;
        let count =
            allocations(|| status = zx_vmar_unmap(&s.process, root, addr, PAGES * PAGE_SIZE));
        assert_eq!(status, ZX_OK);
        if round > 0 {
            assert_eq!(
                count, 0,
                "{format:?}, {cpus} CPUs: unmap allocated {count} times"
            );
        }
        addr = map_rw(&s.process, root, s.vmo, 0, PAGES);
    }
    s.finish();
}

impl Setup {
    fn touch_at(&self, addr: u64) {
        for cpu in (0..self.cpus).rev() {
            let cpu = self.machine.cpu(cpu);
            for page in 0..PAGES {
                cpu.load(addr + page * PAGE_SIZE).unwrap();
            }
        }
        self.machine.cpu(0).enter();
    }
}

#[test]
fn decommit_x86_64_one_cpu() {
    decommit_allocates_nothing(Format::X86_64, 1);
}

#[test]
fn decommit_x86_64_four_cpus() {
    decommit_allocates_nothing(Format::X86_64, 4);
}

#[test]
fn decommit_aarch64_one_cpu() {
    decommit_allocates_nothing(Format::Aarch64, 1);
}

#[test]
fn decommit_aarch64_four_cpus() {
    decommit_allocates_nothing(Format::Aarch64, 4);
}

#[test]
fn protect_unmap_x86_64_one_cpu() {
    protect_and_unmap_allocate_nothing(Format::X86_64, 1);
}

#[test]
fn protect_unmap_x86_64_four_cpus() {
    protect_and_unmap_allocate_nothing(Format::X86_64, 4);
}

#[test]
fn protect_unmap_aarch64_one_cpu() {
    protect_and_unmap_allocate_nothing(Format::Aarch64, 1);
}

#[test]
fn protect_unmap_aarch64_four_cpus() {
    protect_and_unmap_allocate_nothing(Format::Aarch64, 4);
}

/// The negative control: the counter sees an allocation when there is one.
/// A large-page VMO mapped with 2 MiB leaves: a DECOMMIT of a whole run (one leaf cleared, the
/// run freed in one call) and one of a single page (the leaf split) allocate nothing on the heap:
/// the split's table is a frame from the platform.
fn large_leaves_allocate_nothing(format: Format, cpus: usize) {
    const MIB2: u64 = 2 << 20;
    let machine = SimMachine::new(SimConfig {
        frames: 4096,
        cpus,
        broadcast: format == Format::Aarch64,
        ..SimConfig::default()
    });
    let process = process(&machine, format);
    let vmo = zx_vm::Vmo::create_large_pages(machine.clone(), 2 * MIB2).unwrap();
    let rights = Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
    let handle = process
        .add_handle(zx_vm::object::KernelObject::Vmo(vmo), rights)
        .unwrap();
    let root = process.root_vmar_handle();
    let mut addr = 0;
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    assert_eq!(
        zx_vmar_map(&process, root, rw, 0, handle, 0, 2 * MIB2, &mut addr),
        ZX_OK
    );
    assert_eq!(addr % MIB2, 0, "placed where its runs line up");
    for cpu in 0..cpus {
        machine.cpu(cpu).switch_to(Some(process.aspace()));
    }
    let touch = || {
        for cpu in (0..cpus).rev() {
            for run in 0..2 {
                machine.cpu(cpu).store(addr + run * MIB2, run + 1).unwrap();
            }
        }
        machine.cpu(0).enter();
    };
    let decommit = |offset: u64, len: u64| {
        zx_vmar_op_range(
            &process,
            root,
            ZX_VMAR_OP_DECOMMIT,
            addr + offset,
            len,
            0,
            0,
        )
    };
    for round in 0..4 {
        touch();
        let before = machine.counters();
        let mut status = (ZX_OK, ZX_OK);
        let count = allocations(|| status = (decommit(0, MIB2), decommit(MIB2, PAGE_SIZE)));
        assert_eq!(status, (ZX_OK, ZX_OK));
        let delta = machine.counters().since(&before);
        assert_eq!(delta.runs_freed, 1, "{format:?}");
        if round > 0 {
            assert_eq!(
                count, 0,
                "{format:?}, {cpus} CPUs: large-leaf decommits allocated {count} times"
            );
        }
        // Back to whole runs: decommit everything (allocations not counted).
        assert_eq!(decommit(0, 2 * MIB2), ZX_OK);
    }
    for cpu in 0..cpus {
        machine.cpu(cpu).switch_to(None);
    }
}

#[test]
fn large_leaves_x86_64() {
    large_leaves_allocate_nothing(Format::X86_64, 1);
    large_leaves_allocate_nothing(Format::X86_64, 4);
}

#[test]
fn large_leaves_aarch64() {
    large_leaves_allocate_nothing(Format::Aarch64, 1);
    large_leaves_allocate_nothing(Format::Aarch64, 4);
}

#[test]
fn the_counter_counts() {
    let count = allocations(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(count, 1);
}

/// A kernel may make its `Tlb` before its heap works: making one allocates nothing.
#[test]
fn making_a_tlb_needs_no_heap() {
    let count = allocations(|| {
        let tlb = zx_vm::tlb::Tlb::new(64, 4095, Format::X86_64).unwrap();
        assert_eq!(tlb.cpu_count(), 64);
        drop(std::hint::black_box(tlb));
    });
    assert_eq!(count, 0);
}
