//! `zx_vmo_create_child`'s rules, on both page-table formats: every option, the rights of the
//! child's handle, every status in Zircon's order (a failed call changes nothing and writes no
//! handle), what `ZX_INFO_VMO` says about children, slices and references acting on their
//! parent's pages, DECOMMIT refused while pages are shared, and resizing either side.

mod common;

use common::*;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::syscall::*;
use zx_vm::vmo::{Vmo, MAX_COW_DEPTH, MAX_VMO_SIZE};
use zx_vm::{KernelObject, PhysAddr, Process};

fn rights(p: &Process, handle: zx_handle_t) -> zx_rights_t {
    p.handle(handle).unwrap().rights.bits()
}

fn vmo(p: &Process, pages: u64, options: u32) -> zx_handle_t {
    let mut out = 0;
    assert_eq!(
        zx_vmo_create(p, pages * PAGE_SIZE, options, &mut out),
        ZX_OK
    );
    out
}

fn kernel_vmo(p: &Process, vmo: Arc<Vmo>) -> zx_handle_t {
    p.add_handle(
        KernelObject::Vmo(vmo),
        Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
    )
    .unwrap()
}

/// Another handle to the object of `handle`, with exactly `rights` (a kernel could make one).
fn with_rights(p: &Process, handle: zx_handle_t, rights: zx_rights_t) -> zx_handle_t {
    let object = p.handle(handle).unwrap().object;
    p.add_handle(object, Rights::from_bits_truncate(rights))
        .unwrap()
}

/// Every status, in Zircon's order: the size first (before the handle), NO_WRITE with
/// RESIZABLE, the handle, its rights, the options, then each kind's own checks.
#[test]
fn statuses_in_zircons_order() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let parent = patterned_vmo(&p, 4);
        let resizable = vmo(&p, 4, ZX_VMO_RESIZABLE);
        let snap = ZX_VMO_CHILD_SNAPSHOT;
        let all = 4 * PAGE_SIZE;
        let bad = 0x7777_7777;
        let vmar = p.root_vmar_handle();
        let read_only = with_rights(&p, parent, ZX_RIGHT_READ);
        let no_read = with_rights(&p, parent, ZX_RIGHT_DUPLICATE | ZX_RIGHT_WRITE);
        let contiguous = kernel_vmo(&p, Vmo::create_contiguous(machine.clone(), all).unwrap());
        let physical = kernel_vmo(
            &p,
            Vmo::create_physical(machine.clone(), PhysAddr(0x1_0000_0000), all).unwrap(),
        );
        let slice = child(&p, parent, ZX_VMO_CHILD_SLICE, 0, all).unwrap();
        let pinned = vmo(&p, 4, 0);
        let pinned_vmo = match p.handle(pinned).unwrap().object {
            KernelObject::Vmo(vmo) => vmo,
            _ => unreachable!(),
        };
        pinned_vmo.pin(0, PAGE_SIZE).unwrap();
        let handles = p.handle_count();
        let cases: &[(&str, zx_handle_t, u32, u64, u64, zx_status_t)] = &[
            (
                "size overflows, bad handle",
                bad,
                snap,
                0,
                u64::MAX,
                ZX_ERR_OUT_OF_RANGE,
            ),
            (
                "size past the largest VMO",
                parent,
                snap,
                0,
                MAX_VMO_SIZE + 1,
                ZX_ERR_OUT_OF_RANGE,
            ),
            (
                "NO_WRITE|RESIZABLE, bad handle",
                bad,
                snap | ZX_VMO_CHILD_NO_WRITE | ZX_VMO_CHILD_RESIZABLE,
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            ("bad handle", bad, snap, 0, all, ZX_ERR_BAD_HANDLE),
            ("a VMAR", vmar, snap, 0, all, ZX_ERR_WRONG_TYPE),
            (
                "no DUPLICATE",
                read_only,
                snap,
                0,
                all,
                ZX_ERR_ACCESS_DENIED,
            ),
            ("no READ", no_read, snap, 0, all, ZX_ERR_ACCESS_DENIED),
            ("no kind", parent, 0, 0, all, ZX_ERR_INVALID_ARGS),
            (
                "RESIZABLE alone",
                parent,
                ZX_VMO_CHILD_RESIZABLE,
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "an unknown bit",
                parent,
                snap | (1 << 1),
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "a high unknown bit",
                parent,
                snap | (1 << 8),
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "two snapshot kinds",
                parent,
                snap | ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "SLICE|SNAPSHOT",
                parent,
                ZX_VMO_CHILD_SLICE | snap,
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "SLICE|RESIZABLE",
                parent,
                ZX_VMO_CHILD_SLICE | ZX_VMO_CHILD_RESIZABLE,
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "REFERENCE|SLICE",
                parent,
                ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_SLICE,
                0,
                0,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "snapshot, unaligned offset",
                parent,
                snap,
                8,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "snapshot, end past 2^64",
                parent,
                snap,
                !(PAGE_SIZE - 1),
                all,
                ZX_ERR_OUT_OF_RANGE,
            ),
            (
                "snapshot of a contiguous VMO",
                contiguous,
                snap,
                0,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "snapshot of a physical VMO",
                physical,
                snap,
                0,
                all,
                ZX_ERR_NOT_SUPPORTED,
            ),
            (
                "snapshot of a slice",
                slice,
                snap,
                0,
                all,
                ZX_ERR_NOT_SUPPORTED,
            ),
            (
                "at-least-on-write of a slice",
                slice,
                ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
                0,
                all,
                ZX_ERR_NOT_SUPPORTED,
            ),
            (
                "snapshot over a pinned page",
                pinned,
                snap,
                0,
                all,
                ZX_ERR_BAD_STATE,
            ),
            (
                "slice, unaligned offset",
                parent,
                ZX_VMO_CHILD_SLICE,
                8,
                PAGE_SIZE,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "slice past the parent",
                parent,
                ZX_VMO_CHILD_SLICE,
                PAGE_SIZE,
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "slice, end past 2^64",
                parent,
                ZX_VMO_CHILD_SLICE,
                !(PAGE_SIZE - 1),
                all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "slice of a resizable VMO",
                resizable,
                ZX_VMO_CHILD_SLICE,
                0,
                all,
                ZX_ERR_NOT_SUPPORTED,
            ),
            (
                "slice of a resizable VMO, outside",
                resizable,
                ZX_VMO_CHILD_SLICE,
                0,
                2 * all,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "reference at an offset",
                parent,
                ZX_VMO_CHILD_REFERENCE,
                PAGE_SIZE,
                0,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "reference with a size",
                parent,
                ZX_VMO_CHILD_REFERENCE,
                0,
                1,
                ZX_ERR_INVALID_ARGS,
            ),
            (
                "reference of a slice",
                slice,
                ZX_VMO_CHILD_REFERENCE,
                0,
                0,
                ZX_ERR_NOT_SUPPORTED,
            ),
            (
                "reference of a contiguous VMO",
                contiguous,
                ZX_VMO_CHILD_REFERENCE,
                0,
                0,
                ZX_ERR_NOT_SUPPORTED,
            ),
            (
                "resizable reference of a fixed VMO",
                parent,
                ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_RESIZABLE,
                0,
                0,
                ZX_ERR_NOT_SUPPORTED,
            ),
        ];
        for &(what, handle, options, offset, size, status) in cases {
            let before = first_words(&p, parent, 4);
            assert_eq!(
                child(&p, handle, options, offset, size),
                Err(status),
                "{format:?}: {what}"
            );
            assert_eq!(
                p.handle_count(),
                handles,
                "{format:?}: {what}: no handle made"
            );
            assert_eq!(first_words(&p, parent, 4), before, "{format:?}: {what}");
            assert_eq!(
                info(&p, parent).num_children,
                1,
                "{format:?}: {what}: the slice only"
            );
        }
        // The successes among the neighbours of those cases.
        for (what, handle, options, offset, size) in [
            (
                "snapshot past the parent's end",
                parent,
                snap,
                2 * PAGE_SIZE,
                all,
            ),
            ("snapshot of nothing", parent, snap, 0, 0),
            (
                "at least on write",
                parent,
                ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
                0,
                all,
            ),
            (
                "snapshot, modified",
                parent,
                ZX_VMO_CHILD_SNAPSHOT_MODIFIED,
                0,
                all,
            ),
            (
                "resizable snapshot",
                parent,
                snap | ZX_VMO_CHILD_RESIZABLE,
                0,
                all,
            ),
            ("snapshot of a resizable VMO", resizable, snap, 0, all),
            (
                "read-only snapshot",
                parent,
                snap | ZX_VMO_CHILD_NO_WRITE,
                0,
                all,
            ),
            ("empty slice at the end", parent, ZX_VMO_CHILD_SLICE, all, 0),
            (
                "slice of a contiguous VMO",
                contiguous,
                ZX_VMO_CHILD_SLICE,
                0,
                PAGE_SIZE,
            ),
            (
                "slice of a physical VMO",
                physical,
                ZX_VMO_CHILD_SLICE,
                PAGE_SIZE,
                PAGE_SIZE,
            ),
            (
                "slice of a slice",
                slice,
                ZX_VMO_CHILD_SLICE,
                PAGE_SIZE,
                PAGE_SIZE,
            ),
            ("reference", parent, ZX_VMO_CHILD_REFERENCE, 0, 0),
            (
                "resizable reference",
                resizable,
                ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_RESIZABLE,
                0,
                0,
            ),
            (
                "read-only reference",
                parent,
                ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_NO_WRITE,
                0,
                0,
            ),
            ("unaligned size, rounded", parent, snap, 0, 10),
        ] {
            let made = child(&p, handle, options, offset, size);
            assert!(made.is_ok(), "{format:?}: {what}: {made:?}");
            assert_eq!(zx_handle_close(&p, made.unwrap()), ZX_OK);
        }
        pinned_vmo.unpin(0, PAGE_SIZE).unwrap();
    }
}

/// A kernel calling [`Vmo::create_snapshot`] directly gets the same limit as the syscall.
#[test]
fn a_snapshot_larger_than_the_largest_vmo_is_refused() {
    let machine = machine(1);
    let parent = Vmo::create(machine.clone(), PAGE_SIZE).unwrap();
    let status = parent
        .create_snapshot(0, MAX_VMO_SIZE + PAGE_SIZE, false)
        .err();
    assert_eq!(status, Some(zx_vm::Status::OutOfRange));
    let child = parent.create_snapshot(0, MAX_VMO_SIZE, false).unwrap();
    assert_eq!(child.size(), MAX_VMO_SIZE);
}

/// The child's rights: the parent handle's without RESIZE, plus GET/SET_PROPERTY, plus RESIZE
/// when resizable; a snapshot gains WRITE and loses EXECUTE; NO_WRITE takes WRITE away.
#[test]
fn the_childs_rights() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let parent = vmo(&p, 2, 0);
        let growing = vmo(&p, 2, ZX_VMO_RESIZABLE);
        let props = ZX_RIGHT_GET_PROPERTY | ZX_RIGHT_SET_PROPERTY;
        let rd = ZX_RIGHT_READ | ZX_RIGHT_DUPLICATE;
        let minimal = with_rights(&p, parent, rd);
        let exec = with_rights(&p, parent, rd | ZX_RIGHT_EXECUTE);
        let full = rights(&p, parent);
        let full_resizable = rights(&p, growing);
        let size = 2 * PAGE_SIZE;
        for (what, handle, options, size, want) in [
            (
                "snapshot, minimal parent",
                minimal,
                ZX_VMO_CHILD_SNAPSHOT,
                size,
                rd | ZX_RIGHT_WRITE | props,
            ),
            (
                "snapshot drops EXECUTE",
                exec,
                ZX_VMO_CHILD_SNAPSHOT,
                size,
                rd | ZX_RIGHT_WRITE | props,
            ),
            (
                "snapshot, NO_WRITE keeps EXECUTE",
                exec,
                ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_NO_WRITE,
                size,
                rd | ZX_RIGHT_EXECUTE | props,
            ),
            (
                "snapshot, full parent",
                parent,
                ZX_VMO_CHILD_SNAPSHOT,
                size,
                full | props,
            ),
            (
                "resizable snapshot",
                parent,
                ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE,
                size,
                full | props | ZX_RIGHT_RESIZE,
            ),
            (
                "snapshot of a resizable VMO",
                growing,
                ZX_VMO_CHILD_SNAPSHOT,
                size,
                (full_resizable & !ZX_RIGHT_RESIZE) | props,
            ),
            (
                "slice keeps no WRITE",
                minimal,
                ZX_VMO_CHILD_SLICE,
                size,
                rd | props,
            ),
            (
                "slice keeps EXECUTE",
                exec,
                ZX_VMO_CHILD_SLICE,
                size,
                rd | ZX_RIGHT_EXECUTE | props,
            ),
            (
                "slice, NO_WRITE",
                parent,
                ZX_VMO_CHILD_SLICE | ZX_VMO_CHILD_NO_WRITE,
                size,
                (full & !ZX_RIGHT_WRITE) | props,
            ),
            ("reference", parent, ZX_VMO_CHILD_REFERENCE, 0, full | props),
            (
                "reference of a resizable VMO",
                growing,
                ZX_VMO_CHILD_REFERENCE,
                0,
                (full_resizable & !ZX_RIGHT_RESIZE) | props,
            ),
            (
                "resizable reference",
                growing,
                ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_RESIZABLE,
                0,
                full_resizable | props,
            ),
        ] {
            let made = child(&p, handle, options, 0, size).unwrap();
            assert_eq!(rights(&p, made), want, "{format:?}: {what}");
        }
    }
}

/// `ZX_INFO_VMO` of children: the parent's koid, the snapshot flag, the parent's count of live
/// children; slices and references own no pages.
#[test]
fn info_about_children() {
    let machine = machine(1);
    let p = process(&machine, Format::Aarch64);
    let parent = patterned_vmo(&p, 4);
    let koid = info(&p, parent).koid;
    let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, 4 * PAGE_SIZE).unwrap();
    let slice = child(&p, parent, ZX_VMO_CHILD_SLICE, PAGE_SIZE, PAGE_SIZE).unwrap();
    let reference = child(&p, parent, ZX_VMO_CHILD_REFERENCE, 0, 0).unwrap();
    assert_eq!(info(&p, parent).num_children, 3);
    assert_eq!(info(&p, parent).parent_koid, 0);
    for (handle, flags, size) in [
        (
            snap,
            ZX_INFO_VMO_TYPE_PAGED | ZX_INFO_VMO_IS_COW_CLONE,
            4 * PAGE_SIZE,
        ),
        (slice, ZX_INFO_VMO_TYPE_PAGED, PAGE_SIZE),
        (reference, ZX_INFO_VMO_TYPE_PAGED, 4 * PAGE_SIZE),
    ] {
        let child_info = info(&p, handle);
        assert_eq!(child_info.parent_koid, koid);
        assert_eq!(child_info.flags, flags | ZX_INFO_VMO_VIA_HANDLE);
        assert_eq!(child_info.size_bytes, size);
        assert_eq!(child_info.committed_bytes, 0);
        assert_ne!(child_info.koid, koid);
    }
    assert_eq!(
        info(&p, parent).flags,
        ZX_INFO_VMO_TYPE_PAGED | ZX_INFO_VMO_VIA_HANDLE
    );
    assert_eq!(zx_handle_close(&p, slice), ZX_OK);
    assert_eq!(zx_handle_close(&p, snap), ZX_OK);
    assert_eq!(info(&p, parent).num_children, 1);
}

/// A slice is a window on its parent's pages: writes, reads, DECOMMIT and ZERO through it act
/// there; a DECOMMIT of the parent unmaps the slice's mappings; a mapping past the slice's end
/// is refused; it cannot be resized.
#[test]
fn a_slice_acts_on_its_parents_pages() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let parent = patterned_vmo(&p, 4);
        let slice = child(&p, parent, ZX_VMO_CHILD_SLICE, PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
        let nested = child(&p, slice, ZX_VMO_CHILD_SLICE, PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_eq!(read_word(&p, slice, 0), pattern(1, 0));
        assert_eq!(read_word(&p, nested, 0), pattern(2, 0));
        write_word(&p, nested, 8, 42);
        assert_eq!(read_word(&p, parent, 2 * PAGE_SIZE + 8), 42, "{format:?}");
        let mut word = [0u8; 8];
        assert_eq!(
            zx_vmo_read(&p, slice, &mut word, 2 * PAGE_SIZE),
            ZX_ERR_OUT_OF_RANGE
        );
        assert_eq!(zx_vmo_set_size(&p, slice, PAGE_SIZE), ZX_ERR_UNAVAILABLE);
        assert_eq!(info(&p, slice).committed_bytes, 0);

        // Mapped, read through a CPU, then decommitted through the parent: the slice's
        // translation goes too.
        let in_slice = map_rw(&p, p.root_vmar_handle(), slice, 0, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(in_slice + PAGE_SIZE + 8).unwrap(), 42);
        let op = ZX_VMO_OP_DECOMMIT;
        assert_eq!(
            zx_vmo_op_range(&p, parent, op, 2 * PAGE_SIZE, PAGE_SIZE, 0, 0),
            ZX_OK
        );
        assert!(cpu.tlb_entry(in_slice + PAGE_SIZE).is_none(), "{format:?}");
        assert_eq!(cpu.load(in_slice + PAGE_SIZE + 8).unwrap(), 0, "{format:?}");
        // DECOMMIT and ZERO through the slice.
        assert_eq!(
            committed(&p, parent),
            4 * PAGE_SIZE,
            "{format:?}: the load committed it"
        );
        assert_eq!(zx_vmo_op_range(&p, slice, op, 0, PAGE_SIZE, 0, 0), ZX_OK);
        assert_eq!(committed(&p, parent), 3 * PAGE_SIZE, "{format:?}");
        assert_eq!(
            zx_vmo_op_range(&p, slice, op, 0, 3 * PAGE_SIZE, 0, 0),
            ZX_ERR_OUT_OF_RANGE
        );
        let zero = ZX_VMO_OP_ZERO;
        assert_eq!(zx_vmo_op_range(&p, nested, zero, 0, 16, 0, 0), ZX_OK);
        assert_eq!(read_word(&p, parent, 2 * PAGE_SIZE + 8), 0, "{format:?}");
        // DECOMMIT through a mapping of the slice: the parent's page.
        assert_eq!(
            zx_vmar_op_range(
                &p,
                p.root_vmar_handle(),
                ZX_VMAR_OP_DECOMMIT,
                in_slice + PAGE_SIZE,
                PAGE_SIZE,
                0,
                0
            ),
            ZX_OK
        );
        assert_eq!(committed(&p, parent), 2 * PAGE_SIZE, "{format:?}");
        // Past the slice's end, a mapping is refused.
        let mut addr = 0;
        let perms = ZX_VM_PERM_READ;
        let status = zx_vmar_map(
            &p,
            p.root_vmar_handle(),
            perms,
            0,
            slice,
            PAGE_SIZE,
            2 * PAGE_SIZE,
            &mut addr,
        );
        assert_eq!(status, ZX_ERR_OUT_OF_RANGE, "{format:?}");
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        cpu.switch_to(None);
    }
}

/// A reference is another name for the whole parent: same pages, same size as it changes.
#[test]
fn a_reference_is_the_parent_by_another_name() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let parent = vmo(&p, 2, ZX_VMO_RESIZABLE);
    let fixed = child(&p, parent, ZX_VMO_CHILD_REFERENCE, 0, 0).unwrap();
    let growing = child(
        &p,
        parent,
        ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_RESIZABLE,
        0,
        0,
    )
    .unwrap();
    write_word(&p, fixed, 8, 5);
    assert_eq!(read_word(&p, parent, 8), 5);
    assert_eq!(
        zx_vmo_set_size(&p, fixed, PAGE_SIZE),
        ZX_ERR_ACCESS_DENIED,
        "no RESIZE"
    );
    assert_eq!(zx_vmo_set_size(&p, growing, 5 * PAGE_SIZE), ZX_OK);
    let mut size = 0;
    assert_eq!(zx_vmo_get_size(&p, parent, &mut size), ZX_OK);
    assert_eq!(size, 5 * PAGE_SIZE);
    assert_eq!(zx_vmo_get_size(&p, fixed, &mut size), ZX_OK);
    assert_eq!(size, 5 * PAGE_SIZE);
    assert_eq!(committed(&p, parent), PAGE_SIZE);
    // A mapping of a reference may pass its end, as one of the parent may (it is one).
    let mut addr = 0;
    let perms = ZX_VM_PERM_READ;
    let vmar = p.root_vmar_handle();
    assert_eq!(
        zx_vmar_map(&p, vmar, perms, 0, fixed, 0, 8 * PAGE_SIZE, &mut addr),
        ZX_OK
    );
    assert_eq!(
        zx_vmo_op_range(&p, fixed, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(committed(&p, parent), 0);
    // A snapshot through a reference is a snapshot of the parent.
    write_word(&p, parent, 0, 9);
    let snap = child(&p, fixed, ZX_VMO_CHILD_SNAPSHOT, 0, PAGE_SIZE).unwrap();
    write_word(&p, parent, 0, 10);
    assert_eq!(read_word(&p, snap, 0), 9);
    assert_eq!(info(&p, snap).parent_koid, info(&p, fixed).koid);
}

/// DECOMMIT (contract step 10): a snapshot child, and a parent while a child shares its pages,
/// are `ZX_ERR_NOT_SUPPORTED` through either syscall, and nothing changes; once the relatives
/// are closed, the parent decommits again.
#[test]
fn decommit_is_refused_while_pages_are_shared() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let parent = patterned_vmo(&p, 4);
        let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, 4 * PAGE_SIZE).unwrap();
        write_word(&p, snap, 0, 1);
        let in_parent = map_rw(&p, p.root_vmar_handle(), parent, 0, 4);
        let in_snap = map_rw(&p, p.root_vmar_handle(), snap, 0, 4);
        let vmar = p.root_vmar_handle();
        let op = ZX_VMO_OP_DECOMMIT;
        for (what, status) in [
            ("child", zx_vmo_op_range(&p, snap, op, 0, PAGE_SIZE, 0, 0)),
            (
                "parent",
                zx_vmo_op_range(&p, parent, op, 0, PAGE_SIZE, 0, 0),
            ),
            (
                "child's mapping",
                zx_vmar_op_range(&p, vmar, ZX_VMAR_OP_DECOMMIT, in_snap, PAGE_SIZE, 0, 0),
            ),
            (
                "parent's mapping",
                zx_vmar_op_range(&p, vmar, ZX_VMAR_OP_DECOMMIT, in_parent, PAGE_SIZE, 0, 0),
            ),
        ] {
            assert_eq!(status, ZX_ERR_NOT_SUPPORTED, "{format:?}: {what}");
        }
        assert_eq!(committed(&p, snap), PAGE_SIZE, "{format:?}");
        assert_eq!(committed(&p, parent), 4 * PAGE_SIZE, "{format:?}");
        assert_eq!(read_word(&p, snap, 0), 1);
        assert_eq!(read_word(&p, snap, PAGE_SIZE), pattern(1, 0));
        // A slice of the child refuses too; a slice of a lone VMO does not (tested above).
        let slice = child(&p, snap, ZX_VMO_CHILD_SLICE, 0, PAGE_SIZE).unwrap();
        assert_eq!(
            zx_vmo_op_range(&p, slice, op, 0, PAGE_SIZE, 0, 0),
            ZX_ERR_NOT_SUPPORTED
        );
        assert_eq!(zx_handle_close(&p, slice), ZX_OK);
        assert_eq!(zx_vmar_unmap(&p, vmar, in_snap, 4 * PAGE_SIZE), ZX_OK);
        assert_eq!(zx_handle_close(&p, snap), ZX_OK);
        let status = zx_vmar_op_range(
            &p,
            vmar,
            ZX_VMAR_OP_DECOMMIT,
            in_parent,
            4 * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK, "{format:?}: alone again");
        assert_eq!(committed(&p, parent), 0, "{format:?}");
    }
}

/// Resizing either side: a resizable child grows into zeroes (never its parent's pages); a
/// parent that shrinks and grows back reads zero there while the child keeps the old bytes;
/// a shrink to a partial page zeroes the tail in that VMO only.
#[test]
fn resizing_either_side_of_a_snapshot() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let parent = vmo(&p, 4, ZX_VMO_RESIZABLE);
    for page in 0..4 {
        write_word(&p, parent, page * PAGE_SIZE, 100 + page);
        write_word(&p, parent, page * PAGE_SIZE + 200, 200 + page);
    }
    let options = ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE;
    let snap = child(&p, parent, options, 0, 2 * PAGE_SIZE).unwrap();
    assert_eq!(zx_vmo_set_size(&p, snap, 4 * PAGE_SIZE), ZX_OK);
    assert_eq!(
        read_word(&p, snap, 2 * PAGE_SIZE),
        0,
        "the child grew into zeroes"
    );
    assert_eq!(zx_vmo_set_size(&p, parent, PAGE_SIZE + 100), ZX_OK);
    assert_eq!(zx_vmo_set_size(&p, parent, 4 * PAGE_SIZE), ZX_OK);
    assert_eq!(read_word(&p, parent, PAGE_SIZE), 101, "before the new end");
    assert_eq!(
        read_word(&p, parent, PAGE_SIZE + 200),
        0,
        "the tail past the end was zeroed"
    );
    assert_eq!(read_word(&p, parent, 3 * PAGE_SIZE), 0);
    assert_eq!(
        read_word(&p, snap, PAGE_SIZE + 200),
        201,
        "the child keeps its bytes"
    );
    assert_eq!(zx_vmo_set_size(&p, snap, PAGE_SIZE), ZX_OK);
    assert_eq!(zx_vmo_set_size(&p, snap, 2 * PAGE_SIZE), ZX_OK);
    assert_eq!(
        read_word(&p, snap, PAGE_SIZE),
        0,
        "shrunk and grown: zero, not the parent's"
    );
    assert_eq!(read_word(&p, snap, 0), 100);
}

/// ZERO on either side of a snapshot zeroes that side only.
#[test]
fn zero_on_a_snapshot_zeroes_one_side() {
    let machine = machine(1);
    let p = process(&machine, Format::Aarch64);
    let parent = patterned_vmo(&p, 4);
    let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, 4 * PAGE_SIZE).unwrap();
    let zero = ZX_VMO_OP_ZERO;
    assert_eq!(
        zx_vmo_op_range(&p, snap, zero, 8, 2 * PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(
        first_words(&p, snap, 4),
        vec![pattern(0, 0), 0, 0, pattern(3, 0)]
    );
    assert_eq!(read_word(&p, snap, 8), 0);
    assert_eq!(read_word(&p, snap, 2 * PAGE_SIZE + 8), pattern(2, 1));
    assert_eq!(
        first_words(&p, parent, 4),
        (0..4).map(|i| pattern(i, 0)).collect::<Vec<_>>()
    );
    assert_eq!(
        zx_vmo_op_range(&p, parent, zero, 0, 4 * PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(first_words(&p, parent, 4), vec![0; 4]);
    assert_eq!(read_word(&p, snap, 3 * PAGE_SIZE), pattern(3, 0));
}

/// Snapshots of snapshots stop at [`MAX_COW_DEPTH`] (`ZX_ERR_NO_RESOURCES`): no walk of the
/// tree is longer than a constant. Closing the chain's middle lets it grow again.
#[test]
fn the_tree_depth_is_bounded() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let first = patterned_vmo(&p, 1);
    let mut chain = vec![first];
    loop {
        let last = *chain.last().unwrap();
        match child(&p, last, ZX_VMO_CHILD_SNAPSHOT, 0, PAGE_SIZE) {
            Ok(next) => chain.push(next),
            Err(status) => {
                assert_eq!(status, ZX_ERR_NO_RESOURCES);
                break;
            }
        }
        assert!(chain.len() <= MAX_COW_DEPTH + 2, "unbounded");
    }
    assert_eq!(chain.len(), MAX_COW_DEPTH + 1);
    assert_eq!(read_word(&p, *chain.last().unwrap(), 0), pattern(0, 0));
    // Snapshots of the first VMO still work: its own depth is 1.
    let side = child(&p, first, ZX_VMO_CHILD_SNAPSHOT, 0, PAGE_SIZE).unwrap();
    assert_eq!(read_word(&p, side, 0), pattern(0, 0));
    for &handle in &chain[1..chain.len() - 1] {
        assert_eq!(zx_handle_close(&p, handle), ZX_OK);
    }
    let last = *chain.last().unwrap();
    let again = child(&p, last, ZX_VMO_CHILD_SNAPSHOT, 0, PAGE_SIZE).unwrap();
    assert_eq!(read_word(&p, again, 0), pattern(0, 0));
}
