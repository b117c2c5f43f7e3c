//! The proptest strategies of `tests/model.rs`: random operations, with arguments mostly good and
//! sometimes bad, and the random sequences ([`Case`]) they make.

use super::*;
use proptest::prelude::*;
use zx_vm::vmar::USER_ASPACE_BASE;

// =================================================================================================
// Strategies
// =================================================================================================

pub fn proc_index() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => Just(1u8)]
}

/// A VMO handle, mostly live (often one of the newest, so that children are worked on);
/// sometimes of the wrong type, stale, invalid or never issued.
pub fn vmo_handle() -> impl Strategy<Value = H> {
    prop_oneof![
        16 => any::<u8>().prop_map(H::Vmo),
        8 => (0u8..3).prop_map(H::RecentVmo),
        1 => any::<u8>().prop_map(H::Vmar),
        1 => any::<u8>().prop_map(H::Stale),
        1 => Just(H::Invalid),
        1 => any::<u8>().prop_map(H::Garbage),
    ]
}

/// A VMAR handle, mostly live; sometimes of the wrong type, stale, invalid or never issued.
pub fn vmar_handle() -> impl Strategy<Value = H> {
    prop_oneof![
        24 => any::<u8>().prop_map(H::Vmar),
        1 => any::<u8>().prop_map(H::Vmo),
        1 => any::<u8>().prop_map(H::Stale),
        1 => Just(H::Invalid),
        1 => any::<u8>().prop_map(H::Garbage),
    ]
}

pub fn any_handle() -> impl Strategy<Value = H> {
    prop_oneof![
        12 => any::<u8>().prop_map(H::Any),
        1 => any::<u8>().prop_map(H::Stale),
        1 => Just(H::Invalid),
        1 => any::<u8>().prop_map(H::Garbage),
    ]
}

pub fn edge_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - PAGE + 1),
        Just(u64::MAX - 2 * PAGE + 1),
        Just(1u64 << 47),
        Just((1u64 << 47) + 1),
        Just(1u64 << 48),
        Just(1u64 << 63),
    ]
}

/// An offset into a VMO.
pub fn vmo_offset() -> impl Strategy<Value = Off> {
    prop_oneof![
        10 => (0u8..12).prop_map(Off::Pages),
        2 => (0u64..12 * PAGE).prop_map(Off::Raw),
        1 => edge_value().prop_map(Off::Raw),
    ]
}

/// A VMO size.
pub fn vmo_size() -> impl Strategy<Value = Len> {
    prop_oneof![
        10 => (1u8..=12).prop_map(Len::Pages),
        2 => (0u64..12 * PAGE).prop_map(Len::Raw),
        1 => Just(Len::Pages(0)),
        1 => edge_value().prop_map(Len::Raw),
    ]
}

/// A length in a VMO or an address range: mostly whole pages.
pub fn length() -> impl Strategy<Value = Len> {
    prop_oneof![
        12 => (1u8..10).prop_map(Len::Pages),
        1 => Just(Len::Pages(0)),
        2 => (1u64..10 * PAGE).prop_map(Len::Raw),
        1 => edge_value().prop_map(Len::Raw),
    ]
}

/// A user address: mostly in or next to a region of the address space, page aligned.
pub fn address() -> impl Strategy<Value = Addr> {
    prop_oneof![
        12 => (any::<u8>(), any::<u8>()).prop_map(|(idx, page)| Addr::In { idx, page, bytes: 0 }),
        8 => (0u8..4, -1i8..2).prop_map(|(back, pages)| Addr::Touched { back, pages, keep_offset: false }),
        4 => (any::<u8>(), -1i8..12).prop_map(|(idx, pages)| Addr::Known { idx, pages, bytes: 0 }),
        1 => (any::<u8>(), any::<u8>(), 1u16..4096)
            .prop_map(|(idx, page, bytes)| Addr::In { idx, page, bytes }),
        1 => prop_oneof![
            Just(0u64),
            Just(USER_ASPACE_BASE - PAGE),
            Just(!(PAGE - 1)),
            Just(1u64 << 47),
            Just((1u64 << 47) - PAGE),
        ]
        .prop_map(Addr::Raw),
    ]
}

/// A word a CPU accesses: mostly in or next to a region of its address space.
pub fn word_address() -> impl Strategy<Value = Addr> {
    prop_oneof![
        20 => (any::<u8>(), any::<u8>(), 0u16..512)
            .prop_map(|(idx, page, word)| Addr::In { idx, page, bytes: word * 8 }),
        12 => (0u8..4, prop_oneof![4 => Just(0i8), 1 => -1i8..2])
            .prop_map(|(back, pages)| Addr::Touched { back, pages, keep_offset: true }),
        3 => (any::<u8>(), -1i8..12, 0u16..512)
            .prop_map(|(idx, pages, word)| Addr::Known { idx, pages, bytes: word * 8 }),
        1 => prop_oneof![Just(0u64), Just(USER_ASPACE_BASE - 8), Just((1u64 << 47) - 8)]
            .prop_map(Addr::Raw),
    ]
}

/// The length of an address range: mostly a few pages.
pub fn range_length() -> impl Strategy<Value = Len> {
    prop_oneof![
        10 => (1u8..4).prop_map(Len::Pages),
        4 => (4u8..12).prop_map(Len::Pages),
        1 => Just(Len::Pages(0)),
        1 => (1u64..8 * PAGE).prop_map(Len::Raw),
        1 => edge_value().prop_map(Len::Raw),
    ]
}

/// Offset and length of a pin: mostly small and page aligned.
pub fn pin_range() -> impl Strategy<Value = (Off, Len)> {
    prop_oneof![
        4 => Just((Off::Pages(0), Len::Pages(1))),
        8 => (0u8..4, 1u8..3).prop_map(|(o, l)| (Off::Pages(o), Len::Pages(l))),
        1 => (vmo_offset(), length()),
    ]
}

pub fn perms() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(ZX_VM_PERM_READ | ZX_VM_PERM_WRITE),
        3 => Just(ZX_VM_PERM_READ),
        1 => Just(0),
        1 => Just(ZX_VM_PERM_WRITE),
        1 => Just(ZX_VM_PERM_READ | ZX_VM_PERM_EXECUTE),
        1 => Just(ZX_VM_PERM_EXECUTE),
    ]
}

/// The options of a `zx_vmar_protect`: mostly a downgrade or an upgrade.
pub fn protect_options() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(ZX_VM_PERM_READ),
        5 => Just(ZX_VM_PERM_READ | ZX_VM_PERM_WRITE),
        1 => Just(0),
        1 => Just(ZX_VM_PERM_WRITE),
        1 => Just(ZX_VM_PERM_READ | ZX_VM_PERM_EXECUTE),
        1 => bad_option(),
    ]
}

/// A CPU: any, or (from 128 up) the one that made the previous access.
pub fn cpu() -> impl Strategy<Value = u8> {
    prop_oneof![1 => 0u8..3, 1 => Just(128u8)]
}

/// An option bit that the call in question does not accept.
pub fn bad_option() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(ZX_VM_COMPACT),
        Just(ZX_VM_CAN_MAP_READ),
        Just(ZX_VM_CAN_MAP_SPECIFIC),
        Just(ZX_VM_OFFSET_IS_UPPER_LIMIT),
        Just(ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED),
        Just(ZX_VM_MAP_RANGE),
        Just(1 << 20),
        Just(1 << 31),
    ]
}

/// Options, VMAR offset, VMO offset and length of a `zx_vmar_map`.
pub fn map_args() -> impl Strategy<Value = (u32, Off, Off, Len)> {
    let placement = prop_oneof![
        6 => Just(0),
        3 => Just(ZX_VM_SPECIFIC),
        1 => Just(ZX_VM_SPECIFIC_OVERWRITE),
    ];
    let extra = prop_oneof![
        8 => Just(0),
        3 => Just(ZX_VM_MAP_RANGE),
        1 => Just(ZX_VM_ALLOW_FAULTS),
        1 => Just(ZX_VM_REQUIRE_NON_RESIZABLE),
        1 => bad_option(),
    ];
    let vmar_offset = prop_oneof![
        8 => (0u8..40).prop_map(Off::Pages),
        1 => (0u64..40 * PAGE).prop_map(Off::Raw),
        1 => edge_value().prop_map(Off::Raw),
    ];
    let vmo_offset = prop_oneof![
        8 => (0u8..8).prop_map(Off::Pages),
        1 => (1u64..8 * PAGE).prop_map(Off::Raw),
        1 => edge_value().prop_map(Off::Raw),
    ];
    (
        perms(),
        placement,
        extra,
        vmar_offset,
        0u8..10,
        vmo_offset,
        length(),
    )
        .prop_map(|(perms, placement, extra, off, k, vmo_off, len)| {
            // Anywhere-placement wants offset 0: give it that nearly always.
            let off = if placement == 0 && k < 9 {
                Off::Pages(0)
            } else {
                off
            };
            (perms | placement | extra, off, vmo_off, len)
        })
}

/// Options, offset and size of a `zx_vmar_allocate`.
pub fn allocate_args() -> impl Strategy<Value = (u32, Off, Len)> {
    let can_map = prop_oneof![
        6 => Just(ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC),
        2 => Just(ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE),
        2 => Just(ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_SPECIFIC),
        1 => Just(ZX_VM_CAN_MAP_READ),
        1 => Just(0),
        1 => (0u32..16).prop_map(|bits| bits << 6),
    ];
    let extra = prop_oneof![
        10 => Just(0),
        2 => Just(ZX_VM_COMPACT),
        1 => prop_oneof![
            Just(ZX_VM_PERM_READ),
            Just(ZX_VM_MAP_RANGE),
            Just(ZX_VM_SPECIFIC_OVERWRITE),
            Just(1 << 20),
        ],
    ];
    let size = prop_oneof![
        12 => (1u8..32).prop_map(Len::Pages),
        1 => Just(Len::Pages(0)),
        1 => (1u64..32 * PAGE).prop_map(Len::Raw),
        1 => edge_value().prop_map(Len::Raw),
    ];
    (
        can_map,
        prop_oneof![3 => Just(0), 1 => Just(ZX_VM_SPECIFIC)],
        extra,
        prop_oneof![
            10 => (0u8..64).prop_map(Off::Pages),
            1 => (1u64..64 * PAGE).prop_map(Off::Raw),
            1 => edge_value().prop_map(Off::Raw),
        ],
        0u8..10,
        size,
    )
        .prop_map(|(can_map, specific, extra, off, k, size)| {
            let off = if specific == 0 && k < 9 {
                Off::Pages(0)
            } else {
                off
            };
            (can_map | specific | extra, off, size)
        })
}

pub fn rights_arg() -> impl Strategy<Value = RightsArg> {
    prop_oneof![
        2 => Just(RightsArg::Same),
        6 => any::<u8>().prop_map(RightsArg::Drop),
        1 => any::<u8>().prop_map(RightsArg::Grow),
        1 => any::<u32>().prop_map(RightsArg::Raw),
    ]
}

pub fn vmo_op() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(ZX_VMO_OP_COMMIT),
        6 => Just(ZX_VMO_OP_DECOMMIT),
        4 => Just(ZX_VMO_OP_ZERO),
        1 => prop_oneof![Just(0u32), Just(3), Just(5), Just(14), Just(15), Just(u32::MAX)],
    ]
}

pub fn vmar_op() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => Just(ZX_VMAR_OP_DECOMMIT),
        1 => prop_oneof![Just(0u32), Just(1), Just(4), Just(5), Just(6), Just(14), Just(15), Just(u32::MAX)],
    ]
}

pub fn buffer() -> impl Strategy<Value = u64> {
    prop_oneof![24 => Just(0u64), 1 => Just(0x1000u64), 1 => any::<u64>()]
}

/// One of the two newest VMO handles of the process.
pub fn newest() -> impl Strategy<Value = H> {
    (0u8..2).prop_map(H::RecentVmo)
}

/// An offset in the first pages of a VMO.
pub fn small_offset() -> impl Strategy<Value = Off> {
    prop_oneof![4 => (0u8..3).prop_map(Off::Pages), 1 => (0u64..3 * PAGE).prop_map(Off::Raw)]
}

/// A length of a page or two.
pub fn small_length() -> impl Strategy<Value = Len> {
    prop_oneof![4 => (1u8..3).prop_map(Len::Pages), 1 => (0u64..2 * PAGE).prop_map(Len::Raw)]
}

/// The options of a `zx_vmo_create_child`: mostly one kind of child, perhaps resizable or not
/// writable; sometimes a combination the call refuses.
pub fn child_options() -> impl Strategy<Value = u32> {
    let kind = prop_oneof![
        8 => Just(ZX_VMO_CHILD_SNAPSHOT),
        2 => Just(ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE),
        1 => Just(ZX_VMO_CHILD_SNAPSHOT_MODIFIED),
        4 => Just(ZX_VMO_CHILD_SLICE),
        3 => Just(ZX_VMO_CHILD_REFERENCE),
    ];
    let extra = prop_oneof![
        8 => Just(0),
        3 => Just(ZX_VMO_CHILD_RESIZABLE),
        2 => Just(ZX_VMO_CHILD_NO_WRITE),
    ];
    let bad = prop_oneof![
        Just(0),
        Just(ZX_VMO_CHILD_RESIZABLE),
        Just(ZX_VMO_CHILD_NO_WRITE),
        Just(ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_NO_WRITE | ZX_VMO_CHILD_RESIZABLE),
        Just(ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE),
        Just(ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_SLICE),
        Just(ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_REFERENCE),
        Just(ZX_VMO_CHILD_SLICE | ZX_VMO_CHILD_REFERENCE),
        Just(ZX_VMO_CHILD_SLICE | ZX_VMO_CHILD_RESIZABLE),
        Just(ZX_VMO_CHILD_SNAPSHOT | 1 << 1),
        Just(ZX_VMO_CHILD_REFERENCE | 1 << 8),
        any::<u32>(),
    ];
    prop_oneof![12 => (kind, extra).prop_map(|(kind, extra)| kind | extra), 1 => bad]
}

/// Options, offset and size of a `zx_vmo_create_child`: mostly whole pages near the parent's
/// (offset and size 0 for nearly every reference).
pub fn child_args() -> impl Strategy<Value = (u32, Off, Len)> {
    let offset = prop_oneof![
        10 => (0u8..6).prop_map(Off::Pages),
        1 => (1u64..8 * PAGE).prop_map(Off::Raw),
        1 => edge_value().prop_map(Off::Raw),
    ];
    let size = prop_oneof![
        10 => (1u8..10).prop_map(Len::Pages),
        1 => Just(Len::Pages(0)),
        1 => (1u64..10 * PAGE).prop_map(Len::Raw),
        1 => edge_value().prop_map(Len::Raw),
    ];
    (child_options(), offset, size, 0u8..10).prop_map(|(options, offset, size, k)| {
        if options & ZX_VMO_CHILD_REFERENCE != 0 && k < 9 {
            (options, Off::Pages(0), Len::Pages(0))
        } else {
            (options, offset, size)
        }
    })
}

pub fn op() -> impl Strategy<Value = Op> {
    let p = proc_index;
    prop_oneof![
        8 => (p(), vmo_size(), prop_oneof![16 => Just(0u32), 5 => Just(ZX_VMO_RESIZABLE), 1 => Just(ZX_VMO_DISCARDABLE), 1 => Just(1u32 << 5)])
            .prop_map(|(p, size, options)| Op::VmoCreate { p, size, options }),
        5 => (p(), vmo_handle(), vmo_offset(), 0u16..9000)
            .prop_map(|(p, h, offset, len)| Op::VmoRead { p, h, offset, len }),
        6 => (p(), vmo_handle(), vmo_offset(), 0u16..9000, any::<u8>())
            .prop_map(|(p, h, offset, len, seed)| Op::VmoWrite { p, h, offset, len, seed }),
        5 => (p(), vmo_handle(), vmo_op(), vmo_offset(), length(), buffer())
            .prop_map(|(p, h, op, offset, size, buffer)| Op::VmoOpRange { p, h, op, offset, size, buffer }),
        1 => (p(), vmo_handle()).prop_map(|(p, h)| Op::VmoGetSize { p, h }),
        3 => (p(), vmo_handle(), length()).prop_map(|(p, h, size)| Op::VmoSetSize { p, h, size }),
        2 => (p(), vmo_handle()).prop_map(|(p, h)| Op::VmoInfo { p, h }),
        5 => (p(), vmar_handle(), allocate_args())
            .prop_map(|(p, h, (options, offset, size))| Op::VmarAllocate { p, h, options, offset, size }),
        14 => (p(), vmar_handle(), vmo_handle(), map_args()).prop_map(
            |(p, vmar, vmo, (options, vmar_offset, vmo_offset, len))| Op::VmarMap {
                p, vmar, vmo, options, vmar_offset, vmo_offset, len,
            }
        ),
        4 => (p(), vmar_handle(), address(), range_length())
            .prop_map(|(p, h, addr, len)| Op::VmarUnmap { p, h, addr, len }),
        6 => (p(), vmar_handle(), protect_options(), address(), range_length())
            .prop_map(|(p, h, options, addr, len)| Op::VmarProtect { p, h, options, addr, len }),
        2 => (p(), vmar_handle()).prop_map(|(p, h)| Op::VmarDestroy { p, h }),
        12 => (p(), vmar_handle(), vmar_op(), address(), range_length(), buffer(), prop_oneof![24 => Just(0usize), 1 => 1usize..4096])
            .prop_map(|(p, h, op, addr, len, buffer, buffer_size)| Op::VmarOpRange {
                p, h, op, addr, len, buffer, buffer_size,
            }),
        4 => (p(), any_handle(), rights_arg()).prop_map(|(p, h, rights)| Op::Duplicate { p, h, rights }),
        3 => (p(), any_handle(), rights_arg()).prop_map(|(p, h, rights)| Op::Replace { p, h, rights }),
        3 => (p(), any_handle()).prop_map(|(p, h)| Op::Close { p, h }),
        3 => (p(), prop_oneof![(0u8..4).prop_map(H::RecentVmo), any::<u8>().prop_map(H::Vmo)])
            .prop_map(|(p, h)| Op::Close { p, h }),
        10 => (p(), vmo_handle(), child_args())
            .prop_map(|(p, h, (options, offset, size))| Op::VmoCreateChild { p, h, options, offset, size }),
        2 => (p(), any_handle()).prop_map(|(p, h)| Op::Transfer { p, h }),
        14 => (cpu(), word_address()).prop_map(|(cpu, addr)| Op::Load { cpu, addr }),
        14 => (cpu(), word_address(), any::<u64>())
            .prop_map(|(cpu, addr, value)| Op::Store { cpu, addr, value }),
        2 => (0u8..3, prop_oneof![3 => (0u8..2).prop_map(Some), 1 => Just(None)])
            .prop_map(|(cpu, to)| Op::Switch { cpu, to }),
        2 => (p(), vmo_handle(), pin_range())
            .prop_map(|(p, h, (offset, len))| Op::Pin { p, h, offset, len }),
        2 => (p(), vmo_handle(), pin_range())
            .prop_map(|(p, h, (offset, len))| Op::Unpin { p, h, offset, len }),
        // Calls on the newest VMOs (often children), over their first pages.
        6 => (p(), newest(), vmo_op(), small_offset(), small_length())
            .prop_map(|(p, h, op, offset, size)| Op::VmoOpRange { p, h, op, offset, size, buffer: 0 }),
        2 => (p(), newest(), small_offset(), 0u16..9000, any::<u8>())
            .prop_map(|(p, h, offset, len, seed)| Op::VmoWrite { p, h, offset, len, seed }),
        2 => (p(), newest(), (0u8..6).prop_map(Len::Pages))
            .prop_map(|(p, h, size)| Op::VmoSetSize { p, h, size }),
        1 => (p(), newest()).prop_map(|(p, h)| Op::Pin { p, h, offset: Off::Pages(0), len: Len::Pages(1) }),
        1 => (p(), newest()).prop_map(|(p, h)| Op::Unpin { p, h, offset: Off::Pages(0), len: Len::Pages(1) }),
        1 => (p(), 0u8..6).prop_map(|(p, pages)| Op::Contiguous { p, pages }),
        1 => (p(), 1u8..4).prop_map(|(p, pages)| Op::Physical { p, pages }),
    ]
}

// =================================================================================================
// Large pages
// =================================================================================================

/// A page in a large mapping ([`Addr::Run`]): mostly near the start or the end of one of its two
/// first runs, so that splits, faults and decommits meet.
pub fn run_page() -> impl Strategy<Value = u16> {
    let run = RUN_PAGES as u16;
    prop_oneof![
        6 => (0u16..2, 0u16..4).prop_map(move |(r, p)| r * run + p),
        3 => (0u16..2, 1u16..4).prop_map(move |(r, p)| r * run + run - p),
        2 => (0u16..2).prop_map(move |r| r * run),
        1 => 0u16..3 * run,
    ]
}

/// A run-aligned offset in a VMO, plus a few pages.
pub fn run_offset() -> impl Strategy<Value = Off> {
    prop_oneof![
        4 => (0u64..3, 0u64..4).prop_map(|(r, p)| Off::Raw(r * MIB2 + p * PAGE)),
        1 => (0u64..2).prop_map(|r| Off::Raw(r * MIB2 + MIB2 - PAGE)),
    ]
}

/// A length for splits (a page or a few) or for whole runs.
pub fn run_length() -> impl Strategy<Value = Len> {
    prop_oneof![
        6 => (1u8..4).prop_map(Len::Pages),
        3 => (1u64..3).prop_map(|r| Len::Raw(r * MIB2)),
        1 => Just(Len::Raw(MIB2 + PAGE)),
    ]
}

/// Calls that make large-page, contiguous and physical VMOs of whole 2 MiB runs, map them at
/// 2 MiB-aligned addresses (`ZX_VM_SPECIFIC` in the root VMAR), fault and commit whole runs, and
/// split them: single-page protects and back, DECOMMITs of pages and runs, holes unmapped and
/// runs mapped again, snapshots, writes, pins, and resizes (refused: not resizable).
pub fn large_op() -> impl Strategy<Value = Op> {
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let recent = || (0u8..2).prop_map(H::RecentVmo);
    let run = |idx: u8, page: u16, bytes: u16| Addr::Run { idx, page, bytes };
    prop_oneof![
        3 => (prop_oneof![6 => Just(LargeKind::Pages), 1 => Just(LargeKind::Contiguous), 1 => Just(LargeKind::Physical)], 1u8..3, prop_oneof![2 => Just(0u8), 1 => 1u8..3])
            .prop_map(|(kind, runs, extra)| Op::LargeVmo { p: 0, kind, runs, extra }),
        5 => (recent(), 1u64..6, prop_oneof![3 => Just(Off::Pages(0)), 1 => Just(Off::Raw(MIB2)), 1 => (1u8..3).prop_map(Off::Pages)],
              prop_oneof![3 => (1u64..3).prop_map(|r| Len::Raw(r * MIB2)), 1 => Just(Len::Raw(MIB2 + 3 * PAGE))],
              prop_oneof![4 => Just(0u32), 1 => Just(ZX_VM_MAP_RANGE)])
            .prop_map(move |(vmo, slot, vmo_offset, len, extra)| Op::VmarMap {
                p: 0, vmar: H::Vmar(0), vmo, options: rw | ZX_VM_SPECIFIC | extra,
                vmar_offset: Off::Raw(large_slot(slot)), vmo_offset, len,
            }),
        8 => (cpu(), any::<u8>(), run_page(), 0u16..512, any::<u64>())
            .prop_map(move |(cpu, idx, page, word, value)| Op::Store { cpu, addr: run(idx, page, word * 8), value }),
        6 => (cpu(), any::<u8>(), run_page(), 0u16..512)
            .prop_map(move |(cpu, idx, page, word)| Op::Load { cpu, addr: run(idx, page, word * 8) }),
        4 => (any::<u8>(), run_page(), prop_oneof![Just(ZX_VM_PERM_READ), Just(rw)], prop_oneof![4 => Just(Len::Pages(1)), 1 => (2u8..4).prop_map(Len::Pages)])
            .prop_map(move |(idx, page, options, len)| Op::VmarProtect { p: 0, h: H::Vmar(0), options, addr: run(idx, page, 0), len }),
        4 => (any::<u8>(), run_page(), run_length())
            .prop_map(move |(idx, page, len)| Op::VmarOpRange {
                p: 0, h: H::Vmar(0), op: ZX_VMAR_OP_DECOMMIT, addr: run(idx, page, 0), len, buffer: 0, buffer_size: 0,
            }),
        2 => (any::<u8>(), run_page(), run_length())
            .prop_map(move |(idx, page, len)| Op::VmarUnmap { p: 0, h: H::Vmar(0), addr: run(idx, page, 0), len }),
        3 => (recent(), prop_oneof![Just(ZX_VMO_OP_DECOMMIT), Just(ZX_VMO_OP_COMMIT), Just(ZX_VMO_OP_ZERO)], run_offset(), run_length())
            .prop_map(|(h, op, offset, size)| Op::VmoOpRange { p: 0, h, op, offset, size, buffer: 0 }),
        2 => (recent(), run_offset(), 0u16..9000, any::<u8>())
            .prop_map(|(h, offset, len, seed)| Op::VmoWrite { p: 0, h, offset, len, seed }),
        1 => (recent(), run_offset(), 0u16..9000)
            .prop_map(|(h, offset, len)| Op::VmoRead { p: 0, h, offset, len }),
        2 => (recent(), prop_oneof![Just(ZX_VMO_CHILD_SNAPSHOT), Just(ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE), Just(ZX_VMO_CHILD_SLICE)],
              prop_oneof![Just(Off::Pages(0)), Just(Off::Raw(MIB2))], prop_oneof![Just(Len::Pages(2)), Just(Len::Raw(MIB2))])
            .prop_map(|(h, options, offset, size)| Op::VmoCreateChild { p: 0, h, options, offset, size }),
        1 => (recent(), (0u8..3).prop_map(|r| Len::Raw(u64::from(r) * MIB2 + PAGE)))
            .prop_map(|(h, size)| Op::VmoSetSize { p: 0, h, size }),
        1 => (recent(), run_offset()).prop_map(|(h, offset)| Op::Pin { p: 0, h, offset, len: Len::Pages(1) }),
        1 => (recent(), run_offset()).prop_map(|(h, offset)| Op::Unpin { p: 0, h, offset, len: Len::Pages(1) }),
        1 => (0u8..2).prop_map(|h| Op::Close { p: 0, h: H::RecentVmo(h) }),
        1 => Just(Op::VmoInfo { p: 0, h: H::RecentVmo(0) }),
    ]
}

/// The start of a sequence about large pages: a large-page VMO of two runs and a page, mapped
/// 2 MiB aligned, and both runs touched (committed whole, mapped with 2 MiB leaves).
pub fn large_start() -> Vec<Op> {
    let run = |page: u16| Addr::Run {
        idx: 0,
        page,
        bytes: 8,
    };
    vec![
        Op::LargeVmo {
            p: 0,
            kind: LargeKind::Pages,
            runs: 2,
            extra: 1,
        },
        Op::VmarMap {
            p: 0,
            vmar: H::Vmar(0),
            vmo: H::RecentVmo(0),
            options: ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC,
            vmar_offset: Off::Raw(large_slot(2)),
            vmo_offset: Off::Pages(0),
            len: Len::Raw(2 * MIB2 + PAGE),
        },
        Op::Store {
            cpu: 0,
            addr: run(3),
            value: 0x1111,
        },
        Op::Load {
            cpu: 1,
            addr: run(RUN_PAGES as u16 + 9),
        },
    ]
}

/// One random sequence: the machine's tag count and invalidation mode, and up to 64 calls.
#[derive(Clone, Debug)]
pub struct Case {
    pub tags: u16,
    pub broadcast: bool,
    pub zero_page: bool,
    pub ops: Vec<Op>,
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(64u16), Just(1), Just(0)],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(op(), 1..=64),
        prop_oneof![1 => Just(None), 7 => (any::<usize>(), good_child()).prop_map(Some)],
        prop_oneof![
            2 => Just(None),
            1 => (any::<usize>(), prop::collection::vec((any::<usize>(), large_op()), 4..24)).prop_map(Some),
        ],
    )
        .prop_map(|(tags, broadcast, zero_page, mut ops, child, large)| {
            if let Some((at, child)) = child {
                ops.insert(at % (ops.len() + 1), child);
            }
            // One sequence in three works on large pages: a start, then its calls among the rest.
            if let Some((start, large)) = large {
                let start = start % (ops.len() + 1);
                for (i, op) in large_start().into_iter().enumerate() {
                    ops.insert(start + i, op);
                }
                for (at, op) in large {
                    let at = start + 4 + at % (ops.len() - start - 3);
                    ops.insert(at, op);
                }
            }
            Case {
                tags,
                broadcast,
                zero_page,
                ops,
            }
        })
}

/// A child of one of process 0's first VMOs (those of the prelude, mapped) that succeeds, so that
/// nearly every sequence has one.
pub fn good_child() -> impl Strategy<Value = Op> {
    let options = prop_oneof![
        6 => Just(ZX_VMO_CHILD_SNAPSHOT),
        2 => Just(ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE),
        2 => Just(ZX_VMO_CHILD_SLICE),
        2 => Just(ZX_VMO_CHILD_REFERENCE),
    ];
    (0u8..2, options, 0u8..3, 1u8..4).prop_map(|(h, options, offset, size)| {
        let (offset, size) = match options {
            ZX_VMO_CHILD_REFERENCE => (0, 0),
            _ => (offset, size),
        };
        Op::VmoCreateChild {
            p: 0,
            h: H::Vmo(h),
            options,
            offset: Off::Pages(offset),
            size: Len::Pages(size),
        }
    })
}
