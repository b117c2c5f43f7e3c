//! Minimal reproductions of crate bugs found by `tests/model.rs` and `tests/exhaustion.rs`.
//!
//! Each test states the behaviour the crate should have. A bug not yet fixed is `#[ignore]`d with
//! the bug in one line (`cargo test --test regressions -- --ignored` runs those), and the model in
//! `common/model/` mirrors the crate on that point, with a comment naming the test, until the
//! fix lands. All seven below (but the last, found by the memory benchmark) were found while the model and exhaustion tests were written (the
//! last one by Miri) and are fixed in `src/` (commits 4df7139 and 845fd62); they stay as
//! regression tests. `miri_unmap_keeps_arc_provenance` checks something only under
//! `cargo +nightly miri test --test regressions miri_`. The last four were found by the model
//! once it learned children: three are fixed, `a_shrink_frees_what_no_one_sees_two_nodes_up` is
//! not yet.

mod common;

use common::*;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;

const RW: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;

/// A page fault that runs out of memory for a page table must not leave the tables it did
/// allocate behind: the page-table page count is back where it was, as after any failed call.
///
/// Found by `tests/exhaustion.rs`: `PageTableOps::map` allocated the missing tables top-down,
/// linking each, and returned `NoMemory` at the first that failed, leaving the ones it made linked
/// in and empty (not leaked: they counted in `page_table_pages()` and went at the next unmap over
/// them, or with the address space). Fixed: `map` allocates every missing table first, then links
/// them. (The fault keeps the page it committed, zero-filled: Zircon does that too.)
#[test]
fn failed_fault_leaves_no_empty_page_table() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut vmo), ZX_OK);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
        let tables = p.aspace().page_table_pages();
        assert_eq!(tables, 1, "only the root so far");
        // Frames for the page and one table; the fault needs three tables.
        machine.set_allocation_budget(Some(2));
        assert_eq!(cpu.load(addr), Err(FaultError::NoMemory));
        machine.set_allocation_budget(None);
        assert_eq!(p.aspace().audit(), Ok(()));
        assert_eq!(
            p.aspace().page_table_pages(),
            tables,
            "{format:?}: the failed fault left page-table pages behind"
        );
        assert_eq!(cpu.load(addr), Ok(0));
        cpu.switch_to(None);
    }
}

/// A `zx_vmar_map` with `ZX_VM_SPECIFIC_OVERWRITE | ZX_VM_MAP_RANGE` that fails, here with no
/// frame for a page table, must change nothing: the old mapping is still there, with its contents.
///
/// Found by reading `Vmar::map` while writing `tests/exhaustion.rs`: it removed the overwritten
/// range first, then mapped the committed pages, whose failure took only the new mapping away
/// (the call failed with `ZX_ERR_NO_MEMORY` with the old mapping gone). Fixed by refusing the
/// combination, as Zircon does (`overwrite_with_map_range_is_invalid_args`); an overwrite without
/// `MAP_RANGE` cannot fail after its unmap.
#[test]
fn failed_overwrite_keeps_the_old_mapping() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let root = p.root_vmar_handle();
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        let old = patterned_vmo(&p, 1);
        let new = patterned_vmo(&p, 2);
        // The old page is the last of a 2 MiB region; the new mapping's second page is the first
        // of the next region, which has no page table yet.
        let offset = 2 * 1024 * 1024 - PAGE_SIZE;
        let mut addr = 0;
        let options = RW | ZX_VM_SPECIFIC;
        assert_eq!(
            zx_vmar_map(&p, root, options, offset, old, 0, PAGE_SIZE, &mut addr),
            ZX_OK
        );
        assert_eq!(cpu.load(addr), Ok(pattern(0, 0)));
        machine.set_allocation_budget(Some(0));
        let options = RW | ZX_VM_SPECIFIC_OVERWRITE | ZX_VM_MAP_RANGE;
        let mut out = 0;
        let status = zx_vmar_map(
            &p,
            root,
            options,
            offset,
            new,
            PAGE_SIZE,
            2 * PAGE_SIZE,
            &mut out,
        );
        assert_ne!(status, ZX_OK, "{format:?}");
        machine.set_allocation_budget(None);
        assert_eq!(
            cpu.load(addr),
            Ok(pattern(0, 0)),
            "{format:?}: the failed map removed the old mapping"
        );
        cpu.switch_to(None);
    }
}

/// Zircon: `ZX_ERR_INVALID_ARGS` when "ZX_VM_SPECIFIC_OVERWRITE and ZX_VM_MAP_RANGE are both
/// given" (vmar_map.md; `sys_vmar_map` checks it before anything about placement). The crate
/// accepted the combination (found by the model test, whose model follows Zircon here); fixed.
#[test]
fn overwrite_with_map_range_is_invalid_args() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let vmo = patterned_vmo(&p, 1);
    let mut addr = 0;
    let options = RW | ZX_VM_SPECIFIC_OVERWRITE | ZX_VM_MAP_RANGE;
    assert_eq!(
        zx_vmar_map(
            &p,
            p.root_vmar_handle(),
            options,
            0x10_0000,
            vmo,
            0,
            PAGE_SIZE,
            &mut addr
        ),
        ZX_ERR_INVALID_ARGS
    );
}

/// `ZX_VM_SPECIFIC_OVERWRITE` replaces mappings, never VMARs: over a range holding a sub-VMAR,
/// Zircon fails with `ZX_ERR_INVALID_ARGS` and changes nothing (`OverwriteVmMapping` unmaps with
/// `can_destroy_regions = false`; vmar_map.md: "It is still an error to partially-overlap another
/// VMAR"). The crate destroyed a sub-VMAR lying wholly inside the range (`Vmar::map` called
/// `unmap_locked`, which destroys whole sub-VMARs, as `zx_vmar_unmap` should): a mapping call
/// silently killed a VMAR that another handle holder was using. Found by the model test, whose
/// model follows Zircon here; fixed.
#[test]
fn overwrite_does_not_destroy_a_sub_vmar() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.root_vmar_handle();
    let vmo = patterned_vmo(&p, 4);
    let (mut child, mut child_addr) = (0, 0);
    assert_eq!(
        zx_vmar_allocate(
            &p,
            root,
            ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_SPECIFIC,
            0x10_1000,
            PAGE_SIZE,
            &mut child,
            &mut child_addr,
        ),
        ZX_OK
    );
    let mut addr = 0;
    assert_eq!(
        zx_vmar_map(
            &p,
            root,
            RW | ZX_VM_SPECIFIC_OVERWRITE,
            0x10_0000,
            vmo,
            0,
            4 * PAGE_SIZE,
            &mut addr
        ),
        ZX_ERR_INVALID_ARGS
    );
    let vmar = p.vmar(child).expect("the child's handle").0;
    assert!(!vmar.is_destroyed(), "the overwrite destroyed the sub-VMAR");
}

/// Zircon: "*handle* is always invalidated" by `zx_handle_replace`, also when it fails
/// (handle_replace.md; `handle_dup_replace` removes the source handle before returning
/// `ZX_ERR_INVALID_ARGS`). The crate kept the old handle valid on failure (and
/// `tests/syscalls.rs` asserted that), so code ported from Zircon, which relies on the handle
/// being consumed, leaked it. Found by the model test, whose model follows Zircon here; fixed.
#[test]
fn failed_replace_invalidates_the_handle() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&p, PAGE_SIZE, 0, &mut vmo), ZX_OK);
    let mut out = 0;
    assert_eq!(
        zx_handle_replace(&p, vmo, ZX_DEFAULT_VMO_RIGHTS | ZX_RIGHT_EXECUTE, &mut out),
        ZX_ERR_INVALID_ARGS
    );
    assert_eq!(
        zx_handle_close(&p, vmo),
        ZX_ERR_BAD_HANDLE,
        "the handle survived a failed replace"
    );
}

/// Zircon refuses to destroy an address space's root VMAR: `VmAddressRegionDispatcher::destroy`
/// returns `ZX_ERR_NOT_SUPPORTED` for it ("Disallow destroying the root vmar of an aspace as this
/// violates the aspace invariants"). The crate's `zx_vmar_destroy` used to destroy it, after which
/// every map, allocate and fault in the process failed for good. Fixed in the syscall
/// (`Process::drop` still destroys the root through `Vmar::destroy`).
#[test]
fn destroying_the_root_vmar_is_not_supported() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let root = p.root_vmar_handle();
    assert_eq!(zx_vmar_destroy(&p, root), ZX_ERR_NOT_SUPPORTED);
    let vmo = patterned_vmo(&p, 1);
    map_rw(&p, root, vmo, 0, 1);
}

/// Found by Miri (Stacked Borrows), on a machine small enough for it: unlinking a region from its
/// VMAR's tree (and a mapping from its VMO's list) is undefined behaviour. `VmarNode::unlink`
/// (`src/vmar/mod.rs`) and `Vmo::remove_mapping_locked` (`src/vmo/mod.rs`) pass a `&Region` to
/// `cursor_mut_from_ptr`; the pointer's provenance covers only the `Region`, yet `remove()` turns
/// it back into the `Arc<Region>`, whose drop touches the reference counts before it, outside
/// that provenance ("trying to retag ... for SharedReadWrite permission ... but that tag does
/// not exist in the borrow stack"). Tree Borrows accepts it. Passing `Arc::as_ptr(region)` (from
/// the `Arc`, which keeps the whole allocation's provenance) in both functions makes this run
/// clean under Stacked Borrows too; both functions now do that. Natively this test always passed;
/// run it under `cargo +nightly miri test --test regressions miri_`.
#[test]
fn miri_unmap_keeps_arc_provenance() {
    use std::sync::Arc;
    use zx_vm::sim::{SimConfig, SimMachine};
    use zx_vm::{Platform, Process};

    let machine = SimMachine::new(SimConfig {
        frames: 32,
        cpus: 2,
        poison_freed: true,
        tags: 4,
        broadcast: false,
    });
    let platform: Arc<dyn Platform> = machine.clone();
    let p = Process::with_handle_limit(platform, Format::X86_64, 8).expect("process");
    let root = p.root_vmar_handle();
    let (cpu0, cpu1) = (machine.cpu(0), machine.cpu(1));
    cpu0.switch_to(Some(p.aspace()));
    cpu1.switch_to(Some(p.aspace()));
    let mut vmo = 0;
    assert_eq!(zx_vmo_create(&p, 2 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
    assert_eq!(zx_vmo_write(&p, vmo, &[7; 100], 10), ZX_OK);
    let addr = map_rw(&p, root, vmo, 0, 2);
    cpu1.store(addr + PAGE_SIZE, 42).expect("store");
    // CPU 0 decommits what CPU 1 caches (a shootdown through CPU 1's mailbox), then unmaps.
    cpu0.enter();
    let status = zx_vmar_op_range(&p, root, ZX_VMAR_OP_DECOMMIT, addr, 2 * PAGE_SIZE, 0, 0);
    assert_eq!(status, ZX_OK);
    assert_eq!(cpu1.load(addr + PAGE_SIZE), Ok(0));
    assert_eq!(zx_vmar_unmap(&p, root, addr, 2 * PAGE_SIZE), ZX_OK);
    cpu0.switch_to(None);
    cpu1.switch_to(None);
    drop(p);
    assert_eq!(machine.frames_in_use(), 0);
}

/// A VMO with more than 128 and fewer than 512 committed pages in one page-list chunk gives
/// every frame back, on a decommit of the whole VMO and when it goes, whatever the order and
/// holes in which its pages were committed.
///
/// Found by the memory benchmark (`cargo bench --bench decommit`), not by a test: a chunk with
/// more than 128 pages keeps one slot per page up to its highest page, and the code that frees a
/// chunk sliced out each 64-page word of slots before looking whether the word held a page, past
/// the end of a chunk whose highest page is below 512. Fixed: the slice is taken only for a word
/// whose 64 pages are all committed (so all lie below the highest page).
#[test]
fn a_partly_filled_chunk_gives_every_frame_back() {
    for format in Format::ALL {
        for (pages, step) in [(129u64, 1u64), (256, 1), (300, 1), (400, 3), (511, 2)] {
            let machine = machine(1);
            let p = process(&machine, format);
            let mut vmo = 0;
            assert_eq!(zx_vmo_create(&p, pages * PAGE_SIZE, 0, &mut vmo), ZX_OK);
            let committed_pages: Vec<u64> = (0..pages).step_by(step as usize).collect();
            for &page in committed_pages.iter().rev() {
                assert_eq!(zx_vmo_write(&p, vmo, &[1], page * PAGE_SIZE), ZX_OK);
            }
            let before = machine.frames_in_use();
            assert_eq!(
                zx_vmo_op_range(&p, vmo, ZX_VMO_OP_DECOMMIT, 0, pages * PAGE_SIZE, 0, 0),
                ZX_OK
            );
            assert_eq!(
                before - machine.frames_in_use(),
                committed_pages.len() as u64,
                "{format:?} {pages} pages, 1 in {step}"
            );
            for &page in &committed_pages {
                assert_eq!(zx_vmo_write(&p, vmo, &[2], page * PAGE_SIZE), ZX_OK);
            }
            drop(p);
            assert_eq!(
                machine.frames_in_use(),
                0,
                "{format:?} {pages} pages, 1 in {step}"
            );
        }
    }
}

/// A slice of a contiguous VMO owns none of its frames: closing the slice must leave them to
/// the VMO, which gives them back once, when it goes.
///
/// Found by `tests/model.rs` (children): a slice has its target's kind, and `Vmo::drop` freed
/// the frames of every VMO whose kind is `Contiguous`, so closing the slice freed the frames of
/// the VMO it shows while that VMO still used them, and the VMO's own drop freed them again
/// (the simulated allocator panics: "double free in bitmap word 0").
#[test]
fn closing_a_slice_of_a_contiguous_vmo_keeps_its_frames() {
    let machine = machine(1);
    let platform: std::sync::Arc<dyn zx_vm::Platform> = machine.clone();
    let vmo = zx_vm::Vmo::create_contiguous(platform, 2 * PAGE_SIZE).unwrap();
    let before = machine.frames_in_use();
    let slice = vmo.create_slice(0, PAGE_SIZE).unwrap();
    drop(slice);
    assert_eq!(
        machine.frames_in_use(),
        before,
        "the slice freed none of them"
    );
    drop(vmo);
    assert_eq!(machine.frames_in_use(), 0);
}

/// A snapshot that shrinks no longer sees the pages of its hidden parent past its new end: one
/// that no other VMO sees either (its parent wrote its own copy) must be freed, and the audit's
/// tree check (`docs/cow.md`, invariant 3: "a page in a hidden node is visible to at least one of
/// its two children, otherwise it is freed") must pass.
///
/// Found by `tests/model.rs` (children). `Nodes::limit` (`src/vmo/cow.rs`) lowers the child's
/// `limit` and frees nothing: the page stays in the hidden node, seen by no one, until the tree
/// goes (one frame more than needed meanwhile, and the audit fails once the parent's page is
/// translated). Fixed: a shrink drops the pages of the node above that neither side sees.
#[test]
fn a_shrunk_snapshot_frees_what_no_one_sees() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        let parent = patterned_vmo(&p, 1);
        let addr = map_rw(&p, p.root_vmar_handle(), parent, 0, 1);
        let mut child = 0;
        let options = ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE;
        let status = zx_vmo_create_child(&p, parent, options, 0, PAGE_SIZE, &mut child);
        assert_eq!(status, ZX_OK);
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        let before = machine.frames_in_use();
        // The parent copies the page: the hidden one is the child's alone.
        cpu.store(addr, 7).unwrap();
        assert_eq!(machine.frames_in_use(), before + 1);
        assert_eq!(zx_vmo_set_size(&p, child, 0), ZX_OK);
        assert_eq!(
            machine.frames_in_use(),
            before,
            "{format:?}: the hidden page is freed"
        );
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A merge that narrows the surviving child's view of a hidden node must free what no one sees
/// any more, as `a_shrunk_snapshot_frees_what_no_one_sees` for a shrink.
///
/// Found by `tests/model.rs` (children): C, a one-page snapshot of B; D, a snapshot of C from
/// page 1 (past C's end: D sees nothing of it); C closed (its hidden node stays, with D alone
/// under it, until D next takes its lock); B writes page 0, copying it because the hidden node
/// between still "sees" it; then D's DECOMMIT (refused, B shares pages) merges that node away and
/// relinks D to B's hidden node with D's own, empty, view (`Link::through`), and B's old page 0
/// stays there seen by no one.
#[test]
fn a_merge_frees_what_the_survivor_cannot_see() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        let b = patterned_vmo(&p, 2);
        let addr = map_rw(&p, p.root_vmar_handle(), b, 0, 2);
        let (mut c, mut d) = (0, 0);
        let snapshot = ZX_VMO_CHILD_SNAPSHOT;
        assert_eq!(
            zx_vmo_create_child(&p, b, snapshot, 0, PAGE_SIZE, &mut c),
            ZX_OK
        );
        let status = zx_vmo_create_child(&p, c, snapshot, PAGE_SIZE, PAGE_SIZE, &mut d);
        assert_eq!(status, ZX_OK);
        assert_eq!(zx_handle_close(&p, c), ZX_OK);
        cpu.store(addr, 7).unwrap();
        let status = zx_vmo_op_range(&p, d, ZX_VMO_OP_DECOMMIT, 0, PAGE_SIZE, 0, 0);
        assert_eq!(status, ZX_ERR_NOT_SUPPORTED);
        assert_eq!(cpu.load(addr).unwrap(), 7);
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A shrink must free what no one sees further up too: a page of a hidden node seen only
/// through the window of the shrunk VMO's own hidden parent.
///
/// Found by `tests/model.rs` (children) once `a_shrunk_snapshot_frees_what_no_one_sees` was
/// fixed: C, a resizable snapshot of A's 3 pages; D, a snapshot of C from page 3 (past C's end:
/// D sees nothing); A writes page 1 (copying it: the hidden page is C's alone, through the node
/// C's snapshot made); C shrinks to 0. No VMO sees A's old page 1 any more, but the node above C
/// still looks at it through that hidden node's window (whose children both look past it), so
/// the audit's check passes and the frame stays until the tree goes (closing D does not free it
/// either). The model counts such a page among the frames a snapshot family may keep (`shed` in
/// `common/model/mod.rs`).
#[test]
#[ignore = "bug: a shrink frees what no one sees only in the node right above the VMO"]
fn a_shrink_frees_what_no_one_sees_two_nodes_up() {
    let machine = machine(1);
    let p = process(&machine, Format::NATIVE);
    let a = patterned_vmo(&p, 3);
    let (mut c, mut d) = (0, 0);
    let resizable = ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE;
    assert_eq!(
        zx_vmo_create_child(&p, a, resizable, 0, 3 * PAGE_SIZE, &mut c),
        ZX_OK
    );
    let status = zx_vmo_create_child(
        &p,
        c,
        ZX_VMO_CHILD_SNAPSHOT,
        3 * PAGE_SIZE,
        PAGE_SIZE,
        &mut d,
    );
    assert_eq!(status, ZX_OK);
    assert_eq!(zx_vmo_write(&p, a, &[1; 8], PAGE_SIZE), ZX_OK);
    let before = machine.frames_in_use();
    assert_eq!(zx_vmo_set_size(&p, c, 0), ZX_OK);
    assert_eq!(
        machine.frames_in_use(),
        before - 1,
        "A's old page 1 is freed"
    );
}
