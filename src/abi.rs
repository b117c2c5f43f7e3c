//! Zircon's ABI: the types, status codes, rights and option bits of the syscalls this crate serves.
//!
//! Every name and value here is Zircon's own, so code ported from Fuchsia reads the same. The C names
//! are kept as constants (`ZX_ERR_BAD_HANDLE`); Rust-side, [`Status`] and [`Rights`] give the same
//! values a type.
// The constants carry Zircon's names and values, documented by Zircon; repeating that here adds nothing.
#![allow(non_camel_case_types, missing_docs)]

use bitflags::bitflags;

/// A syscall's result: `ZX_OK` (0) or a negative `ZX_ERR_*` code.
pub type zx_status_t = i32;
/// A handle value in a process's handle table.
pub type zx_handle_t = u32;
/// A set of `ZX_RIGHT_*` bits.
pub type zx_rights_t = u32;
/// A user virtual address. Never dereferenced by this crate's syscalls.
pub type zx_vaddr_t = u64;
/// `ZX_VM_*` option bits.
pub type zx_vm_option_t = u32;
/// A kernel object id.
pub type zx_koid_t = u64;

/// The size of a page on both supported architectures.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// The invalid handle value.
pub const ZX_HANDLE_INVALID: zx_handle_t = 0;

// Status codes (zircon/errors.h).
pub const ZX_OK: zx_status_t = 0;
pub const ZX_ERR_INTERNAL: zx_status_t = -1;
pub const ZX_ERR_NOT_SUPPORTED: zx_status_t = -2;
pub const ZX_ERR_NO_RESOURCES: zx_status_t = -3;
pub const ZX_ERR_NO_MEMORY: zx_status_t = -4;
pub const ZX_ERR_INTERNAL_INTR_RETRY: zx_status_t = -6;
pub const ZX_ERR_INVALID_ARGS: zx_status_t = -10;
pub const ZX_ERR_BAD_HANDLE: zx_status_t = -11;
pub const ZX_ERR_WRONG_TYPE: zx_status_t = -12;
pub const ZX_ERR_BAD_SYSCALL: zx_status_t = -13;
pub const ZX_ERR_OUT_OF_RANGE: zx_status_t = -14;
pub const ZX_ERR_BUFFER_TOO_SMALL: zx_status_t = -15;
pub const ZX_ERR_BAD_STATE: zx_status_t = -20;
pub const ZX_ERR_TIMED_OUT: zx_status_t = -21;
pub const ZX_ERR_SHOULD_WAIT: zx_status_t = -22;
pub const ZX_ERR_CANCELED: zx_status_t = -23;
pub const ZX_ERR_PEER_CLOSED: zx_status_t = -24;
pub const ZX_ERR_NOT_FOUND: zx_status_t = -25;
pub const ZX_ERR_ALREADY_EXISTS: zx_status_t = -26;
pub const ZX_ERR_ALREADY_BOUND: zx_status_t = -27;
pub const ZX_ERR_UNAVAILABLE: zx_status_t = -28;
pub const ZX_ERR_ACCESS_DENIED: zx_status_t = -30;
pub const ZX_ERR_IO: zx_status_t = -40;

/// A failed syscall's status as a type. `Status as i32` is the `ZX_ERR_*` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    Internal = ZX_ERR_INTERNAL,
    NotSupported = ZX_ERR_NOT_SUPPORTED,
    NoResources = ZX_ERR_NO_RESOURCES,
    NoMemory = ZX_ERR_NO_MEMORY,
    InvalidArgs = ZX_ERR_INVALID_ARGS,
    BadHandle = ZX_ERR_BAD_HANDLE,
    WrongType = ZX_ERR_WRONG_TYPE,
    OutOfRange = ZX_ERR_OUT_OF_RANGE,
    BufferTooSmall = ZX_ERR_BUFFER_TOO_SMALL,
    BadState = ZX_ERR_BAD_STATE,
    NotFound = ZX_ERR_NOT_FOUND,
    AlreadyExists = ZX_ERR_ALREADY_EXISTS,
    Unavailable = ZX_ERR_UNAVAILABLE,
    AccessDenied = ZX_ERR_ACCESS_DENIED,
}

impl Status {
    /// The raw `zx_status_t`.
    pub const fn into_raw(self) -> zx_status_t {
        self as zx_status_t
    }

    /// Zircon's name for the status, e.g. `"ZX_ERR_BAD_STATE"`.
    pub const fn name(self) -> &'static str {
        status_name(self as zx_status_t)
    }
}

/// Zircon's name for a raw status (`"ZX_OK"`, `"ZX_ERR_..."`), or `"(unknown)"`.
pub const fn status_name(status: zx_status_t) -> &'static str {
    match status {
        ZX_OK => "ZX_OK",
        ZX_ERR_INTERNAL => "ZX_ERR_INTERNAL",
        ZX_ERR_NOT_SUPPORTED => "ZX_ERR_NOT_SUPPORTED",
        ZX_ERR_NO_RESOURCES => "ZX_ERR_NO_RESOURCES",
        ZX_ERR_NO_MEMORY => "ZX_ERR_NO_MEMORY",
        ZX_ERR_INTERNAL_INTR_RETRY => "ZX_ERR_INTERNAL_INTR_RETRY",
        ZX_ERR_INVALID_ARGS => "ZX_ERR_INVALID_ARGS",
        ZX_ERR_BAD_HANDLE => "ZX_ERR_BAD_HANDLE",
        ZX_ERR_WRONG_TYPE => "ZX_ERR_WRONG_TYPE",
        ZX_ERR_BAD_SYSCALL => "ZX_ERR_BAD_SYSCALL",
        ZX_ERR_OUT_OF_RANGE => "ZX_ERR_OUT_OF_RANGE",
        ZX_ERR_BUFFER_TOO_SMALL => "ZX_ERR_BUFFER_TOO_SMALL",
        ZX_ERR_BAD_STATE => "ZX_ERR_BAD_STATE",
        ZX_ERR_TIMED_OUT => "ZX_ERR_TIMED_OUT",
        ZX_ERR_SHOULD_WAIT => "ZX_ERR_SHOULD_WAIT",
        ZX_ERR_CANCELED => "ZX_ERR_CANCELED",
        ZX_ERR_PEER_CLOSED => "ZX_ERR_PEER_CLOSED",
        ZX_ERR_NOT_FOUND => "ZX_ERR_NOT_FOUND",
        ZX_ERR_ALREADY_EXISTS => "ZX_ERR_ALREADY_EXISTS",
        ZX_ERR_ALREADY_BOUND => "ZX_ERR_ALREADY_BOUND",
        ZX_ERR_UNAVAILABLE => "ZX_ERR_UNAVAILABLE",
        ZX_ERR_ACCESS_DENIED => "ZX_ERR_ACCESS_DENIED",
        ZX_ERR_IO => "ZX_ERR_IO",
        _ => "(unknown)",
    }
}

/// The crate's internal result type; syscalls turn it into a `zx_status_t`.
pub type ZxResult<T = ()> = Result<T, Status>;

/// Turns an internal result into the raw status a syscall returns.
pub fn to_status(result: ZxResult) -> zx_status_t {
    match result {
        Ok(()) => ZX_OK,
        Err(status) => status.into_raw(),
    }
}

// Rights (zircon/rights.h).
pub const ZX_RIGHT_NONE: zx_rights_t = 0;
pub const ZX_RIGHT_DUPLICATE: zx_rights_t = 1 << 0;
pub const ZX_RIGHT_TRANSFER: zx_rights_t = 1 << 1;
pub const ZX_RIGHT_READ: zx_rights_t = 1 << 2;
pub const ZX_RIGHT_WRITE: zx_rights_t = 1 << 3;
pub const ZX_RIGHT_EXECUTE: zx_rights_t = 1 << 4;
pub const ZX_RIGHT_MAP: zx_rights_t = 1 << 5;
pub const ZX_RIGHT_GET_PROPERTY: zx_rights_t = 1 << 6;
pub const ZX_RIGHT_SET_PROPERTY: zx_rights_t = 1 << 7;
pub const ZX_RIGHT_ENUMERATE: zx_rights_t = 1 << 8;
pub const ZX_RIGHT_DESTROY: zx_rights_t = 1 << 9;
pub const ZX_RIGHT_SET_POLICY: zx_rights_t = 1 << 10;
pub const ZX_RIGHT_GET_POLICY: zx_rights_t = 1 << 11;
pub const ZX_RIGHT_SIGNAL: zx_rights_t = 1 << 12;
pub const ZX_RIGHT_SIGNAL_PEER: zx_rights_t = 1 << 13;
pub const ZX_RIGHT_WAIT: zx_rights_t = 1 << 14;
pub const ZX_RIGHT_INSPECT: zx_rights_t = 1 << 15;
pub const ZX_RIGHT_MANAGE_JOB: zx_rights_t = 1 << 16;
pub const ZX_RIGHT_MANAGE_PROCESS: zx_rights_t = 1 << 17;
pub const ZX_RIGHT_MANAGE_THREAD: zx_rights_t = 1 << 18;
pub const ZX_RIGHT_APPLY_PROFILE: zx_rights_t = 1 << 19;
pub const ZX_RIGHT_MANAGE_SOCKET: zx_rights_t = 1 << 20;
pub const ZX_RIGHT_OP_CHILDREN: zx_rights_t = 1 << 21;
pub const ZX_RIGHT_RESIZE: zx_rights_t = 1 << 22;
pub const ZX_RIGHT_ATTACH_VMO: zx_rights_t = 1 << 23;
pub const ZX_RIGHT_MANAGE_VMO: zx_rights_t = 1 << 24;
pub const ZX_RIGHT_SAME_RIGHTS: zx_rights_t = 1 << 31;

pub const ZX_RIGHTS_BASIC: zx_rights_t =
    ZX_RIGHT_TRANSFER | ZX_RIGHT_DUPLICATE | ZX_RIGHT_WAIT | ZX_RIGHT_INSPECT;
pub const ZX_RIGHTS_IO: zx_rights_t = ZX_RIGHT_READ | ZX_RIGHT_WRITE;
pub const ZX_RIGHTS_PROPERTY: zx_rights_t = ZX_RIGHT_GET_PROPERTY | ZX_RIGHT_SET_PROPERTY;
/// The rights of a new VMO handle (`ZX_DEFAULT_VMO_RIGHTS`).
pub const ZX_DEFAULT_VMO_RIGHTS: zx_rights_t =
    ZX_RIGHTS_BASIC | ZX_RIGHTS_IO | ZX_RIGHTS_PROPERTY | ZX_RIGHT_MAP | ZX_RIGHT_SIGNAL;
/// The rights of a new VMAR handle before `ZX_RIGHT_READ`/`WRITE`/`EXECUTE` are added for its
/// `ZX_VM_CAN_MAP_*` flags (`ZX_DEFAULT_VMAR_RIGHTS`).
pub const ZX_DEFAULT_VMAR_RIGHTS: zx_rights_t =
    (ZX_RIGHTS_BASIC & !ZX_RIGHT_WAIT) | ZX_RIGHT_OP_CHILDREN;

bitflags! {
    /// The rights a handle carries. Values are `ZX_RIGHT_*`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rights: zx_rights_t {
        const DUPLICATE = ZX_RIGHT_DUPLICATE;
        const TRANSFER = ZX_RIGHT_TRANSFER;
        const READ = ZX_RIGHT_READ;
        const WRITE = ZX_RIGHT_WRITE;
        const EXECUTE = ZX_RIGHT_EXECUTE;
        const MAP = ZX_RIGHT_MAP;
        const GET_PROPERTY = ZX_RIGHT_GET_PROPERTY;
        const SET_PROPERTY = ZX_RIGHT_SET_PROPERTY;
        const ENUMERATE = ZX_RIGHT_ENUMERATE;
        const DESTROY = ZX_RIGHT_DESTROY;
        const SET_POLICY = ZX_RIGHT_SET_POLICY;
        const GET_POLICY = ZX_RIGHT_GET_POLICY;
        const SIGNAL = ZX_RIGHT_SIGNAL;
        const SIGNAL_PEER = ZX_RIGHT_SIGNAL_PEER;
        const WAIT = ZX_RIGHT_WAIT;
        const INSPECT = ZX_RIGHT_INSPECT;
        const MANAGE_JOB = ZX_RIGHT_MANAGE_JOB;
        const MANAGE_PROCESS = ZX_RIGHT_MANAGE_PROCESS;
        const MANAGE_THREAD = ZX_RIGHT_MANAGE_THREAD;
        const APPLY_PROFILE = ZX_RIGHT_APPLY_PROFILE;
        const MANAGE_SOCKET = ZX_RIGHT_MANAGE_SOCKET;
        const OP_CHILDREN = ZX_RIGHT_OP_CHILDREN;
        const RESIZE = ZX_RIGHT_RESIZE;
        const ATTACH_VMO = ZX_RIGHT_ATTACH_VMO;
        const MANAGE_VMO = ZX_RIGHT_MANAGE_VMO;
    }
}

// VM options (zircon/types.h).
pub const ZX_VM_PERM_READ: zx_vm_option_t = 1 << 0;
pub const ZX_VM_PERM_WRITE: zx_vm_option_t = 1 << 1;
pub const ZX_VM_PERM_EXECUTE: zx_vm_option_t = 1 << 2;
pub const ZX_VM_COMPACT: zx_vm_option_t = 1 << 3;
pub const ZX_VM_SPECIFIC: zx_vm_option_t = 1 << 4;
pub const ZX_VM_SPECIFIC_OVERWRITE: zx_vm_option_t = 1 << 5;
pub const ZX_VM_CAN_MAP_SPECIFIC: zx_vm_option_t = 1 << 6;
pub const ZX_VM_CAN_MAP_READ: zx_vm_option_t = 1 << 7;
pub const ZX_VM_CAN_MAP_WRITE: zx_vm_option_t = 1 << 8;
pub const ZX_VM_CAN_MAP_EXECUTE: zx_vm_option_t = 1 << 9;
pub const ZX_VM_MAP_RANGE: zx_vm_option_t = 1 << 10;
pub const ZX_VM_REQUIRE_NON_RESIZABLE: zx_vm_option_t = 1 << 11;
pub const ZX_VM_ALLOW_FAULTS: zx_vm_option_t = 1 << 12;
pub const ZX_VM_OFFSET_IS_UPPER_LIMIT: zx_vm_option_t = 1 << 13;
pub const ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED: zx_vm_option_t = 1 << 14;

bitflags! {
    /// `ZX_VM_*` option bits as a type.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VmOptions: zx_vm_option_t {
        const PERM_READ = ZX_VM_PERM_READ;
        const PERM_WRITE = ZX_VM_PERM_WRITE;
        const PERM_EXECUTE = ZX_VM_PERM_EXECUTE;
        const COMPACT = ZX_VM_COMPACT;
        const SPECIFIC = ZX_VM_SPECIFIC;
        const SPECIFIC_OVERWRITE = ZX_VM_SPECIFIC_OVERWRITE;
        const CAN_MAP_SPECIFIC = ZX_VM_CAN_MAP_SPECIFIC;
        const CAN_MAP_READ = ZX_VM_CAN_MAP_READ;
        const CAN_MAP_WRITE = ZX_VM_CAN_MAP_WRITE;
        const CAN_MAP_EXECUTE = ZX_VM_CAN_MAP_EXECUTE;
        const MAP_RANGE = ZX_VM_MAP_RANGE;
        const REQUIRE_NON_RESIZABLE = ZX_VM_REQUIRE_NON_RESIZABLE;
        const ALLOW_FAULTS = ZX_VM_ALLOW_FAULTS;
        const OFFSET_IS_UPPER_LIMIT = ZX_VM_OFFSET_IS_UPPER_LIMIT;
        const PERM_READ_IF_XOM_UNSUPPORTED = ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED;
    }
}

impl VmOptions {
    /// The `ZX_VM_PERM_*` bits.
    pub const PERMS: Self = Self::PERM_READ
        .union(Self::PERM_WRITE)
        .union(Self::PERM_EXECUTE);
    /// The `ZX_VM_CAN_MAP_*` bits that grant a permission.
    pub const CAN_MAP_PERMS: Self = Self::CAN_MAP_READ
        .union(Self::CAN_MAP_WRITE)
        .union(Self::CAN_MAP_EXECUTE);
}

// VMO creation options.
pub const ZX_VMO_RESIZABLE: u32 = 1 << 1;
pub const ZX_VMO_DISCARDABLE: u32 = 1 << 2;

/// `zx_vmo_create_child` option: a copy-on-write snapshot of the parent's pages.
pub const ZX_VMO_CHILD_SNAPSHOT: u32 = 1 << 0;
/// `zx_vmo_create_child` option: the child may be resized ([`ZX_RIGHT_RESIZE`] on its handle).
pub const ZX_VMO_CHILD_RESIZABLE: u32 = 1 << 2;
/// `zx_vmo_create_child` option: a window on the parent's pages (no copy-on-write).
pub const ZX_VMO_CHILD_SLICE: u32 = 1 << 3;
/// `zx_vmo_create_child` option: a snapshot at least where written (this crate: a snapshot).
pub const ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE: u32 = 1 << 4;
/// The older name of [`ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE`].
pub const ZX_VMO_CHILD_COPY_ON_WRITE: u32 = ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE;
/// `zx_vmo_create_child` option: the child's handle has no [`ZX_RIGHT_WRITE`].
pub const ZX_VMO_CHILD_NO_WRITE: u32 = 1 << 5;
/// `zx_vmo_create_child` option: another name for the whole parent (same pages, same size).
pub const ZX_VMO_CHILD_REFERENCE: u32 = 1 << 6;
/// `zx_vmo_create_child` option: a snapshot of pages modified in a pager-backed parent (this
/// crate has no pagers: a snapshot).
pub const ZX_VMO_CHILD_SNAPSHOT_MODIFIED: u32 = 1 << 7;

// VMO operations (zircon/types.h). 5 (the retired LOOKUP) is not defined.
pub const ZX_VMO_OP_COMMIT: u32 = 1;
pub const ZX_VMO_OP_DECOMMIT: u32 = 2;
pub const ZX_VMO_OP_LOCK: u32 = 3;
pub const ZX_VMO_OP_UNLOCK: u32 = 4;
pub const ZX_VMO_OP_CACHE_SYNC: u32 = 6;
pub const ZX_VMO_OP_CACHE_INVALIDATE: u32 = 7;
pub const ZX_VMO_OP_CACHE_CLEAN: u32 = 8;
pub const ZX_VMO_OP_CACHE_CLEAN_INVALIDATE: u32 = 9;
pub const ZX_VMO_OP_ZERO: u32 = 10;
pub const ZX_VMO_OP_TRY_LOCK: u32 = 11;
pub const ZX_VMO_OP_DONT_NEED: u32 = 12;
pub const ZX_VMO_OP_ALWAYS_NEED: u32 = 13;
pub const ZX_VMO_OP_PREFETCH: u32 = 14;
/// `zx_vmar_op_range`'s name for [`ZX_VMO_OP_DECOMMIT`].
pub const ZX_VMAR_OP_DECOMMIT: u32 = ZX_VMO_OP_DECOMMIT;

/// Whether `op` is one of the defined `ZX_VMO_OP_*` codes (1-4 and 6-14).
pub const fn is_defined_vmo_op(op: u32) -> bool {
    matches!(op, 1..=4 | 6..=14)
}

// zx_object_get_info topics (zircon/syscalls/object.h).
/// `ZX_INFO_HANDLE_BASIC`: a [`zx_info_handle_basic_t`] about the handle itself.
pub const ZX_INFO_HANDLE_BASIC: u32 = 2;
/// `ZX_INFO_VMAR`: a [`zx_info_vmar_t`].
pub const ZX_INFO_VMAR: u32 = 7;
/// `ZX_INFO_VMO` as older Zircon numbers it, `ZX_INFO_VMO_V1` in newer headers (23): a
/// [`zx_info_vmo_t`] in the V1 layout. (Newer headers give `ZX_INFO_VMO` version bits in
/// 31:28 for longer layouts, which this crate does not serve: `ZX_ERR_NOT_SUPPORTED`.)
pub const ZX_INFO_VMO: u32 = 23;

/// `zx_obj_type_t` (zircon/types.h).
pub type zx_obj_type_t = u32;
/// `ZX_OBJ_TYPE_VMO`.
pub const ZX_OBJ_TYPE_VMO: zx_obj_type_t = 3;
/// `ZX_OBJ_TYPE_VMAR`.
pub const ZX_OBJ_TYPE_VMAR: zx_obj_type_t = 18;

/// `zx_object_get_info(ZX_INFO_HANDLE_BASIC)`, in Zircon's layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct zx_info_handle_basic_t {
    /// The object's kernel object id.
    pub koid: zx_koid_t,
    /// The handle's rights.
    pub rights: zx_rights_t,
    /// The object's type (`ZX_OBJ_TYPE_*`).
    pub type_: zx_obj_type_t,
    /// The koid of a related object; 0 for VMOs and VMARs.
    pub related_koid: zx_koid_t,
    /// Reserved (0).
    pub reserved: u32,
    /// Padding (0).
    pub padding1: [u8; 4],
}

/// `zx_object_get_info(ZX_INFO_VMAR)`, in Zircon's layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct zx_info_vmar_t {
    /// The VMAR's first address.
    pub base: zx_vaddr_t,
    /// Its size in bytes.
    pub len: u64,
}

/// `zx_object_get_info(ZX_INFO_VMO)`, in Zircon's V1 layout (`zx_info_vmo_v1_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct zx_info_vmo_t {
    /// The VMO's kernel object id.
    pub koid: zx_koid_t,
    /// The VMO's name (VMOs here have none: all zero).
    pub name: [u8; 32],
    /// The VMO's size in bytes.
    pub size_bytes: u64,
    /// The koid of the VMO's parent, for a child (`zx_vmo_create_child`); 0 otherwise.
    pub parent_koid: zx_koid_t,
    /// How many live children the VMO has.
    pub num_children: u64,
    /// How many mappings of the VMO exist, in all address spaces.
    pub num_mappings: u64,
    /// How many distinct address spaces map the VMO.
    pub share_count: u64,
    /// `ZX_INFO_VMO_*` bits.
    pub flags: u32,
    /// Padding (0).
    pub padding1: [u8; 4],
    /// Bytes of memory committed to the VMO (paged VMOs; contiguous ones count their size).
    pub committed_bytes: u64,
    /// The rights of the handle the information came through (with `ZX_INFO_VMO_VIA_HANDLE`).
    pub handle_rights: zx_rights_t,
    /// `ZX_CACHE_POLICY_*` (always `ZX_CACHE_POLICY_CACHED`, 0).
    pub cache_policy: u32,
}

static_assertions::const_assert_eq!(core::mem::size_of::<zx_info_handle_basic_t>(), 32);
static_assertions::const_assert_eq!(core::mem::size_of::<zx_info_vmar_t>(), 16);
static_assertions::const_assert_eq!(core::mem::size_of::<zx_info_vmo_t>(), 104);

/// `zx_info_vmo_t::flags` bit for a paged VMO (`ZX_INFO_VMO_TYPE_PAGED`); physical VMOs have 0.
pub const ZX_INFO_VMO_TYPE_PAGED: u32 = 1 << 0;
/// `zx_info_vmo_t::flags` bit for a resizable VMO.
pub const ZX_INFO_VMO_RESIZABLE: u32 = 1 << 1;
/// `zx_info_vmo_t::flags` bit: the information came through a handle to the VMO.
pub const ZX_INFO_VMO_VIA_HANDLE: u32 = 1 << 3;
/// `zx_info_vmo_t::flags` bit for a contiguous VMO.
pub const ZX_INFO_VMO_CONTIGUOUS: u32 = 1 << 6;
/// `zx_info_vmo_t::flags` bit for a copy-on-write child (`ZX_INFO_VMO_IS_COW_CLONE`).
pub const ZX_INFO_VMO_IS_COW_CLONE: u32 = 1 << 2;
/// `ZX_CACHE_POLICY_CACHED`.
pub const ZX_CACHE_POLICY_CACHED: u32 = 0;

/// Rounds `value` up to a whole page; `None` on overflow.
pub const fn page_round_up(value: u64) -> Option<u64> {
    match value.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v & !(PAGE_SIZE - 1)),
        None => None,
    }
}

/// Whether `value` is a multiple of [`PAGE_SIZE`].
pub const fn is_page_aligned(value: u64) -> bool {
    value & (PAGE_SIZE - 1) == 0
}

static NEXT_KOID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1024);

/// A fresh kernel object id (from 1024 up; ids below are left for the kernel's own objects).
/// Every object of the crate takes its id here, at the bottom of the layers.
pub(crate) fn next_koid() -> zx_koid_t {
    NEXT_KOID.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_zircons() {
        assert_eq!(ZX_ERR_BAD_STATE, -20);
        assert_eq!(ZX_ERR_ACCESS_DENIED, -30);
        assert_eq!(ZX_RIGHT_WRITE, 8);
        assert_eq!(ZX_VMAR_OP_DECOMMIT, 2);
        assert_eq!(ZX_VM_CAN_MAP_WRITE, 0x100);
        assert_eq!(Status::OutOfRange.into_raw(), -14);
        assert_eq!(Status::BadState.name(), "ZX_ERR_BAD_STATE");
    }

    #[test]
    fn defined_ops() {
        let defined: alloc::vec::Vec<u32> = (0..20).filter(|&op| is_defined_vmo_op(op)).collect();
        assert_eq!(defined, [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    }

    #[test]
    fn rounding() {
        assert_eq!(page_round_up(1), Some(4096));
        assert_eq!(page_round_up(4096), Some(4096));
        assert_eq!(page_round_up(u64::MAX), None);
        assert_eq!(page_round_up(u64::MAX - 4095), Some(u64::MAX - 4095));
    }
}
