//! Random sequences of syscalls, kernel-side calls and simulated loads and stores, run on the crate
//! and on the reference model in `common/model/`, comparing every status, every address, every
//! byte read and every value loaded or fault taken; after each call the crate's state must match
//! the model's (handles, VMOs, VMARs, committed bytes, mapping counts), pass
//! `AddressSpace::audit()`, hold no empty page-table page, and account for every frame. The calls
//! include `zx_vmo_create_child` (snapshots, slices, references; good and bad options, offsets and
//! sizes), and every other call works on children as on any VMO (the model's snapshots are eager
//! copies: `common/model/child.rs`).
//!
//! Each page-table format runs `ZX_MODEL_CASES` sequences (default 2,500) of up to 65 calls, on a
//! machine with 3 CPUs and two processes (the second with a 6-handle table), with random tag
//! counts (untagged, one tag, plenty) and invalidation modes (IPIs or broadcast). Every sequence
//! starts from the same small world ([`prelude`]); seven in eight get a child of one of its VMOs
//! somewhere (so that about 2,300 per format have a child), besides the random
//! `zx_vmo_create_child` calls. After every call, contents are compared through `zx_vmo_read` and
//! through every translation the CPUs' TLBs hold. One sequence in three also works on large pages
//! ([`large_start`], [`large_op`]): kernel-made large-page, contiguous and physical VMOs of whole
//! 2 MiB runs, mapped 2 MiB aligned, faulted (a fault commits a whole run: `Model::fault_run`)
//! and split by protects, DECOMMITs, unmaps and snapshots; on a machine of 8,192 frames, with a
//! large VMO's pages sampled between full comparisons. A failure shrinks to a minimal sequence (there
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
use zx_vm::vmo::MAX_COW_DEPTH;

/// Sequences per format: `ZX_MODEL_CASES`, or 2,500 (of which about 2,300 make a child).
fn cases() -> u32 {
    std::env::var("ZX_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500)
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

fn run_case(format: Format, case: &Case) -> Result<(), TestCaseError> {
    let mut config = WorldConfig::standard(format, case.tags, case.broadcast);
    config.zero_page = case.zero_page;
    let ops: Vec<Op> = prelude()
        .into_iter()
        .chain(case.ops.iter().cloned())
        .collect();
    let mut world = World::new(&config);
    // Contents through `zx_vmo_read` after every step (the TLBs' translations are checked after
    // every step anyway).
    world.deep_every = 1;
    world
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

/// The status of each op of `ops` (`None` for a load, store or switch), run on the native format.
fn statuses(ops: &[Op]) -> Vec<Option<zx_status_t>> {
    let mut world = World::new(&WorldConfig::standard(Format::NATIVE, 64, false));
    let statuses = ops
        .iter()
        .map(|op| {
            world.step(op).expect("the model agrees");
            world.last_status
        })
        .collect();
    world.finish().expect("the model agrees");
    statuses
}

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
    run_fixed(&model::tour());
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

/// Children, with every argument good but where a status is the point ([`children_tour`]):
/// snapshots, slices and references, mapped, written and read through CPUs, DECOMMIT refused
/// while relatives live, then allowed once they are closed.
#[test]
fn children_tour() {
    let ops = model::children_tour();
    run_fixed(&ops);
    for (i, status) in statuses(&ops).into_iter().enumerate() {
        let want = CHILDREN_TOUR_REFUSED
            .iter()
            .find(|&&(at, _)| at == i)
            .map_or(ZX_OK, |&(_, status)| status);
        assert!(status.is_none_or(|s| s == want), "op {i}: {status:?}");
    }
}

/// A copy-on-write tree is at most `MAX_COW_DEPTH` deep: the 33rd snapshot of one VMO, or of
/// the newest of a chain of 32, is `ZX_ERR_NO_RESOURCES` (each snapshot puts a hidden node above
/// the VMO it was taken of).
#[test]
fn snapshots_are_at_most_max_cow_depth_deep() {
    for chain in [false, true] {
        let config = WorldConfig::standard(Format::NATIVE, 64, false);
        let mut world = World::new(&config);
        let create = Op::VmoCreate {
            p: 0,
            size: Len::Pages(2),
            options: 0,
        };
        world.step(&create).expect("create");
        for i in 0..=MAX_COW_DEPTH {
            let h = if chain { H::RecentVmo(0) } else { H::Vmo(0) };
            let op = Op::VmoCreateChild {
                p: 0,
                h,
                options: ZX_VMO_CHILD_SNAPSHOT,
                offset: Off::Pages(0),
                size: Len::Pages(2),
            };
            world.step(&op).expect("the model agrees");
            let want = if i < MAX_COW_DEPTH {
                ZX_OK
            } else {
                ZX_ERR_NO_RESOURCES
            };
            assert_eq!(world.last_status, Some(want), "chain {chain}, snapshot {i}");
        }
        world.finish().expect("the model agrees");
    }
}

/// ZERO of an empty range changes nothing, in a snapshot too: the page it names stays shared
/// with the parent (and counted for it). Found by a 20,000-sequence run, in which the model made
/// that page the snapshot's own.
#[test]
fn zero_of_nothing_leaves_a_shared_page_shared() {
    let ops: Vec<Op> = prelude()
        .into_iter()
        .chain([
            Op::VmoCreateChild {
                p: 0,
                h: H::Vmo(0),
                options: ZX_VMO_CHILD_SNAPSHOT,
                offset: Off::Pages(0),
                size: Len::Pages(2),
            },
            Op::VmoOpRange {
                p: 0,
                h: H::RecentVmo(0),
                op: ZX_VMO_OP_ZERO,
                offset: Off::Raw(PAGE + 1),
                size: Len::Pages(0),
                buffer: 0,
            },
            Op::VmoInfo {
                p: 0,
                h: H::RecentVmo(0),
            },
            Op::Check,
        ])
        .collect();
    run_fixed(&ops);
}

/// A `zx_vmar_protect` of a mapping of a VMO whose snapshot relatives all died takes the VMO out
/// of its family, as a DECOMMIT, a ZERO or a snapshot of it would: every page it has is its own
/// from then on, so its committed bytes count them all (before, they counted none: the parent
/// that had them died), and a ZERO gives a whole page back.
#[test]
fn protect_takes_a_vmo_alone_out_of_its_family() {
    let recent = H::RecentVmo;
    let ops: Vec<Op> = prelude()
        .into_iter()
        .chain([
            Op::VmoCreate {
                p: 0,
                size: Len::Pages(2),
                options: 0,
            },
            Op::VmoWrite {
                p: 0,
                h: recent(0),
                offset: Off::Pages(0),
                len: 2 * PAGE as u16,
                seed: 4,
            },
            Op::VmoCreateChild {
                p: 0,
                h: recent(0),
                options: ZX_VMO_CHILD_SNAPSHOT,
                offset: Off::Pages(0),
                size: Len::Pages(2),
            },
            // addrs[7]: the snapshot, mapped; then its parent closed.
            Op::VmarMap {
                p: 0,
                vmar: H::Vmar(0),
                vmo: recent(0),
                options: ZX_VM_PERM_READ | ZX_VM_PERM_WRITE,
                vmar_offset: Off::Pages(0),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(2),
            },
            Op::Close { p: 0, h: recent(1) },
            Op::VmarProtect {
                p: 0,
                h: H::Vmar(0),
                options: ZX_VM_PERM_READ | ZX_VM_PERM_WRITE,
                addr: Addr::Known {
                    idx: 7,
                    pages: 0,
                    bytes: 0,
                },
                len: Len::Pages(2),
            },
            Op::VmoOpRange {
                p: 0,
                h: recent(0),
                op: ZX_VMO_OP_ZERO,
                offset: Off::Pages(0),
                size: Len::Pages(1),
                buffer: 0,
            },
            Op::VmoInfo { p: 0, h: recent(0) },
            Op::Check,
        ])
        .collect();
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
        "large pages: ZX_OK",
        "large contiguous: ZX_OK",
        "large physical: ZX_OK",
        "large: fault commits a run",
        "zx_vmo_create_child snapshot: ZX_OK",
        "zx_vmo_create_child slice: ZX_OK",
        "zx_vmo_create_child reference: ZX_OK",
        "zx_vmo_create_child: ZX_ERR_INVALID_ARGS",
        "zx_vmo_create_child: ZX_ERR_NOT_SUPPORTED",
        "zx_vmo_create_child: ZX_ERR_ACCESS_DENIED",
        "zx_vmo_create_child: ZX_ERR_OUT_OF_RANGE",
        "zx_vmo_create_child: ZX_ERR_BAD_STATE",
        "zx_vmo_create_child: ZX_ERR_NO_RESOURCES",
        "tree: decommit refused: pages shared",
        "tree: left its family",
        "tree: zero writes over shared pages",
        "tree: resized",
        "alias: slice forwards",
        "alias: reference forwards",
        "tlb: translations checked",
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
