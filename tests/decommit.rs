//! The effect of a successful `zx_vmar_op_range(ZX_VMAR_OP_DECOMMIT)`, on both page-table formats:
//! decommitted pages read 0 through every alias, other pages keep their data, committed bytes drop
//! exactly, every address space's translations go, and no frame leaks.

mod common;

use common::*;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::SimCpu;
use zx_vm::syscall::*;

/// Reads the first word of `pages` pages from `addr` on `cpu`.
fn read_pages(cpu: &SimCpu, addr: u64, pages: u64) -> Vec<u64> {
    (0..pages)
        .map(|p| cpu.load(addr + p * PAGE_SIZE).unwrap())
        .collect()
}

#[test]
fn decommit_reaches_every_alias() {
    for format in Format::ALL {
        let machine = machine(2);
        let a = process(&machine, format);
        let b = process(&machine, format);
        let root_a = a.root_vmar_handle();
        let root_b = b.root_vmar_handle();

        // One VMO of 4 pages; B gets its own handle to the same object.
        let vmo = patterned_vmo(&a, 4);
        let object = a.handle(vmo).unwrap();
        let vmo_b = b.add_handle(object.object, object.rights).unwrap();

        // Aliases: two mappings in A's root, one in a nested sub-VMAR of A, one in B.
        let first = map_rw(&a, root_a, vmo, 0, 4);
        let second = map_rw(&a, root_a, vmo, 0, 4);
        let (outer, _) = sub_vmar(&a, root_a, 64 * PAGE_SIZE);
        let (inner, _) = sub_vmar(&a, outer, 16 * PAGE_SIZE);
        let nested = map_rw(&a, inner, vmo, 0, 4);
        let in_b = map_rw(&b, root_b, vmo_b, 0, 4);

        let cpu_a = machine.cpu(0);
        let cpu_b = machine.cpu(1);
        cpu_a.switch_to(Some(a.aspace()));
        cpu_b.switch_to(Some(b.aspace()));
        let before: Vec<u64> = (0..4).map(|p| pattern(p, 0)).collect();
        for addr in [first, second, nested] {
            assert_eq!(read_pages(&cpu_a, addr, 4), before, "{format:?}");
        }
        assert_eq!(read_pages(&cpu_b, in_b, 4), before, "{format:?}");
        assert!(cpu_a.tlb_entry(second + PAGE_SIZE).is_some());
        assert!(cpu_b.tlb_entry(in_b + PAGE_SIZE).is_some());
        assert_eq!(committed(&a, vmo), 4 * PAGE_SIZE);
        let counters = machine.counters();

        // Decommit pages 1 and 2 through the nested mapping, from CPU 0.
        cpu_a.enter();
        let status = zx_vmar_op_range(
            &a,
            inner,
            ZX_VMAR_OP_DECOMMIT,
            nested + PAGE_SIZE,
            2 * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK, "{format:?}");

        let delta = machine.counters().since(&counters);
        assert_eq!(a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(b.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(
            committed(&a, vmo),
            2 * PAGE_SIZE,
            "{format:?}: committed bytes drop exactly"
        );
        assert_eq!(
            delta.frames_freed, 2,
            "{format:?}: the two frames, and no page table"
        );
        // Every mapping lost the two translations, in both address spaces.
        for addr in [first, second, nested] {
            for page in [1, 2] {
                assert_eq!(
                    a.aspace().query(addr + page * PAGE_SIZE),
                    None,
                    "{format:?}"
                );
                assert!(
                    cpu_a.tlb_entry(addr + page * PAGE_SIZE).is_none(),
                    "{format:?}"
                );
            }
            assert!(
                a.aspace().query(addr).is_some(),
                "{format:?}: page 0 stays mapped"
            );
        }
        assert_eq!(b.aspace().query(in_b + PAGE_SIZE), None, "{format:?}");
        assert!(cpu_b.tlb_entry(in_b + PAGE_SIZE).is_none(), "{format:?}");
        // One shootdown round for the call: CPU 0 flushes itself, CPU 1 (running B) gets one IPI.
        assert_eq!(delta.shootdowns, 1, "{format:?}");
        assert_eq!(delta.ipis, 1, "{format:?}");

        // Every alias reads 0 in the range and the old data outside it.
        let after = vec![pattern(0, 0), 0, 0, pattern(3, 0)];
        for addr in [first, second, nested] {
            assert_eq!(read_pages(&cpu_a, addr, 4), after, "{format:?}");
        }
        assert_eq!(read_pages(&cpu_b, in_b, 4), after, "{format:?}");
        assert_eq!(first_words(&a, vmo, 4), after, "{format:?}");
        // The rest of a surviving page is intact too.
        assert_eq!(
            cpu_b.load(in_b + 3 * PAGE_SIZE + 8 * 100).unwrap(),
            pattern(3, 100)
        );

        // The mappings themselves are unchanged: still writable, and a store lands in the VMO.
        cpu_b.store(in_b + PAGE_SIZE, 77).unwrap();
        assert_eq!(cpu_a.load(first + PAGE_SIZE).unwrap(), 77, "{format:?}");

        cpu_a.switch_to(None);
        cpu_b.switch_to(None);
        drop((a, b));
        assert_eq!(
            machine.frames_in_use(),
            0,
            "{format:?}: every frame came back"
        );
    }
}

#[test]
fn partial_mapping_decommits_only_the_mapped_part() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 8);
        // Map VMO pages 2..6 only; decommit the whole mapping.
        let addr = map_rw(&p, root, vmo, 2, 4);
        assert_eq!(
            zx_vmar_op_range(&p, root, ZX_VMAR_OP_DECOMMIT, addr, 4 * PAGE_SIZE, 0, 0),
            ZX_OK
        );
        let expected: Vec<u64> = (0..8)
            .map(|page| {
                if (2..6).contains(&page) {
                    0
                } else {
                    pattern(page, 0)
                }
            })
            .collect();
        assert_eq!(first_words(&p, vmo, 8), expected, "{format:?}");
        assert_eq!(committed(&p, vmo), 4 * PAGE_SIZE, "{format:?}");
        drop(p);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

/// Side-by-side mappings decommit exactly their own VMO pages, also where neighbours map the
/// next pages of another VMO or of the same VMO after a gap: A pages 0-1, B pages 2-3, A pages
/// 4-5 and A page 7, one after the other; a decommit of all of them leaves A's pages 2, 3 and 6
/// and B's pages 0, 1, 4 and 5.
#[test]
fn side_by_side_mappings_decommit_only_their_own_pages() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let (vmar, base) = sub_vmar(&p, p.root_vmar_handle(), 16 * PAGE_SIZE);
        let (a, b) = (patterned_vmo(&p, 8), patterned_vmo(&p, 6));
        let mut at = 0;
        for (vmo, first, pages) in [(a, 0, 2), (b, 2, 2), (a, 4, 2), (a, 7, 1)] {
            let mut addr = 0;
            let status = zx_vmar_map(
                &p,
                vmar,
                ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC | ZX_VM_MAP_RANGE,
                at * PAGE_SIZE,
                vmo,
                first * PAGE_SIZE,
                pages * PAGE_SIZE,
                &mut addr,
            );
            assert_eq!((status, addr), (ZX_OK, base + at * PAGE_SIZE), "{format:?}");
            at += pages;
        }
        let status = zx_vmar_op_range(&p, vmar, ZX_VMAR_OP_DECOMMIT, base, at * PAGE_SIZE, 0, 0);
        assert_eq!(status, ZX_OK, "{format:?}");
        let kept = |pages: u64, kept: &[u64]| -> Vec<u64> {
            (0..pages)
                .map(|page| {
                    if kept.contains(&page) {
                        pattern(page, 0)
                    } else {
                        0
                    }
                })
                .collect()
        };
        assert_eq!(first_words(&p, a, 8), kept(8, &[2, 3, 6]), "{format:?}: A");
        assert_eq!(
            first_words(&p, b, 6),
            kept(6, &[0, 1, 4, 5]),
            "{format:?}: B"
        );
        assert_eq!(committed(&p, a), 3 * PAGE_SIZE, "{format:?}");
        assert_eq!(committed(&p, b), 4 * PAGE_SIZE, "{format:?}");
        drop(p);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

#[test]
fn range_spanning_mappings_and_sub_vmars() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let (region, base) = sub_vmar(&p, root, 8 * PAGE_SIZE);
        let x = patterned_vmo(&p, 4);
        let y = patterned_vmo(&p, 4);
        // [base, +2): x pages 0..2 ; [+2, +4): a nested VMAR with y pages 0..2 ; [+4, +8): x 2..4 + y 2..4
        let mut addr = 0;
        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC;
        assert_eq!(
            zx_vmar_map(&p, region, rw, 0, x, 0, 2 * PAGE_SIZE, &mut addr),
            ZX_OK
        );
        let (mut nested, mut nested_addr) = (0, 0);
        assert_eq!(
            zx_vmar_allocate(
                &p,
                region,
                ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC | ZX_VM_SPECIFIC,
                2 * PAGE_SIZE,
                2 * PAGE_SIZE,
                &mut nested,
                &mut nested_addr
            ),
            ZX_OK
        );
        assert_eq!(
            zx_vmar_map(&p, nested, rw, 0, y, 0, 2 * PAGE_SIZE, &mut addr),
            ZX_OK
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                region,
                rw,
                4 * PAGE_SIZE,
                x,
                2 * PAGE_SIZE,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_OK
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                region,
                rw,
                6 * PAGE_SIZE,
                y,
                2 * PAGE_SIZE,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_OK
        );
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        for page in 0..8 {
            assert_ne!(cpu.load(base + page * PAGE_SIZE).unwrap(), 0);
        }
        // Decommit pages 1..7 of the region: x 1, y 0-1, x 2-3, y 2.
        let status = zx_vmar_op_range(
            &p,
            root,
            ZX_VMAR_OP_DECOMMIT,
            base + PAGE_SIZE,
            6 * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK, "{format:?}");
        let words: Vec<u64> = (0..8)
            .map(|page| cpu.load(base + page * PAGE_SIZE).unwrap())
            .collect();
        assert_eq!(
            words,
            [pattern(0, 0), 0, 0, 0, 0, 0, 0, pattern(3, 0)],
            "{format:?}"
        );
        // The loads above committed fresh zero pages again.
        cpu.switch_to(None);
        drop(p);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

#[test]
fn decommit_of_uncommitted_pages_frees_nothing() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&p, 1 << 30, 0, &mut vmo), ZX_OK);
        let addr = map_rw(&p, root, vmo, 0, (1 << 30) / PAGE_SIZE);
        let before = machine.counters();
        assert_eq!(
            zx_vmar_op_range(&p, root, ZX_VMAR_OP_DECOMMIT, addr, 1 << 30, 0, 0),
            ZX_OK
        );
        let delta = machine.counters().since(&before);
        assert_eq!(delta.frames_freed, 0);
        assert_eq!(
            delta.shootdowns, 0,
            "{format:?}: nothing was mapped, nothing to flush"
        );
    }
}

#[test]
fn many_pages_use_one_full_flush() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 64);
        let addr = map_rw(&p, root, vmo, 0, 64);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        for page in 0..64 {
            cpu.load(addr + page * PAGE_SIZE).unwrap();
        }
        let before = machine.counters();
        assert_eq!(
            zx_vmar_op_range(&p, root, ZX_VMAR_OP_DECOMMIT, addr, 64 * PAGE_SIZE, 0, 0),
            ZX_OK
        );
        let delta = machine.counters().since(&before);
        assert_eq!(delta.shootdowns, 1, "{format:?}");
        assert_eq!(delta.full_invalidations, 1, "{format:?}");
        assert_eq!(delta.page_invalidations, 0, "{format:?}");
        // 64 data frames and the three lower page-table pages that emptied.
        assert_eq!(delta.frames_freed, 64 + 3, "{format:?}");
        assert_eq!(cpu.tlb_len(), 0);

        // A few pages go page by page.
        for page in 0..4 {
            cpu.load(addr + page * PAGE_SIZE).unwrap();
        }
        let before = machine.counters();
        assert_eq!(
            zx_vmar_op_range(&p, root, ZX_VMAR_OP_DECOMMIT, addr, 4 * PAGE_SIZE, 0, 0),
            ZX_OK
        );
        let delta = machine.counters().since(&before);
        assert_eq!(delta.shootdowns, 1, "{format:?}");
        assert_eq!(delta.full_invalidations, 0, "{format:?}");
        assert_eq!(delta.page_invalidations, 4, "{format:?}");
        cpu.switch_to(None);
    }
}

#[test]
fn decommit_on_the_vmo_handle_also_unmaps() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 2);
        let addr = map_rw(&p, root, vmo, 0, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        assert_eq!(
            zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0),
            ZX_OK
        );
        assert_eq!(cpu.load(addr).unwrap(), 0, "{format:?}");
        assert_eq!(cpu.load(addr + PAGE_SIZE).unwrap(), pattern(1, 0));
        cpu.switch_to(None);
    }
}
