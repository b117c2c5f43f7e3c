//! `zx_vmo_op_range(ZX_VMO_OP_ZERO)`, on both page-table formats: the range reads as zero
//! afterwards through `zx_vmo_read` and through every mapping on every CPU, bytes outside it keep
//! their data, whole unpinned pages of a paged VMO go back to the allocator (committed bytes drop
//! exactly) while pinned and partly covered pages are written over, and a bad call changes
//! nothing.

mod common;

use common::*;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::object::KernelObject;
use zx_vm::syscall::*;
use zx_vm::{PhysAddr, Platform, Process, Vmo};

/// Every byte of the VMO's first `pages` pages.
fn contents(p: &Process, vmo: zx_handle_t, pages: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; (pages * PAGE_SIZE) as usize];
    assert_eq!(zx_vmo_read(p, vmo, &mut bytes, 0), ZX_OK);
    bytes
}

fn zero(p: &Process, vmo: zx_handle_t, offset: u64, len: u64) -> zx_status_t {
    zx_vmo_op_range(p, vmo, ZX_VMO_OP_ZERO, offset, len, 0, 0)
}

/// Whole pages leave the VMO and every translation of them goes, in every address space: a CPU
/// that cached one reads zero afterwards, and the frames go back.
#[test]
fn whole_pages_go_back_and_every_alias_reads_zero() {
    for format in Format::ALL {
        let machine = machine(2);
        let spaces = TwoSpaces::new(&machine, format, 4, patterned_vmo);
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
        assert!(cpu_b.tlb_entry(in_b + 2 * PAGE_SIZE).is_some());
        let counters = machine.counters();

        cpu_a.enter();
        assert_eq!(zero(&a, vmo, PAGE_SIZE, 2 * PAGE_SIZE), ZX_OK, "{format:?}");

        let delta = machine.counters().since(&counters);
        assert_eq!(committed(&a, vmo), 2 * PAGE_SIZE, "{format:?}");
        assert_eq!(delta.frames_freed, 2, "{format:?}");
        assert!(
            cpu_b.tlb_entry(in_b + 2 * PAGE_SIZE).is_none(),
            "{format:?}"
        );
        let words = |cpu: &zx_vm::sim::SimCpu, base: u64| -> Vec<u64> {
            (0..4)
                .map(|page| cpu.load(base + page * PAGE_SIZE + 8).unwrap())
                .collect()
        };
        let expected = vec![pattern(0, 1), 0, 0, pattern(3, 1)];
        assert_eq!(words(&cpu_b, in_b), expected, "{format:?}");
        assert_eq!(words(&cpu_a, in_a), expected, "{format:?}");
        assert_eq!(
            first_words(&a, vmo, 4),
            [pattern(0, 0), 0, 0, pattern(3, 0)]
        );
        // The reads faulted nothing in: reads of a decommitted page commit a zeroed one only
        // on the fault path, which the loads above took; nothing leaked either way.
        assert_eq!(a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(b.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A byte range: the partly covered pages are written over in place (they stay committed), the
/// whole pages in between go back, and every byte outside the range keeps its value.
#[test]
fn byte_ranges_zero_exactly_their_bytes() {
    let cases: [(u64, u64); 6] = [
        (100, 2 * PAGE_SIZE - 50),          // head, one whole page, tail
        (PAGE_SIZE + 7, 9),                 // inside one page
        (PAGE_SIZE - 1, 2),                 // across one page boundary
        (0, 4 * PAGE_SIZE),                 // everything
        (3 * PAGE_SIZE + 1, PAGE_SIZE - 1), // the last page's tail, up to the end
        (2 * PAGE_SIZE, PAGE_SIZE + 1),     // one whole page and one byte
    ];
    for format in Format::ALL {
        for (offset, len) in cases {
            let machine = machine(1);
            let p = process(&machine, format);
            let vmo = patterned_vmo(&p, 4);
            let mut expected = contents(&p, vmo, 4);
            expected[offset as usize..(offset + len) as usize].fill(0);
            let whole = (offset.div_ceil(PAGE_SIZE)..(offset + len) / PAGE_SIZE).count() as u64;
            assert_eq!(
                zero(&p, vmo, offset, len),
                ZX_OK,
                "{format:?} {offset} {len}"
            );
            assert_eq!(contents(&p, vmo, 4), expected, "{format:?} {offset} {len}");
            assert_eq!(
                committed(&p, vmo),
                (4 - whole) * PAGE_SIZE,
                "{format:?} {offset} {len}: whole pages go back, partial ones stay"
            );
        }
    }
}

/// A pinned page inside the range stays committed (its frame may be in a device's hands) and is
/// written over; its unpinned neighbours in the range go back, and the pages outside the range
/// keep their data.
#[test]
fn pinned_pages_are_written_over_not_given_back() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let vmo = patterned_vmo(&p, 5);
    let object = p.vmo(vmo).unwrap().0;
    object.pin(2 * PAGE_SIZE, PAGE_SIZE).unwrap();
    let counters = machine.counters();
    assert_eq!(zero(&p, vmo, PAGE_SIZE, 3 * PAGE_SIZE), ZX_OK);
    assert_eq!(committed(&p, vmo), 3 * PAGE_SIZE, "pages 0, 2 and 4 stay");
    let delta = machine.counters().since(&counters);
    assert_eq!(
        (delta.frames_freed, delta.frames_allocated),
        (2, 0),
        "pages 1 and 3 go back; the pinned frame stays"
    );
    let bytes = contents(&p, vmo, 5);
    assert!(bytes[PAGE_SIZE as usize..4 * PAGE_SIZE as usize]
        .iter()
        .all(|&b| b == 0));
    let words = first_words(&p, vmo, 5);
    assert_eq!((words[0], words[4]), (pattern(0, 0), pattern(4, 0)));
    object.unpin(2 * PAGE_SIZE, PAGE_SIZE).unwrap();
}

/// A contiguous VMO is zeroed in place (nothing goes back: its memory is its own for life); a
/// physical one is NOT_SUPPORTED, as its reads and writes are.
#[test]
fn fixed_memory_is_zeroed_in_place_or_refused() {
    let machine = machine(1);
    let p = process(&machine, Format::Aarch64);
    let platform: Arc<dyn Platform> = machine.clone();
    let rights = Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
    let contiguous = Vmo::create_contiguous(platform.clone(), 3 * PAGE_SIZE).unwrap();
    let handle = p.add_handle(KernelObject::Vmo(contiguous), rights).unwrap();
    assert_eq!(
        zx_vmo_write(&p, handle, &[0xc5; 3 * PAGE_SIZE as usize], 0),
        ZX_OK
    );
    let in_use = machine.frames_in_use();
    assert_eq!(zero(&p, handle, 10, 2 * PAGE_SIZE), ZX_OK);
    let mut expected = vec![0xc5u8; 3 * PAGE_SIZE as usize];
    expected[10..10 + 2 * PAGE_SIZE as usize].fill(0);
    assert_eq!(contents(&p, handle, 3), expected);
    assert_eq!(committed(&p, handle), 3 * PAGE_SIZE);
    assert_eq!(machine.frames_in_use(), in_use);

    let physical = Vmo::create_physical(platform, PhysAddr(1 << 40), PAGE_SIZE).unwrap();
    let handle = p.add_handle(KernelObject::Vmo(physical), rights).unwrap();
    assert_eq!(zero(&p, handle, 0, PAGE_SIZE), ZX_ERR_NOT_SUPPORTED);
}

/// The statuses, each with nothing changed: no WRITE right, a range past the end or one whose end
/// overflows; an empty range is ZX_OK and does nothing, even at the very end; `buffer` must be 0.
/// And `zx_vmar_op_range` stays DECOMMIT-only (the seed's contract): ZERO there is NOT_SUPPORTED.
#[test]
fn bad_calls_change_nothing() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 2);
        let before = contents(&p, vmo, 2);
        let mut read_only = 0;
        assert_eq!(
            zx_handle_duplicate(&p, vmo, ZX_RIGHT_READ | ZX_RIGHT_MAP, &mut read_only),
            ZX_OK
        );
        let bad: [(zx_handle_t, u64, u64, zx_status_t); 5] = [
            (read_only, 0, PAGE_SIZE, ZX_ERR_ACCESS_DENIED),
            (vmo, PAGE_SIZE, PAGE_SIZE + 1, ZX_ERR_OUT_OF_RANGE),
            (vmo, 2 * PAGE_SIZE + 1, 0, ZX_ERR_OUT_OF_RANGE),
            (vmo, 8, u64::MAX, ZX_ERR_OUT_OF_RANGE),
            (p.root_vmar_handle(), 0, PAGE_SIZE, ZX_ERR_WRONG_TYPE),
        ];
        for (handle, offset, len, status) in bad {
            assert_eq!(
                zero(&p, handle, offset, len),
                status,
                "{format:?} {offset} {len}"
            );
        }
        assert_eq!(
            zx_vmo_op_range(&p, vmo, ZX_VMO_OP_ZERO, 0, PAGE_SIZE, 0x1000, 0),
            ZX_ERR_INVALID_ARGS
        );
        for offset in [0, PAGE_SIZE + 3, 2 * PAGE_SIZE] {
            assert_eq!(zero(&p, vmo, offset, 0), ZX_OK, "{format:?}");
        }
        assert_eq!(contents(&p, vmo, 2), before, "{format:?}");
        assert_eq!(committed(&p, vmo), 2 * PAGE_SIZE, "{format:?}");

        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 2);
        assert_eq!(
            zx_vmar_op_range(
                &p,
                p.root_vmar_handle(),
                ZX_VMO_OP_ZERO,
                addr,
                PAGE_SIZE,
                0,
                0
            ),
            ZX_ERR_NOT_SUPPORTED
        );
        assert_eq!(contents(&p, vmo, 2), before, "{format:?}");
    }
}

/// A page zeroed and given back comes back zero-filled on the next write, through a mapping.
#[test]
fn a_zeroed_page_refaults_zero_filled() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 2);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        cpu.store(addr + PAGE_SIZE + 16, 99).unwrap();
        assert_eq!(zero(&p, vmo, PAGE_SIZE, PAGE_SIZE), ZX_OK);
        assert_eq!(committed(&p, vmo), PAGE_SIZE);
        cpu.store(addr + PAGE_SIZE + 8, 7).unwrap();
        assert_eq!(committed(&p, vmo), 2 * PAGE_SIZE, "{format:?}");
        assert_eq!(cpu.load(addr + PAGE_SIZE + 16).unwrap(), 0, "{format:?}");
        assert_eq!(cpu.load(addr + PAGE_SIZE + 8).unwrap(), 7, "{format:?}");
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0), "{format:?}");
    }
}
