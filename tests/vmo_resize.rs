//! Resizable VMOs (`ZX_VMO_RESIZABLE`) and `zx_vmo_set_size`, on both page-table formats: the
//! rights and statuses, a shrink that gives back the pages past the end and unmaps them from every
//! mapping on every CPU in one round, the fault path refusing an access past the end, growth, and
//! `ZX_VM_REQUIRE_NON_RESIZABLE`.

mod common;

use common::*;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;
use zx_vm::vmo::MAX_VMO_SIZE;
use zx_vm::Process;

/// A resizable VMO of `pages` pages, each filled with [`pattern`].
fn resizable(p: &Process, pages: u64) -> zx_handle_t {
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(p, pages * PAGE_SIZE, ZX_VMO_RESIZABLE, &mut vmo),
        ZX_OK
    );
    for page in 0..pages {
        let bytes: Vec<u8> = (0..PAGE_SIZE / 8)
            .flat_map(|word| pattern(page, word).to_le_bytes())
            .collect();
        assert_eq!(zx_vmo_write(p, vmo, &bytes, page * PAGE_SIZE), ZX_OK);
    }
    vmo
}

fn size_of(p: &Process, vmo: zx_handle_t) -> u64 {
    let mut size = 0;
    assert_eq!(zx_vmo_get_size(p, vmo, &mut size), ZX_OK);
    size
}

fn info(p: &Process, vmo: zx_handle_t) -> zx_info_vmo_t {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(p, vmo, &mut info), ZX_OK);
    info
}

/// A resizable VMO's handle has `ZX_RIGHT_RESIZE` and its info says resizable; a plain VMO's
/// has neither.
#[test]
fn resizable_vmos_get_the_resize_right() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let grows = resizable(&p, 1);
    let fixed = patterned_vmo(&p, 1);
    assert_eq!(
        info(&p, grows).handle_rights,
        ZX_DEFAULT_VMO_RIGHTS | ZX_RIGHT_RESIZE
    );
    assert_ne!(info(&p, grows).flags & ZX_INFO_VMO_RESIZABLE, 0);
    assert_eq!(info(&p, fixed).handle_rights, ZX_DEFAULT_VMO_RIGHTS);
    assert_eq!(info(&p, fixed).flags & ZX_INFO_VMO_RESIZABLE, 0);
    // Discardable VMOs stay unsupported, alone or with RESIZABLE.
    let mut other = 0;
    for options in [ZX_VMO_DISCARDABLE, ZX_VMO_RESIZABLE | ZX_VMO_DISCARDABLE] {
        assert_eq!(
            zx_vmo_create(&p, PAGE_SIZE, options, &mut other),
            ZX_ERR_NOT_SUPPORTED
        );
    }
}

/// Each refusal, in Zircon's order, changes nothing: a handle of another type, no WRITE, no
/// RESIZE on a resizable VMO, a VMO that is not resizable (whatever the rights), a size too
/// large or unroundable, a shrink over a pinned page.
#[test]
fn refusals_change_nothing() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = resizable(&p, 4);
        let fixed = patterned_vmo(&p, 4);
        let dup = |rights| {
            let mut out = 0;
            assert_eq!(zx_handle_duplicate(&p, vmo, rights, &mut out), ZX_OK);
            out
        };
        let no_write = dup(ZX_DEFAULT_VMO_RIGHTS & !ZX_RIGHT_WRITE | ZX_RIGHT_RESIZE);
        let no_resize = dup(ZX_DEFAULT_VMO_RIGHTS);
        let mut fixed_no_write = 0;
        assert_eq!(
            zx_handle_duplicate(&p, fixed, ZX_RIGHT_READ, &mut fixed_no_write),
            ZX_OK
        );
        p.vmo(vmo).unwrap().0.pin(3 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let cases = [
            (p.root_vmar_handle(), PAGE_SIZE, ZX_ERR_WRONG_TYPE),
            (no_write, PAGE_SIZE, ZX_ERR_ACCESS_DENIED),
            (no_resize, PAGE_SIZE, ZX_ERR_ACCESS_DENIED),
            (fixed, PAGE_SIZE, ZX_ERR_UNAVAILABLE),
            (fixed_no_write, PAGE_SIZE, ZX_ERR_ACCESS_DENIED),
            (vmo, MAX_VMO_SIZE + 1, ZX_ERR_OUT_OF_RANGE),
            (vmo, u64::MAX - 5, ZX_ERR_OUT_OF_RANGE),
            (vmo, 3 * PAGE_SIZE, ZX_ERR_BAD_STATE),
            (vmo, 0, ZX_ERR_BAD_STATE),
        ];
        for (handle, size, status) in cases {
            assert_eq!(
                zx_vmo_set_size(&p, handle, size),
                status,
                "{format:?} {size:#x}"
            );
            assert_eq!(size_of(&p, vmo), 4 * PAGE_SIZE);
            assert_eq!(size_of(&p, fixed), 4 * PAGE_SIZE);
            assert_eq!(committed(&p, vmo), 4 * PAGE_SIZE);
        }
        assert_eq!(
            first_words(&p, vmo, 4),
            (0..4).map(|i| pattern(i, 0)).collect::<Vec<_>>()
        );
        // The pin lets go: now the shrink goes through, and the largest size is fine.
        p.vmo(vmo)
            .unwrap()
            .0
            .unpin(3 * PAGE_SIZE, PAGE_SIZE)
            .unwrap();
        assert_eq!(zx_vmo_set_size(&p, vmo, 3 * PAGE_SIZE), ZX_OK);
        assert_eq!(zx_vmo_set_size(&p, vmo, MAX_VMO_SIZE), ZX_OK);
        assert_eq!(size_of(&p, vmo), MAX_VMO_SIZE);
    }
}

/// A shrink gives back every page past the new end, unmaps it in every address space in one
/// round (a CPU that cached a translation loses it), zeroes the rest of the last page, and the
/// fault path refuses the mappings' part past the end; growing back reads zero there.
#[test]
fn shrinking_unmaps_everywhere_and_faults_past_the_end() {
    for format in Format::ALL {
        let machine = machine(2);
        let spaces = TwoSpaces::new(&machine, format, 4, resizable);
        spaces.expect_patterns(4);
        let TwoSpaces {
            a,
            b,
            vmo,
            in_a,
            in_b,
            cpu_a,
            cpu_b,
        } = spaces;
        let counters = machine.counters();

        cpu_a.enter();
        // Two pages and 100 bytes: the size becomes three pages.
        assert_eq!(
            zx_vmo_set_size(&a, vmo, 2 * PAGE_SIZE + 100),
            ZX_OK,
            "{format:?}"
        );

        let delta = machine.counters().since(&counters);
        assert_eq!(size_of(&a, vmo), 3 * PAGE_SIZE, "{format:?}");
        assert_eq!(committed(&a, vmo), 3 * PAGE_SIZE, "{format:?}");
        assert_eq!(delta.frames_freed, 1, "{format:?}: page 3 only");
        assert_eq!(delta.shootdowns, 1, "{format:?}: one round");
        assert!(
            cpu_b.tlb_entry(in_b + 3 * PAGE_SIZE).is_none(),
            "{format:?}"
        );
        assert_eq!(
            cpu_b.load(in_b + 3 * PAGE_SIZE),
            Err(FaultError::OutOfRange),
            "{format:?}"
        );
        assert_eq!(
            cpu_a.load(in_a + 3 * PAGE_SIZE + 8),
            Err(FaultError::OutOfRange)
        );
        assert_eq!(
            committed(&a, vmo),
            3 * PAGE_SIZE,
            "{format:?}: the refused fault commits nothing"
        );
        // Page 2 keeps its first 100 bytes (12 words and a half: word 12 is cut) and reads zero
        // after them.
        assert_eq!(
            cpu_b.load(in_b + 2 * PAGE_SIZE + 88).unwrap(),
            pattern(2, 11)
        );
        assert_eq!(
            cpu_b.load(in_b + 2 * PAGE_SIZE + 104).unwrap(),
            0,
            "{format:?}"
        );
        assert_eq!(
            cpu_a.load(in_a + 3 * PAGE_SIZE - 8).unwrap(),
            0,
            "{format:?}"
        );
        let mut word = [0u8; 8];
        assert_eq!(
            zx_vmo_read(&a, vmo, &mut word, 3 * PAGE_SIZE),
            ZX_ERR_OUT_OF_RANGE
        );

        // Growing: the page past the old end reads zero and faults in on a write.
        assert_eq!(zx_vmo_set_size(&a, vmo, 6 * PAGE_SIZE), ZX_OK);
        assert_eq!(size_of(&a, vmo), 6 * PAGE_SIZE);
        assert_eq!(cpu_b.load(in_b + 3 * PAGE_SIZE).unwrap(), 0, "{format:?}");
        cpu_a.store(in_a + 3 * PAGE_SIZE, 5).unwrap();
        assert_eq!(cpu_b.load(in_b + 3 * PAGE_SIZE).unwrap(), 5, "{format:?}");
        assert_eq!(first_words(&a, vmo, 6)[..2], [pattern(0, 0), pattern(1, 0)]);
        assert_eq!(a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(b.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// Shrinking to 0 gives back every page; nothing leaks when the VMO goes.
#[test]
fn shrinking_to_nothing_frees_every_frame() {
    let machine = machine(1);
    let p = process(&machine, Format::Aarch64);
    let vmo = resizable(&p, 8);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 8);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(p.aspace()));
    assert_eq!(cpu.load(addr + 7 * PAGE_SIZE).unwrap(), pattern(7, 0));
    assert_eq!(zx_vmo_set_size(&p, vmo, 0), ZX_OK);
    assert_eq!((size_of(&p, vmo), committed(&p, vmo)), (0, 0));
    assert_eq!(cpu.load(addr), Err(FaultError::OutOfRange));
    cpu.switch_to(None);
    drop(p);
    assert_eq!(machine.frames_in_use(), 0);
}

/// `ZX_VM_REQUIRE_NON_RESIZABLE` refuses a resizable VMO (NOT_SUPPORTED) and maps a fixed one.
#[test]
fn require_non_resizable_refuses_resizable_vmos() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let root = p.root_vmar_handle();
    let options = ZX_VM_PERM_READ | ZX_VM_REQUIRE_NON_RESIZABLE;
    let mut addr = 0;
    let grows = resizable(&p, 1);
    assert_eq!(
        zx_vmar_map(&p, root, options, 0, grows, 0, PAGE_SIZE, &mut addr),
        ZX_ERR_NOT_SUPPORTED
    );
    let fixed = patterned_vmo(&p, 1);
    assert_eq!(
        zx_vmar_map(&p, root, options, 0, fixed, 0, PAGE_SIZE, &mut addr),
        ZX_OK
    );
    assert_eq!(
        zx_vmar_map(&p, root, ZX_VM_PERM_READ, 0, grows, 0, PAGE_SIZE, &mut addr),
        ZX_OK
    );
}
