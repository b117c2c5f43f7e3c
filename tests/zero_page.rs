//! The shared zero page, on both page-table formats: a read fault on an uncommitted page maps one
//! frame of zeroes read-only and commits nothing; the first write replaces it, and every CPU that
//! cached the zero-page translation, in every address space, loses it before the write's fault
//! returns; the zero page is never made writable (not by protect either), never freed, never
//! counted, and decommit, ZERO and a shrink clear its entries like any other. The simulated
//! machine panics on a store that reaches the zero page, on its free, and (when dropped) if it
//! no longer holds zeroes.

mod common;

use common::*;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
use zx_vm::sim::SimMachine;
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;
use zx_vm::Process;

/// A machine with a zero page and `cpus` CPUs.
fn zero_machine(cpus: usize) -> (Arc<SimMachine>, zx_vm::PhysAddr) {
    let machine = machine(cpus);
    let zero = machine.enable_zero_page();
    (machine, zero)
}

fn fresh_vmo(p: &Process, pages: u64, options: u32) -> zx_handle_t {
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(p, pages * PAGE_SIZE, options, &mut vmo),
        ZX_OK
    );
    vmo
}

/// Reads map the zero page read-only and commit nothing, in every address space; the first
/// write anywhere replaces it with a page of the VMO's own, and a CPU that cached the zero-page
/// translation in another address space reads the written value right after the write.
#[test]
fn reads_share_the_zero_page_and_the_first_write_replaces_it_everywhere() {
    for format in Format::ALL {
        let (machine, zero) = zero_machine(2);
        let TwoSpaces {
            a,
            b,
            vmo,
            in_a,
            in_b,
            cpu_a,
            cpu_b,
        } = TwoSpaces::new(&machine, format, 4, |p, pages| fresh_vmo(p, pages, 0));
        let allocated = machine.counters().frames_allocated;
        for page in 0..4 {
            assert_eq!(cpu_a.load(in_a + page * PAGE_SIZE).unwrap(), 0);
            assert_eq!(cpu_b.load(in_b + page * PAGE_SIZE + 8).unwrap(), 0);
        }
        assert_eq!(committed(&a, vmo), 0, "{format:?}: reads commit nothing");
        let tables = machine.counters().frames_allocated - allocated;
        let entry = cpu_b.tlb_entry(in_b + 2 * PAGE_SIZE).expect("cached");
        assert_eq!(entry.frame, zero, "{format:?}");
        assert!(!entry.flags.contains(MmuFlags::WRITE), "{format:?}");
        assert_eq!(a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(b.aspace().audit(), Ok(()), "{format:?}");

        // The first write: a page of the VMO's own, and B's cached zero entry goes.
        let counters = machine.counters();
        cpu_a.store(in_a + 2 * PAGE_SIZE + 8, 77).unwrap();
        let delta = machine.counters().since(&counters);
        assert_eq!(committed(&a, vmo), PAGE_SIZE, "{format:?}");
        assert_eq!(delta.frames_allocated, 1, "{format:?}: one page, no table");
        assert_eq!(
            delta.shootdowns, 1,
            "{format:?}: one round for the zero entries"
        );
        assert!(
            cpu_b.tlb_entry(in_b + 2 * PAGE_SIZE).is_none(),
            "{format:?}"
        );
        assert_eq!(
            cpu_b.load(in_b + 2 * PAGE_SIZE + 8).unwrap(),
            77,
            "{format:?}"
        );
        assert_eq!(cpu_a.load(in_a + 3 * PAGE_SIZE).unwrap(), 0, "{format:?}");
        assert_eq!(first_words(&a, vmo, 4), [0, 0, 0, 0], "{format:?}");
        assert_eq!(a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(b.aspace().audit(), Ok(()), "{format:?}");
        assert!(
            tables > 0,
            "{format:?}: the reads built page tables, nothing more"
        );
        cpu_a.switch_to(None);
        cpu_b.switch_to(None);
        drop((a, b));
        assert_eq!(
            machine.frames_in_use(),
            0,
            "{format:?}: the zero page is not counted"
        );
    }
}

/// Every other way of committing a page also takes its zero-page entries away before the call
/// returns: `zx_vmo_write`, COMMIT and a pin.
#[test]
fn every_commit_path_replaces_the_zero_page() {
    for format in Format::ALL {
        for how in 0..3 {
            let (machine, zero) = zero_machine(2);
            let p = process(&machine, format);
            let vmo = fresh_vmo(&p, 2, 0);
            let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 2);
            let (reader, other) = (machine.cpu(0), machine.cpu(1));
            reader.switch_to(Some(p.aspace()));
            other.switch_to(Some(p.aspace()));
            assert_eq!(reader.load(addr + PAGE_SIZE).unwrap(), 0);
            assert_eq!(reader.tlb_entry(addr + PAGE_SIZE).unwrap().frame, zero);
            other.enter();
            match how {
                0 => assert_eq!(zx_vmo_write(&p, vmo, &9u64.to_le_bytes(), PAGE_SIZE), ZX_OK),
                1 => assert_eq!(
                    zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, 0, 2 * PAGE_SIZE, 0, 0),
                    ZX_OK
                ),
                _ => p.vmo(vmo).unwrap().0.pin(0, 2 * PAGE_SIZE).unwrap(),
            }
            assert!(
                reader.tlb_entry(addr + PAGE_SIZE).is_none(),
                "{format:?} {how}: the reader's zero entry went"
            );
            let expected = if how == 0 { 9 } else { 0 };
            assert_eq!(
                reader.load(addr + PAGE_SIZE).unwrap(),
                expected,
                "{format:?} {how}"
            );
            assert_ne!(reader.tlb_entry(addr + PAGE_SIZE).unwrap().frame, zero);
            // Writes through the mapping land in the VMO's page, seen by zx_vmo_read.
            reader.store(addr + PAGE_SIZE + 16, 5).unwrap();
            let mut word = [0u8; 8];
            assert_eq!(zx_vmo_read(&p, vmo, &mut word, PAGE_SIZE + 16), ZX_OK);
            assert_eq!(u64::from_le_bytes(word), 5, "{format:?} {how}");
            assert_eq!(p.aspace().audit(), Ok(()), "{format:?} {how}");
            if how == 2 {
                p.vmo(vmo).unwrap().0.unpin(0, 2 * PAGE_SIZE).unwrap();
            }
            reader.switch_to(None);
            other.switch_to(None);
        }
    }
}

/// `zx_vmar_protect` to read-write keeps zero-page entries read-only; the next write replaces
/// the zero page instead of writing into it.
#[test]
fn protect_never_makes_the_zero_page_writable() {
    for format in Format::ALL {
        let (machine, zero) = zero_machine(1);
        let p = process(&machine, format);
        let vmo = fresh_vmo(&p, 2, 0);
        let root = p.root_vmar_handle();
        let mut addr = 0;
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ,
                0,
                vmo,
                0,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_OK
        );
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), 0);
        assert_eq!(cpu.store(addr, 1), Err(FaultError::AccessDenied));
        assert_eq!(
            zx_vmar_protect(
                &p,
                root,
                ZX_VM_PERM_READ | ZX_VM_PERM_WRITE,
                addr,
                2 * PAGE_SIZE
            ),
            ZX_OK
        );
        let (frame, flags) = p.aspace().query(addr).expect("still mapped");
        assert_eq!(frame, zero, "{format:?}");
        assert!(
            !flags.contains(MmuFlags::WRITE),
            "{format:?}: the zero page stays read-only"
        );
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        cpu.store(addr, 3).unwrap();
        assert_eq!(cpu.load(addr).unwrap(), 3, "{format:?}");
        assert_eq!(committed(&p, vmo), PAGE_SIZE, "{format:?}");
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// DECOMMIT, ZERO and a shrink clear zero-page entries with the rest of their range (after a
/// shrink the fault path refuses the page), and the zero page is never freed.
#[test]
fn decommit_zero_and_shrink_clear_zero_page_entries() {
    for format in Format::ALL {
        let (machine, zero) = zero_machine(1);
        let p = process(&machine, format);
        let vmo = fresh_vmo(&p, 4, ZX_VMO_RESIZABLE);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 4);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        let reread = |cpu: &zx_vm::sim::SimCpu| {
            for page in 0..4 {
                let _ = cpu.load(addr + page * PAGE_SIZE);
            }
        };
        reread(&cpu);
        assert_eq!(p.aspace().query(addr).unwrap().0, zero);
        assert_eq!(
            zx_vmar_op_range(
                &p,
                p.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                addr,
                PAGE_SIZE,
                0,
                0
            ),
            ZX_OK
        );
        assert!(
            p.aspace().query(addr).is_none(),
            "{format:?}: decommit cleared it"
        );
        assert_eq!(
            zx_vmo_op_range(&p, vmo, ZX_VMO_OP_ZERO, PAGE_SIZE, PAGE_SIZE, 0, 0),
            ZX_OK
        );
        assert!(
            p.aspace().query(addr + PAGE_SIZE).is_none(),
            "{format:?}: ZERO cleared it"
        );
        assert_eq!(zx_vmo_set_size(&p, vmo, 2 * PAGE_SIZE), ZX_OK);
        assert!(
            p.aspace().query(addr + 3 * PAGE_SIZE).is_none(),
            "{format:?}"
        );
        assert_eq!(cpu.load(addr + 3 * PAGE_SIZE), Err(FaultError::OutOfRange));
        reread(&cpu);
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(committed(&p, vmo), 0, "{format:?}");
        cpu.switch_to(None);
        drop(p);
        assert_eq!(machine.frames_in_use(), 0, "{format:?}");
    }
}

/// Without a zero page (the platform's default), a read fault commits a zeroed page, as before.
#[test]
fn without_a_zero_page_reads_commit() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let vmo = fresh_vmo(&p, 1, 0);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    assert_eq!(cpu.load(addr).unwrap(), 0);
    assert_eq!(committed(&p, vmo), PAGE_SIZE);
}
