//! Large leaves (2 MiB and 1 GiB), both formats: the walker's entry counts after map, a 4 KiB
//! hole, a protect of one page, and a split that finds no frame; then physical, contiguous and
//! large-page paged VMOs mapped through the syscalls, faulted, decommitted and unmapped, with
//! the frames and runs accounted and the empty tables freed.

mod common;

#[allow(unused_imports)]
use common::*;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::*;
use zx_vm::object::{KernelObject, Process};
use zx_vm::platform::{PhysAddr, Platform};
use zx_vm::sim::{SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::vmar::Access;
use zx_vm::Vmo;

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const RW: MmuFlags = MmuFlags::READ.union(MmuFlags::WRITE).union(MmuFlags::USER);

/// A broadcast machine (large leaves need it on aarch64) of `frames` frames and `cpus` CPUs.
fn large_machine(frames: usize, cpus: usize) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames,
        cpus,
        broadcast: true,
        ..SimConfig::default()
    })
}

fn tree(machine: &SimMachine, format: Format) -> Box<dyn PageTableOps> {
    new_page_table_for(
        machine,
        format,
        0,
        USER_ADDRESS_LIMIT,
        MemoryAttributes::DEFAULT,
    )
    .expect("a tree")
}

fn release(machine: &SimMachine, mut pt: Box<dyn PageTableOps>) {
    let mut pending = PendingFlush::new();
    pt.release(machine, &mut pending);
    // SAFETY: no CPU of the test machine runs in these tables.
    unsafe { machine.free_frames(pending.freed_tables()) };
}

fn counts(pages: usize, large_2m: usize, large_1g: usize) -> LeafCounts {
    LeafCounts {
        pages,
        large_2m,
        large_1g,
    }
}

/// Device memory far above the machine's frames: mapped, never touched.
const DEVICE: PhysAddr = PhysAddr(64 * GIB);

#[test]
fn one_entry_per_large_leaf_and_offsets_inside_it() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let mut pt = tree(&machine, format);
        let tables = pt.table_pages();
        assert_eq!(pt.map_large(&*machine, GIB, DEVICE, 2, RW), Ok(false));
        assert_eq!(pt.leaf_counts(&*machine), counts(0, 0, 1), "{format:?}");
        assert_eq!(
            pt.table_pages(),
            tables + 1,
            "{format:?}: one PDPT, nothing below"
        );
        let va = 2 * GIB + 3 * MIB2;
        assert_eq!(pt.map_large(&*machine, va, DEVICE, 1, RW), Ok(false));
        assert_eq!(pt.leaf_counts(&*machine), counts(0, 1, 1), "{format:?}");
        assert_eq!(
            pt.query(&*machine, GIB + 5 * MIB2 + 0x7000),
            Some((PhysAddr(DEVICE.0 + 5 * MIB2 + 0x7000), RW)),
            "{format:?}"
        );
        assert_eq!(
            pt.query(&*machine, va + 0x1000),
            Some((PhysAddr(DEVICE.0 + 0x1000), RW))
        );
        // Refused: misaligned, a level without large leaves, already covered.
        let misaligned = pt.map_large(&*machine, GIB + 0x1000, DEVICE, 1, RW);
        assert_eq!(misaligned, Err(Status::InvalidArgs));
        assert_eq!(
            pt.map_large(&*machine, 0, DEVICE, 3, RW),
            Err(Status::InvalidArgs)
        );
        let inside = pt.map_large(&*machine, GIB + MIB2, DEVICE, 1, RW);
        assert_eq!(inside, Err(Status::AlreadyExists));
        // The same leaf again answers that it was there.
        assert_eq!(pt.map_large(&*machine, va, DEVICE, 1, RW), Ok(true));
        release(&machine, pt);
    }
}

#[test]
fn a_hole_in_a_2mib_leaf_leaves_511_pages_and_one_table() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let mut pt = tree(&machine, format);
        let va = 4 * MIB2;
        pt.map_large(&*machine, va, DEVICE, 1, RW).unwrap();
        let tables = pt.table_pages();
        let mut pending = PendingFlush::new();
        pt.split_edges(&*machine, va + 0x5000, va + 0x6000).unwrap();
        pt.unmap(&*machine, va + 0x5000, va + 0x6000, &mut pending);
        assert_eq!(pt.leaf_counts(&*machine), counts(511, 0, 0), "{format:?}");
        assert_eq!(pt.table_pages(), tables + 1, "{format:?}");
        assert_eq!(
            pending.pages(),
            &[va + 0x5000],
            "{format:?}: one invalidation"
        );
        assert_eq!(pt.query(&*machine, va + 0x5000), None);
        assert_eq!(
            pt.query(&*machine, va + 0x6000),
            Some((PhysAddr(DEVICE.0 + 0x6000), RW))
        );
        // Unmapping the rest frees the table the split made.
        let mut pending = PendingFlush::new();
        pt.unmap(&*machine, va, va + MIB2, &mut pending);
        assert_eq!(pt.leaf_counts(&*machine), counts(0, 0, 0), "{format:?}");
        assert_eq!(pending.freed_tables().len(), 3, "{format:?}: PT, PD, PDPT");
        // SAFETY: no CPU runs in the tree.
        unsafe { machine.free_frames(pending.freed_tables()) };
        release(&machine, pt);
    }
}

#[test]
fn an_unmap_that_meets_a_straddling_leaf_splits_it_by_itself() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let mut pt = tree(&machine, format);
        pt.map_large(&*machine, GIB, DEVICE, 2, RW).unwrap();
        let tables = pt.table_pages();
        let mut pending = PendingFlush::new();
        // A 4 KiB hole in a 1 GiB leaf: 511 2 MiB leaves and 511 pages, two new tables.
        pt.unmap(&*machine, GIB + 0x3000, GIB + 0x4000, &mut pending);
        assert_eq!(pt.leaf_counts(&*machine), counts(511, 511, 0), "{format:?}");
        assert_eq!(pt.table_pages(), tables + 2, "{format:?}");
        assert_eq!(
            pt.query(&*machine, GIB + 7 * MIB2 + 0x1000),
            Some((PhysAddr(DEVICE.0 + 7 * MIB2 + 0x1000), RW))
        );
        release(&machine, pt);
    }
}

#[test]
fn protect_of_one_page_splits_and_changes_only_it() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let mut pt = tree(&machine, format);
        let va = 8 * MIB2;
        pt.map_large(&*machine, va, DEVICE, 1, RW).unwrap();
        let tables = pt.table_pages();
        let ro = MmuFlags::READ | MmuFlags::USER;
        pt.split_edges(&*machine, va + 0x2000, va + 0x3000).unwrap();
        let mut pending = PendingFlush::new();
        pt.protect(&*machine, va + 0x2000, va + 0x3000, ro, &mut pending);
        assert_eq!(pt.leaf_counts(&*machine), counts(512, 0, 0), "{format:?}");
        assert_eq!(pt.table_pages(), tables + 1);
        assert_eq!(pending.pages(), &[va + 0x2000]);
        assert_eq!(pt.query(&*machine, va + 0x2000).unwrap().1, ro);
        assert_eq!(pt.query(&*machine, va + 0x3000).unwrap().1, RW);
        // A protect of the whole leaf's span rewrites a large leaf in place; here, the pages.
        let mut pending = PendingFlush::new();
        pt.map_large(&*machine, 10 * MIB2, DEVICE, 1, RW).unwrap();
        pt.protect(&*machine, 10 * MIB2, 11 * MIB2, ro, &mut pending);
        assert_eq!(pt.leaf_counts(&*machine), counts(512, 1, 0));
        assert_eq!(
            pending.pages(),
            &[10 * MIB2],
            "{format:?}: one invalidation"
        );
        assert_eq!(pt.query(&*machine, 10 * MIB2 + 0x9000).unwrap().1, ro);
        release(&machine, pt);
    }
}

#[test]
fn a_split_without_a_frame_changes_nothing() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let mut pt = tree(&machine, format);
        pt.map_large(&*machine, GIB, DEVICE, 2, RW).unwrap();
        let (tables, leaves) = (pt.table_pages(), pt.leaf_counts(&*machine));
        // Two tables needed (the 1 GiB leaf, then the 2 MiB one around the edge); one left.
        machine.set_allocation_budget(Some(1));
        let before = machine.counters();
        let split = pt.split_edges(&*machine, GIB + 0x1000, GIB + MIB2);
        assert_eq!(split, Err(Status::NoMemory), "{format:?}");
        assert_eq!(
            (pt.table_pages(), pt.leaf_counts(&*machine)),
            (tables, leaves)
        );
        let delta = machine.counters().since(&before);
        assert_eq!(delta.frames_allocated, delta.frames_freed, "{format:?}");
        machine.set_allocation_budget(None);
        pt.split_edges(&*machine, GIB + 0x1000, GIB + MIB2).unwrap();
        assert_eq!(pt.leaf_counts(&*machine), counts(512, 511, 0), "{format:?}");
        assert_eq!(pt.table_pages(), tables + 2);
        release(&machine, pt);
    }
}

/// The root VMAR's base and a process on `machine`.
fn large_process(machine: &Arc<SimMachine>, format: Format) -> Arc<Process> {
    let platform: Arc<dyn Platform> = machine.clone();
    Process::new(platform, format).expect("process")
}

/// Maps `len` bytes of `vmo` at the lowest free address (above the root VMAR's base) that is
/// aligned to `align`, with `extra` options.
fn map_aligned(p: &Process, vmo: zx_handle_t, len: u64, align: u64, extra: u32) -> u64 {
    let base = p.aspace().root_vmar().base();
    let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC | extra;
    let mut target = (base + align) & !(align - 1);
    loop {
        let mut addr = 0;
        let offset = target - base;
        let status = zx_vmar_map(
            p,
            p.root_vmar_handle(),
            options,
            offset,
            vmo,
            0,
            len,
            &mut addr,
        );
        if status != ZX_ERR_ALREADY_EXISTS {
            assert_eq!(status, ZX_OK);
            assert_eq!(addr, target);
            return addr;
        }
        target += align;
    }
}

fn vmo_handle(p: &Process, vmo: Arc<Vmo>) -> zx_handle_t {
    p.add_handle(
        KernelObject::Vmo(vmo),
        Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
    )
    .expect("a handle")
}

#[test]
fn a_gib_aligned_physical_vmo_is_one_entry() {
    for format in Format::ALL {
        let machine = large_machine(256, 1);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_physical(machine.clone(), DEVICE, GIB + 2 * MIB2 + 0x3000).unwrap();
        let handle = vmo_handle(&p, vmo);
        let len = GIB + 2 * MIB2 + 0x3000;
        map_aligned(&p, handle, len, GIB, ZX_VM_MAP_RANGE);
        let leaves = p
            .aspace()
            .with_page_table_unsynchronized(|pt, m| pt.leaf_counts(m));
        assert_eq!(
            leaves,
            counts(3, 2, 1),
            "{format:?}: 1 GiB, then 2 x 2 MiB, then pages"
        );
        assert_eq!(p.aspace().audit(), Ok(()));
    }
}

/// The leaves of `p`'s page table by size, through the public accessor (checked against the
/// walker's own count).
fn leaves(p: &Process) -> LeafCounts {
    let counts = p.aspace().leaf_counts();
    let walked = p
        .aspace()
        .with_page_table_unsynchronized(|pt, m| pt.leaf_counts(m));
    assert_eq!(counts, walked);
    counts
}

/// A paged VMO with large pages: the first touch of a run commits it whole (one allocation) and
/// maps it with one 2 MiB leaf; a DECOMMIT of the whole run clears that leaf and gives the run
/// back in one call; one of a single page splits the leaf and frees that page only.
#[test]
fn large_page_vmo_commits_maps_and_decommits_runs() {
    for format in Format::ALL {
        let machine = large_machine(4096, 2);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_large_pages(machine.clone(), 4 * MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let addr = map_aligned(&p, handle, 4 * MIB2, MIB2, 0);
        let (cpu0, cpu1) = (machine.cpu(0), machine.cpu(1));
        cpu0.switch_to(Some(p.aspace()));
        cpu1.switch_to(Some(p.aspace()));

        let before = machine.counters();
        cpu0.store(addr + 0x1000, 7).unwrap();
        let delta = machine.counters().since(&before);
        assert_eq!(
            (delta.runs_allocated, delta.page_faults),
            (1, 1),
            "{format:?}"
        );
        assert_eq!(leaves(&p), counts(0, 1, 0), "{format:?}");
        assert_eq!(cpu0.load(addr + MIB2 - 8).unwrap(), 0);
        assert_eq!(cpu0.tlb_translation(addr + 0x5000).unwrap().1, 1);
        for run in 1..4 {
            cpu0.store(addr + run * MIB2, 100 + run).unwrap();
        }
        assert_eq!(leaves(&p), counts(0, 4, 0), "{format:?}");
        assert_eq!(committed(&p, handle), 4 * MIB2);
        assert_eq!(
            machine.counters().since(&before).page_faults,
            4,
            "{format:?}"
        );
        // CPU 1 caches the first two runs' large translations.
        assert_eq!(cpu1.load(addr + 0x1000).unwrap(), 7);
        assert_eq!(cpu1.load(addr + MIB2).unwrap(), 101);

        // DECOMMIT of the whole first run: one leaf, one invalidation, the run back in one call.
        let before = machine.counters();
        cpu0.enter();
        let status = zx_vmar_op_range(
            &p,
            p.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            addr,
            MIB2,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
        let delta = machine.counters().since(&before);
        assert_eq!(leaves(&p), counts(0, 3, 0), "{format:?}");
        assert_eq!(
            (delta.runs_freed, delta.frames_freed),
            (1, 512),
            "{format:?}"
        );
        assert!(cpu1.tlb_entry(addr + 0x1000).is_none(), "{format:?}");
        assert_eq!(committed(&p, handle), 3 * MIB2);
        // Touched again, the run comes back zeroed (its frames were poisoned when freed, and the
        // allocator hands the same aligned run out again).
        let before = machine.counters();
        assert_eq!(cpu1.load(addr + 0x1000).unwrap(), 0, "{format:?}");
        assert_eq!(cpu1.load(addr + MIB2 - 8).unwrap(), 0, "{format:?}");
        assert_eq!(machine.counters().since(&before).runs_allocated, 1);
        assert_eq!(leaves(&p), counts(0, 4, 0), "{format:?}");
        let status = zx_vmar_op_range(
            &p,
            p.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            addr,
            MIB2,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);

        // DECOMMIT of one page of the second run: the leaf splits, that page goes.
        let before = machine.counters();
        let status = zx_vmar_op_range(
            &p,
            p.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            addr + MIB2,
            PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
        let delta = machine.counters().since(&before);
        assert_eq!(leaves(&p), counts(511, 2, 0), "{format:?}");
        assert_eq!((delta.runs_freed, delta.frames_freed), (0, 1), "{format:?}");
        assert!(cpu1.tlb_entry(addr + MIB2).is_none(), "{format:?}");
        assert_eq!(cpu1.load(addr + MIB2).unwrap(), 0, "{format:?}");
        assert_eq!(cpu1.load(addr + 2 * MIB2).unwrap(), 102, "{format:?}");
        assert_eq!(committed(&p, handle), 3 * MIB2 - PAGE_SIZE + PAGE_SIZE);
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A protect of one page inside a 2 MiB leaf that another CPU caches: once it returns, that CPU
/// can no longer write the page, and the other pages keep their permissions. (The protect splits
/// the leaf before it changes the page, so its own invalidation of the page drops the large
/// translation: the broken split build passes here; the two tests named in `.ci/run` catch it.)
#[test]
fn a_split_leaves_no_stale_large_translation() {
    for format in Format::ALL {
        let machine = large_machine(4096, 2);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let addr = map_aligned(&p, handle, MIB2, MIB2, 0);
        let (cpu0, cpu1) = (machine.cpu(0), machine.cpu(1));
        cpu0.switch_to(Some(p.aspace()));
        cpu1.switch_to(Some(p.aspace()));
        cpu1.store(addr + 0x3000, 1).unwrap();
        assert_eq!(cpu1.tlb_translation(addr).unwrap().1, 1, "{format:?}");
        cpu0.enter();
        let status = zx_vmar_protect(
            &p,
            p.root_vmar_handle(),
            ZX_VM_PERM_READ,
            addr + 0x3000,
            PAGE_SIZE,
        );
        assert_eq!(status, ZX_OK);
        assert_eq!(leaves(&p), counts(512, 0, 0), "{format:?}");
        assert!(
            cpu1.store(addr + 0x3000, 2).is_err(),
            "{format:?}: a write through the stale 2 MiB translation"
        );
        assert_eq!(cpu1.load(addr + 0x3000).unwrap(), 1);
        cpu1.store(addr + 0x4000, 3).unwrap();
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// Break-before-make, aarch64: a split must take the large translation out of every TLB before
/// the table goes in. Here a CPU caches a 2 MiB translation, the leaf is split and one page of it
/// made read-only with no invalidation yet (as an operation under way would leave it), and the
/// CPU touches the page: without break-before-make it would hold the stale 2 MiB translation
/// next to the new 4 KiB one, which disagree (the simulated MMU walks speculatively, as an
/// aarch64 MMU may, and reports the conflict). x86_64 allows a table to replace an agreeing
/// large leaf directly; its stale large translation is dropped by the operation's own
/// invalidation of the changed page.
#[test]
fn a_split_breaks_the_large_translation_before_making_the_table() {
    let machine = large_machine(4096, 2);
    let p = large_process(&machine, Format::Aarch64);
    let vmo = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
    let handle = vmo_handle(&p, vmo);
    let addr = map_aligned(&p, handle, MIB2, MIB2, 0);
    let cpu1 = machine.cpu(1);
    cpu1.switch_to(Some(p.aspace()));
    cpu1.store(addr + 0x3000, 1).unwrap();
    assert_eq!(cpu1.tlb_translation(addr).unwrap().1, 1);
    machine.cpu(0).enter();
    p.aspace().with_page_table_unsynchronized(|pt, m| {
        pt.split_edges(m, addr + 0x3000, addr + 0x4000).unwrap();
        let mut pending = PendingFlush::new();
        let ro = MmuFlags::READ | MmuFlags::USER;
        pt.protect(m, addr + 0x3000, addr + 0x4000, ro, &mut pending);
        assert_eq!(pending.pages(), &[addr + 0x3000]);
    });
    // The simulated TLB panics here on a conflict (the broken split's failure).
    assert_eq!(cpu1.load(addr + 0x3000).unwrap(), 1);
    assert_eq!(cpu1.tlb_translation(addr + 0x3000).unwrap().1, 0);
}

/// A range edge aligned to 2 MiB but inside a 1 GiB leaf still splits it: the leaf becomes 2 MiB
/// leaves, and no page table below them is needed.
#[test]
fn an_edge_aligned_to_2mib_inside_a_1gib_leaf_splits_it_once() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let mut pt = tree(&machine, format);
        pt.map_large(&*machine, GIB, DEVICE, 2, RW).unwrap();
        let tables = pt.table_pages();
        pt.split_edges(&*machine, GIB + MIB2, 2 * GIB).unwrap();
        assert_eq!(pt.leaf_counts(&*machine), counts(0, 512, 0), "{format:?}");
        assert_eq!(pt.table_pages(), tables + 1, "{format:?}");
        let mut pending = PendingFlush::new();
        pt.unmap(&*machine, GIB + MIB2, 2 * GIB, &mut pending);
        assert_eq!(pt.leaf_counts(&*machine), counts(0, 1, 0), "{format:?}");
        assert!(
            pending.is_full(),
            "{format:?}: 511 leaves pass the threshold"
        );
        release(&machine, pt);
    }
}

/// The platform decides which leaves exist: with 2 MiB at most a 1 GiB physical VMO maps with
/// 512 leaves of 2 MiB; with none, pages only. On aarch64 an IPI-only machine makes none either
/// (a split's break-before-make needs an invalidation that reaches every CPU by itself).
#[test]
fn the_platform_caps_the_leaf_size() {
    for (format, level, broadcast, want) in [
        (Format::X86_64, 1, false, counts(0, 512, 0)),
        (Format::Aarch64, 1, true, counts(0, 512, 0)),
        (Format::X86_64, 0, false, counts(512 * 512, 0, 0)),
        (Format::Aarch64, 2, false, counts(512 * 512, 0, 0)),
        (Format::X86_64, 2, false, counts(0, 0, 1)),
    ] {
        let machine = SimMachine::new(SimConfig {
            frames: 1024,
            broadcast,
            ..SimConfig::default()
        });
        machine.set_max_leaf_level(level);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_physical(machine.clone(), DEVICE, GIB).unwrap();
        let handle = vmo_handle(&p, vmo);
        // On fault, too: the largest size the platform has.
        let faulted = map_aligned(&p, handle, GIB, GIB, 0);
        assert_eq!(p.aspace().page_fault(faulted, Access::Read), Ok(()));
        let one = match (want.large_1g, want.large_2m) {
            (1, _) => counts(0, 0, 1),
            (_, 512) => counts(0, 1, 0),
            _ => counts(1, 0, 0),
        };
        assert_eq!(leaves(&p), one, "{format:?}, level {level}: on fault");
        assert_eq!(zx_vmar_unmap(&p, p.root_vmar_handle(), faulted, GIB), ZX_OK);
        map_aligned(&p, handle, GIB, GIB, ZX_VM_MAP_RANGE);
        assert_eq!(
            leaves(&p),
            want,
            "{format:?}, level {level}, broadcast {broadcast}"
        );
    }
}

/// A snapshot of a large-page VMO mapped with a 2 MiB leaf: the leaf turns read-only whole (one
/// entry rewritten), a write through it copies one page and splits the leaf, the child keeps the
/// old contents, and no frame leaks when all is closed.
#[test]
fn a_snapshot_write_protects_a_large_leaf_and_a_write_splits_it() {
    for format in Format::ALL {
        let machine = large_machine(4096, 2);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let addr = map_aligned(&p, handle, MIB2, MIB2, 0);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        cpu.store(addr + 0x2000, 5).unwrap();
        assert_eq!(leaves(&p), counts(0, 1, 0), "{format:?}");
        let snap = child(&p, handle, ZX_VMO_CHILD_SNAPSHOT, 0, MIB2).unwrap();
        assert_eq!(
            leaves(&p),
            counts(0, 1, 0),
            "{format:?}: rewritten, not split"
        );
        assert!(cpu.tlb_entry(addr + 0x2000).is_none(), "{format:?}");
        assert_eq!(cpu.load(addr + 0x2000).unwrap(), 5);
        cpu.store(addr + 0x2000, 6).unwrap();
        assert_eq!(leaves(&p), counts(512, 0, 0), "{format:?}");
        assert_eq!(read_word(&p, snap, 0x2000), 5, "{format:?}");
        assert_eq!(cpu.load(addr + 0x2000).unwrap(), 6);
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(zx_handle_close(&p, snap), ZX_OK);
        cpu.store(addr + 0x3000, 7).unwrap();
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A contiguous VMO whose frames happen to be aligned is mapped with 2 MiB leaves on fault too,
/// and one that is not aligned alike with pages.
#[test]
fn a_contiguous_vmo_faults_in_large_leaves_where_aligned() {
    for format in Format::ALL {
        let machine = large_machine(4096, 1);
        let p = large_process(&machine, format);
        // Take frames until the next allocation starts 2 MiB aligned.
        let mut hold = Vec::new();
        while let Some(pa) = machine.alloc_frame() {
            if pa.0 % MIB2 == MIB2 - PAGE_SIZE {
                hold.push(pa);
                break;
            }
            hold.push(pa);
        }
        let vmo = Vmo::create_contiguous(machine.clone(), 2 * MIB2).unwrap();
        // SAFETY: these frames were never mapped anywhere.
        unsafe { machine.free_frames(&hold) };
        let handle = vmo_handle(&p, vmo);
        let addr = map_aligned(&p, handle, 2 * MIB2, MIB2, 0);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        cpu.store(addr + MIB2 + 0x8000, 1).unwrap();
        assert_eq!(leaves(&p), counts(0, 1, 0), "{format:?}");
        assert_eq!(cpu.tlb_translation(addr + MIB2).unwrap().1, 1);
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A mapping placed anywhere lands where large leaves can map it: a large-page VMO at an address
/// that lines its runs up, a physical VMO at one that lines its frames up, when there is room.
#[test]
fn mappings_placed_anywhere_line_up_with_their_runs() {
    for format in Format::ALL {
        let machine = large_machine(4096, 1);
        let p = large_process(&machine, format);
        let root = p.root_vmar_handle();
        let mut addr = 0;
        // Something small first, so that the lowest gap is not aligned.
        let small = patterned_vmo(&p, 1);
        map_rw(&p, root, small, 0, 1);
        let vmo = Vmo::create_large_pages(machine.clone(), 2 * MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
        let status = zx_vmar_map(&p, root, options, 0, handle, 0, 2 * MIB2, &mut addr);
        assert_eq!(status, ZX_OK);
        assert_eq!(addr % MIB2, 0, "{format:?}");
        let device = PhysAddr(DEVICE.0 + MIB2 + 0x5000);
        let vmo = Vmo::create_physical(machine.clone(), device, 3 * MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let options = options | ZX_VM_MAP_RANGE;
        let status = zx_vmar_map(&p, root, options, 0, handle, 0x3000, 2 * MIB2, &mut addr);
        assert_eq!(status, ZX_OK);
        assert_eq!(addr % MIB2, (device.0 + 0x3000) % MIB2, "{format:?}");
        // 504 pages up to the first 2 MiB boundary, one leaf, 8 pages.
        assert_eq!(leaves(&p), counts(512, 1, 0), "{format:?}");
    }
}

/// `zx_vmar_protect` and `zx_vmar_unmap` inside a 2 MiB leaf with no frame left for the split:
/// `ZX_ERR_NO_MEMORY`, and nothing changed (the leaf, its permissions, the mapping, the frames).
/// DECOMMIT, whose specification has no `ZX_ERR_NO_MEMORY`, removes the whole leaf instead.
#[test]
fn a_split_that_finds_no_frame_fails_whole_or_drops_the_leaf() {
    for format in Format::ALL {
        let machine = large_machine(4096, 1);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let addr = map_aligned(&p, handle, MIB2, MIB2, 0);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        cpu.store(addr + 0x4000, 9).unwrap();
        let root = p.root_vmar_handle();
        let tables = p.aspace().page_table_pages();
        machine.set_allocation_budget(Some(0));
        let before = machine.counters();
        let status = zx_vmar_protect(&p, root, ZX_VM_PERM_READ, addr + 0x4000, PAGE_SIZE);
        assert_eq!(status, ZX_ERR_NO_MEMORY, "{format:?}");
        assert_eq!(
            zx_vmar_unmap(&p, root, addr + 0x4000, PAGE_SIZE),
            ZX_ERR_NO_MEMORY
        );
        let delta = machine.counters().since(&before);
        assert_eq!(delta.frames_allocated, 0, "{format:?}");
        assert_eq!(leaves(&p), counts(0, 1, 0), "{format:?}");
        assert_eq!(p.aspace().page_table_pages(), tables);
        cpu.store(addr + 0x4000, 10).unwrap();
        cpu.store(addr + 0x5000, 11).unwrap();
        assert_eq!(delta.page_faults, 0, "{format:?}: still mapped writable");
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        // DECOMMIT of one page: the leaf goes whole, the page reads 0, the others fault back.
        let status = zx_vmar_op_range(
            &p,
            root,
            ZX_VMAR_OP_DECOMMIT,
            addr + 0x4000,
            PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK, "{format:?}");
        assert_eq!(leaves(&p), counts(0, 0, 0), "{format:?}");
        assert_eq!(committed(&p, handle), MIB2 - PAGE_SIZE);
        machine.set_allocation_budget(None);
        assert_eq!(cpu.load(addr + 0x4000).unwrap(), 0, "{format:?}");
        assert_eq!(cpu.load(addr + 0x5000).unwrap(), 11, "{format:?}");
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// Only a large-page VMO commits runs: a plain paged VMO of the same size commits the page a
/// fault touches; a large-page VMO's read fault commits the run even where the platform has a
/// zero page (a large-page VMO maps none). Sizes: up to `MAX_VMO_SIZE`, as for any paged VMO.
#[test]
fn only_large_page_vmos_commit_runs() {
    for format in Format::ALL {
        let machine = large_machine(4096, 1);
        machine.enable_zero_page();
        let p = large_process(&machine, format);
        let plain = Vmo::create(machine.clone(), MIB2).unwrap();
        let plain = vmo_handle(&p, plain);
        let at = map_aligned(&p, plain, MIB2, MIB2, 0);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        cpu.store(at, 1).unwrap();
        assert_eq!(committed(&p, plain), PAGE_SIZE, "{format:?}");
        assert_eq!(leaves(&p), counts(1, 0, 0), "{format:?}");
        let large = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
        assert!(large.has_large_pages());
        let large = vmo_handle(&p, large);
        let mut addr = 0;
        let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
        let root = p.root_vmar_handle();
        assert_eq!(
            zx_vmar_map(&p, root, options, 0, large, 0, MIB2, &mut addr),
            ZX_OK
        );
        let before = machine.counters();
        assert_eq!(cpu.load(addr + 0x7000).unwrap(), 0);
        assert_eq!(machine.counters().since(&before).runs_allocated, 1);
        assert_eq!(committed(&p, large), MIB2, "{format:?}: no zero page");
        assert_eq!(leaves(&p), counts(1, 1, 0), "{format:?}");
    }
    let machine = large_machine(64, 1);
    let max = zx_vm::vmo::MAX_VMO_SIZE;
    assert!(Vmo::create_large_pages(machine.clone(), max).is_ok());
    let too_big = Vmo::create_large_pages(machine.clone(), max + 1).err();
    assert_eq!(too_big, Some(Status::OutOfRange));
}

/// The simulation's check covers runs freed whole: freeing a run that a CPU still caches through
/// a large translation panics.
#[test]
#[should_panic(expected = "through a large translation")]
fn the_sim_refuses_to_free_a_run_a_tlb_still_maps() {
    let machine = large_machine(4096, 1);
    let p = large_process(&machine, Format::X86_64);
    let vmo = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
    let handle = vmo_handle(&p, vmo);
    let addr = map_aligned(&p, handle, MIB2, MIB2, 0);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    cpu.store(addr, 1).unwrap();
    let (run, _) = p.aspace().query(addr).unwrap();
    // SAFETY: none: the point is that the simulation refuses.
    unsafe { machine.free_run(run, 512) };
}

/// The same for a batch of runs (`free_runs`): every run in it is checked, not only the first.
#[test]
#[should_panic(expected = "through a large translation")]
fn the_sim_refuses_a_batch_with_one_run_a_tlb_still_maps() {
    let machine = large_machine(4096, 1);
    let p = large_process(&machine, Format::X86_64);
    let vmo = Vmo::create_large_pages(machine.clone(), 2 * MIB2).unwrap();
    let handle = vmo_handle(&p, vmo);
    let addr = map_aligned(&p, handle, 2 * MIB2, MIB2, 0);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    cpu.store(addr, 1).unwrap();
    cpu.store(addr + MIB2, 1).unwrap();
    // The first run's translation goes; the second's stays.
    cpu.invalidate_page(addr);
    assert!(cpu.tlb_translation(addr).is_none());
    let (first, _) = p.aspace().query(addr).unwrap();
    let (second, _) = p.aspace().query(addr + MIB2).unwrap();
    // SAFETY: none: the point is that the simulation refuses.
    unsafe { machine.free_runs(&[first, second], 512) };
}

/// Leaves never reach past a VMO's end, nor above a 2 MiB run for a large-page VMO: a fault in
/// a large-page VMO's last run, which the VMO does not hold whole, commits one page; a physical
/// VMO shorter than its mapping's 2 MiB gets pages; a large-page VMO of 1 GiB mapped 1 GiB
/// aligned still gets 2 MiB leaves (its runs are 2 MiB).
#[test]
fn leaves_stay_inside_the_vmo_and_its_runs() {
    for format in Format::ALL {
        let machine = large_machine(4096, 1);
        let p = large_process(&machine, format);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        let short = Vmo::create_large_pages(machine.clone(), MIB2 + 0x3000).unwrap();
        let short = vmo_handle(&p, short);
        let at = map_aligned(&p, short, 2 * MIB2, MIB2, 0);
        cpu.store(at + MIB2 + 0x1000, 1).unwrap();
        assert_eq!(
            committed(&p, short),
            PAGE_SIZE,
            "{format:?}: no run past the end"
        );
        assert_eq!(leaves(&p), counts(1, 0, 0), "{format:?}");
        let device = Vmo::create_physical(machine.clone(), DEVICE, MIB2 / 2).unwrap();
        let device = vmo_handle(&p, device);
        let at = map_aligned(&p, device, MIB2, MIB2, ZX_VM_MAP_RANGE);
        assert_eq!(leaves(&p), counts(1 + 256, 0, 0), "{format:?}");
        assert_eq!(p.aspace().query(at + MIB2 / 2), None);
        // The same on fault: the page, not a leaf over the end.
        let again = map_aligned(&p, device, MIB2, MIB2, 0);
        assert_eq!(p.aspace().page_fault(again, Access::Read), Ok(()));
        assert_eq!(leaves(&p), counts(1 + 256 + 1, 0, 0), "{format:?}");
        let big = Vmo::create_large_pages(machine.clone(), GIB).unwrap();
        let big = vmo_handle(&p, big);
        let at = map_aligned(&p, big, GIB, GIB, 0);
        cpu.store(at + 0x5000, 2).unwrap();
        assert_eq!(
            leaves(&p),
            counts(258, 1, 0),
            "{format:?}: a run, not a GiB"
        );
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// Placed anywhere, a large-page VMO lines up with 2 MiB, not more (its runs are 2 MiB); a
/// plain VMO with nothing (the lowest gap).
#[test]
fn placement_lines_up_only_what_large_leaves_can_map() {
    for format in Format::ALL {
        let machine = large_machine(4096, 1);
        let p = large_process(&machine, format);
        let root = p.root_vmar_handle();
        let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
        let mut addr = 0;
        let small = patterned_vmo(&p, 1);
        map_rw(&p, root, small, 0, 1);
        let plain = Vmo::create(machine.clone(), 2 * MIB2).unwrap();
        let plain = vmo_handle(&p, plain);
        assert_eq!(
            zx_vmar_map(&p, root, options, 0, plain, 0, 2 * MIB2, &mut addr),
            ZX_OK
        );
        assert_ne!(
            addr % MIB2,
            0,
            "{format:?}: a plain VMO takes the lowest gap"
        );
        let big = Vmo::create_large_pages(machine.clone(), GIB).unwrap();
        let big = vmo_handle(&p, big);
        assert_eq!(
            zx_vmar_map(&p, root, options, 0, big, 0, GIB, &mut addr),
            ZX_OK
        );
        assert_eq!(addr % MIB2, 0, "{format:?}");
        assert_ne!(addr % GIB, 0, "{format:?}: 2 MiB runs need no more");
    }
}

/// A split makes valid descriptors of the next level down (aarch64 rejects a level-3 descriptor
/// with bit 1 clear, as the simulated MMU does), and on x86_64 issues no invalidation of its own:
/// only the changed page is invalidated. aarch64 breaks the leaf first: one more.
#[test]
fn a_split_makes_valid_pages_and_x86_64_invalidates_only_the_change() {
    for format in Format::ALL {
        let machine = large_machine(4096, 2);
        let p = large_process(&machine, format);
        let vmo = Vmo::create_large_pages(machine.clone(), MIB2).unwrap();
        let handle = vmo_handle(&p, vmo);
        let addr = map_aligned(&p, handle, MIB2, MIB2, 0);
        let (cpu0, cpu1) = (machine.cpu(0), machine.cpu(1));
        cpu0.switch_to(Some(p.aspace()));
        cpu1.switch_to(Some(p.aspace()));
        cpu1.store(addr, 1).unwrap();
        cpu0.enter();
        let before = machine.counters();
        let status = zx_vmar_protect(&p, p.root_vmar_handle(), ZX_VM_PERM_READ, addr, PAGE_SIZE);
        assert_eq!(status, ZX_OK);
        let delta = machine.counters().since(&before);
        let breaks = if format == Format::Aarch64 { 2 } else { 0 };
        assert_eq!(delta.page_invalidations, 2 + breaks, "{format:?}: per CPU");
        // Every page of the split table translates (the walk is the MMU's).
        for page in 0..512 {
            // SAFETY: the simulated memory stays readable.
            let walked = unsafe { p.aspace().translate(addr + page * PAGE_SIZE) };
            assert!(
                walked.is_some(),
                "{format:?}: page {page} of the split leaf"
            );
        }
        assert_eq!(cpu1.load(addr + 0x1ff000).unwrap(), 0);
    }
}

/// `map_large` refuses what lies outside the tree's own root slots.
#[test]
fn map_large_stays_inside_the_user_range() {
    for format in Format::ALL {
        let machine = large_machine(64, 1);
        let slot = 1u64 << 39;
        let mut pt =
            new_page_table_for(&*machine, format, slot, 2 * slot, MemoryAttributes::DEFAULT)
                .unwrap();
        assert!(pt.large_leaves(&*machine));
        for va in [slot - GIB, 2 * slot, USER_ADDRESS_LIMIT] {
            assert_eq!(
                pt.map_large(&*machine, va, DEVICE, 2, RW),
                Err(Status::InvalidArgs)
            );
        }
        assert_eq!(pt.map_large(&*machine, slot, DEVICE, 2, RW), Ok(false));
        assert_eq!(
            pt.map_large(&*machine, 2 * slot - MIB2, DEVICE, 1, RW),
            Ok(false)
        );
        release(&machine, pt);
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation's run frees: what the frees do, and what the freed-frame check covers.

/// A run decommitted whole goes back to the allocator: on a machine with room for one aligned
/// run, the run a commit took can be had again after the DECOMMIT.
#[test]
fn a_run_freed_whole_can_be_allocated_again() {
    let machine = large_machine(1024, 1);
    let p = large_process(&machine, Format::X86_64);
    assert!(machine.has_aligned_run(512));
    let vmo = vmo_handle(&p, Vmo::create_large_pages(machine.clone(), MIB2).unwrap());
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, 0, MIB2, 0, 0),
        ZX_OK
    );
    assert!(!machine.has_aligned_run(512), "the one run is taken");
    let before = machine.counters();
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, MIB2, 0, 0),
        ZX_OK
    );
    assert_eq!(machine.counters().since(&before).runs_freed, 1);
    assert!(machine.has_aligned_run(512), "the run is free again");
}

/// Two runs mapped with 2 MiB leaves, both split (a protect of each one's page 1), and one
/// 4 KiB page cached by CPU 0: the page `cached` pages from the first run's start. Returns the
/// machine (the process is leaked: the tests free the first run behind the VMO's back) and the
/// first run.
fn run_with_a_cached_page(cached: u64) -> (Arc<SimMachine>, PhysAddr) {
    let machine = large_machine(4096, 1);
    let p = large_process(&machine, Format::X86_64);
    let vmo = vmo_handle(
        &p,
        Vmo::create_large_pages(machine.clone(), 2 * MIB2).unwrap(),
    );
    let addr = map_aligned(&p, vmo, 2 * MIB2, MIB2, 0);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    cpu.store(addr, 1).unwrap();
    cpu.store(addr + MIB2, 1).unwrap();
    let root = p.root_vmar_handle();
    for page in [addr + PAGE_SIZE, addr + MIB2 + PAGE_SIZE] {
        let status = zx_vmar_protect(&p, root, ZX_VM_PERM_READ, page, PAGE_SIZE);
        assert_eq!(status, ZX_OK);
    }
    assert_eq!(
        cpu.tlb_len(),
        0,
        "the splits' invalidations took both translations"
    );
    cpu.load(addr + cached * PAGE_SIZE).unwrap();
    let (_, level) = cpu.tlb_translation(addr + cached * PAGE_SIZE).unwrap();
    assert_eq!(level, 0, "a 4 KiB translation");
    let (run, _) = p.aspace().query(addr).unwrap();
    std::mem::forget(p);
    (machine, run)
}

/// Every page of a freed run is checked: a 4 KiB translation to its first page, or to one in its
/// middle, stops the free.
#[test]
#[should_panic(expected = "TLB still maps page")]
fn the_sim_checks_the_first_page_of_a_freed_run() {
    let (machine, run) = run_with_a_cached_page(0);
    // SAFETY: none: the point is that the simulation refuses.
    unsafe { machine.free_runs(&[run], 512) };
}

#[test]
#[should_panic(expected = "TLB still maps page")]
fn the_sim_checks_the_middle_of_a_freed_run() {
    let (machine, run) = run_with_a_cached_page(100);
    // SAFETY: none: the point is that the simulation refuses.
    unsafe { machine.free_runs(&[run], 512) };
}

/// A translation to the frame just past a run is not the run's: the next run's first page,
/// cached, does not stop a free of the run before it.
#[test]
fn the_sim_does_not_blame_a_run_for_the_frame_after_it() {
    let (machine, run) = run_with_a_cached_page(512);
    // SAFETY: no TLB reaches the run (CPU 0's translation of it went with the protect's
    // invalidation); the VMO that still holds it is leaked, never torn down.
    unsafe { machine.free_runs(&[run], 512) };
    assert!(machine.counters().runs_freed >= 1);
}

/// A root table a CPU has loaded is never freed, as part of a run or not.
#[test]
#[should_panic(expected = "still has it loaded as its root")]
fn the_sim_refuses_to_free_a_loaded_root_in_a_run() {
    let machine = large_machine(4096, 1);
    let p = large_process(&machine, Format::X86_64);
    machine.cpu(0).switch_to(Some(p.aspace()));
    let root = machine.loaded_root(0).unwrap();
    // SAFETY: none: the point is that the simulation refuses.
    unsafe { machine.free_runs(&[root], 1) };
}
