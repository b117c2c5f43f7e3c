//! The VMAR and address-space rules that the contract and syscall tests reach only in passing:
//! where a mapping is placed, what the queries answer, what the audit finds, which permissions a
//! fault grants, and which CPUs a shootdown leaves stale. Each test here was asked for by a
//! mutant that the rest of the suite let live (docs/mutants.md).

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
use zx_vm::sim::{SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::tlb::PendingFlush;
use zx_vm::vmar::{Access, FaultError};
use zx_vm::{Process, Vmo};

fn tagged_machine(cpus: usize, broadcast: bool) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames: 8192,
        cpus,
        poison_freed: true,
        tags: 8,
        broadcast,
    })
}

fn paged_vmo(process: &Process, pages: u64) -> Arc<Vmo> {
    Vmo::create(process.platform().clone(), pages * PAGE_SIZE).unwrap()
}

/// A mapping without `SPECIFIC` goes into the lowest gap that fits, also a gap between two
/// children (not only after the last one).
#[test]
fn a_mapping_goes_into_the_lowest_gap_that_fits() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let (sub, base) = sub_vmar(&p, p.root_vmar_handle(), 16 * PAGE_SIZE);
        let vmo = patterned_vmo(&p, 4);
        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC;
        let mut addr = 0;
        // Children at pages 0 and 3: a two-page gap at 1..3 and a large one from 4.
        for offset in [0, 3] {
            let status = zx_vmar_map(
                &p,
                sub,
                rw,
                offset * PAGE_SIZE,
                vmo,
                0,
                PAGE_SIZE,
                &mut addr,
            );
            assert_eq!(status, ZX_OK);
        }
        assert_eq!(map_rw(&p, sub, vmo, 0, 2), base + PAGE_SIZE, "{format:?}");
        // Too large for any gap but the last one.
        assert_eq!(
            map_rw(&p, sub, vmo, 0, 3),
            base + 4 * PAGE_SIZE,
            "{format:?}"
        );
        // A sub-VMAR is placed the same way: the first page after the three-page mapping.
        let (_, child) = sub_vmar(&p, sub, PAGE_SIZE);
        assert_eq!(child, base + 7 * PAGE_SIZE, "{format:?}");
    }
}

/// Addresses just past a mapping belong to no mapping: a fault there is `NotMapped` (not a page
/// of the mapping before it), and a decommit that runs into the gap is `ZX_ERR_BAD_STATE`.
#[test]
fn the_page_after_a_mapping_is_not_part_of_it() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let (sub, _) = sub_vmar(&p, p.root_vmar_handle(), 8 * PAGE_SIZE);
        let vmo = patterned_vmo(&p, 4);
        let addr = map_rw(&p, sub, vmo, 0, 1);
        let aspace = p.aspace();
        assert_eq!(
            aspace.page_fault(addr + PAGE_SIZE, Access::Read),
            Err(FaultError::NotMapped),
            "{format:?}"
        );
        assert_eq!(aspace.query(addr + PAGE_SIZE), None, "{format:?}");
        let status = zx_vmar_op_range(&p, sub, ZX_VMAR_OP_DECOMMIT, addr, 2 * PAGE_SIZE, 0, 0);
        assert_eq!(status, ZX_ERR_BAD_STATE, "{format:?}");
        assert_eq!(first_words(&p, vmo, 1), vec![pattern(0, 0)], "{format:?}");
    }
}

/// Koids are non-zero and distinct, for address spaces and VMARs alike.
#[test]
fn address_spaces_and_vmars_have_their_own_koids() {
    let machine = machine(1);
    let a = process(&machine, Format::X86_64);
    let b = process(&machine, Format::Aarch64);
    let (ka, kb) = (a.aspace().koid(), b.aspace().koid());
    assert!(ka != 0 && kb != 0 && ka != kb);
    let (ra, rb) = (a.aspace().root_vmar(), b.aspace().root_vmar());
    assert!(ra.koid() != 0 && ra.koid() != rb.koid());
    assert!(ra.koid() != ka && ra.koid() != kb);
    // One root VMAR, one koid: asking again gives the same, and a sub-VMAR has its own.
    assert_eq!(a.aspace().root_vmar().koid(), ra.koid());
    let child = ra
        .allocate(VmOptions::CAN_MAP_READ, 0, 4 * PAGE_SIZE)
        .unwrap();
    assert!(child.koid() != ra.koid() && child.koid() != 0);
}

/// The root VMAR can map with every permission, and at specific addresses; a sub-VMAR has the
/// `CAN_MAP` bits it was made with. `is_destroyed` answers what happened.
#[test]
fn vmar_flags_and_liveness() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.aspace().root_vmar();
    assert_eq!(
        root.flags(),
        VmOptions::CAN_MAP_READ
            | VmOptions::CAN_MAP_WRITE
            | VmOptions::CAN_MAP_EXECUTE
            | VmOptions::CAN_MAP_SPECIFIC
    );
    let child = root
        .allocate(VmOptions::CAN_MAP_READ, 0, 4 * PAGE_SIZE)
        .unwrap();
    assert_eq!(child.flags(), VmOptions::CAN_MAP_READ);
    assert!(!root.is_destroyed());
    assert!(!child.is_destroyed());
    child.destroy().unwrap();
    assert!(child.is_destroyed());
    assert!(!root.is_destroyed());
}

/// Each `ZX_VM_PERM_*` bit of a mapping needs its `CAN_MAP` bit in the VMAR: reading needs
/// `CAN_MAP_READ` too, also beside a write.
#[test]
fn reading_needs_can_map_read() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.aspace().root_vmar();
    let vmo = paged_vmo(&p, 1);
    let all = VmOptions::CAN_MAP_PERMS;
    let write_only = root
        .allocate(VmOptions::CAN_MAP_WRITE, 0, 4 * PAGE_SIZE)
        .unwrap();
    for perms in [
        VmOptions::PERM_READ,
        VmOptions::PERM_READ | VmOptions::PERM_WRITE,
    ] {
        assert_eq!(
            write_only.map(perms, 0, &vmo, 0, PAGE_SIZE, all),
            Err(Status::AccessDenied),
            "{perms:?}"
        );
    }
    let read_only = root
        .allocate(VmOptions::CAN_MAP_READ, 0, 4 * PAGE_SIZE)
        .unwrap();
    assert!(read_only
        .map(VmOptions::PERM_READ, 0, &vmo, 0, PAGE_SIZE, all)
        .is_ok());
}

/// Write without read is not a permission a mapping can have: `map` and `protect` refuse it
/// with `ZX_ERR_INVALID_ARGS` at the `Vmar` API too, not only at the syscall.
#[test]
fn write_without_read_is_invalid() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.aspace().root_vmar();
    let vmo = paged_vmo(&p, 1);
    let all = VmOptions::CAN_MAP_PERMS;
    assert_eq!(
        root.map(VmOptions::PERM_WRITE, 0, &vmo, 0, PAGE_SIZE, all),
        Err(Status::InvalidArgs)
    );
    let rw = VmOptions::PERM_READ | VmOptions::PERM_WRITE;
    let addr = root.map(rw, 0, &vmo, 0, PAGE_SIZE, all).unwrap();
    assert_eq!(
        root.protect(VmOptions::PERM_WRITE, addr, PAGE_SIZE),
        Err(Status::InvalidArgs)
    );
}

/// The fault path grants only what the mapping allows: a write to a read-only mapping and a read
/// of an execute-only one are `AccessDenied`, and map nothing.
#[test]
fn faults_grant_only_the_mappings_permissions() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.aspace().root_vmar();
        let vmo = paged_vmo(&p, 1);
        let all = VmOptions::CAN_MAP_PERMS;
        let ro = root
            .map(VmOptions::PERM_READ, 0, &vmo, 0, PAGE_SIZE, all)
            .unwrap();
        let aspace = p.aspace();
        assert_eq!(
            aspace.page_fault(ro, Access::Write),
            Err(FaultError::AccessDenied)
        );
        assert_eq!(aspace.query(ro), None, "{format:?}: nothing was mapped");
        let xo = root
            .map(VmOptions::PERM_EXECUTE, 0, &vmo, 0, PAGE_SIZE, all)
            .unwrap();
        for access in [Access::Execute, Access::Read] {
            assert_eq!(
                aspace.page_fault(xo, access),
                Err(FaultError::AccessDenied),
                "{format:?}: {access:?}"
            );
        }
        assert_eq!(aspace.query(xo), None, "{format:?}");
        assert_eq!(aspace.page_fault(ro, Access::Read), Ok(()));
        assert_eq!(
            aspace.query(ro).map(|(_, flags)| flags),
            Some(MmuFlags::READ | MmuFlags::USER),
            "{format:?}"
        );
    }
}

/// The queries: the CPUs where an address space is active, and how many table pages it holds.
#[test]
fn active_cpus_and_table_pages() {
    for format in Format::ALL {
        let machine = machine(2);
        let p = process(&machine, format);
        let aspace = p.aspace();
        assert!(aspace.active_cpus().is_empty());
        let root_only = aspace.page_table_pages();
        assert_eq!(root_only, 1, "{format:?}: the root table alone");
        let vmo = patterned_vmo(&p, 1);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
        let cpu = machine.cpu(1);
        cpu.switch_to(Some(aspace));
        assert!(aspace.active_cpus().contains(1), "{format:?}");
        assert!(!aspace.active_cpus().contains(0), "{format:?}");
        cpu.load(addr).unwrap();
        assert_eq!(
            aspace.page_table_pages(),
            4,
            "{format:?}: root and three levels"
        );
        cpu.switch_to(None);
        assert!(aspace.active_cpus().is_empty(), "{format:?}");
    }
}

/// The audit passes on a mapping at a VMO offset, and finds a translation that does not point
/// at the VMO's page.
#[test]
fn the_audit_checks_frames_at_their_vmo_offset() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 4);
        // Pages 2 and 3 of the VMO, so a wrong offset names other (committed) pages.
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 2, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), pattern(2, 0));
        assert_eq!(cpu.load(addr + PAGE_SIZE).unwrap(), pattern(3, 0));
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        cpu.switch_to(None);

        // Point the first page at the second page's frame behind the crate's back.
        let other = p.aspace().query(addr + PAGE_SIZE).unwrap().0;
        p.aspace().with_page_table_unsynchronized(|pt, platform| {
            let mut pending = PendingFlush::new();
            pt.unmap(platform, addr, addr + PAGE_SIZE, &mut pending);
            pt.map(platform, addr, other, MmuFlags::READ | MmuFlags::USER)
                .unwrap();
        });
        let error = p.aspace().audit().unwrap_err();
        assert_eq!(error.va, addr, "{format:?}");
    }
}

/// With tags and IPIs, a CPU that ran an address space and left it is not interrupted by a
/// decommit there, but flushes the tag when it comes back, and reads the page as decommitted.
/// Where invalidations are broadcast, no CPU is left stale and none flushes on return.
#[test]
fn cpus_that_left_are_stale_only_without_broadcast() {
    for format in Format::ALL {
        for broadcast in [false, true] {
            let machine = tagged_machine(2, broadcast);
            let p = process(&machine, format);
            let other = process(&machine, format);
            let vmo = patterned_vmo(&p, 1);
            let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
            let away = machine.cpu(1);
            away.switch_to(Some(p.aspace()));
            assert_eq!(away.load(addr).unwrap(), pattern(0, 0));
            // Leave for another tagged address space: the TLB keeps the first one's entries.
            away.switch_to(Some(other.aspace()));
            let before = machine.counters();
            let status = zx_vmar_op_range(
                &p,
                p.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                addr,
                PAGE_SIZE,
                0,
                0,
            );
            assert_eq!(status, ZX_OK);
            assert_eq!(machine.counters().since(&before).ipis, 0, "not interrupted");
            let before = machine.counters();
            away.switch_to(Some(p.aspace()));
            let flushes = machine.counters().since(&before).full_invalidations;
            let expected = if broadcast { 0 } else { 1 };
            assert_eq!(flushes, expected, "{format:?}, broadcast {broadcast}");
            assert_eq!(away.load(addr).unwrap(), 0, "{format:?}: decommitted");
            away.switch_to(None);
        }
    }
}

/// A mapping made with `ZX_VM_MAP_RANGE` maps the VMO's committed pages at once, each at its
/// place (also from a VMO offset), with the mapping's permissions; a protect changes the
/// permissions of the entries and keeps them.
#[test]
fn map_range_and_protect_leave_the_entries_a_query_sees() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 4);
        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
        let root = p.root_vmar_handle();
        // The frames, through a mapping of the whole VMO that a CPU touched.
        let whole = map_rw(&p, root, vmo, 0, 4);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        for page in 0..4 {
            cpu.load(whole + page * PAGE_SIZE).unwrap();
        }
        cpu.switch_to(None);
        let frame = |page: u64| p.aspace().query(whole + page * PAGE_SIZE).unwrap().0;
        let mut addr = 0;
        let options = rw | ZX_VM_MAP_RANGE;
        let status = zx_vmar_map(
            &p,
            root,
            options,
            0,
            vmo,
            PAGE_SIZE,
            2 * PAGE_SIZE,
            &mut addr,
        );
        assert_eq!(status, ZX_OK);
        let rw_user = MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER;
        assert_eq!(
            p.aspace().query(addr),
            Some((frame(1), rw_user)),
            "{format:?}"
        );
        assert_eq!(
            p.aspace().query(addr + PAGE_SIZE),
            Some((frame(2), rw_user)),
            "{format:?}"
        );
        let status = zx_vmar_protect(&p, root, ZX_VM_PERM_READ, addr, 2 * PAGE_SIZE);
        assert_eq!(status, ZX_OK);
        let r_user = MmuFlags::READ | MmuFlags::USER;
        assert_eq!(
            p.aspace().query(addr),
            Some((frame(1), r_user)),
            "{format:?}"
        );
    }
}

/// Only the root VMAR is a root; a mapping needs its permissions granted by the VMO handle too
/// (`can_map`), even where the VMAR allows everything.
#[test]
fn roots_and_handle_permissions() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.aspace().root_vmar();
    assert!(root.is_root());
    let child = root
        .allocate(VmOptions::CAN_MAP_READ, 0, 4 * PAGE_SIZE)
        .unwrap();
    assert!(!child.is_root());
    let vmo = paged_vmo(&p, 1);
    assert_eq!(
        root.map(
            VmOptions::PERM_READ,
            0,
            &vmo,
            0,
            PAGE_SIZE,
            VmOptions::empty()
        ),
        Err(Status::AccessDenied)
    );
    assert_eq!(
        root.map(
            VmOptions::PERM_READ | VmOptions::PERM_WRITE,
            0,
            &vmo,
            0,
            PAGE_SIZE,
            VmOptions::CAN_MAP_READ
        ),
        Err(Status::AccessDenied)
    );
}

/// A mapping that was unmapped stays on its VMO's list, marked, until its unmap's round
/// completed: a decommit of its pages meanwhile must flush its address space too (a CPU may
/// still cache a translation through it), so it waits for the same CPU the unmap waits for.
#[test]
fn a_decommit_during_an_unmaps_round_waits_for_it() {
    for format in Format::ALL {
        let machine = machine(2);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 1);
        let root = p.root_vmar_handle();
        let addr = map_rw(&p, root, vmo, 0, 1);
        let release = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let cpu1 = {
            let (machine, p) = (machine.clone(), p.clone());
            let (release, done) = (release.clone(), done.clone());
            thread::spawn(move || {
                let cpu = machine.cpu(1);
                let _attached = cpu.attach();
                cpu.switch_to(Some(p.aspace()));
                assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
                cpu.set_interrupts(false);
                ready_tx.send(()).unwrap();
                while !release.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                cpu.set_interrupts(true);
                while !done.load(Ordering::SeqCst) {
                    cpu.poll();
                    thread::yield_now();
                }
                cpu.switch_to(None);
            })
        };
        ready_rx.recv().unwrap();
        let ipis = machine.counters().ipis;
        let unmap = {
            let p = p.clone();
            thread::spawn(move || zx_vmar_unmap(&p, root, addr, PAGE_SIZE))
        };
        while machine.counters().ipis == ipis {
            thread::yield_now();
        }
        let decommit = {
            let p = p.clone();
            thread::spawn(move || zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0))
        };
        thread::sleep(Duration::from_millis(200));
        assert!(
            !decommit.is_finished(),
            "{format:?}: the decommit freed the page without reaching CPU 1"
        );
        release.store(true, Ordering::SeqCst);
        assert_eq!(unmap.join().unwrap(), ZX_OK);
        assert_eq!(decommit.join().unwrap(), ZX_OK);
        done.store(true, Ordering::SeqCst);
        cpu1.join().unwrap();
        assert_eq!(committed(&p, vmo), 0);
    }
}
