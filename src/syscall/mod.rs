//! The syscalls, with Zircon's names, arguments and rights rules.
//!
//! Each function takes the calling [`Process`] first and then Zircon's arguments in Zircon's
//! order; a C out-pointer becomes a `&mut`, written only on success; a user buffer that this crate
//! never dereferences (`zx_vmar_op_range`'s) stays an integer address. Every function returns a
//! raw `zx_status_t` and no argument value can make one panic.

use crate::abi::*;
use crate::object::{Handle, KernelObject, Process};
use crate::vmar::{perms_needing_can_map, rights_for_perms, valid_perms};
use crate::vmo::Vmo;

/// Runs `f` and turns its result into a status, writing `out` only on success.
fn with_out<T>(out: &mut T, f: impl FnOnce() -> ZxResult<T>) -> zx_status_t {
    match f() {
        Ok(value) => {
            *out = value;
            ZX_OK
        }
        Err(status) => status.into_raw(),
    }
}

fn require(rights: Rights, needed: Rights) -> ZxResult {
    if rights.contains(needed) {
        Ok(())
    } else {
        Err(Status::AccessDenied)
    }
}

/// `zx_vmar_op_range`: performs `op` on the VMOs mapped in `[address, address + size)`.
///
/// Checks run in the contract's order (see `docs/contract.md`), all before anything changes.
pub fn zx_vmar_op_range(
    process: &Process,
    handle: zx_handle_t,
    op: u32,
    address: zx_vaddr_t,
    size: u64,
    buffer: zx_vaddr_t,
    buffer_size: usize,
) -> zx_status_t {
    to_status((|| {
        // 1. The handle names a VMAR.
        let (vmar, rights) = process.vmar(handle)?;
        // 2. The buffer is empty.
        if buffer != 0 || buffer_size != 0 {
            return Err(Status::InvalidArgs);
        }
        // 3. The op is defined, and supported.
        if !is_defined_vmo_op(op) {
            return Err(Status::InvalidArgs);
        }
        if op != ZX_VMAR_OP_DECOMMIT {
            return Err(Status::NotSupported);
        }
        // 4. The handle may write.
        require(rights, Rights::WRITE)?;
        // 5-10 and the effect.
        vmar.decommit(address, size)
    })())
}

/// `zx_vmo_create`: a paged VMO of `size` bytes. `options` may be 0 or `ZX_VMO_RESIZABLE` (a VMO
/// whose handle also gets `ZX_RIGHT_RESIZE`, for [`zx_vmo_set_size`]); `ZX_VMO_DISCARDABLE` is not
/// supported by this crate.
pub fn zx_vmo_create(
    process: &Process,
    size: u64,
    options: u32,
    out: &mut zx_handle_t,
) -> zx_status_t {
    with_out(out, || {
        if options & !(ZX_VMO_RESIZABLE | ZX_VMO_DISCARDABLE) != 0 {
            return Err(Status::InvalidArgs);
        }
        if options & ZX_VMO_DISCARDABLE != 0 {
            return Err(Status::NotSupported);
        }
        let mut rights = Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
        let vmo = if options & ZX_VMO_RESIZABLE != 0 {
            rights |= Rights::RESIZE;
            Vmo::create_resizable(process.platform().clone(), size)?
        } else {
            Vmo::create(process.platform().clone(), size)?
        };
        process.add_handle(KernelObject::Vmo(vmo), rights)
    })
}

/// `zx_vmo_create_child`: a child of the VMO `handle` names ([`Vmo::create_snapshot`],
/// [`Vmo::create_slice`], [`Vmo::create_reference`]), with Zircon's checks in Zircon's order:
/// the size rounded up to a page (`ZX_ERR_OUT_OF_RANGE` past [`crate::vmo::MAX_VMO_SIZE`]),
/// `NO_WRITE` with `RESIZABLE` (`ZX_ERR_INVALID_ARGS`), the handle (`ZX_RIGHT_DUPLICATE` and
/// `ZX_RIGHT_READ`), the options (one kind; a slice takes no other option, a reference only
/// `RESIZABLE`), then the kind's own checks.
///
/// The child's handle has the parent handle's rights without `ZX_RIGHT_RESIZE`, plus
/// `GET_PROPERTY` and `SET_PROPERTY`, plus `RESIZE` with `ZX_VMO_CHILD_RESIZABLE`; a snapshot's
/// also gains `WRITE` and loses `EXECUTE`, unless `ZX_VMO_CHILD_NO_WRITE`, which takes `WRITE`
/// away (and keeps `EXECUTE`) for every kind.
pub fn zx_vmo_create_child(
    process: &Process,
    handle: zx_handle_t,
    options: u32,
    offset: u64,
    size: u64,
    out: &mut zx_handle_t,
) -> zx_status_t {
    with_out(out, || {
        let size = page_round_up(size)
            .filter(|&size| size <= crate::vmo::MAX_VMO_SIZE)
            .ok_or(Status::OutOfRange)?;
        let no_write = options & ZX_VMO_CHILD_NO_WRITE != 0;
        let resizable = options & ZX_VMO_CHILD_RESIZABLE != 0;
        if no_write && resizable {
            return Err(Status::InvalidArgs);
        }
        let (vmo, rights) = process.vmo(handle)?;
        require(rights, Rights::DUPLICATE | Rights::READ)?;
        let kind = options & !ZX_VMO_CHILD_NO_WRITE;
        let snapshot = [
            ZX_VMO_CHILD_SNAPSHOT,
            ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
            ZX_VMO_CHILD_SNAPSHOT_MODIFIED,
        ]
        .into_iter()
        .find(|&bit| kind & bit != 0);
        let mut child_rights =
            (rights - Rights::RESIZE) | Rights::GET_PROPERTY | Rights::SET_PROPERTY;
        let child = if kind == ZX_VMO_CHILD_SLICE {
            vmo.create_slice(offset, size)?
        } else if kind & ZX_VMO_CHILD_REFERENCE != 0 {
            if kind & !(ZX_VMO_CHILD_REFERENCE | ZX_VMO_CHILD_RESIZABLE) != 0 {
                return Err(Status::InvalidArgs);
            }
            if offset != 0 || size != 0 {
                return Err(Status::InvalidArgs);
            }
            vmo.create_reference(resizable)?
        } else if let Some(bit) = snapshot {
            if kind & !(bit | ZX_VMO_CHILD_RESIZABLE) != 0 {
                return Err(Status::InvalidArgs);
            }
            if !no_write {
                // A writable copy: never executable through this handle (Zircon's rule).
                child_rights = (child_rights | Rights::WRITE) - Rights::EXECUTE;
            }
            vmo.create_snapshot(offset, size, resizable)?
        } else {
            return Err(Status::InvalidArgs);
        };
        if resizable {
            child_rights |= Rights::RESIZE;
        }
        if no_write {
            child_rights -= Rights::WRITE;
        }
        process.add_handle(KernelObject::Vmo(child), child_rights)
    })
}

/// `zx_vmo_set_size`: needs `ZX_RIGHT_WRITE`, and `ZX_RIGHT_RESIZE` when the VMO is resizable (a
/// VMO that is not answers `ZX_ERR_UNAVAILABLE` whatever the handle's rights, as in Zircon).
/// The rest is [`Vmo::set_size`].
pub fn zx_vmo_set_size(process: &Process, handle: zx_handle_t, size: u64) -> zx_status_t {
    to_status((|| {
        let (vmo, rights) = process.vmo(handle)?;
        require(rights, Rights::WRITE)?;
        if vmo.is_resizable() {
            require(rights, Rights::RESIZE)?;
        }
        vmo.set_size(size)
    })())
}

/// `zx_vmo_read`: reads `buffer.len()` bytes at `offset`. Needs `ZX_RIGHT_READ`.
pub fn zx_vmo_read(
    process: &Process,
    handle: zx_handle_t,
    buffer: &mut [u8],
    offset: u64,
) -> zx_status_t {
    to_status((|| {
        let (vmo, rights) = process.vmo(handle)?;
        require(rights, Rights::READ)?;
        vmo.read(offset, buffer)
    })())
}

/// `zx_vmo_write`: writes `buffer` at `offset`. Needs `ZX_RIGHT_WRITE`.
pub fn zx_vmo_write(
    process: &Process,
    handle: zx_handle_t,
    buffer: &[u8],
    offset: u64,
) -> zx_status_t {
    to_status((|| {
        let (vmo, rights) = process.vmo(handle)?;
        require(rights, Rights::WRITE)?;
        vmo.write(offset, buffer)
    })())
}

/// `zx_vmo_op_range`: `ZX_VMO_OP_COMMIT`, `ZX_VMO_OP_DECOMMIT` and `ZX_VMO_OP_ZERO` (each
/// needs `ZX_RIGHT_WRITE`). Other defined ops are `ZX_ERR_NOT_SUPPORTED`; undefined ones
/// `ZX_ERR_INVALID_ARGS`. DECOMMIT needs a page-aligned range; COMMIT rounds its range out to
/// pages; ZERO takes any byte range inside the VMO ([`Vmo::zero`]).
pub fn zx_vmo_op_range(
    process: &Process,
    handle: zx_handle_t,
    op: u32,
    offset: u64,
    size: u64,
    buffer: zx_vaddr_t,
    buffer_size: usize,
) -> zx_status_t {
    to_status((|| {
        let (vmo, rights) = process.vmo(handle)?;
        if buffer != 0 || buffer_size != 0 {
            return Err(Status::InvalidArgs);
        }
        match op {
            ZX_VMO_OP_COMMIT => {
                require(rights, Rights::WRITE)?;
                vmo.commit(offset, size)
            }
            ZX_VMO_OP_DECOMMIT => {
                require(rights, Rights::WRITE)?;
                vmo.decommit(offset, size)
            }
            ZX_VMO_OP_ZERO => {
                require(rights, Rights::WRITE)?;
                vmo.zero(offset, size)
            }
            op if is_defined_vmo_op(op) => Err(Status::NotSupported),
            _ => Err(Status::InvalidArgs),
        }
    })())
}

/// `zx_vmo_get_size`.
pub fn zx_vmo_get_size(process: &Process, handle: zx_handle_t, size: &mut u64) -> zx_status_t {
    with_out(size, || Ok(process.vmo(handle)?.0.size()))
}

/// `zx_object_get_info(handle, ZX_INFO_VMO, ...)` with a typed record: [`zx_object_get_info`]
/// for one topic.
pub fn zx_object_get_info_vmo(
    process: &Process,
    handle: zx_handle_t,
    info: &mut zx_info_vmo_t,
) -> zx_status_t {
    with_out(info, || {
        let (vmo, rights) = process.vmo(handle)?;
        Ok(vmo.info(rights.bits()))
    })
}

/// `zx_object_get_info`: one record about the object `handle` names, written into `buffer` as
/// Zircon lays it out.
///
/// - `ZX_INFO_HANDLE_BASIC` ([`zx_info_handle_basic_t`]): any handle, no right needed.
/// - `ZX_INFO_VMAR` ([`zx_info_vmar_t`]): a VMAR handle with `ZX_RIGHT_INSPECT`.
/// - `ZX_INFO_VMO` ([`zx_info_vmo_t`], the V1 layout): a VMO handle, no right needed (the
///   record carries the handle's rights).
///
/// As Zircon: the topic is looked at first (another topic is `ZX_ERR_NOT_SUPPORTED`, whatever
/// the handle), then the handle (`ZX_ERR_BAD_HANDLE`), its object's type (`ZX_ERR_WRONG_TYPE`)
/// and its rights (`ZX_ERR_ACCESS_DENIED`). These topics hold one record: `avail` is 1, and `actual` 1 when
/// `buffer` holds a whole record, else 0 with `ZX_ERR_BUFFER_TOO_SMALL` (both are written then
/// too, so a caller learns the size it needs).
pub fn zx_object_get_info(
    process: &Process,
    handle: zx_handle_t,
    topic: u32,
    buffer: &mut [u8],
    actual: &mut usize,
    avail: &mut usize,
) -> zx_status_t {
    let record = (|| {
        if !matches!(topic, ZX_INFO_HANDLE_BASIC | ZX_INFO_VMAR | ZX_INFO_VMO) {
            return Err(Status::NotSupported);
        }
        let handle = process.handle(handle)?;
        let rights = handle.rights;
        Ok(match (topic, handle.object) {
            (ZX_INFO_HANDLE_BASIC, object) => {
                let type_ = match object {
                    KernelObject::Vmo(_) => ZX_OBJ_TYPE_VMO,
                    KernelObject::Vmar(_) => ZX_OBJ_TYPE_VMAR,
                };
                InfoRecord::HandleBasic(zx_info_handle_basic_t {
                    koid: object.koid(),
                    rights: rights.bits(),
                    type_,
                    ..Default::default()
                })
            }
            (ZX_INFO_VMAR, KernelObject::Vmar(vmar)) => {
                require(rights, Rights::INSPECT)?;
                InfoRecord::Vmar(zx_info_vmar_t {
                    base: vmar.base(),
                    len: vmar.size(),
                })
            }
            (ZX_INFO_VMO, KernelObject::Vmo(vmo)) => InfoRecord::Vmo(vmo.info(rights.bits())),
            (ZX_INFO_VMAR | ZX_INFO_VMO, _) => return Err(Status::WrongType),
            _ => return Err(Status::NotSupported),
        })
    })();
    let record = match record {
        Ok(record) => record,
        Err(status) => return status.into_raw(),
    };
    let bytes = record.bytes();
    *avail = 1;
    if buffer.len() < bytes.len() {
        *actual = 0;
        return ZX_ERR_BUFFER_TOO_SMALL;
    }
    buffer[..bytes.len()].copy_from_slice(bytes);
    *actual = 1;
    ZX_OK
}

/// One `zx_object_get_info` record.
enum InfoRecord {
    HandleBasic(zx_info_handle_basic_t),
    Vmar(zx_info_vmar_t),
    Vmo(zx_info_vmo_t),
}

impl InfoRecord {
    /// The record's bytes, as the C struct lays them out.
    fn bytes(&self) -> &[u8] {
        fn as_bytes<T: Copy>(value: &T) -> &[u8] {
            // SAFETY: only called with the `#[repr(C)]` info structs, whose every byte is
            // initialised: their explicit padding fields fill every gap (their sizes are
            // checked against Zircon's in abi.rs), and `u8` has no invalid values.
            unsafe {
                core::slice::from_raw_parts(
                    value as *const T as *const u8,
                    core::mem::size_of::<T>(),
                )
            }
        }
        match self {
            InfoRecord::HandleBasic(info) => as_bytes(info),
            InfoRecord::Vmar(info) => as_bytes(info),
            InfoRecord::Vmo(info) => as_bytes(info),
        }
    }
}

/// `zx_vmar_allocate`: a sub-VMAR of `parent`. Each `ZX_VM_CAN_MAP_*` asked for needs the
/// matching right on `parent`; the new handle has `ZX_DEFAULT_VMAR_RIGHTS` plus those rights.
pub fn zx_vmar_allocate(
    process: &Process,
    parent: zx_handle_t,
    options: zx_vm_option_t,
    offset: u64,
    size: u64,
    child_vmar: &mut zx_handle_t,
    child_addr: &mut zx_vaddr_t,
) -> zx_status_t {
    let mut out = (0, 0);
    let status = with_out(&mut out, || {
        let (vmar, rights) = process.vmar(parent)?;
        let options = VmOptions::from_bits(options).ok_or(Status::InvalidArgs)?;
        let granted = rights_for_perms(options & VmOptions::CAN_MAP_PERMS);
        require(rights, granted)?;
        let child = vmar.allocate(options, offset, size)?;
        let base = child.base();
        let handle = process.add_handle(
            KernelObject::Vmar(child.clone()),
            Rights::from_bits_truncate(ZX_DEFAULT_VMAR_RIGHTS) | granted,
        );
        match handle {
            Ok(handle) => Ok((handle, base)),
            Err(status) => {
                // No handle can name the child: take it back, so that the call changes nothing.
                let _ = child.destroy();
                Err(status)
            }
        }
    });
    if status == ZX_OK {
        (*child_vmar, *child_addr) = out;
    }
    status
}

/// `zx_vmar_map`: maps `len` bytes of the VMO at `vmo_offset`. The VMO handle needs
/// `ZX_RIGHT_MAP`; each `ZX_VM_PERM_*` needs its right on both handles. The mapping may later be
/// given (by `zx_vmar_protect`) any permission that both handles allow now.
#[allow(clippy::too_many_arguments)]
pub fn zx_vmar_map(
    process: &Process,
    handle: zx_handle_t,
    options: zx_vm_option_t,
    vmar_offset: u64,
    vmo: zx_handle_t,
    vmo_offset: u64,
    len: u64,
    mapped_addr: &mut zx_vaddr_t,
) -> zx_status_t {
    with_out(mapped_addr, || {
        let (vmar, vmar_rights) = process.vmar(handle)?;
        let (vmo, vmo_rights) = process.vmo(vmo)?;
        require(vmo_rights, Rights::MAP)?;
        let options = VmOptions::from_bits(options).ok_or(Status::InvalidArgs)?;
        // Write without read is refused before the permission rights are looked at (Zircon's
        // sys_vmar_map order: VmoTestCase.Rights).
        if !valid_perms(options) {
            return Err(Status::InvalidArgs);
        }
        if options.intersects(VmOptions::CAN_MAP_PERMS | VmOptions::CAN_MAP_SPECIFIC) {
            return Err(Status::InvalidArgs);
        }
        let both = vmar_rights & vmo_rights;
        require(both, rights_for_perms(options & VmOptions::PERMS))?;
        let mut can_map = VmOptions::empty();
        for (right, flag) in [
            (Rights::READ, VmOptions::CAN_MAP_READ),
            (Rights::WRITE, VmOptions::CAN_MAP_WRITE),
            (Rights::EXECUTE, VmOptions::CAN_MAP_EXECUTE),
        ] {
            if both.contains(right) {
                can_map |= flag;
            }
        }
        debug_assert!(can_map.contains(perms_needing_can_map(options)));
        vmar.map(options, vmar_offset, &vmo, vmo_offset, len, can_map)
    })
}

/// `zx_vmar_unmap`.
pub fn zx_vmar_unmap(
    process: &Process,
    handle: zx_handle_t,
    addr: zx_vaddr_t,
    len: u64,
) -> zx_status_t {
    to_status((|| process.vmar(handle)?.0.unmap(addr, len))())
}

/// `zx_vmar_protect`: each `ZX_VM_PERM_*` in `options` needs its right on the handle.
pub fn zx_vmar_protect(
    process: &Process,
    handle: zx_handle_t,
    options: zx_vm_option_t,
    addr: zx_vaddr_t,
    len: u64,
) -> zx_status_t {
    to_status((|| {
        let (vmar, rights) = process.vmar(handle)?;
        let options = VmOptions::from_bits(options).ok_or(Status::InvalidArgs)?;
        require(rights, rights_for_perms(options & VmOptions::PERMS))?;
        vmar.protect(options, addr, len)
    })())
}

/// `zx_vmar_destroy`: needs `ZX_RIGHT_OP_CHILDREN`; a root VMAR is `ZX_ERR_NOT_SUPPORTED`, as
/// in Zircon (it goes with its process).
pub fn zx_vmar_destroy(process: &Process, handle: zx_handle_t) -> zx_status_t {
    to_status((|| {
        let (vmar, rights) = process.vmar(handle)?;
        require(rights, Rights::OP_CHILDREN)?;
        if vmar.is_root() {
            return Err(Status::NotSupported);
        }
        vmar.destroy()
    })())
}

/// The rights a duplicate or replacement asks for: the same, or a subset.
fn derived_rights(old: &Handle, rights: zx_rights_t) -> ZxResult<Rights> {
    if rights == ZX_RIGHT_SAME_RIGHTS {
        return Ok(old.rights);
    }
    let rights = Rights::from_bits(rights).ok_or(Status::InvalidArgs)?;
    if !old.rights.contains(rights) {
        return Err(Status::InvalidArgs);
    }
    Ok(rights)
}

/// `zx_handle_duplicate`: needs `ZX_RIGHT_DUPLICATE`; the copy's rights are a subset.
pub fn zx_handle_duplicate(
    process: &Process,
    handle: zx_handle_t,
    rights: zx_rights_t,
    out: &mut zx_handle_t,
) -> zx_status_t {
    with_out(out, || {
        let old = process.handle(handle)?;
        require(old.rights, Rights::DUPLICATE)?;
        let rights = derived_rights(&old, rights)?;
        process.add_handle(old.object, rights)
    })
}

/// `zx_handle_replace`: a new handle with a subset of the rights. As in Zircon, `handle` is
/// always invalidated, even when the call fails (a bad `rights`).
pub fn zx_handle_replace(
    process: &Process,
    handle: zx_handle_t,
    rights: zx_rights_t,
    out: &mut zx_handle_t,
) -> zx_status_t {
    with_out(out, || {
        let old = process.handle(handle)?;
        match derived_rights(&old, rights) {
            Ok(rights) => process.replace_handle(handle, rights),
            Err(status) => {
                process.remove_handle(handle)?;
                Err(status)
            }
        }
    })
}

/// `zx_handle_close`: closing `ZX_HANDLE_INVALID` succeeds and does nothing.
pub fn zx_handle_close(process: &Process, handle: zx_handle_t) -> zx_status_t {
    if handle == ZX_HANDLE_INVALID {
        return ZX_OK;
    }
    to_status(process.remove_handle(handle).map(drop))
}
