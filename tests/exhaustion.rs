//! Running out: of frames at every point of a fixed sequence, of handle-table slots, and of
//! address space. Every call must either succeed or fail with its documented status
//! (`ZX_ERR_NO_MEMORY` for frames, `ZX_ERR_NO_RESOURCES` for handles and address space) and leave
//! nothing half done.
//!
//! The sequence runs through the harness of `common/model/` in exhaustion mode: a call that runs
//! out of memory where the reference model says `ZX_OK` is taken as not having happened, so after
//! every call the harness's checks prove the crate changed nothing either: the same handles,
//! VMOs (contents, committed bytes, mapping counts), VMARs, no translation that is not a live
//! mapping's committed page (`AddressSpace::audit()`), no empty page-table page, and frames in use
//! equal to the committed pages of live VMOs plus the page-table pages. Only calls that take frames
//! may fail with `ZX_ERR_NO_MEMORY` at all; a CPU access that runs out of memory must fault with
//! `FaultError::NoMemory`, and may leave the page it committed (zero-filled, as Zircon does).
//!
//! Frame exhaustion is tried at every allocation of the sequence, in two modes: "sticky" (the
//! allocator fails from the N-th request on) and "one-shot" (only the N-th request fails, and the
//! rest of the sequence must carry on normally from whatever state that left).

#[path = "common/model/mod.rs"]
mod model;

use model::*;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::vmar::USER_ASPACE_BASE;

const RW: u32 = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Process 0's root VMAR handle (the first handle issued: the lowest value).
const ROOT: H = H::Vmar(0);

/// The address of page `i` from `base`.
fn page(base: u64, i: u64) -> Addr {
    Addr::Raw(base + i * PAGE)
}

/// A fixed sequence of well over 200 calls that takes frames in every way the crate does: VMO
/// writes, COMMIT, pins, faults from loads and stores (data pages and page tables),
/// `ZX_VM_MAP_RANGE` (page tables), contiguous VMOs; interleaved with calls that give frames
/// back (decommit through the VMO and through VMARs, in two address spaces; unmap; destroy;
/// close) or take none (protect, duplicate, transfer, reads). Every address is fixed (`SPECIFIC`
/// placement), so a call that fails does not move the later ones.
fn sequence() -> Vec<Op> {
    let mut ops = Vec::new();
    for r in 0..6u64 {
        // Each round in a new 1 GiB region (the later ones past 512 GiB), so that mappings need
        // new page tables at every level.
        let sub_offset = if r < 3 {
            (r + 1) * GIB
        } else {
            (1 << 39) + (r - 2) * GIB
        };
        let m1 = USER_ASPACE_BASE + sub_offset;
        let m2 = m1 + 2 * MIB;
        let contiguous = USER_ASPACE_BASE + (r + 1) * 32 * MIB;
        let p1_map = USER_ASPACE_BASE + (r + 1) * 2 * GIB;
        let vmo = H::RecentVmo(0);
        let decommit = |addr, pages| Op::VmarOpRange {
            p: 0,
            h: ROOT,
            op: ZX_VMAR_OP_DECOMMIT,
            addr,
            len: Len::Pages(pages),
            buffer: 0,
            buffer_size: 0,
        };
        ops.extend([
            Op::VmoCreate {
                p: 0,
                size: Len::Pages(6),
                options: 0,
            },
            Op::VmoWrite {
                p: 0,
                h: vmo,
                offset: Off::Pages(0),
                len: 2 * PAGE as u16 + 100,
                seed: r as u8,
            },
            Op::VmoOpRange {
                p: 0,
                h: vmo,
                op: ZX_VMO_OP_COMMIT,
                offset: Off::Pages(4),
                size: Len::Pages(2),
                buffer: 0,
            },
            Op::VmarAllocate {
                p: 0,
                h: ROOT,
                options: ZX_VM_CAN_MAP_READ
                    | ZX_VM_CAN_MAP_WRITE
                    | ZX_VM_CAN_MAP_SPECIFIC
                    | ZX_VM_SPECIFIC,
                offset: Off::Raw(sub_offset),
                size: Len::Raw(4 * MIB),
            },
            // Mapping 1 prefaults the committed pages; mapping 2 (in another 2 MiB region)
            // faults them in.
            Op::VmarMap {
                p: 0,
                vmar: H::RecentVmar(0),
                vmo,
                options: RW | ZX_VM_SPECIFIC | ZX_VM_MAP_RANGE,
                vmar_offset: Off::Pages(0),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(6),
            },
            Op::VmarMap {
                p: 0,
                vmar: H::RecentVmar(0),
                vmo,
                options: RW | ZX_VM_SPECIFIC,
                vmar_offset: Off::Raw(2 * MIB),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(6),
            },
            Op::Load {
                cpu: 0,
                addr: page(m2, 0),
            },
            Op::Store {
                cpu: 0,
                addr: Addr::Raw(m2 + PAGE + 8),
                value: 0x1000 + r,
            },
            Op::Store {
                cpu: 2,
                addr: page(m2, 3),
                value: 0x2000 + r,
            },
            Op::Load {
                cpu: 2,
                addr: page(m1, 3),
            },
            Op::VmarProtect {
                p: 0,
                h: ROOT,
                options: ZX_VM_PERM_READ,
                addr: page(m2, 0),
                len: Len::Pages(2),
            },
            Op::Store {
                cpu: 0,
                addr: page(m2, 0),
                value: 1,
            },
            decommit(page(m1, 1), 2),
            Op::Load {
                cpu: 0,
                addr: page(m2, 1),
            },
            Op::VmoOpRange {
                p: 0,
                h: vmo,
                op: ZX_VMO_OP_DECOMMIT,
                offset: Off::Pages(4),
                size: Len::Pages(2),
                buffer: 0,
            },
            Op::Pin {
                p: 0,
                h: vmo,
                offset: Off::Pages(0),
                len: Len::Pages(3),
            },
            // Pinned: refused.
            decommit(page(m1, 0), 1),
            Op::Unpin {
                p: 0,
                h: vmo,
                offset: Off::Pages(0),
                len: Len::Pages(3),
            },
            Op::Contiguous { p: 0, pages: 3 },
            Op::VmarMap {
                p: 0,
                vmar: ROOT,
                vmo: H::RecentVmo(0),
                options: RW | ZX_VM_SPECIFIC | ZX_VM_MAP_RANGE,
                vmar_offset: Off::Raw(contiguous - USER_ASPACE_BASE),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(3),
            },
            Op::Store {
                cpu: 2,
                addr: page(contiguous, 2),
                value: 0x3000 + r,
            },
            Op::Load {
                cpu: 0,
                addr: page(contiguous, 2),
            },
            // Process 1 maps the paged VMO too.
            Op::Duplicate {
                p: 0,
                h: H::RecentVmo(1),
                rights: RightsArg::Same,
            },
            Op::Transfer {
                p: 0,
                h: H::RecentVmo(0),
            },
            Op::VmarMap {
                p: 1,
                vmar: H::Vmar(0),
                vmo: H::RecentVmo(0),
                options: RW | ZX_VM_SPECIFIC | ZX_VM_MAP_RANGE,
                vmar_offset: Off::Raw(p1_map - USER_ASPACE_BASE),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(6),
            },
            Op::Store {
                cpu: 1,
                addr: page(p1_map, 4),
                value: 0x4000 + r,
            },
            Op::Load {
                cpu: 1,
                addr: page(p1_map, 0),
            },
            // Decommit through process 0 what process 1 maps.
            decommit(page(m1, 0), 6),
            Op::Load {
                cpu: 1,
                addr: page(p1_map, 0),
            },
            Op::VmoRead {
                p: 0,
                h: H::RecentVmo(1),
                offset: Off::Pages(0),
                len: 3 * PAGE as u16,
            },
            Op::VmarUnmap {
                p: 0,
                h: ROOT,
                addr: page(m2, 3),
                len: Len::Pages(3),
            },
            // Overwrite part of mapping 2 with the contiguous VMO (which cannot decommit).
            Op::VmarMap {
                p: 0,
                vmar: H::RecentVmar(0),
                vmo: H::RecentVmo(0),
                options: RW | ZX_VM_SPECIFIC_OVERWRITE,
                vmar_offset: Off::Raw(2 * MIB + PAGE),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(2),
            },
            Op::Load {
                cpu: 0,
                addr: page(m2, 2),
            },
            decommit(page(m2, 0), 3),
            Op::VmoWrite {
                p: 1,
                h: H::RecentVmo(0),
                offset: Off::Pages(5),
                len: 10,
                seed: 7,
            },
            Op::Load {
                cpu: 2,
                addr: page(m1, 5),
            },
            Op::VmarUnmap {
                p: 1,
                h: H::Vmar(0),
                addr: page(p1_map, 0),
                len: Len::Pages(6),
            },
            Op::Close {
                p: 1,
                h: H::RecentVmo(0),
            },
            if r % 2 == 1 {
                Op::VmarDestroy {
                    p: 0,
                    h: H::RecentVmar(0),
                }
            } else {
                Op::VmarProtect {
                    p: 0,
                    h: H::RecentVmar(0),
                    options: RW,
                    addr: page(m1, 0),
                    len: Len::Pages(6),
                }
            },
            Op::Close {
                p: 0,
                h: H::RecentVmo(1),
            },
            Op::Switch {
                cpu: 2,
                to: Some(1),
            },
            Op::Load {
                cpu: 2,
                addr: page(p1_map, 0),
            },
            Op::Switch {
                cpu: 2,
                to: Some(0),
            },
            Op::Load {
                cpu: 2,
                addr: page(m1, 2),
            },
        ]);
    }
    ops
}

/// How a run limits the frame allocator.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// No limit.
    None,
    /// The allocator refuses every request after the first `n`.
    Sticky(u64),
    /// The allocator refuses the request after the first `n`, and only that one.
    OneShot(u64),
}

/// What a run did.
struct Outcome {
    /// Frames allocated during the sequence.
    allocated: u64,
    /// Calls (and accesses) that failed for lack of memory.
    no_memory: u64,
    notes: Vec<String>,
}

fn run(format: Format, limit: Limit) -> Result<Outcome, String> {
    // x86_64 shoots down with IPIs, aarch64 broadcasts (as each architecture does).
    let broadcast = format == Format::Aarch64;
    let mut world = World::new(&WorldConfig::standard(format, 64, broadcast));
    world.exhaustion = true;
    let before = world.frames_allocated();
    match limit {
        Limit::None => {}
        Limit::Sticky(n) | Limit::OneShot(n) => world.machine.set_allocation_budget(Some(n)),
    }
    for (i, op) in sequence().iter().enumerate() {
        world
            .step(op)
            .map_err(|e| format!("{format:?} {limit:?}, step {i}: {e}"))?;
        if matches!(limit, Limit::OneShot(_)) && world.no_memory > 0 {
            world.machine.set_allocation_budget(None);
        }
    }
    world.machine.set_allocation_budget(None);
    let outcome = Outcome {
        allocated: world.frames_allocated() - before,
        no_memory: world.no_memory,
        notes: std::mem::take(&mut world.notes),
    };
    world
        .finish()
        .map_err(|e| format!("{format:?} {limit:?}, at the end: {e}"))?;
    Ok(outcome)
}

/// Fails the allocator at every allocation of the sequence, in both modes.
fn every_allocation_fails(format: Format) {
    let calls = sequence().len();
    assert!(calls >= 200, "{calls} calls");
    let clean = run(format, Limit::None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(clean.no_memory, 0);
    let total = clean.allocated;
    assert!(total > 100, "the sequence takes only {total} frames");
    let mut notes = Vec::new();
    for n in 0..total {
        for limit in [Limit::Sticky(n), Limit::OneShot(n)] {
            let outcome = run(format, limit).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                outcome.no_memory > 0,
                "{format:?} {limit:?}: no call ran out of memory"
            );
            notes.extend(outcome.notes);
        }
    }
    // With exactly enough frames, nothing fails.
    let enough = run(format, Limit::Sticky(total)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(enough.no_memory, 0);
    println!(
        "{format:?}: {calls} calls, {total} frame allocations, each failed in both modes; \
         {} faults ran out of memory after committing their page",
        notes.len()
    );
}

#[test]
fn frames_run_out_x86_64() {
    every_allocation_fails(Format::X86_64);
}

#[test]
fn frames_run_out_aarch64() {
    every_allocation_fails(Format::Aarch64);
}

/// Runs `op` (compared with the model and checked as every step is), which must end with
/// `status`.
#[track_caller]
fn expect(world: &mut World, op: Op, status: zx_status_t) {
    if let Err(e) = world.step(&op) {
        panic!("{e}");
    }
    assert_eq!(
        world.last_status.map(status_name),
        Some(status_name(status)),
        "{op:?}"
    );
}

#[test]
fn handle_table_runs_out() {
    for format in Format::ALL {
        let mut config = WorldConfig::standard(format, 64, false);
        config.handle_limits = vec![5, 2];
        let mut world = World::new(&config);
        let vmo = |pages| Op::VmoCreate {
            p: 0,
            size: Len::Pages(pages),
            options: 0,
        };
        let allocate = |pages| Op::VmarAllocate {
            p: 0,
            h: ROOT,
            options: ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE,
            offset: Off::Pages(0),
            size: Len::Pages(pages),
        };
        let dup = Op::Duplicate {
            p: 0,
            h: H::Vmo(0),
            rights: RightsArg::Same,
        };
        // The root, a VMO, a sub-VMAR, a duplicate, another VMO: full.
        expect(&mut world, vmo(4), ZX_OK);
        expect(&mut world, allocate(8), ZX_OK);
        let vmar_base = world.model.vmars.last().expect("a VMAR").base;
        expect(&mut world, dup.clone(), ZX_OK);
        expect(&mut world, vmo(1), ZX_OK);
        let frames = world.machine.frames_in_use();
        // Everything that needs a new handle fails, and leaves nothing behind (the harness
        // checks handles, VMOs, VMARs and frames after each call).
        expect(&mut world, vmo(2), ZX_ERR_NO_RESOURCES);
        expect(&mut world, allocate(4), ZX_ERR_NO_RESOURCES);
        expect(&mut world, dup, ZX_ERR_NO_RESOURCES);
        expect(
            &mut world,
            Op::Contiguous { p: 0, pages: 2 },
            ZX_ERR_NO_RESOURCES,
        );
        expect(
            &mut world,
            Op::Physical { p: 0, pages: 1 },
            ZX_ERR_NO_RESOURCES,
        );
        // Process 1's root handle cannot move into the full table; it stays where it was.
        expect(
            &mut world,
            Op::Transfer {
                p: 1,
                h: H::Vmar(0),
            },
            ZX_ERR_NO_RESOURCES,
        );
        // (Less the physical VMO's frame, which the harness keeps until the end.)
        assert_eq!(world.machine.frames_in_use(), frames + 1, "{format:?}");
        // A replace needs no new slot.
        expect(
            &mut world,
            Op::Replace {
                p: 0,
                h: H::Vmo(0),
                rights: RightsArg::Drop(0b10),
            },
            ZX_OK,
        );
        // The failed allocate left no sub-VMAR: the next anywhere-mapping goes right after the
        // first sub-VMAR (the model predicts the address and the harness compares it).
        expect(
            &mut world,
            Op::VmarMap {
                p: 0,
                vmar: ROOT,
                vmo: H::Vmo(1),
                options: RW,
                vmar_offset: Off::Pages(0),
                vmo_offset: Off::Pages(0),
                len: Len::Pages(4),
            },
            ZX_OK,
        );
        assert_eq!(
            world.model.regions(0)[0].0,
            vmar_base + 8 * PAGE,
            "{format:?}"
        );
        // A slot freed is a slot usable.
        expect(&mut world, Op::Close { p: 0, h: H::Vmo(2) }, ZX_OK);
        expect(&mut world, allocate(4), ZX_OK);
        world.finish().unwrap_or_else(|e| panic!("{format:?}: {e}"));
    }
}

#[test]
fn address_space_runs_out() {
    for format in Format::ALL {
        let mut world = World::new(&WorldConfig::standard(format, 64, false));
        // Handles by value: the root, the VMO, the outer sub-VMAR, the inner one.
        let (outer, inner) = (H::Vmar(1), H::Vmar(2));
        let map = |pages, options| Op::VmarMap {
            p: 0,
            vmar: outer,
            vmo: H::Vmo(0),
            options,
            vmar_offset: Off::Pages(0),
            vmo_offset: Off::Pages(0),
            len: Len::Pages(pages),
        };
        let allocate = |vmar, pages| Op::VmarAllocate {
            p: 0,
            h: vmar,
            options: ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE,
            offset: Off::Pages(0),
            size: Len::Pages(pages),
        };
        expect(
            &mut world,
            Op::VmoCreate {
                p: 0,
                size: Len::Pages(8),
                options: 0,
            },
            ZX_OK,
        );
        expect(
            &mut world,
            Op::VmoWrite {
                p: 0,
                h: H::Vmo(0),
                offset: Off::Pages(0),
                len: 8000,
                seed: 9,
            },
            ZX_OK,
        );
        // An 8-page sub-VMAR, filled: 3 pages mapped, a 2-page sub-VMAR, 3 pages mapped.
        expect(&mut world, allocate(ROOT, 8), ZX_OK);
        let base = world.model.vmars.last().expect("a VMAR").base;
        expect(&mut world, map(3, RW | ZX_VM_MAP_RANGE), ZX_OK);
        expect(&mut world, allocate(outer, 2), ZX_OK);
        expect(&mut world, map(3, RW), ZX_OK);
        let frames = world.machine.frames_in_use();
        let tables = world.procs[0].aspace().page_table_pages();
        // Full: nothing fits anywhere, whatever the size or options; larger than the VMAR
        // itself is INVALID_ARGS, as in Zircon (AllocateUnsatisfiableTest).
        for (pages, status) in [
            (1, ZX_ERR_NO_RESOURCES),
            (2, ZX_ERR_NO_RESOURCES),
            (9, ZX_ERR_INVALID_ARGS),
        ] {
            expect(&mut world, map(pages, RW | ZX_VM_MAP_RANGE), status);
            expect(&mut world, map(pages, ZX_VM_PERM_READ), status);
            expect(&mut world, allocate(outer, pages), status);
        }
        // The inner sub-VMAR is empty, but 3 pages are more than it holds.
        expect(&mut world, allocate(inner, 3), ZX_ERR_INVALID_ARGS);
        assert_eq!(world.machine.frames_in_use(), frames, "{format:?}");
        assert_eq!(world.procs[0].aspace().page_table_pages(), tables);
        // The mappings made before are intact.
        for i in [0, 1, 2, 5, 6, 7] {
            world
                .step(&Op::Load {
                    cpu: 0,
                    addr: page(base, i),
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(world.last_fault, Some(None), "{format:?}: page {i}");
        }
        // Unmapping the inner sub-VMAR (through the outer one) makes room for exactly 2 pages,
        // where it was.
        expect(
            &mut world,
            Op::VmarUnmap {
                p: 0,
                h: outer,
                addr: page(base, 3),
                len: Len::Pages(2),
            },
            ZX_OK,
        );
        expect(&mut world, allocate(inner, 1), ZX_ERR_BAD_STATE);
        expect(&mut world, allocate(outer, 3), ZX_ERR_NO_RESOURCES);
        expect(&mut world, allocate(outer, 2), ZX_OK);
        let new = world.model.vmars.last().expect("a VMAR").base;
        assert_eq!(new, base + 3 * PAGE, "{format:?}");
        world.finish().unwrap_or_else(|e| panic!("{format:?}: {e}"));
    }
}
