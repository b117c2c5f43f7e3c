//! No syscall argument can make the crate panic, and a call that fails changes nothing: a grid of
//! extreme values (addresses and sizes near `u64::MAX`, zero, unaligned, unknown ops, closed and
//! wrong-type handles) through `zx_vmar_op_range` and its neighbours, on both formats.

mod common;

use common::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::syscall::*;
use zx_vm::vmar::{USER_ASPACE_BASE, USER_ASPACE_SIZE};

const ADDRESSES: &[u64] = &[
    0,
    1,
    0xfff,
    PAGE_SIZE,
    USER_ASPACE_BASE - PAGE_SIZE,
    USER_ASPACE_BASE,
    USER_ASPACE_BASE + 1,
    USER_ASPACE_BASE + USER_ASPACE_SIZE - PAGE_SIZE,
    USER_ASPACE_BASE + USER_ASPACE_SIZE,
    1 << 47,
    1 << 63,
    !0xfff,
    u64::MAX - 1,
    u64::MAX,
];

const SIZES: &[u64] = &[
    0,
    1,
    PAGE_SIZE - 1,
    PAGE_SIZE,
    PAGE_SIZE + 1,
    4 * PAGE_SIZE,
    1 << 40,
    1 << 63,
    u64::MAX - PAGE_SIZE,
    u64::MAX - PAGE_SIZE + 1,
    u64::MAX - 100,
    u64::MAX,
];

/// Calls `f`, turning a panic into a test failure that names the arguments.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(_) => panic!("panicked on {what}"),
    }
}

#[test]
fn vmar_op_range_never_panics_and_fails_cleanly() {
    let contract = [
        ZX_OK,
        ZX_ERR_ACCESS_DENIED,
        ZX_ERR_BAD_HANDLE,
        ZX_ERR_BAD_STATE,
        ZX_ERR_INVALID_ARGS,
        ZX_ERR_NOT_SUPPORTED,
        ZX_ERR_OUT_OF_RANGE,
        ZX_ERR_WRONG_TYPE,
    ];
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 4);
        let addr = map_rw(&p, root, vmo, 0, 4);
        let (sub, _) = sub_vmar(&p, root, 16 * PAGE_SIZE);
        let (dead, _) = sub_vmar(&p, root, 16 * PAGE_SIZE);
        assert_eq!(zx_vmar_destroy(&p, dead), ZX_OK);
        let mut ro_root = 0;
        let rights = p.handle(root).unwrap().rights.bits();
        assert_eq!(
            zx_handle_duplicate(&p, root, rights & !ZX_RIGHT_WRITE, &mut ro_root),
            ZX_OK
        );
        let mut closed = 0;
        assert_eq!(
            zx_handle_duplicate(&p, root, ZX_RIGHT_SAME_RIGHTS, &mut closed),
            ZX_OK
        );
        assert_eq!(zx_handle_close(&p, closed), ZX_OK);
        let handles = [
            root,
            sub,
            dead,
            ro_root,
            vmo,
            closed,
            ZX_HANDLE_INVALID,
            u32::MAX,
        ];
        let ops = [0, 1, ZX_VMAR_OP_DECOMMIT, 3, 5, 14, 15, u32::MAX];
        let addresses: Vec<u64> = ADDRESSES
            .iter()
            .copied()
            .chain([addr, addr + PAGE_SIZE, addr + 3])
            .collect();
        let mut calls = 0u64;
        let mut successes = 0u64;
        for &handle in &handles {
            for &op in &ops {
                for &address in &addresses {
                    for &size in SIZES {
                        for (buffer, buffer_size) in
                            [(0, 0), (1, 0), (0, 1), (u64::MAX, usize::MAX)]
                        {
                            let what = format!(
                                "{format:?} handle={handle:#x} op={op} address={address:#x} size={size:#x} buffer={buffer:#x}/{buffer_size}"
                            );
                            let before = machine.counters();
                            let status = no_panic(&what, || {
                                zx_vmar_op_range(&p, handle, op, address, size, buffer, buffer_size)
                            });
                            calls += 1;
                            assert!(
                                contract.contains(&status),
                                "{what}: {}",
                                status_name(status)
                            );
                            if status == ZX_OK {
                                successes += 1;
                                // Put the pages back for the next call.
                                assert_eq!(zx_vmo_write(&p, vmo, &[0xa5; 8], 0), ZX_OK);
                                assert_eq!(
                                    zx_vmo_op_range(
                                        &p,
                                        vmo,
                                        ZX_VMO_OP_COMMIT,
                                        0,
                                        4 * PAGE_SIZE,
                                        0,
                                        0
                                    ),
                                    ZX_OK
                                );
                            } else {
                                let delta = machine.counters().since(&before);
                                assert_eq!(
                                    delta.frames_freed, 0,
                                    "{what}: a failed call freed frames"
                                );
                                assert_eq!(delta.shootdowns, 0, "{what}: a failed call flushed");
                                assert_eq!(committed(&p, vmo), 4 * PAGE_SIZE, "{what}");
                            }
                        }
                    }
                }
            }
        }
        assert!(calls > 10_000);
        assert!(successes > 0, "the grid includes valid decommits");
        drop(p);
        assert_eq!(machine.frames_in_use(), 0, "{format:?}");
    }
}

#[test]
fn neighbours_never_panic() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let vmo = patterned_vmo(&p, 2);
        let options = [
            0,
            ZX_VM_PERM_READ,
            ZX_VM_PERM_READ | ZX_VM_PERM_WRITE,
            ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC,
            ZX_VM_PERM_READ | ZX_VM_SPECIFIC_OVERWRITE,
            ZX_VM_PERM_READ | ZX_VM_MAP_RANGE,
            ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE,
            ZX_VM_CAN_MAP_READ | ZX_VM_SPECIFIC,
            u32::MAX,
        ];
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        for &option in &options {
            for &offset in ADDRESSES {
                for &size in SIZES {
                    let what =
                        format!("{format:?} options={option:#x} offset={offset:#x} size={size:#x}");
                    no_panic(&what, || {
                        let mut out = 0;
                        let status =
                            zx_vmar_map(&p, root, option, offset, vmo, offset, size, &mut out);
                        if status == ZX_OK {
                            // A mapping that worked must be usable and removable.
                            let _ = cpu.load(out);
                            assert_eq!(zx_vmar_unmap(&p, root, out, size), ZX_OK, "{what}");
                        }
                        let (mut child, mut child_addr) = (0, 0);
                        if zx_vmar_allocate(
                            &p,
                            root,
                            option,
                            offset,
                            size,
                            &mut child,
                            &mut child_addr,
                        ) == ZX_OK
                        {
                            assert_eq!(zx_vmar_destroy(&p, child), ZX_OK, "{what}");
                            assert_eq!(zx_handle_close(&p, child), ZX_OK);
                        }
                        let _ = zx_vmar_protect(&p, root, option, offset, size);
                        let _ = zx_vmar_unmap(&p, root, offset, size);
                        let mut buffer = [0u8; 16];
                        let _ = zx_vmo_read(&p, vmo, &mut buffer, offset);
                        let _ = zx_vmo_write(&p, vmo, &buffer, offset);
                        let _ = zx_vmo_op_range(&p, vmo, option, offset, size, 0, 0);
                        let _ = zx_vmo_op_range(&p, vmo, ZX_VMO_OP_COMMIT, offset, size, 0, 0);
                        let _ = zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, offset, size, 0, 0);
                        let mut handle = 0;
                        if zx_vmo_create(&p, size, option, &mut handle) == ZX_OK {
                            assert_eq!(zx_handle_close(&p, handle), ZX_OK);
                        }
                        if zx_handle_duplicate(&p, root, option, &mut handle) == ZX_OK {
                            assert_eq!(zx_handle_close(&p, handle), ZX_OK);
                        }
                    });
                }
            }
        }
        assert!(
            p.handle(root).is_ok(),
            "the grid never closed the root handle"
        );
        cpu.switch_to(None);
        drop(p);
        assert_eq!(machine.frames_in_use(), 0, "{format:?}");
    }
}
