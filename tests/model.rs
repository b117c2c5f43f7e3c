//! Random sequences of syscalls, kernel-side calls and simulated loads and stores, run on the crate
//! and on the reference model in `common/model/`, comparing every status, every address, every
//! byte read and every value loaded or fault taken; after each call the crate's state must match
//! the model's (handles, VMOs, VMARs, committed bytes, mapping counts), pass
//! `AddressSpace::audit()`, hold no empty page-table page, and account for every frame.
//!
//! Each page-table format runs `ZX_MODEL_CASES` sequences (default 2,000) of up to 64 calls, on a
//! machine with 3 CPUs and two processes (the second with a 6-handle table), with random tag
//! counts (untagged, one tag, plenty) and invalidation modes (IPIs or broadcast). Every sequence
//! starts from the same small world ([`prelude`]). A failure shrinks to a minimal sequence (there
//! is no persistence file: keep what a failure finds as an explicit test, in `tests/regressions.rs`
//! for crate bugs, or below).
//!
//! - `ZX_MODEL_CASES=100000 cargo test --release --test model`: a long run.
//! - `cargo test --test model coverage -- --nocapture`: how often each outcome is reached.

#[path = "common/model/mod.rs"]
mod model;

use model::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::vmar::USER_ASPACE_BASE;

/// Sequences per format: `ZX_MODEL_CASES`, or 2,000.
fn cases() -> u32 {
    std::env::var("ZX_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Minimal failing sequences are kept as explicit tests instead (see the top of the file).
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

// =================================================================================================
// Strategies
// =================================================================================================

fn proc_index() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => Just(1u8)]
}

/// A VMO handle, mostly live; sometimes of the wrong type, stale, invalid or never issued.
fn vmo_handle() -> impl Strategy<Value = H> {
    prop_oneof![
        24 => any::<u8>().prop_map(H::Vmo),
        1 => any::<u8>().prop_map(H::Vmar),
        1 => any::<u8>().prop_map(H::Stale),
        1 => Just(H::Invalid),
        1 => any::<u8>().prop_map(H::Garbage),
    ]
}

/// A VMAR handle, mostly live; sometimes of the wrong type, stale, invalid or never issued.
fn vmar_handle() -> impl Strategy<Value = H> {
    prop_oneof![
        24 => any::<u8>().prop_map(H::Vmar),
        1 => any::<u8>().prop_map(H::Vmo),
        1 => any::<u8>().prop_map(H::Stale),
        1 => Just(H::Invalid),
        1 => any::<u8>().prop_map(H::Garbage),
    ]
}

fn any_handle() -> impl Strategy<Value = H> {
    prop_oneof![
        12 => any::<u8>().prop_map(H::Any),
        1 => any::<u8>().prop_map(H::Stale),
        1 => Just(H::Invalid),
        1 => any::<u8>().prop_map(H::Garbage),
    ]
}

fn edge_value() -> impl Strategy<Value = u64> {
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
fn vmo_offset() -> impl Strategy<Value = Off> {
    prop_oneof![
        10 => (0u8..12).prop_map(Off::Pages),
        2 => (0u64..12 * PAGE).prop_map(Off::Raw),
        1 => edge_value().prop_map(Off::Raw),
    ]
}

/// A VMO size.
fn vmo_size() -> impl Strategy<Value = Len> {
    prop_oneof![
        10 => (1u8..=12).prop_map(Len::Pages),
        2 => (0u64..12 * PAGE).prop_map(Len::Raw),
        1 => Just(Len::Pages(0)),
        1 => edge_value().prop_map(Len::Raw),
    ]
}

/// A length in a VMO or an address range: mostly whole pages.
fn length() -> impl Strategy<Value = Len> {
    prop_oneof![
        12 => (1u8..10).prop_map(Len::Pages),
        1 => Just(Len::Pages(0)),
        2 => (1u64..10 * PAGE).prop_map(Len::Raw),
        1 => edge_value().prop_map(Len::Raw),
    ]
}

/// A user address: mostly in or next to a region of the address space, page aligned.
fn address() -> impl Strategy<Value = Addr> {
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
fn word_address() -> impl Strategy<Value = Addr> {
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
fn range_length() -> impl Strategy<Value = Len> {
    prop_oneof![
        10 => (1u8..4).prop_map(Len::Pages),
        4 => (4u8..12).prop_map(Len::Pages),
        1 => Just(Len::Pages(0)),
        1 => (1u64..8 * PAGE).prop_map(Len::Raw),
        1 => edge_value().prop_map(Len::Raw),
    ]
}

/// Offset and length of a pin: mostly small and page aligned.
fn pin_range() -> impl Strategy<Value = (Off, Len)> {
    prop_oneof![
        8 => (0u8..4, 1u8..3).prop_map(|(o, l)| (Off::Pages(o), Len::Pages(l))),
        1 => (vmo_offset(), length()),
    ]
}

fn perms() -> impl Strategy<Value = u32> {
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
fn protect_options() -> impl Strategy<Value = u32> {
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
fn cpu() -> impl Strategy<Value = u8> {
    prop_oneof![1 => 0u8..3, 1 => Just(128u8)]
}

/// An option bit that the call in question does not accept.
fn bad_option() -> impl Strategy<Value = u32> {
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
fn map_args() -> impl Strategy<Value = (u32, Off, Off, Len)> {
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
fn allocate_args() -> impl Strategy<Value = (u32, Off, Len)> {
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

fn rights_arg() -> impl Strategy<Value = RightsArg> {
    prop_oneof![
        2 => Just(RightsArg::Same),
        6 => any::<u8>().prop_map(RightsArg::Drop),
        1 => any::<u8>().prop_map(RightsArg::Grow),
        1 => any::<u32>().prop_map(RightsArg::Raw),
    ]
}

fn vmo_op() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(ZX_VMO_OP_COMMIT),
        6 => Just(ZX_VMO_OP_DECOMMIT),
        4 => Just(ZX_VMO_OP_ZERO),
        1 => prop_oneof![Just(0u32), Just(3), Just(5), Just(14), Just(15), Just(u32::MAX)],
    ]
}

fn vmar_op() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => Just(ZX_VMAR_OP_DECOMMIT),
        1 => prop_oneof![Just(0u32), Just(1), Just(4), Just(5), Just(6), Just(14), Just(15), Just(u32::MAX)],
    ]
}

fn buffer() -> impl Strategy<Value = u64> {
    prop_oneof![24 => Just(0u64), 1 => Just(0x1000u64), 1 => any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
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
        1 => (p(), 0u8..6).prop_map(|(p, pages)| Op::Contiguous { p, pages }),
        1 => (p(), 1u8..4).prop_map(|(p, pages)| Op::Physical { p, pages }),
    ]
}

/// One random sequence: the machine's tag count and invalidation mode, and up to 64 calls.
#[derive(Clone, Debug)]
struct Case {
    tags: u16,
    broadcast: bool,
    zero_page: bool,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(64u16), Just(1), Just(0)],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(op(), 1..=64),
    )
        .prop_map(|(tags, broadcast, zero_page, ops)| Case {
            tags,
            broadcast,
            zero_page,
            ops,
        })
}

fn run_case(format: Format, case: &Case) -> Result<(), TestCaseError> {
    let mut config = WorldConfig::standard(format, case.tags, case.broadcast);
    config.zero_page = case.zero_page;
    let ops: Vec<Op> = prelude()
        .into_iter()
        .chain(case.ops.iter().cloned())
        .collect();
    World::new(&config)
        .run(&ops)
        .map_err(|e| TestCaseError::fail(format!("{format:?}: {e}")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_x86_64(case in case()) {
        run_case(Format::X86_64, &case)?;
    }

    #[test]
    fn model_aarch64(case in case()) {
        run_case(Format::Aarch64, &case)?;
    }
}

// =================================================================================================
// Fixed sequences: minimal cases found by the random test, and a hand-written tour
// =================================================================================================

/// Runs `ops` on both formats, both invalidation modes, with and without tags.
fn run_fixed(ops: &[Op]) {
    for format in Format::ALL {
        for (tags, broadcast) in [(64, false), (64, true), (0, false)] {
            let config = WorldConfig::standard(format, tags, broadcast);
            if let Err(e) = World::new(&config).run(ops) {
                panic!("{format:?}, tags {tags}, broadcast {broadcast}: {e}");
            }
        }
    }
}

/// A tour of the calls with every argument good, so that a broken fixture cannot pass quietly:
/// two processes share a VMO, map it, touch it from all CPUs, protect, decommit, unmap, destroy.
#[test]
fn tour() {
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let known = |idx, pages| Addr::Known {
        idx,
        pages,
        bytes: 0,
    };
    let ops = vec![
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(8),
            options: 0,
        },
        Op::VmoWrite {
            p: 0,
            h: H::Vmo(0),
            offset: Off::Pages(1),
            len: 5000,
            seed: 3,
        },
        // addrs[1]: the whole VMO in process 0.
        Op::VmarMap {
            p: 0,
            vmar: H::Vmar(0),
            vmo: H::Vmo(0),
            options: rw | ZX_VM_MAP_RANGE,
            vmar_offset: Off::Pages(0),
            vmo_offset: Off::Pages(0),
            len: Len::Pages(8),
        },
        Op::Duplicate {
            p: 0,
            h: H::Vmo(0),
            rights: RightsArg::Same,
        },
        Op::Transfer { p: 0, h: H::Vmo(1) },
        // addrs[2]: pages 2.. of it in process 1, at the same first-fit address.
        Op::VmarMap {
            p: 1,
            vmar: H::Vmar(0),
            vmo: H::Vmo(0),
            options: rw,
            vmar_offset: Off::Pages(0),
            vmo_offset: Off::Pages(2),
            len: Len::Pages(6),
        },
        Op::Store {
            cpu: 0,
            addr: known(1, 3),
            value: 0x1111,
        },
        Op::Load {
            cpu: 1,
            addr: known(2, 1),
        },
        Op::Store {
            cpu: 1,
            addr: known(2, 0),
            value: 0x2222,
        },
        Op::Load {
            cpu: 2,
            addr: known(1, 2),
        },
        Op::VmarProtect {
            p: 0,
            h: H::Vmar(0),
            options: ZX_VM_PERM_READ,
            addr: known(1, 2),
            len: Len::Pages(2),
        },
        Op::Store {
            cpu: 0,
            addr: known(1, 2),
            value: 0x3333,
        },
        // Decommit through process 0 what process 1 maps too.
        Op::VmarOpRange {
            p: 0,
            h: H::Vmar(0),
            op: ZX_VMAR_OP_DECOMMIT,
            addr: known(1, 1),
            len: Len::Pages(4),
            buffer: 0,
            buffer_size: 0,
        },
        Op::Load {
            cpu: 1,
            addr: known(2, 0),
        },
        Op::Load {
            cpu: 0,
            addr: known(1, 5),
        },
        Op::VmarAllocate {
            p: 0,
            h: H::Vmar(0),
            options: ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC,
            offset: Off::Pages(0),
            size: Len::Pages(16),
        },
        Op::VmarMap {
            p: 0,
            vmar: H::Vmar(1),
            vmo: H::Vmo(0),
            options: rw | ZX_VM_SPECIFIC,
            vmar_offset: Off::Pages(4),
            vmo_offset: Off::Pages(0),
            len: Len::Pages(4),
        },
        Op::Store {
            cpu: 2,
            addr: known(4, 0),
            value: 0x4444,
        },
        Op::VmarOpRange {
            p: 0,
            h: H::Vmar(0),
            op: ZX_VMAR_OP_DECOMMIT,
            addr: known(3, 4),
            len: Len::Pages(1),
            buffer: 0,
            buffer_size: 0,
        },
        Op::VmarUnmap {
            p: 0,
            h: H::Vmar(0),
            addr: known(1, 3),
            len: Len::Pages(2),
        },
        Op::Load {
            cpu: 0,
            addr: known(1, 3),
        },
        Op::VmarDestroy {
            p: 0,
            h: H::Vmar(1),
        },
        Op::VmoInfo { p: 0, h: H::Vmo(0) },
        Op::Check,
    ];
    run_fixed(&ops);
}

/// A commit or a pin of a whole 128 TiB VMO needs more frames than the machine has: both sides
/// answer `ZX_ERR_NO_MEMORY` and nothing changes (the crate gives back the frames it took). Found
/// by a 20,000-sequence run, in which the model, committing page by page, ran the host out of
/// memory before it could answer.
#[test]
fn committing_more_than_the_machine_holds_is_no_memory() {
    let huge = Len::Raw(1 << 47);
    let ops = vec![
        Op::VmoCreate {
            p: 0,
            size: huge,
            options: 0,
        },
        Op::VmoOpRange {
            p: 0,
            h: H::Vmo(0),
            op: ZX_VMO_OP_COMMIT,
            offset: Off::Pages(0),
            size: huge,
            buffer: 0,
        },
        Op::Pin {
            p: 0,
            h: H::Vmo(0),
            offset: Off::Pages(0),
            len: huge,
        },
        Op::VmoInfo { p: 0, h: H::Vmo(0) },
        Op::Check,
    ];
    run_fixed(&ops);
}

/// The random sequences reach the outcomes that matter: every status of the contract's order of
/// checks for `zx_vmar_op_range`, successes of every call, and every fault kind. (A fixed seed,
/// so that this does not flake; `cargo test --test model coverage -- --nocapture` prints the
/// counts.)
#[test]
fn coverage() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let config = Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    collect_stats(true);
    let result = runner.run(&case(), |case| run_case(Format::NATIVE, &case));
    let stats = collect_stats(false);
    result.expect("the model agrees");
    for (outcome, count) in &stats {
        println!("{count:>8}  {outcome}");
    }
    let required = [
        "zx_vmar_op_range: ZX_OK",
        "zx_vmar_op_range: ZX_ERR_BAD_HANDLE",
        "zx_vmar_op_range: ZX_ERR_WRONG_TYPE",
        "zx_vmar_op_range: ZX_ERR_INVALID_ARGS",
        "zx_vmar_op_range: ZX_ERR_NOT_SUPPORTED",
        "zx_vmar_op_range: ZX_ERR_ACCESS_DENIED",
        "zx_vmar_op_range: ZX_ERR_OUT_OF_RANGE",
        "zx_vmar_op_range: ZX_ERR_BAD_STATE",
        "zx_vmo_create: ZX_OK",
        "zx_vmo_read: ZX_OK",
        "zx_vmo_write: ZX_OK",
        "zx_vmo_op_range: ZX_OK",
        "zx_vmar_allocate: ZX_OK",
        "zx_vmar_allocate: ZX_ERR_NO_RESOURCES",
        "zx_vmar_map: ZX_OK",
        "zx_vmar_map: ZX_ERR_ALREADY_EXISTS",
        "zx_vmar_unmap: ZX_OK",
        "zx_vmar_protect: ZX_OK",
        "zx_vmar_protect: ZX_ERR_NOT_FOUND",
        "zx_vmar_destroy: ZX_OK",
        "zx_handle_duplicate: ZX_OK",
        "zx_handle_duplicate: ZX_ERR_NO_RESOURCES",
        "zx_handle_replace: ZX_OK",
        "zx_handle_close: ZX_OK",
        "transfer: ZX_OK",
        "pin: ZX_OK",
        "unpin: ZX_OK",
        "contiguous: ZX_OK",
        "physical: ZX_OK",
        "load: Ok",
        "load: NotMapped",
        "load: OutOfRange",
        "store: Ok",
        "store: AccessDenied",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !stats.contains_key(*r))
        .collect();
    assert!(missing.is_empty(), "never reached: {missing:?}");
}
