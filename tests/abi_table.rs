//! Every public constant of `src/abi.rs` against the value in Zircon's public headers
//! (`zircon/system/public/zircon/...`), in one table. A wrong value fails
//! [`abi_values_match_zircon_headers`]; a constant added to `src/abi.rs` without a table entry
//! fails [`abi_table_covers_every_pub_const`]; a `Rights` or `VmOptions` flag that is not its
//! `ZX_RIGHT_*`/`ZX_VM_*` constant fails [`bitflags_are_the_table_constants`].
//!
//! The expected values are written as the headers write them (`1u << 21`), not copied from the
//! crate.

use zx_vm::abi::{status_name, zx_status_t, Rights, VmOptions};

/// One constant: its name in `src/abi.rs`, the Zircon header that defines it, the crate's value
/// and Zircon's.
struct Entry {
    name: &'static str,
    header: &'static str,
    actual: i128,
    expected: i128,
}

/// `name = expected` rows under a header; `actual` is the crate's constant of that name.
macro_rules! rows {
    ($out:ident, $header:literal: $($name:ident = $expected:expr),* $(,)?) => {
        $(
            $out.push(Entry {
                name: stringify!($name),
                header: $header,
                actual: $name as i128,
                expected: ($expected) as i128,
            });
        )*
    };
}

/// The table.
#[allow(clippy::vec_init_then_push)] // the rows come from a macro, group by group
fn table() -> Vec<Entry> {
    use zx_vm::abi::*;
    let mut t = Vec::new();

    rows!(t, "zircon/limits.h (ZX_PAGE_SIZE, ZX_PAGE_SHIFT)":
        PAGE_SIZE = 1u64 << 12,
        PAGE_SHIFT = 12u32,
    );

    rows!(t, "zircon/types.h":
        ZX_HANDLE_INVALID = 0u32,
    );

    rows!(t, "zircon/errors.h":
        ZX_OK = 0,
        ZX_ERR_INTERNAL = -1,
        ZX_ERR_NOT_SUPPORTED = -2,
        ZX_ERR_NO_RESOURCES = -3,
        ZX_ERR_NO_MEMORY = -4,
        ZX_ERR_INTERNAL_INTR_RETRY = -6,
        ZX_ERR_INVALID_ARGS = -10,
        ZX_ERR_BAD_HANDLE = -11,
        ZX_ERR_WRONG_TYPE = -12,
        ZX_ERR_BAD_SYSCALL = -13,
        ZX_ERR_OUT_OF_RANGE = -14,
        ZX_ERR_BUFFER_TOO_SMALL = -15,
        ZX_ERR_BAD_STATE = -20,
        ZX_ERR_TIMED_OUT = -21,
        ZX_ERR_SHOULD_WAIT = -22,
        ZX_ERR_CANCELED = -23,
        ZX_ERR_PEER_CLOSED = -24,
        ZX_ERR_NOT_FOUND = -25,
        ZX_ERR_ALREADY_EXISTS = -26,
        ZX_ERR_ALREADY_BOUND = -27,
        ZX_ERR_UNAVAILABLE = -28,
        ZX_ERR_ACCESS_DENIED = -30,
        ZX_ERR_IO = -40,
    );

    rows!(t, "zircon/rights.h":
        ZX_RIGHT_NONE = 0u32,
        ZX_RIGHT_DUPLICATE = 1u32 << 0,
        ZX_RIGHT_TRANSFER = 1u32 << 1,
        ZX_RIGHT_READ = 1u32 << 2,
        ZX_RIGHT_WRITE = 1u32 << 3,
        ZX_RIGHT_EXECUTE = 1u32 << 4,
        ZX_RIGHT_MAP = 1u32 << 5,
        ZX_RIGHT_GET_PROPERTY = 1u32 << 6,
        ZX_RIGHT_SET_PROPERTY = 1u32 << 7,
        ZX_RIGHT_ENUMERATE = 1u32 << 8,
        ZX_RIGHT_DESTROY = 1u32 << 9,
        ZX_RIGHT_SET_POLICY = 1u32 << 10,
        ZX_RIGHT_GET_POLICY = 1u32 << 11,
        ZX_RIGHT_SIGNAL = 1u32 << 12,
        ZX_RIGHT_SIGNAL_PEER = 1u32 << 13,
        ZX_RIGHT_WAIT = 1u32 << 14,
        ZX_RIGHT_INSPECT = 1u32 << 15,
        ZX_RIGHT_MANAGE_JOB = 1u32 << 16,
        ZX_RIGHT_MANAGE_PROCESS = 1u32 << 17,
        ZX_RIGHT_MANAGE_THREAD = 1u32 << 18,
        ZX_RIGHT_APPLY_PROFILE = 1u32 << 19,
        ZX_RIGHT_MANAGE_SOCKET = 1u32 << 20,
        ZX_RIGHT_OP_CHILDREN = 1u32 << 21,
        ZX_RIGHT_RESIZE = 1u32 << 22,
        ZX_RIGHT_ATTACH_VMO = 1u32 << 23,
        ZX_RIGHT_MANAGE_VMO = 1u32 << 24,
        ZX_RIGHT_SAME_RIGHTS = 1u32 << 31,
        // TRANSFER | DUPLICATE | WAIT | INSPECT
        ZX_RIGHTS_BASIC = (1u32 << 1) | (1 << 0) | (1 << 14) | (1 << 15),
        // READ | WRITE
        ZX_RIGHTS_IO = (1u32 << 2) | (1 << 3),
        // GET_PROPERTY | SET_PROPERTY
        ZX_RIGHTS_PROPERTY = (1u32 << 6) | (1 << 7),
        // RIGHTS_BASIC | RIGHTS_IO | RIGHTS_PROPERTY | MAP | SIGNAL
        ZX_DEFAULT_VMO_RIGHTS = 0xc003u32 | 0xc | 0xc0 | (1 << 5) | (1 << 12),
        // (RIGHTS_BASIC & ~WAIT) | OP_CHILDREN
        ZX_DEFAULT_VMAR_RIGHTS = (0xc003u32 & !(1 << 14)) | (1 << 21),
    );

    rows!(t, "zircon/types.h (zx_vm_option_t)":
        ZX_VM_PERM_READ = 1u32 << 0,
        ZX_VM_PERM_WRITE = 1u32 << 1,
        ZX_VM_PERM_EXECUTE = 1u32 << 2,
        ZX_VM_COMPACT = 1u32 << 3,
        ZX_VM_SPECIFIC = 1u32 << 4,
        ZX_VM_SPECIFIC_OVERWRITE = 1u32 << 5,
        ZX_VM_CAN_MAP_SPECIFIC = 1u32 << 6,
        ZX_VM_CAN_MAP_READ = 1u32 << 7,
        ZX_VM_CAN_MAP_WRITE = 1u32 << 8,
        ZX_VM_CAN_MAP_EXECUTE = 1u32 << 9,
        ZX_VM_MAP_RANGE = 1u32 << 10,
        ZX_VM_REQUIRE_NON_RESIZABLE = 1u32 << 11,
        ZX_VM_ALLOW_FAULTS = 1u32 << 12,
        ZX_VM_OFFSET_IS_UPPER_LIMIT = 1u32 << 13,
        ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED = 1u32 << 14,
    );
    // `impl VmOptions`: not Zircon names, but the unions of Zircon's bits they stand for.
    t.push(Entry {
        name: "PERMS",
        header: "zircon/types.h (ZX_VM_PERM_READ | WRITE | EXECUTE)",
        actual: VmOptions::PERMS.bits() as i128,
        expected: 0b111,
    });
    t.push(Entry {
        name: "CAN_MAP_PERMS",
        header: "zircon/types.h (ZX_VM_CAN_MAP_READ | WRITE | EXECUTE)",
        actual: VmOptions::CAN_MAP_PERMS.bits() as i128,
        expected: (1 << 7) | (1 << 8) | (1 << 9),
    });

    rows!(t, "zircon/types.h (VM Object creation options)":
        ZX_VMO_RESIZABLE = 1u32 << 1,
        ZX_VMO_DISCARDABLE = 1u32 << 2,
    );

    rows!(t, "zircon/types.h (VM Object clone flags)":
        ZX_VMO_CHILD_SNAPSHOT = 1u32 << 0,
        ZX_VMO_CHILD_RESIZABLE = 1u32 << 2,
        ZX_VMO_CHILD_SLICE = 1u32 << 3,
        ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE = 1u32 << 4,
        ZX_VMO_CHILD_COPY_ON_WRITE = 1u32 << 4,
        ZX_VMO_CHILD_NO_WRITE = 1u32 << 5,
        ZX_VMO_CHILD_REFERENCE = 1u32 << 6,
        ZX_VMO_CHILD_SNAPSHOT_MODIFIED = 1u32 << 7,
    );

    rows!(t, "zircon/types.h (VM Object opcodes, VMAR opcodes)":
        ZX_VMO_OP_COMMIT = 1u32,
        ZX_VMO_OP_DECOMMIT = 2u32,
        ZX_VMO_OP_LOCK = 3u32,
        ZX_VMO_OP_UNLOCK = 4u32,
        // 5 was ZX_VMO_OP_LOOKUP, now unused.
        ZX_VMO_OP_CACHE_SYNC = 6u32,
        ZX_VMO_OP_CACHE_INVALIDATE = 7u32,
        ZX_VMO_OP_CACHE_CLEAN = 8u32,
        ZX_VMO_OP_CACHE_CLEAN_INVALIDATE = 9u32,
        ZX_VMO_OP_ZERO = 10u32,
        ZX_VMO_OP_TRY_LOCK = 11u32,
        ZX_VMO_OP_DONT_NEED = 12u32,
        ZX_VMO_OP_ALWAYS_NEED = 13u32,
        ZX_VMO_OP_PREFETCH = 14u32,
        ZX_VMAR_OP_DECOMMIT = 2u32,
    );

    rows!(t, "zircon/syscalls/object.h (topics)":
        ZX_INFO_HANDLE_BASIC = 2u32,
        ZX_INFO_VMAR = 7u32,
        // `ZX_INFO_VMO_V1` = `__ZX_INFO_TOPIC(23u, 0)`: the topic of `zx_info_vmo_t` in its V1
        // layout, named `ZX_INFO_VMO` until topics carried a version. The current header's
        // `ZX_INFO_VMO` is `__ZX_INFO_TOPIC(23u, 2)` (0x2000_0017, the V3 layout). 18 is
        // `ZX_INFO_RESOURCE`.
        ZX_INFO_VMO = 23u32,
    );

    rows!(t, "zircon/syscalls/object.h (zx_info_vmo_t flags)":
        ZX_INFO_VMO_TYPE_PAGED = 1u32 << 0,
        ZX_INFO_VMO_RESIZABLE = 1u32 << 1,
        ZX_INFO_VMO_VIA_HANDLE = 1u32 << 3,
        // 1u << 7 is ZX_INFO_VMO_DISCARDABLE.
        ZX_INFO_VMO_CONTIGUOUS = 1u32 << 6,
        ZX_INFO_VMO_IS_COW_CLONE = 1u32 << 2,
    );

    rows!(t, "zircon/types.h (zx_cache_policy)":
        ZX_CACHE_POLICY_CACHED = 0u32,
    );

    rows!(t, "zircon/types.h (zx_obj_type_t)":
        ZX_OBJ_TYPE_VMO = 3u32,
        ZX_OBJ_TYPE_VMAR = 18u32,
    );

    t
}

/// Every value is Zircon's.
#[test]
fn abi_values_match_zircon_headers() {
    let wrong: Vec<String> = table()
        .iter()
        .filter(|e| e.actual != e.expected)
        .map(|e| {
            let actual = if e.actual == u64::MAX as i128 {
                "missing from src/abi.rs".to_string()
            } else {
                format!("{:#x}", e.actual)
            };
            format!(
                "{} is {actual}, Zircon's {} says {:#x}",
                e.name, e.header, e.expected
            )
        })
        .collect();
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The names of the `pub const` items in `src/abi.rs` (not `pub const fn`).
fn pub_consts_in_abi_rs() -> Vec<&'static str> {
    include_str!("../src/abi.rs")
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("pub const "))
        .filter(|rest| !rest.starts_with("fn "))
        .map(|rest| rest.split(':').next().unwrap().trim())
        .collect()
}

/// Every `pub const` of `src/abi.rs` is in the table, once.
#[test]
fn abi_table_covers_every_pub_const() {
    let consts = pub_consts_in_abi_rs();
    assert!(consts.len() > 90, "the scan of src/abi.rs found {consts:?}");
    let table = table();
    let missing: Vec<&str> = consts
        .iter()
        .copied()
        .filter(|name| !table.iter().any(|e| e.name == *name))
        .collect();
    assert!(
        missing.is_empty(),
        "pub consts of src/abi.rs without a row in tests/abi_table.rs: {missing:?}"
    );
    for entry in &table {
        assert_eq!(
            table.iter().filter(|e| e.name == entry.name).count(),
            1,
            "{} has two rows",
            entry.name
        );
    }
}

/// Each `Rights` flag is the `ZX_RIGHT_*` constant of its name, each `VmOptions` flag the
/// `ZX_VM_*` constant of its name, and each has a row in the table (so the values are Zircon's).
#[test]
fn bitflags_are_the_table_constants() {
    let table = table();
    let expected = |name: &str| {
        table
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no row for {name}"))
            .expected
    };
    let mut rights = 0;
    for (name, flag) in Rights::all().iter_names() {
        assert_eq!(
            flag.bits() as i128,
            expected(&format!("ZX_RIGHT_{name}")),
            "Rights::{name}"
        );
        rights += 1;
    }
    assert_eq!(rights, 25, "every ZX_RIGHT_* but NONE and SAME_RIGHTS");
    let mut options = 0;
    for (name, flag) in VmOptions::all().iter_names() {
        assert_eq!(
            flag.bits() as i128,
            expected(&format!("ZX_VM_{name}")),
            "VmOptions::{name}"
        );
        options += 1;
    }
    assert_eq!(options, 15);
}

/// `status_name` gives Zircon's name for every status in the table, and `Status` converts to the
/// same values.
#[test]
fn status_names_are_zircons() {
    use zx_vm::abi::Status;
    for e in table().iter().filter(|e| e.header == "zircon/errors.h") {
        assert_eq!(status_name(e.expected as zx_status_t), e.name);
    }
    for (status, name) in [
        (Status::Internal, "ZX_ERR_INTERNAL"),
        (Status::NotSupported, "ZX_ERR_NOT_SUPPORTED"),
        (Status::NoResources, "ZX_ERR_NO_RESOURCES"),
        (Status::NoMemory, "ZX_ERR_NO_MEMORY"),
        (Status::InvalidArgs, "ZX_ERR_INVALID_ARGS"),
        (Status::BadHandle, "ZX_ERR_BAD_HANDLE"),
        (Status::WrongType, "ZX_ERR_WRONG_TYPE"),
        (Status::OutOfRange, "ZX_ERR_OUT_OF_RANGE"),
        (Status::BufferTooSmall, "ZX_ERR_BUFFER_TOO_SMALL"),
        (Status::BadState, "ZX_ERR_BAD_STATE"),
        (Status::NotFound, "ZX_ERR_NOT_FOUND"),
        (Status::AlreadyExists, "ZX_ERR_ALREADY_EXISTS"),
        (Status::Unavailable, "ZX_ERR_UNAVAILABLE"),
        (Status::AccessDenied, "ZX_ERR_ACCESS_DENIED"),
    ] {
        assert_eq!(status.name(), name);
        let row = table().into_iter().find(|e| e.name == name).unwrap();
        assert_eq!(status.into_raw() as i128, row.expected, "{name}");
    }
}
