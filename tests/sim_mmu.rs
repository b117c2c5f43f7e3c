//! The simulated MMU is faithful enough to catch a missing invalidation: it keeps translations
//! until they are invalidated, and it refuses to free a frame that a TLB still maps.

mod common;

use common::*;
use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
use zx_vm::sim::FREED_POISON;
use zx_vm::syscall::*;
use zx_vm::tlb::PendingFlush;
use zx_vm::vmar::FaultError;
use zx_vm::Platform;

/// The negative control: a PTE changed without invalidation is still used by the CPU that cached
/// it, and only an invalidation makes the CPU see the change.
#[test]
fn a_pte_changed_without_invalidation_reads_stale() {
    for format in Format::ALL {
        let machine = machine(2);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 2);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 2);
        let cpu = machine.cpu(0);
        let other = machine.cpu(1);
        cpu.switch_to(Some(p.aspace()));
        other.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        let page1 = p.aspace().query(addr + PAGE_SIZE).map(|(pa, _)| pa);
        let page1 = page1.unwrap_or_else(|| {
            other.load(addr + PAGE_SIZE).unwrap();
            p.aspace().query(addr + PAGE_SIZE).unwrap().0
        });

        // Point page 0 at page 1's frame behind the TLB's back.
        p.aspace().with_page_table_unsynchronized(|pt, platform| {
            let mut pending = PendingFlush::new();
            pt.unmap(platform, addr, addr + PAGE_SIZE, &mut pending);
            assert!(!pending.tables_freed(), "page 1 keeps the tables alive");
            pt.map(
                platform,
                addr,
                page1,
                MmuFlags::READ | MmuFlags::WRITE | MmuFlags::USER,
            )
            .unwrap();
        });
        // CPU 0 still uses its cached translation: the old data.
        assert_eq!(
            cpu.load(addr).unwrap(),
            pattern(0, 0),
            "{format:?}: stale read expected"
        );
        // CPU 1 never cached page 0: it walks the new table.
        assert_eq!(other.load(addr).unwrap(), pattern(1, 0), "{format:?}");
        // After invalidating, CPU 0 sees the change.
        cpu.invalidate_page(addr);
        assert_eq!(cpu.load(addr).unwrap(), pattern(1, 0), "{format:?}");

        // Put things back, invalidating properly, so teardown is clean.
        p.aspace().with_page_table_unsynchronized(|pt, platform| {
            let mut pending = PendingFlush::new();
            pt.unmap(platform, addr, addr + PAGE_SIZE, &mut pending);
        });
        cpu.invalidate_page(addr);
        other.invalidate_page(addr);
        assert_eq!(
            cpu.load(addr).unwrap(),
            pattern(0, 0),
            "{format:?}: refaulted from the VMO"
        );
        cpu.switch_to(None);
        other.switch_to(None);
        drop(p);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

/// Freeing a frame that a TLB still maps is a bug the machine reports at once.
#[test]
#[should_panic(expected = "freed while CPU 0's TLB still maps")]
fn freeing_a_cached_frame_is_caught() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let vmo = patterned_vmo(&p, 1);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    cpu.load(addr).unwrap();
    let (frame, _) = p.aspace().query(addr).unwrap();
    // SAFETY: deliberately wrong; the simulation panics before touching anything.
    unsafe { machine.free_frames(&[frame]) };
}

/// The check skips a CPU whose TLB it found empty until that CPU caches again: a TLB emptied by a
/// full flush (a decommit of more than 32 pages), then filled by one load, is checked again.
#[test]
#[should_panic(expected = "freed while CPU 0's TLB still maps")]
fn a_tlb_found_empty_is_checked_again_once_it_caches() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let vmo = patterned_vmo(&p, 40);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 40);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    cpu.load(addr).unwrap();
    let status = zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, 40 * PAGE_SIZE, 0, 0);
    assert_eq!(status, ZX_OK);
    assert_eq!(cpu.tlb_len(), 0, "the full flush emptied the TLB");
    cpu.store(addr + PAGE_SIZE, 1).unwrap();
    let (frame, _) = p.aspace().query(addr + PAGE_SIZE).unwrap();
    // SAFETY: deliberately wrong; the simulation panics before touching anything.
    unsafe { machine.free_frames(&[frame]) };
}

/// A table that only a CPU's walk cache still reaches (the translation through it invalidated,
/// the walk kept) may not be freed either: the check looks at walks even when the TLB holds no
/// translation at all.
#[test]
#[should_panic(expected = "walk cache still points to it")]
fn freeing_a_table_only_a_walk_cache_reaches_is_caught() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let vmo = patterned_vmo(&p, 1);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    cpu.load(addr).unwrap();
    cpu.invalidate_page(addr);
    assert_eq!(cpu.tlb_len(), 0, "no translation left, only the walk");
    let tables = p.aspace().with_page_table_unsynchronized(|pt, platform| {
        let mut pending = PendingFlush::new();
        pt.unmap(platform, addr, addr + PAGE_SIZE, &mut pending);
        pending.freed_tables().to_vec()
    });
    assert!(!tables.is_empty(), "the emptied tables");
    // SAFETY: deliberately wrong; the simulation panics before touching anything.
    unsafe { machine.free_frames(&tables) };
}

/// A stale translation to a freed frame reads the poison pattern, so a use-after-free is visible.
#[test]
fn freed_frames_are_poisoned() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let vmo = patterned_vmo(&p, 1);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    let (frame, _) = p.aspace().query(addr).unwrap_or_else(|| {
        cpu.load(addr).unwrap();
        p.aspace().query(addr).unwrap()
    });
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(machine.read_phys(frame), FREED_POISON);
    cpu.switch_to(None);
}

#[test]
fn faults_are_reported() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        // Outside any mapping.
        assert_eq!(cpu.load(0x1000_0000), Err(FaultError::NotMapped));
        // Read-only mapping: loads work, stores fault.
        let mut ro = 0;
        assert_eq!(
            zx_vmar_map(&p, root, ZX_VM_PERM_READ, 0, vmo, 0, 2 * PAGE_SIZE, &mut ro),
            ZX_OK
        );
        assert_eq!(cpu.load(ro).unwrap(), pattern(0, 0));
        assert_eq!(
            cpu.store(ro, 1),
            Err(FaultError::AccessDenied),
            "{format:?}"
        );
        // A mapping longer than the VMO faults past its end.
        let mut long = 0;
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ,
                0,
                vmo,
                0,
                4 * PAGE_SIZE,
                &mut long
            ),
            ZX_OK
        );
        assert_eq!(cpu.load(long + 2 * PAGE_SIZE), Err(FaultError::OutOfRange));
        // After protect to read-write, the store goes through and the VMO sees it.
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_PERM_READ | ZX_VM_PERM_WRITE, ro, PAGE_SIZE),
            ZX_OK
        );
        cpu.store(ro, 42).unwrap();
        assert_eq!(first_words(&p, vmo, 1), [42], "{format:?}");
        // Protect back to read-only: the cached writable translation must go.
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_PERM_READ, ro, PAGE_SIZE),
            ZX_OK
        );
        assert_eq!(
            cpu.store(ro, 43),
            Err(FaultError::AccessDenied),
            "{format:?}"
        );
        // A first touch of an uncommitted page commits a zero page.
        let mut fresh = 0;
        assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut fresh), ZX_OK);
        let fresh_addr = map_rw(&p, root, fresh, 0, 1);
        assert_eq!(committed(&p, fresh), 0);
        assert_eq!(cpu.load(fresh_addr + 8).unwrap(), 0);
        assert_eq!(committed(&p, fresh), PAGE_SIZE);
        cpu.switch_to(None);
        drop(p);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

/// An invalidation drops cached walks only when the operation freed page-table pages: a
/// decommit that leaves the leaf table in use asks for leaf-only invalidations (`TLBI VALE1IS`),
/// one that empties it for walk-dropping ones (`TLBI VAE1IS`).
#[test]
fn walk_invalidations_only_when_tables_were_freed() {
    for format in Format::ALL {
        let machine = common::machine(1);
        let p = common::process(&machine, format);
        let vmo = common::patterned_vmo(&p, 2);
        let addr = common::map_rw(&p, p.root_vmar_handle(), vmo, 0, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        cpu.load(addr).unwrap();
        cpu.load(addr + PAGE_SIZE).unwrap();
        let decommit = |pages: u64| {
            let before = machine.counters();
            let status = zx_vmar_op_range(
                &p,
                p.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                addr,
                pages * PAGE_SIZE,
                0,
                0,
            );
            assert_eq!(status, ZX_OK);
            machine.counters().since(&before)
        };
        // Page 1 keeps the leaf table alive.
        let one = decommit(1);
        assert_eq!(
            (one.page_invalidations, one.table_invalidations),
            (1, 0),
            "{format:?}"
        );
        // Now the last page of the table goes, and with it the tables.
        let both = decommit(2);
        assert_eq!(
            (both.page_invalidations, both.table_invalidations),
            (1, 1),
            "{format:?}"
        );
        cpu.switch_to(None);
    }
}

/// An operation that changed no translation sends no shootdown: unmapping a mapping that was
/// never touched, while the address space runs on two CPUs, costs no round and no IPI.
#[test]
fn nothing_changed_means_no_shootdown() {
    for format in Format::ALL {
        let machine = common::machine(2);
        let p = common::process(&machine, format);
        let vmo = common::patterned_vmo(&p, 4);
        let addr = common::map_rw(&p, p.root_vmar_handle(), vmo, 0, 4);
        machine.cpu(1).switch_to(Some(p.aspace()));
        machine.cpu(0).switch_to(Some(p.aspace()));
        let before = machine.counters();
        assert_eq!(
            zx_vmar_unmap(&p, p.root_vmar_handle(), addr, 4 * PAGE_SIZE),
            ZX_OK
        );
        let after = machine.counters().since(&before);
        assert_eq!((after.shootdowns, after.ipis), (0, 0), "{format:?}");
        machine.cpu(0).switch_to(None);
        machine.cpu(1).switch_to(None);
    }
}
