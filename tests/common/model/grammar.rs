//! The operations the harness runs: their arguments, resolved against the state when an
//! operation runs, and the prelude every sequence starts with.

use super::*;

// =================================================================================================
// Operations
// =================================================================================================

/// A handle argument, resolved against the model's state when the op runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H {
    /// The i-th (mod count) live VMO handle of the process, in value order.
    Vmo(u8),
    /// The i-th live VMAR handle (index 0 is usually the root's).
    Vmar(u8),
    /// The i-th live handle of either kind.
    Any(u8),
    /// The i-th most recently issued VMO handle of the process that is still live.
    RecentVmo(u8),
    /// The i-th most recently issued VMAR handle of the process that is still live.
    RecentVmar(u8),
    /// The i-th value ever issued to the process (perhaps closed since).
    Stale(u8),
    /// `ZX_HANDLE_INVALID`.
    Invalid,
    /// A value never issued.
    Garbage(u8),
}

/// A VMO offset or VMAR-relative offset: whole pages, or any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Off {
    Pages(u8),
    Raw(u64),
}

/// A length: whole pages, or any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    Pages(u8),
    Raw(u64),
}

/// A user address, resolved when the op runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// Near an address returned by an earlier map or allocate (or a root VMAR's base).
    Known { idx: u8, pages: i8, bytes: u16 },
    /// In (or just past) one of the regions of the address space: the mapping pieces, then the
    /// sub-VMARs, each in address order; `page` is taken mod the region's pages + 1.
    In { idx: u8, page: u8, bytes: u16 },
    /// `pages` from the `back`-th most recent address a CPU accessed in the address space (so
    /// that accesses, protections, decommits and unmaps meet), keeping its offset in the page
    /// or not.
    Touched {
        back: u8,
        pages: i8,
        keep_offset: bool,
    },
    /// Any value.
    Raw(u64),
    /// In the `idx`-th (mod their count) mapping of 2 MiB or more that a map made in the address
    /// space (see [`World::addr`]): `page` is taken mod its pages + 1. Where there is none: as
    /// if one of 2 MiB were at slot `idx % 4 + 1` of the root VMAR ([`large_slot`]).
    Run { idx: u8, page: u16, bytes: u16 },
}

/// 2 MiB: the span of a large leaf, of a large-page VMO's runs, and of the aligned slots that
/// large mappings are made at (`ZX_VM_SPECIFIC` at whole multiples of it).
pub const MIB2: u64 = 2 << 20;
/// Pages in 2 MiB: a run of a large-page VMO.
pub const RUN_PAGES: u64 = MIB2 / PAGE;

/// The offset in a root VMAR of the `k`-th 2 MiB-aligned slot for large mappings (the root
/// VMAR's base is 2 MiB aligned; slot 0 is where the prelude's mappings go).
pub const fn large_slot(k: u64) -> u64 {
    k * MIB2
}

/// The rights a duplicate or replace asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RightsArg {
    /// `ZX_RIGHT_SAME_RIGHTS`.
    Same,
    /// The handle's rights minus those picked by the mask from [`DROPPABLE`].
    Drop(u8),
    /// The handle's rights plus one more right (rights may not grow).
    Grow(u8),
    /// Any value.
    Raw(u32),
}

/// The rights [`RightsArg::Drop`] picks from.
pub const DROPPABLE: [zx_rights_t; 8] = [
    ZX_RIGHT_READ,
    ZX_RIGHT_WRITE,
    ZX_RIGHT_EXECUTE,
    ZX_RIGHT_MAP,
    ZX_RIGHT_DUPLICATE,
    ZX_RIGHT_TRANSFER,
    ZX_RIGHT_INSPECT,
    ZX_RIGHT_OP_CHILDREN,
];

/// One step of a sequence. `p` picks a process (mod their count); `cpu` a CPU (mod their count),
/// or, from 128 up, the CPU that made the previous access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    VmoCreate {
        p: u8,
        size: Len,
        options: u32,
    },
    VmoRead {
        p: u8,
        h: H,
        offset: Off,
        len: u16,
    },
    VmoWrite {
        p: u8,
        h: H,
        offset: Off,
        len: u16,
        seed: u8,
    },
    VmoOpRange {
        p: u8,
        h: H,
        op: u32,
        offset: Off,
        size: Len,
        buffer: u64,
    },
    VmoGetSize {
        p: u8,
        h: H,
    },
    VmoSetSize {
        p: u8,
        h: H,
        size: Len,
    },
    VmoInfo {
        p: u8,
        h: H,
    },
    /// `zx_vmo_create_child` of the VMO `h` names.
    VmoCreateChild {
        p: u8,
        h: H,
        options: u32,
        offset: Off,
        size: Len,
    },
    VmarAllocate {
        p: u8,
        h: H,
        options: u32,
        offset: Off,
        size: Len,
    },
    VmarMap {
        p: u8,
        vmar: H,
        vmo: H,
        options: u32,
        vmar_offset: Off,
        vmo_offset: Off,
        len: Len,
    },
    VmarUnmap {
        p: u8,
        h: H,
        addr: Addr,
        len: Len,
    },
    VmarProtect {
        p: u8,
        h: H,
        options: u32,
        addr: Addr,
        len: Len,
    },
    VmarDestroy {
        p: u8,
        h: H,
    },
    VmarOpRange {
        p: u8,
        h: H,
        op: u32,
        addr: Addr,
        len: Len,
        buffer: u64,
        buffer_size: usize,
    },
    Duplicate {
        p: u8,
        h: H,
        rights: RightsArg,
    },
    Replace {
        p: u8,
        h: H,
        rights: RightsArg,
    },
    Close {
        p: u8,
        h: H,
    },
    /// Moves a handle to the next process (kernel side, as a channel would).
    Transfer {
        p: u8,
        h: H,
    },
    Load {
        cpu: u8,
        addr: Addr,
    },
    Store {
        cpu: u8,
        addr: Addr,
        value: u64,
    },
    /// Switches a CPU to a process's address space, or to none.
    Switch {
        cpu: u8,
        to: Option<u8>,
    },
    /// Kernel-side `Vmo::pin` / `Vmo::unpin`.
    Pin {
        p: u8,
        h: H,
        offset: Off,
        len: Len,
    },
    Unpin {
        p: u8,
        h: H,
        offset: Off,
        len: Len,
    },
    /// A kernel-made contiguous VMO handed to the process.
    Contiguous {
        p: u8,
        pages: u8,
    },
    /// A kernel-made physical VMO (over frames the harness owns) handed to the process.
    Physical {
        p: u8,
        pages: u8,
    },
    /// A kernel-made VMO of `runs` x 2 MiB and `extra` pages handed to the process: a paged one
    /// with large pages (`Vmo::create_large_pages`), a contiguous one, or a physical one over a
    /// 2 MiB-aligned run of frames the harness owns (whole runs only: `extra` is ignored).
    LargeVmo {
        p: u8,
        kind: LargeKind,
        runs: u8,
        extra: u8,
    },
    /// Compare every VMO's contents now.
    Check,
}

/// What [`Op::LargeVmo`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargeKind {
    Pages,
    Contiguous,
    Physical,
}

/// A start for random sequences, so that they begin with something to work on: process 0 has
/// two VMOs with data, both mapped (one read-write with `ZX_VM_MAP_RANGE`, one read-only) and a
/// sub-VMAR holding a second mapping of the first; process 1 maps the first VMO too (its handle
/// was duplicated and transferred) and has a small VMO of its own, mapped.
pub fn prelude() -> Vec<Op> {
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let map = |p, vmo, options, vmar_offset, first, pages| Op::VmarMap {
        p,
        vmar: H::Vmar(if vmar_offset > 0 { 1 } else { 0 }),
        vmo: H::Vmo(vmo),
        options,
        vmar_offset: Off::Pages(vmar_offset),
        vmo_offset: Off::Pages(first),
        len: Len::Pages(pages),
    };
    vec![
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(8),
            options: 0,
        },
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(4),
            options: 0,
        },
        Op::VmoWrite {
            p: 0,
            h: H::Vmo(0),
            offset: Off::Pages(1),
            len: 3 * PAGE as u16,
            seed: 1,
        },
        Op::VmoWrite {
            p: 0,
            h: H::Vmo(1),
            offset: Off::Raw(100),
            len: 5000,
            seed: 2,
        },
        map(0, 0, rw | ZX_VM_MAP_RANGE, 0, 0, 8),
        map(0, 1, ZX_VM_PERM_READ, 0, 0, 4),
        Op::VmarAllocate {
            p: 0,
            h: H::Vmar(0),
            options: ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC,
            offset: Off::Pages(0),
            size: Len::Pages(24),
        },
        map(0, 0, rw | ZX_VM_SPECIFIC, 4, 2, 4),
        Op::Duplicate {
            p: 0,
            h: H::Vmo(0),
            rights: RightsArg::Same,
        },
        Op::Transfer { p: 0, h: H::Vmo(2) },
        Op::VmoCreate {
            p: 1,
            size: Len::Pages(2),
            options: 0,
        },
        map(1, 0, rw, 0, 0, 8),
        map(1, 1, rw, 0, 0, 2),
    ]
}

/// The bytes a `VmoWrite` with `seed` writes.
pub fn write_data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (usize::from(seed) * 131 + i * 7 + 1) as u8)
        .collect()
}

/// Handle values this crate never issues in these tests (slot 1000 and beyond, or malformed).
pub(super) const GARBAGE: [zx_handle_t; 5] = [0x0fa3, 0x7fff_fff3, 0x1234_5678, u32::MAX - 4, 1];

/// Outcome counts (`"op: status"`), collected while [`collect_stats`] is on: to show that the
/// random sequences reach the outcomes that matter.
pub(super) static STATS: std::sync::Mutex<Option<BTreeMap<String, u64>>> =
    std::sync::Mutex::new(None);

/// Starts (`true`) or stops collecting outcome counts; stopping returns them.
pub fn collect_stats(on: bool) -> BTreeMap<String, u64> {
    let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let old = stats.take().unwrap_or_default();
    if on {
        *stats = Some(BTreeMap::new());
    }
    old
}

pub(super) fn record(op: &str, outcome: &str) {
    let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stats) = stats.as_mut() {
        *stats.entry(format!("{op}: {outcome}")).or_insert(0) += 1;
    }
}

/// The name of an op's variant.
pub(super) fn op_name(op: &Op) -> &'static str {
    match op {
        Op::VmoCreate { .. } => "zx_vmo_create",
        Op::VmoRead { .. } => "zx_vmo_read",
        Op::VmoWrite { .. } => "zx_vmo_write",
        Op::VmoOpRange { .. } => "zx_vmo_op_range",
        Op::VmoGetSize { .. } => "zx_vmo_get_size",
        Op::VmoSetSize { .. } => "zx_vmo_set_size",
        Op::VmoInfo { .. } => "zx_object_get_info_vmo",
        Op::VmoCreateChild { .. } => "zx_vmo_create_child",
        Op::VmarAllocate { .. } => "zx_vmar_allocate",
        Op::VmarMap { .. } => "zx_vmar_map",
        Op::VmarUnmap { .. } => "zx_vmar_unmap",
        Op::VmarProtect { .. } => "zx_vmar_protect",
        Op::VmarDestroy { .. } => "zx_vmar_destroy",
        Op::VmarOpRange { .. } => "zx_vmar_op_range",
        Op::Duplicate { .. } => "zx_handle_duplicate",
        Op::Replace { .. } => "zx_handle_replace",
        Op::Close { .. } => "zx_handle_close",
        Op::Transfer { .. } => "transfer",
        Op::Load { .. } => "load",
        Op::Store { .. } => "store",
        Op::Switch { .. } => "switch",
        Op::Pin { .. } => "pin",
        Op::Unpin { .. } => "unpin",
        Op::Contiguous { .. } => "contiguous",
        Op::Physical { .. } => "physical",
        Op::LargeVmo {
            kind: LargeKind::Pages,
            ..
        } => "large pages",
        Op::LargeVmo {
            kind: LargeKind::Contiguous,
            ..
        } => "large contiguous",
        Op::LargeVmo {
            kind: LargeKind::Physical,
            ..
        } => "large physical",
        Op::Check => "check",
    }
}
