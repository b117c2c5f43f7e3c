//! The neighbouring syscalls and Zircon's rights rules: handles, VMOs, VMAR allocation, mapping,
//! unmapping, protection and destruction.

mod common;

use common::*;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::object::KernelObject;
use zx_vm::syscall::*;
use zx_vm::vmar::{USER_ASPACE_BASE, USER_ASPACE_SIZE};
use zx_vm::{Platform, Vmo};

#[test]
fn handles_duplicate_replace_close() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut vmo), ZX_OK);

    // Duplicate with the same rights, then with fewer.
    let mut same = 0;
    assert_eq!(
        zx_handle_duplicate(&p, vmo, ZX_RIGHT_SAME_RIGHTS, &mut same),
        ZX_OK
    );
    assert_ne!(same, vmo);
    assert_eq!(p.handle(same).unwrap().rights.bits(), ZX_DEFAULT_VMO_RIGHTS);
    let mut read_only = 0;
    let ro_rights = ZX_RIGHT_READ | ZX_RIGHT_DUPLICATE | ZX_RIGHT_INSPECT;
    assert_eq!(
        zx_handle_duplicate(&p, vmo, ro_rights, &mut read_only),
        ZX_OK
    );
    assert_eq!(p.handle(read_only).unwrap().rights.bits(), ro_rights);
    // Rights can only shrink.
    let mut out = 0;
    assert_eq!(
        zx_handle_duplicate(&p, read_only, ro_rights | ZX_RIGHT_WRITE, &mut out),
        ZX_ERR_INVALID_ARGS
    );
    assert_eq!(out, 0, "out is written only on success");
    // Duplicating needs ZX_RIGHT_DUPLICATE.
    let mut no_dup = 0;
    assert_eq!(
        zx_handle_replace(&p, read_only, ZX_RIGHT_READ, &mut no_dup),
        ZX_OK
    );
    assert_eq!(
        zx_handle_close(&p, read_only),
        ZX_ERR_BAD_HANDLE,
        "replace closed the old handle"
    );
    assert_eq!(
        zx_handle_duplicate(&p, no_dup, ZX_RIGHT_SAME_RIGHTS, &mut out),
        ZX_ERR_ACCESS_DENIED
    );
    // The narrowed handle cannot write.
    assert_eq!(zx_vmo_write(&p, no_dup, &[1], 0), ZX_ERR_ACCESS_DENIED);
    let mut byte = [9u8];
    assert_eq!(zx_vmo_read(&p, no_dup, &mut byte, 0), ZX_OK);
    assert_eq!(byte, [0]);
    // A failed replace still invalidates the handle (Zircon: "handle is always invalidated").
    assert_eq!(
        zx_handle_replace(&p, no_dup, ZX_RIGHT_WRITE, &mut out),
        ZX_ERR_INVALID_ARGS
    );
    assert_eq!(p.handle(no_dup).err(), Some(Status::BadHandle));

    // Close: invalid handle is fine, a closed one is not, and the value is not reused as valid.
    assert_eq!(zx_handle_close(&p, ZX_HANDLE_INVALID), ZX_OK);
    assert_eq!(zx_handle_close(&p, same), ZX_OK);
    assert_eq!(zx_handle_close(&p, same), ZX_ERR_BAD_HANDLE);
    let mut again = 0;
    assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut again), ZX_OK);
    assert_ne!(again, same);
    assert_eq!(zx_handle_close(&p, same), ZX_ERR_BAD_HANDLE);
    // Wrong types.
    let mut size = 0;
    assert_eq!(
        zx_vmo_get_size(&p, p.root_vmar_handle(), &mut size),
        ZX_ERR_WRONG_TYPE
    );
    assert_eq!(
        zx_vmar_unmap(&p, vmo, USER_ASPACE_BASE, PAGE_SIZE),
        ZX_ERR_WRONG_TYPE
    );
    assert_eq!(zx_vmo_get_size(&p, vmo, &mut size), ZX_OK);
    assert_eq!(size, PAGE_SIZE);
}

#[test]
fn handle_table_fills_up() {
    let machine = machine(1);
    let platform: Arc<dyn Platform> = machine.clone();
    let p = zx_vm::Process::with_handle_limit(platform, Format::NATIVE, 4).unwrap();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut vmo), ZX_OK);
        handles.push(vmo);
    }
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(&p, PAGE_SIZE, 0, &mut vmo),
        ZX_ERR_NO_RESOURCES
    );
    let (mut child, mut addr) = (0, 0);
    assert_eq!(
        zx_vmar_allocate(
            &p,
            p.root_vmar_handle(),
            ZX_VM_CAN_MAP_READ,
            0,
            PAGE_SIZE,
            &mut child,
            &mut addr
        ),
        ZX_ERR_NO_RESOURCES
    );
    // The failed allocate left no sub-VMAR behind: the whole root is still free for a specific map.
    let mut at = 0;
    assert_eq!(
        zx_vmar_map(
            &p,
            p.root_vmar_handle(),
            ZX_VM_PERM_READ | ZX_VM_SPECIFIC,
            0,
            handles[0],
            0,
            PAGE_SIZE,
            &mut at
        ),
        ZX_OK
    );
    assert_eq!(at, USER_ASPACE_BASE);
    assert_eq!(zx_handle_close(&p, handles[1]), ZX_OK);
    assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut vmo), ZX_OK);
}

#[test]
fn vmo_read_write_commit_decommit() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&p, 3 * PAGE_SIZE + 1, 0, &mut vmo), ZX_OK);
    let mut size = 0;
    assert_eq!(zx_vmo_get_size(&p, vmo, &mut size), ZX_OK);
    assert_eq!(size, 4 * PAGE_SIZE, "size is rounded up to pages");
    assert_eq!(committed(&p, vmo), 0);
    // A write across a page boundary commits both pages.
    let data: Vec<u8> = (0..100).collect();
    assert_eq!(zx_vmo_write(&p, vmo, &data, PAGE_SIZE - 50), ZX_OK);
    assert_eq!(committed(&p, vmo), 2 * PAGE_SIZE);
    let mut back = vec![0u8; 100];
    assert_eq!(zx_vmo_read(&p, vmo, &mut back, PAGE_SIZE - 50), ZX_OK);
    assert_eq!(back, data);
    // Reading uncommitted pages gives zeros and commits nothing.
    let mut zeros = vec![1u8; 10];
    assert_eq!(zx_vmo_read(&p, vmo, &mut zeros, 3 * PAGE_SIZE), ZX_OK);
    assert_eq!(zeros, vec![0; 10]);
    assert_eq!(committed(&p, vmo), 2 * PAGE_SIZE);
    // Out of range.
    assert_eq!(
        zx_vmo_read(&p, vmo, &mut zeros, 4 * PAGE_SIZE - 5),
        ZX_ERR_OUT_OF_RANGE
    );
    assert_eq!(
        zx_vmo_write(&p, vmo, &data, u64::MAX - 10),
        ZX_ERR_OUT_OF_RANGE
    );
    // COMMIT rounds out; DECOMMIT wants alignment.
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, 3 * PAGE_SIZE + 5, 1, 0, 0),
        ZX_OK
    );
    assert_eq!(committed(&p, vmo), 3 * PAGE_SIZE);
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 5, PAGE_SIZE, 0, 0),
        ZX_ERR_INVALID_ARGS
    );
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, 8 * PAGE_SIZE, 0, 0),
        ZX_ERR_OUT_OF_RANGE
    );
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, 2 * PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(committed(&p, vmo), PAGE_SIZE);
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_LOCK, 0, PAGE_SIZE, 0, 0),
        ZX_ERR_NOT_SUPPORTED
    );
    assert_eq!(
        zx_vmo_op_range(&p, vmo, 5, 0, PAGE_SIZE, 0, 0),
        ZX_ERR_INVALID_ARGS
    );
    // Rights: COMMIT and DECOMMIT need WRITE; ZX_INFO_VMO needs no right (as in Zircon, which
    // reports the handle's rights in the record).
    let mut ro = 0;
    assert_eq!(zx_handle_duplicate(&p, vmo, ZX_RIGHT_READ, &mut ro), ZX_OK);
    assert_eq!(
        zx_vmo_op_range(&p, ro, ZX_VMO_OP_COMMIT, 0, PAGE_SIZE, 0, 0),
        ZX_ERR_ACCESS_DENIED
    );
    assert_eq!(
        zx_vmo_op_range(&p, ro, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0),
        ZX_ERR_ACCESS_DENIED
    );
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(&p, ro, &mut info), ZX_OK);
    assert_eq!(info.handle_rights, ZX_RIGHT_READ);
    // Too large.
    assert_eq!(zx_vmo_create(&p, u64::MAX, 0, &mut ro), ZX_ERR_OUT_OF_RANGE);
    assert_eq!(
        zx_vmo_create(&p, PAGE_SIZE, 1 << 20, &mut ro),
        ZX_ERR_INVALID_ARGS
    );
    drop(p);
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn commit_and_write_fail_whole_when_memory_runs_out() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&p, 8 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
    machine.set_allocation_budget(Some(3));
    let before = machine.frames_in_use();
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, 0, 8 * PAGE_SIZE, 0, 0),
        ZX_ERR_NO_MEMORY
    );
    assert_eq!(committed(&p, vmo), 0);
    assert_eq!(machine.frames_in_use(), before);
    machine.set_allocation_budget(Some(1));
    assert_eq!(
        zx_vmo_write(&p, vmo, &[1; 8], PAGE_SIZE - 4),
        ZX_ERR_NO_MEMORY
    );
    assert_eq!(committed(&p, vmo), 0);
    machine.set_allocation_budget(None);
    assert_eq!(zx_vmo_write(&p, vmo, &[1; 8], PAGE_SIZE - 4), ZX_OK);
    assert_eq!(committed(&p, vmo), 2 * PAGE_SIZE);
}

#[test]
fn map_rights_rules() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&p, 4 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
        let mut addr = 0;
        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;

        // The VMO handle needs ZX_RIGHT_MAP.
        let mut no_map = 0;
        assert_eq!(
            zx_handle_duplicate(&p, vmo, ZX_DEFAULT_VMO_RIGHTS & !ZX_RIGHT_MAP, &mut no_map),
            ZX_OK
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ,
                0,
                no_map,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_ACCESS_DENIED
        );
        // Each permission needs its right on the VMO handle...
        let mut ro_vmo = 0;
        assert_eq!(
            zx_handle_duplicate(
                &p,
                vmo,
                ZX_DEFAULT_VMO_RIGHTS & !ZX_RIGHT_WRITE,
                &mut ro_vmo
            ),
            ZX_OK
        );
        assert_eq!(
            zx_vmar_map(&p, root, rw, 0, ro_vmo, 0, PAGE_SIZE, &mut addr),
            ZX_ERR_ACCESS_DENIED
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ,
                0,
                ro_vmo,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_OK
        );
        // ...and a mapping made from it can never be made writable.
        assert_eq!(
            zx_vmar_protect(&p, root, rw, addr, PAGE_SIZE),
            ZX_ERR_ACCESS_DENIED
        );
        // ...and on the VMAR handle.
        let mut ro_root = 0;
        let root_rights = p.handle(root).unwrap().rights.bits();
        assert_eq!(
            zx_handle_duplicate(&p, root, root_rights & !ZX_RIGHT_WRITE, &mut ro_root),
            ZX_OK
        );
        assert_eq!(
            zx_vmar_map(&p, ro_root, rw, 0, vmo, 0, PAGE_SIZE, &mut addr),
            ZX_ERR_ACCESS_DENIED
        );
        assert_eq!(
            zx_vmar_protect(&p, ro_root, rw, addr, PAGE_SIZE),
            ZX_ERR_ACCESS_DENIED
        );
        // Execute needs EXECUTE, which a new VMO handle lacks.
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ | ZX_VM_PERM_EXECUTE,
                0,
                vmo,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_ACCESS_DENIED
        );
        // CAN_MAP flags are not for mappings; unknown bits and write-only are invalid.
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ | ZX_VM_CAN_MAP_READ,
                0,
                vmo,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_map(&p, root, 1 << 30, 0, vmo, 0, PAGE_SIZE, &mut addr),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_map(&p, root, ZX_VM_PERM_WRITE, 0, vmo, 0, PAGE_SIZE, &mut addr),
            ZX_ERR_INVALID_ARGS
        );
        // Length 0, unaligned offsets.
        assert_eq!(
            zx_vmar_map(&p, root, rw, 0, vmo, 0, 0, &mut addr),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_map(&p, root, rw, 0, vmo, 10, PAGE_SIZE, &mut addr),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                rw | ZX_VM_SPECIFIC,
                10,
                vmo,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_INVALID_ARGS
        );
        // Non-specific with an offset.
        assert_eq!(
            zx_vmar_map(&p, root, rw, PAGE_SIZE, vmo, 0, PAGE_SIZE, &mut addr),
            ZX_ERR_INVALID_ARGS
        );
        // Specific placement, overlap, overwrite.
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                rw | ZX_VM_SPECIFIC,
                0x10_0000,
                vmo,
                0,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_OK
        );
        assert_eq!(addr, USER_ASPACE_BASE + 0x10_0000);
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                rw | ZX_VM_SPECIFIC,
                0x10_1000,
                vmo,
                0,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_ALREADY_EXISTS
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                rw | ZX_VM_SPECIFIC_OVERWRITE,
                0x10_1000,
                vmo,
                2 * PAGE_SIZE,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_OK
        );
        assert_eq!(addr, USER_ASPACE_BASE + 0x10_1000);
        // Past the end of the VMAR.
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                rw | ZX_VM_SPECIFIC,
                USER_ASPACE_SIZE - PAGE_SIZE,
                vmo,
                0,
                2 * PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                rw | ZX_VM_SPECIFIC,
                !0xfff,
                vmo,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_INVALID_ARGS
        );
        let info_vmo = match p.handle(vmo).unwrap().object {
            KernelObject::Vmo(vmo) => vmo,
            KernelObject::Vmar(_) => unreachable!(),
        };
        // The read-only mapping, the specific one (split by the overwrite) and the overwriting one.
        assert_eq!(info_vmo.num_mappings(), 3, "{format:?}");
    }
}

#[test]
fn allocate_rules() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.root_vmar_handle();
    let (mut child, mut addr) = (0, 0);
    // A read-only region: its handle has READ but not WRITE.
    assert_eq!(
        zx_vmar_allocate(
            &p,
            root,
            ZX_VM_CAN_MAP_READ,
            0,
            16 * PAGE_SIZE,
            &mut child,
            &mut addr
        ),
        ZX_OK
    );
    let rights = p.handle(child).unwrap().rights.bits();
    assert_eq!(
        rights & (ZX_RIGHT_READ | ZX_RIGHT_WRITE | ZX_RIGHT_EXECUTE),
        ZX_RIGHT_READ
    );
    assert_ne!(rights & ZX_RIGHT_OP_CHILDREN, 0);
    // Its children cannot ask for more than it has.
    let (mut grandchild, mut gaddr) = (0, 0);
    assert_eq!(
        zx_vmar_allocate(
            &p,
            child,
            ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE,
            0,
            PAGE_SIZE,
            &mut grandchild,
            &mut gaddr
        ),
        ZX_ERR_ACCESS_DENIED
    );
    // No CAN_MAP_SPECIFIC: specific placement inside it is refused.
    assert_eq!(
        zx_vmar_allocate(
            &p,
            child,
            ZX_VM_CAN_MAP_READ | ZX_VM_SPECIFIC,
            0,
            PAGE_SIZE,
            &mut grandchild,
            &mut gaddr
        ),
        ZX_ERR_ACCESS_DENIED
    );
    assert_eq!(
        zx_vmar_allocate(
            &p,
            child,
            ZX_VM_CAN_MAP_READ,
            0,
            17 * PAGE_SIZE,
            &mut grandchild,
            &mut gaddr
        ),
        // Larger than the 16-page parent: Zircon answers INVALID_ARGS before any search.
        ZX_ERR_INVALID_ARGS
    );
    assert_eq!(
        zx_vmar_allocate(
            &p,
            child,
            ZX_VM_CAN_MAP_READ,
            0,
            0,
            &mut grandchild,
            &mut gaddr
        ),
        ZX_ERR_INVALID_ARGS
    );
    // Specific placement in the root; overlap is refused.
    assert_eq!(
        zx_vmar_allocate(
            &p,
            root,
            ZX_VM_CAN_MAP_READ | ZX_VM_SPECIFIC,
            0x4000_0000,
            PAGE_SIZE,
            &mut grandchild,
            &mut gaddr
        ),
        ZX_OK
    );
    assert_eq!(gaddr, USER_ASPACE_BASE + 0x4000_0000);
    assert_eq!(
        zx_vmar_allocate(
            &p,
            root,
            ZX_VM_CAN_MAP_READ | ZX_VM_SPECIFIC,
            0x4000_0000,
            PAGE_SIZE,
            &mut grandchild,
            &mut gaddr
        ),
        ZX_ERR_ALREADY_EXISTS
    );
    // Asking for write through a handle without WRITE.
    let mut ro_root = 0;
    let root_rights = p.handle(root).unwrap().rights.bits();
    assert_eq!(
        zx_handle_duplicate(&p, root, root_rights & !ZX_RIGHT_WRITE, &mut ro_root),
        ZX_OK
    );
    assert_eq!(
        zx_vmar_allocate(
            &p,
            ro_root,
            ZX_VM_CAN_MAP_WRITE,
            0,
            PAGE_SIZE,
            &mut grandchild,
            &mut gaddr
        ),
        ZX_ERR_ACCESS_DENIED
    );
}

#[test]
fn unmap_protect_destroy() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 8);
        let addr = map_rw(&p, root, vmo, 0, 8);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        for page in 0..8 {
            assert_eq!(cpu.load(addr + page * PAGE_SIZE).unwrap(), pattern(page, 0));
        }
        // Unmap the middle: the mapping splits; the VMO keeps its pages.
        assert_eq!(
            zx_vmar_unmap(&p, root, addr + 2 * PAGE_SIZE, 3 * PAGE_SIZE),
            ZX_OK
        );
        assert!(cpu.load(addr + 2 * PAGE_SIZE).is_err(), "{format:?}");
        assert!(cpu.load(addr + 4 * PAGE_SIZE).is_err(), "{format:?}");
        assert_eq!(cpu.load(addr + 5 * PAGE_SIZE).unwrap(), pattern(5, 0));
        assert_eq!(cpu.load(addr + PAGE_SIZE).unwrap(), pattern(1, 0));
        assert_eq!(committed(&p, vmo), 8 * PAGE_SIZE);
        // DECOMMIT over the hole is refused; over each piece it works.
        assert_eq!(
            zx_vmar_op_range(&p, root, ZX_VMAR_OP_DECOMMIT, addr, 8 * PAGE_SIZE, 0, 0),
            ZX_ERR_BAD_STATE
        );
        assert_eq!(
            zx_vmar_op_range(
                &p,
                root,
                ZX_VMAR_OP_DECOMMIT,
                addr + 5 * PAGE_SIZE,
                PAGE_SIZE,
                0,
                0
            ),
            ZX_OK
        );
        assert_eq!(cpu.load(addr + 5 * PAGE_SIZE).unwrap(), 0);
        assert_eq!(first_words(&p, vmo, 8)[5], 0);
        assert_eq!(
            first_words(&p, vmo, 8)[2],
            pattern(2, 0),
            "unmapped pages stay in the VMO"
        );
        // Protect over the hole: NOT_FOUND. Bad arguments: INVALID_ARGS.
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_PERM_READ, addr, 8 * PAGE_SIZE),
            ZX_ERR_NOT_FOUND
        );
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_PERM_READ, addr + 1, PAGE_SIZE),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_PERM_READ, addr, 0),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_SPECIFIC, addr, PAGE_SIZE),
            ZX_ERR_INVALID_ARGS
        );
        // Protect part of a piece read-only: stores there fault, next to it they work.
        assert_eq!(
            zx_vmar_protect(&p, root, ZX_VM_PERM_READ, addr, PAGE_SIZE),
            ZX_OK
        );
        assert!(cpu.store(addr, 1).is_err());
        cpu.store(addr + PAGE_SIZE, 1).unwrap();
        // Unmap argument errors.
        assert_eq!(
            zx_vmar_unmap(&p, root, addr + 1, PAGE_SIZE),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(zx_vmar_unmap(&p, root, addr, 0), ZX_ERR_INVALID_ARGS);
        assert_eq!(zx_vmar_unmap(&p, root, 0, PAGE_SIZE), ZX_ERR_INVALID_ARGS);
        // A sub-VMAR: unmapping part of it from the parent is refused; destroying it unmaps.
        let (child, child_addr) = sub_vmar(&p, root, 4 * PAGE_SIZE);
        let in_child = map_rw(&p, child, vmo, 0, 2);
        assert_eq!(cpu.load(in_child).unwrap(), pattern(0, 0));
        assert_eq!(
            zx_vmar_unmap(&p, root, child_addr, PAGE_SIZE),
            ZX_ERR_INVALID_ARGS
        );
        let mut no_children = 0;
        let rights = p.handle(child).unwrap().rights.bits();
        assert_eq!(
            zx_handle_duplicate(&p, child, rights & !ZX_RIGHT_OP_CHILDREN, &mut no_children),
            ZX_OK
        );
        assert_eq!(zx_vmar_destroy(&p, no_children), ZX_ERR_ACCESS_DENIED);
        assert_eq!(zx_vmar_destroy(&p, child), ZX_OK);
        assert!(cpu.load(in_child).is_err(), "{format:?}");
        assert_eq!(zx_vmar_destroy(&p, child), ZX_ERR_BAD_STATE);
        let mut out = 0;
        assert_eq!(
            zx_vmar_map(&p, child, ZX_VM_PERM_READ, 0, vmo, 0, PAGE_SIZE, &mut out),
            ZX_ERR_BAD_STATE
        );
        assert_eq!(
            zx_vmar_unmap(&p, child, child_addr, PAGE_SIZE),
            ZX_ERR_BAD_STATE
        );
        // The freed range is reusable.
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ | ZX_VM_SPECIFIC,
                child_addr - USER_ASPACE_BASE,
                vmo,
                0,
                PAGE_SIZE,
                &mut out
            ),
            ZX_OK
        );
        // Unmapping a range with a sub-VMAR wholly inside destroys it.
        let (inner, inner_addr) = sub_vmar(&p, root, 2 * PAGE_SIZE);
        assert_eq!(zx_vmar_unmap(&p, root, inner_addr, 2 * PAGE_SIZE), ZX_OK);
        assert_eq!(
            zx_vmar_unmap(&p, inner, inner_addr, PAGE_SIZE),
            ZX_ERR_BAD_STATE
        );
        cpu.switch_to(None);
        drop(p);
        assert_eq!(machine.frames_in_use(), 0, "{format:?}");
    }
}

#[test]
fn pinned_pages_stay() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let vmo = patterned_vmo(&p, 4);
    let object = match p.handle(vmo).unwrap().object {
        KernelObject::Vmo(vmo) => vmo,
        KernelObject::Vmar(_) => unreachable!(),
    };
    assert_eq!(object.pin(PAGE_SIZE, PAGE_SIZE), Ok(()));
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, 4 * PAGE_SIZE, 0, 0),
        ZX_ERR_BAD_STATE
    );
    assert_eq!(committed(&p, vmo), 4 * PAGE_SIZE);
    assert_eq!(object.unpin(PAGE_SIZE, PAGE_SIZE), Ok(()));
    assert_eq!(object.unpin(PAGE_SIZE, PAGE_SIZE), Err(Status::BadState));
    assert_eq!(
        zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, 4 * PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(committed(&p, vmo), 0);
}

#[test]
fn contiguous_and_physical_vmos() {
    let machine = machine(1);
    let platform: Arc<dyn Platform> = machine.clone();
    let p = process(&machine, Format::NATIVE);
    let contiguous = Vmo::create_contiguous(platform.clone(), 4 * PAGE_SIZE).unwrap();
    assert_eq!(contiguous.committed_bytes(), 4 * PAGE_SIZE);
    let handle = p
        .add_handle(
            KernelObject::Vmo(contiguous),
            Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
        )
        .unwrap();
    assert_eq!(zx_vmo_write(&p, handle, &[7; 16], 100), ZX_OK);
    let addr = map_rw(&p, p.root_vmar_handle(), handle, 0, 4);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    assert_eq!(cpu.load(addr + 96).unwrap(), 0x0707_0707_0000_0000);
    // The four frames are consecutive.
    let frames: Vec<u64> = (0..4)
        .map(|i| {
            cpu.load(addr + i * PAGE_SIZE).unwrap();
            p.aspace().query(addr + i * PAGE_SIZE).unwrap().0 .0
        })
        .collect();
    assert!(
        frames.windows(2).all(|w| w[1] == w[0] + PAGE_SIZE),
        "{frames:x?}"
    );
    assert_eq!(
        zx_vmo_op_range(&p, handle, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0),
        ZX_ERR_NOT_SUPPORTED
    );
    let physical =
        Vmo::create_physical(platform, zx_vm::PhysAddr(0x100_0000), 2 * PAGE_SIZE).unwrap();
    assert_eq!(physical.committed_bytes(), 0);
    let handle = p
        .add_handle(
            KernelObject::Vmo(physical),
            Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
        )
        .unwrap();
    assert_eq!(zx_vmo_write(&p, handle, &[1], 0), ZX_ERR_NOT_SUPPORTED);
    assert_eq!(
        zx_vmo_op_range(&p, handle, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0),
        ZX_ERR_NOT_SUPPORTED
    );
    cpu.switch_to(None);
    drop(p);
    assert_eq!(
        machine.frames_in_use(),
        0,
        "the contiguous frames went back"
    );
}

#[test]
fn map_range_maps_committed_pages_or_nothing() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 4);
        assert_eq!(
            zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, PAGE_SIZE, PAGE_SIZE, 0, 0),
            ZX_OK
        );
        let mut addr = 0;
        let options = ZX_VM_PERM_READ | ZX_VM_MAP_RANGE;
        assert_eq!(
            zx_vmar_map(&p, root, options, 0, vmo, 0, 4 * PAGE_SIZE, &mut addr),
            ZX_OK
        );
        let mapped: Vec<bool> = (0..4)
            .map(|i| p.aspace().query(addr + i * PAGE_SIZE).is_some())
            .collect();
        assert_eq!(
            mapped,
            [true, false, true, true],
            "{format:?}: only committed pages are mapped"
        );

        // With no frame for a page table, the mapping is not made at all.
        let tables = p.aspace().page_table_pages();
        machine.set_allocation_budget(Some(0));
        let mut other = 0;
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                options | ZX_VM_SPECIFIC,
                0x4000_0000,
                vmo,
                0,
                4 * PAGE_SIZE,
                &mut other
            ),
            ZX_ERR_NO_MEMORY
        );
        machine.set_allocation_budget(None);
        assert_eq!(p.aspace().page_table_pages(), tables);
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ | ZX_VM_SPECIFIC,
                0x4000_0000,
                vmo,
                0,
                PAGE_SIZE,
                &mut other
            ),
            ZX_OK,
            "{format:?}: the failed map left nothing behind"
        );
        drop(p);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

/// Gaps mutation testing found: `zx_vmo_op_range` refuses a buffer or a buffer size alone
/// (INVALID_ARGS, nothing committed), `ZX_VMO_DISCARDABLE` is NOT_SUPPORTED rather than
/// INVALID_ARGS (and `ZX_VMO_RESIZABLE` is fine), and `zx_vmar_map` refuses each `ZX_VM_CAN_MAP_*` bit.
#[test]
fn refusals_mutation_testing_asked_for() {
    let machine = common::machine(1);
    let p = common::process(&machine, Format::X86_64);
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&p, 4 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
    for (buffer, buffer_size) in [(0x1000, 0), (0, 8), (0x1000, 8)] {
        assert_eq!(
            zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, 0, PAGE_SIZE, buffer, buffer_size),
            ZX_ERR_INVALID_ARGS,
            "buffer {buffer:#x}, size {buffer_size}"
        );
    }
    assert_eq!(common::committed(&p, vmo), 0);
    let mut other = 0;
    assert_eq!(
        zx_vmo_create(&p, PAGE_SIZE, ZX_VMO_RESIZABLE, &mut other),
        ZX_OK
    );
    assert_eq!(
        zx_vmo_create(&p, PAGE_SIZE, ZX_VMO_DISCARDABLE, &mut other),
        ZX_ERR_NOT_SUPPORTED
    );
    assert_eq!(
        zx_vmo_create(
            &p,
            PAGE_SIZE,
            ZX_VMO_RESIZABLE | ZX_VMO_DISCARDABLE,
            &mut other
        ),
        ZX_ERR_NOT_SUPPORTED
    );
    let root = p.root_vmar_handle();
    for can_map in [
        ZX_VM_CAN_MAP_READ,
        ZX_VM_CAN_MAP_WRITE,
        ZX_VM_CAN_MAP_EXECUTE,
        ZX_VM_CAN_MAP_SPECIFIC,
    ] {
        let mut addr = 0;
        assert_eq!(
            zx_vmar_map(
                &p,
                root,
                ZX_VM_PERM_READ | can_map,
                0,
                vmo,
                0,
                PAGE_SIZE,
                &mut addr
            ),
            ZX_ERR_INVALID_ARGS,
            "{can_map:#x}"
        );
    }
    // Refused before the rights are looked at: a VMO handle without READ still gets INVALID_ARGS.
    let mut map_only = 0;
    assert_eq!(
        zx_handle_duplicate(&p, vmo, ZX_RIGHT_MAP, &mut map_only),
        ZX_OK
    );
    let mut addr = 0;
    assert_eq!(
        zx_vmar_map(
            &p,
            root,
            ZX_VM_PERM_READ | ZX_VM_CAN_MAP_READ,
            0,
            map_only,
            0,
            PAGE_SIZE,
            &mut addr
        ),
        ZX_ERR_INVALID_ARGS
    );
}
