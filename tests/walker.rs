//! The page-table walker through its public interface (`zx_vm::arch`), on the simulated
//! machine, both formats: map, query, protect, unmap (which tables it frees, which pages it
//! records), the flush threshold, release and the entry codecs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zx_vm::abi::Status;
use zx_vm::arch::*;
use zx_vm::platform::{PhysAddr, Platform};
use zx_vm::sim::SimMachine;

fn flush_and_free(machine: &SimMachine, pending: PendingFlush) {
    // SAFETY: no CPU of the test machine runs in these tables.
    unsafe { machine.free_frames(pending.freed_tables()) };
}

/// A machine of 64 frames, a tree over the whole default user range in `format`, and one data
/// frame to map.
fn user_tree(format: Format) -> (Arc<SimMachine>, Box<dyn PageTableOps>, PhysAddr) {
    let machine = SimMachine::with_frames(64);
    let p: &dyn Platform = &*machine;
    let pt = new_page_table_for(p, format, 0, USER_ADDRESS_LIMIT, MemoryAttributes::DEFAULT)
        .expect("a tree");
    let frame = p.alloc_frame().expect("a frame");
    (machine, pt, frame)
}

/// Releases `pt` and frees its tables, then the one data frame the test mapped (mapped by nothing
/// once the tables are gone).
fn release_with_frame(machine: &SimMachine, pt: &mut dyn PageTableOps, frame: PhysAddr) {
    let mut pending = PendingFlush::new();
    pt.release(machine, &mut pending);
    flush_and_free(machine, pending);
    // SAFETY: the frame was mapped only by the released tables, whose translations no CPU of
    // the test machine caches (none runs in them).
    unsafe { machine.free_frames(&[frame]) };
}

/// At the last level a descriptor with both low bits set is a page, never a table (aarch64
/// encodes level-3 pages like tables above); x86_64 has no table bit at the last level.
#[test]
fn last_level_entries_are_never_tables() {
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    let page = Aarch64::page_entry(PhysAddr(0x4000), rw);
    assert!(!Aarch64::is_table(page, 0));
    assert!(Aarch64::is_table(Aarch64::table_entry(PhysAddr(0x4000)), 1));
    let page = X86_64::page_entry(PhysAddr(0x4000), rw);
    assert!(!X86_64::is_table(page, 0));
    assert!(X86_64::is_table(X86_64::table_entry(PhysAddr(0x4000)), 1));
}

/// An unmap frees a table only when it is empty: not when the range's ends happen to add up
/// to the table's span, nor when the range is one entry of the level below, while another
/// page still lives in the same table. Both formats.
#[test]
#[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
fn unmap_keeps_tables_that_still_map_pages() {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    for format in Format::ALL {
        let (machine, mut pt, frame) = user_tree(format);
        let p: &dyn Platform = &*machine;
        // [16 MiB, 1 GiB - 16 MiB): the ends add up to the span of one level-1 table.
        let (a, b) = (16 * MIB, GIB - 16 * MIB);
        pt.map(p, a, frame, rw).unwrap();
        pt.map(p, b, frame, rw).unwrap();
        let mut pending = PendingFlush::new();
        pt.unmap(p, a, b, &mut pending);
        assert_eq!(pt.query(p, b), Some((frame, rw)), "{format:?}");
        flush_and_free(&machine, pending);
        // [1 GiB, 1 GiB + 2 MiB): one entry of a level-1 table, which maps 1 GiB + 4 MiB too.
        let (c, d) = (GIB, GIB + 4 * MIB);
        pt.map(p, c, frame, rw).unwrap();
        pt.map(p, d, frame, rw).unwrap();
        let mut pending = PendingFlush::new();
        pt.unmap(p, c, c + 2 * MIB, &mut pending);
        assert_eq!(pt.query(p, d), Some((frame, rw)), "{format:?}");
        flush_and_free(&machine, pending);
        release_with_frame(&machine, &mut *pt, frame);
    }
}

/// Small unmaps inside one last-level table (the walker's path without recursion): a page whose
/// table keeps another page leaves every table in place and records just that page; the last
/// page of a table frees the table and the ones above it that it emptied; a range where nothing
/// is mapped records nothing; a range across two tables takes the general path. Both formats.
#[test]
fn small_unmaps_record_their_pages_and_free_emptied_tables() {
    const MIB: u64 = 1 << 20;
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    for format in Format::ALL {
        let (machine, mut pt, frame) = user_tree(format);
        let p: &dyn Platform = &*machine;
        let base = 16 * MIB;
        for va in [base, base + 0x1000, base + 0x3000, base + 2 * MIB - 0x1000] {
            pt.map(p, va, frame, rw).unwrap();
        }
        // The root, and one table at each level below it.
        assert_eq!(pt.table_pages(), 4, "{format:?}");
        let mut pending = PendingFlush::new();
        pt.unmap(p, base + 0x1000, base + 0x3000, &mut pending);
        assert_eq!(pending.pages(), &[base + 0x1000], "{format:?}");
        assert!(pending.freed_tables().is_empty());
        assert_eq!(pt.table_pages(), 4);
        assert_eq!(pt.query(p, base), Some((frame, rw)));
        assert_eq!(pt.query(p, base + 0x1000), None);
        // Nothing mapped there (a hole in the table, and a table that does not exist).
        let mut pending = PendingFlush::new();
        pt.unmap(p, base + 0x2000, base + 0x3000, &mut pending);
        pt.unmap(p, base + 64 * MIB, base + 64 * MIB + 0x1000, &mut pending);
        assert!(pending.is_empty() && pending.freed_tables().is_empty());
        // Across two last-level tables: the general path, which also clears the far page.
        pt.map(p, base + 2 * MIB, frame, rw).unwrap();
        assert_eq!(pt.table_pages(), 5);
        let mut pending = PendingFlush::new();
        pt.unmap(
            p,
            base + 2 * MIB - 0x1000,
            base + 2 * MIB + 0x1000,
            &mut pending,
        );
        assert_eq!(pending.pages(), &[base + 2 * MIB - 0x1000, base + 2 * MIB]);
        assert_eq!(
            pending.freed_tables().len(),
            1,
            "{format:?}: the second table"
        );
        assert_eq!(pt.table_pages(), 4);
        flush_and_free(&machine, pending);
        // The table's last pages: it goes, and so do the two above it.
        let mut pending = PendingFlush::new();
        pt.unmap(p, base, base + 0x1000, &mut pending);
        assert!(pending.freed_tables().is_empty());
        pt.unmap(p, base + 0x3000, base + 0x4000, &mut pending);
        assert_eq!(pending.pages(), &[base, base + 0x3000]);
        assert_eq!(pending.freed_tables().len(), 3, "{format:?}");
        assert_eq!(pt.table_pages(), 1);
        flush_and_free(&machine, pending);
        release_with_frame(&machine, &mut *pt, frame);
    }
}

/// Ranges across many last-level tables take the general path, wherever their ends fall in a
/// table (two ranges whose ends would look like one table's to a check that mixed up `/` and `%`):
/// every page in them goes. Both formats.
#[test]
fn unmaps_across_tables_clear_every_page() {
    const SPAN: u64 = 2 << 20;
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    for format in Format::ALL {
        let (machine, mut pt, frame) = user_tree(format);
        let p: &dyn Platform = &*machine;
        for (start, end) in [
            (SPAN + 0x1000, 4096 * SPAN + 0x1000),
            (4095 * SPAN, 4097 * SPAN + 0x1000),
        ] {
            let last = end - 0x1000;
            pt.map(p, start, frame, rw).unwrap();
            pt.map(p, last, frame, rw).unwrap();
            let mut pending = PendingFlush::new();
            pt.unmap(p, start, end, &mut pending);
            assert_eq!(pending.pages(), &[start, last], "{format:?}");
            assert_eq!((pt.query(p, start), pt.query(p, last)), (None, None));
            assert_eq!(pt.table_pages(), 1, "{format:?}: every table emptied");
            flush_and_free(&machine, pending);
        }
        release_with_frame(&machine, &mut *pt, frame);
    }
}

/// `for_each_page` visits every mapped page once, at its address, also at the last index of a
/// table and in the top root slot of the user range (which a tree can map up to its end).
#[test]
#[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
fn every_mapped_page_is_visited() {
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    let top = USER_ADDRESS_LIMIT - 0x1000;
    for format in Format::ALL {
        let (machine, mut pt, frame) = user_tree(format);
        let p: &dyn Platform = &*machine;
        let mut vas = vec![0x1000, 0x1f_f000, 0x4000_0000 + 0x1ff * 0x20_0000, top];
        for &va in &vas {
            assert_eq!(pt.map(p, va, frame, rw), Ok(false), "{format:?} {va:#x}");
        }
        let mut seen = Vec::new();
        pt.for_each_page(p, &mut |va, pa, flags| seen.push((va, pa, flags)));
        vas.sort_unstable();
        let want: Vec<_> = vas.iter().map(|&va| (va, frame, rw)).collect();
        assert_eq!(seen, want, "{format:?}");
        release_with_frame(&machine, &mut *pt, frame);
    }
}

/// Once released or abandoned, a tree holds nothing: a second release or abandon gives back
/// nothing more (the root is not freed twice), and a walk visits nothing.
#[test]
fn a_released_tree_is_empty() {
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    for format in Format::ALL {
        let machine = SimMachine::with_frames(16);
        let p: &dyn Platform = &*machine;
        let mut pt = new_page_table_for(p, format, 0, 1 << 39, MemoryAttributes::DEFAULT).unwrap();
        let frame = p.alloc_frame().unwrap();
        pt.map(p, 0x1000, frame, rw).unwrap();
        let mut pending = PendingFlush::new();
        pt.release(p, &mut pending);
        assert_eq!(pending.freed_tables().len(), 4, "{format:?}");
        flush_and_free(&machine, pending);
        for _ in 0..2 {
            let mut pending = PendingFlush::new();
            pt.release(p, &mut pending);
            pt.abandon(&mut pending);
            assert!(pending.freed_tables().is_empty(), "{format:?}");
        }
        let mut visited = 0;
        pt.for_each_page(p, &mut |_, _, _| visited += 1);
        assert_eq!(visited, 0, "{format:?}");
        // SAFETY: the test's own frame, mapped by nothing now.
        unsafe { p.free_frames(&[frame]) };
    }
}

/// A tree dropped without `release` (its tables would leak) is a bug the debug build names.
#[test]
#[should_panic(expected = "dropped without release()")]
#[cfg_attr(miri, ignore)] // the unwinding from a destructor leaves the box to Miri's leak check
fn a_tree_dropped_without_release_is_named() {
    let machine = SimMachine::with_frames(8);
    let p: &dyn Platform = &*machine;
    let pt = new_page_table_for(p, Format::X86_64, 0, 1 << 39, MemoryAttributes::DEFAULT);
    drop(pt);
}

/// A tree maps only inside the root slots its user range owns.
#[test]
#[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
fn a_tree_maps_only_in_its_own_slots() {
    const SLOT: u64 = 1 << 39;
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    for format in Format::ALL {
        let machine = SimMachine::with_frames(64);
        let p: &dyn Platform = &*machine;
        let mut pt =
            new_page_table_for(p, format, SLOT, 2 * SLOT, MemoryAttributes::DEFAULT).unwrap();
        let frame = p.alloc_frame().unwrap();
        assert_eq!(
            pt.map(p, 0x1000, frame, rw),
            Err(Status::InvalidArgs),
            "{format:?}"
        );
        assert_eq!(
            pt.map(p, 2 * SLOT, frame, rw),
            Err(Status::InvalidArgs),
            "{format:?}"
        );
        assert_eq!(
            pt.map(p, SLOT + 8, frame, rw),
            Err(Status::InvalidArgs),
            "{format:?}"
        );
        assert_eq!(pt.map(p, SLOT, frame, rw), Ok(false), "{format:?}");
        assert_eq!(pt.format(), format);
        release_with_frame(&machine, &mut *pt, frame);
    }
}

/// Every permission set a page can have (read with any of write, execute and user) reads back
/// from its entry as it went in, in both formats, also for kernel (non-user) pages.
#[test]
fn page_permissions_round_trip() {
    fn each<F: PteFormat>() {
        for bits in 0..8u8 {
            let mut flags = MmuFlags::READ;
            for (bit, flag) in [MmuFlags::WRITE, MmuFlags::EXECUTE, MmuFlags::USER]
                .into_iter()
                .enumerate()
            {
                if bits & (1 << bit) != 0 {
                    flags |= flag;
                }
            }
            let entry = F::page_entry(PhysAddr(0x1234_5000), flags);
            assert!(F::is_valid(entry), "{}: {flags:?}", F::NAME);
            assert_eq!(F::page_flags(entry), flags, "{}", F::NAME);
            assert_eq!(F::address(entry), PhysAddr(0x1234_5000), "{}", F::NAME);
        }
    }
    each::<X86_64>();
    each::<Aarch64>();
}

fn map_query_unmap<F: PteFormat>() {
    let machine = SimMachine::with_frames(64);
    let p: &dyn Platform = &*machine;
    let mut pt = PageTable::<F>::new(p).unwrap();
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    let frame = p.alloc_frame().unwrap();
    let va = 0x7f00_1234_5000;
    pt.map(p, va, frame, rw).unwrap();
    // Root plus one table at each of the three lower levels.
    assert_eq!(pt.table_pages(), 4);
    assert_eq!(pt.query(p, va), Some((frame, rw)));
    assert_eq!(pt.query(p, va + 0x1000), None);
    // Neighbouring pages share the tables.
    pt.map(p, va + 0x1000, frame, MmuFlags::READ | MmuFlags::USER)
        .unwrap();
    assert_eq!(pt.table_pages(), 4);
    assert_eq!(
        pt.query(p, va + 0x1000),
        Some((frame, MmuFlags::READ | MmuFlags::USER))
    );

    // Protect one page read-only and executable.
    let mut pending = PendingFlush::new();
    let rx = MmuFlags::READ | MmuFlags::EXECUTE | MmuFlags::USER;
    pt.protect(p, va, va + 0x1000, rx, &mut pending);
    assert_eq!(pt.query(p, va), Some((frame, rx)));
    assert_eq!(pending.scope(), zx_vm::platform::TlbScope::Pages(&[va]));

    // Unmapping one page keeps the tables; unmapping both frees all but the root.
    let mut pending = PendingFlush::new();
    pt.unmap(p, va, va + 0x1000, &mut pending);
    assert_eq!(pt.query(p, va), None);
    assert!(pt.query(p, va + 0x1000).is_some());
    assert_eq!(pt.table_pages(), 4);
    assert!(!pending.tables_freed());
    pt.unmap(p, va, va + 0x2000, &mut pending);
    assert_eq!(pt.table_pages(), 1);
    assert_eq!(pending.freed_tables().len(), 3);
    assert_eq!(pending.changed_pages(), 2);
    flush_and_free(&machine, pending);

    release_with_frame(&machine, &mut pt, frame);
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn x86_64_map_query_unmap() {
    map_query_unmap::<X86_64>();
}

#[test]
fn aarch64_map_query_unmap() {
    map_query_unmap::<Aarch64>();
}

fn threshold<F: PteFormat>() {
    let machine = SimMachine::with_frames(256);
    let p: &dyn Platform = &*machine;
    let mut pt = PageTable::<F>::new(p).unwrap();
    let frame = p.alloc_frame().unwrap();
    let base = 0x4000_0000;
    for i in 0..100 {
        pt.map(p, base + i * 0x1000, frame, MmuFlags::READ).unwrap();
    }
    let mut pending = PendingFlush::new();
    pt.unmap(p, base, base + 32 * 0x1000, &mut pending);
    assert!(
        matches!(pending.scope(), zx_vm::platform::TlbScope::Pages(pages) if pages.len() == 32)
    );
    pt.unmap(p, base + 32 * 0x1000, base + 33 * 0x1000, &mut pending);
    assert_eq!(pending.scope(), zx_vm::platform::TlbScope::All);
    pt.unmap(p, base, base + 100 * 0x1000, &mut pending);
    assert_eq!(pending.changed_pages(), 100);
    flush_and_free(&machine, pending);
    release_with_frame(&machine, &mut pt, frame);
}

#[test]
#[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
fn x86_64_flush_threshold() {
    threshold::<X86_64>();
}

#[test]
#[cfg_attr(miri, ignore)] // slow under Miri; map_query_unmap runs the same walker there
fn aarch64_flush_threshold() {
    threshold::<Aarch64>();
}

#[test]
fn release_leaves_the_kernel_half_alone() {
    let machine = SimMachine::with_frames(64);
    let p: &dyn Platform = &*machine;
    let mut pt = PageTable::<X86_64>::new(p).unwrap();
    // A kernel's upper-half entry, as `Platform::prepare_root` would copy in.
    let kernel_table = p.alloc_frame().unwrap();
    let kernel_entry = X86_64::table_entry(kernel_table);
    // Root entry 300, read and written as the walker does (an `AtomicU64` in the frame).
    let slot_300 = |root: PhysAddr| {
        // SAFETY: `root` is a live table page of `pt` (allocated, 4096 bytes, 8-aligned, through
        // the platform's `phys_to_virt`), and entry 300 lies inside it.
        unsafe { &*(p.phys_to_virt(root) as *const AtomicU64).add(300) }
    };
    slot_300(pt.root()).store(kernel_entry, Ordering::Relaxed);
    pt.map(p, 0x40_0000, kernel_table, MmuFlags::READ).unwrap();
    let root = pt.root();
    // The kernel's table page stays alive past the release, and no user walk ever reaches it.
    let mut pending = PendingFlush::new();
    pt.unmap(p, 0, zx_vm::arch::USER_ADDRESS_LIMIT, &mut pending);
    let kept = slot_300(root).load(Ordering::Relaxed);
    assert_eq!(kept, kernel_entry);
    pt.release(p, &mut pending);
    assert!(!pending.freed_tables().contains(&kernel_table));
    flush_and_free(&machine, pending);
    // SAFETY: test-owned frame, unreferenced now.
    unsafe { machine.free_frames(&[kernel_table]) };
}

#[test]
fn encodings_are_the_architectures() {
    let pa = PhysAddr(0x1234_5000);
    let rw = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
    // x86_64: P | RW | US | A | D, NX set for a non-executable page.
    assert_eq!(X86_64::page_entry(pa, rw), 0x8000_0000_1234_5067);
    assert_eq!(X86_64::table_entry(pa), 0x1234_5007);
    // aarch64: page descriptor 0b11, AP[1] EL0, SH inner, AF, nG, PXN, UXN.
    assert_eq!(Aarch64::page_entry(pa, rw), 0x0060_0000_1234_5f43);
    assert_eq!(Aarch64::table_entry(pa), 0x1234_5003);
    // Read-only sets AP[2].
    assert_eq!(
        Aarch64::page_entry(pa, MmuFlags::READ | MmuFlags::USER) & (1 << 7),
        1 << 7
    );
    for flags in [
        rw,
        MmuFlags::READ | MmuFlags::USER,
        MmuFlags::READ | MmuFlags::EXECUTE | MmuFlags::USER,
    ] {
        assert_eq!(X86_64::page_flags(X86_64::page_entry(pa, flags)), flags);
        assert_eq!(Aarch64::page_flags(Aarch64::page_entry(pa, flags)), flags);
    }
}
