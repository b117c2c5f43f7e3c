//! Hand-written sequences for `tests/model.rs`: tours of the calls with every argument good (but
//! where a status is the point), so that a broken fixture cannot pass quietly.

use super::*;

const RW: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;

/// `pages` pages from the `idx`-th address returned by a map or allocate.
fn known(idx: u8, pages: i8) -> Addr {
    Addr::Known {
        idx,
        pages,
        bytes: 0,
    }
}

/// A map into `vmar` of `p` (first fit unless `options` say otherwise).
fn map(p: u8, vmar: H, vmo: H, options: u32, offsets: (u8, u8), pages: u8) -> Op {
    Op::VmarMap {
        p,
        vmar,
        vmo,
        options,
        vmar_offset: Off::Pages(offsets.0),
        vmo_offset: Off::Pages(offsets.1),
        len: Len::Pages(pages),
    }
}

fn load(cpu: u8, addr: Addr) -> Op {
    Op::Load { cpu, addr }
}

fn store(cpu: u8, addr: Addr, value: u64) -> Op {
    Op::Store { cpu, addr, value }
}

fn write(p: u8, h: H, offset: Off, len: u16, seed: u8) -> Op {
    Op::VmoWrite {
        p,
        h,
        offset,
        len,
        seed,
    }
}

/// `zx_vmar_op_range(DECOMMIT)` of `pages` pages from `addr`, through process 0's root VMAR.
fn vmar_decommit(addr: Addr, pages: u8) -> Op {
    Op::VmarOpRange {
        p: 0,
        h: H::Vmar(0),
        op: ZX_VMAR_OP_DECOMMIT,
        addr,
        len: Len::Pages(pages),
        buffer: 0,
        buffer_size: 0,
    }
}

/// A `zx_vmo_op_range` in process 0.
fn vmo_op(h: H, op: u32, offset: Off, size: Len) -> Op {
    Op::VmoOpRange {
        p: 0,
        h,
        op,
        offset,
        size,
        buffer: 0,
    }
}

/// A child, in process 0.
fn child(h: H, options: u32, offset: u8, size: u8) -> Op {
    Op::VmoCreateChild {
        p: 0,
        h,
        options,
        offset: Off::Pages(offset),
        size: Len::Pages(size),
    }
}

/// Two processes share a VMO, map it, touch it from all CPUs, protect, decommit, unmap, destroy.
pub fn tour() -> Vec<Op> {
    let mut ops = vec![
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(8),
            options: 0,
        },
        write(0, H::Vmo(0), Off::Pages(1), 5000, 3),
        // addrs[1]: the whole VMO in process 0.
        map(0, H::Vmar(0), H::Vmo(0), RW | ZX_VM_MAP_RANGE, (0, 0), 8),
        Op::Duplicate {
            p: 0,
            h: H::Vmo(0),
            rights: RightsArg::Same,
        },
        Op::Transfer { p: 0, h: H::Vmo(1) },
        // addrs[2]: pages 2.. of it in process 1, at the same first-fit address.
        map(1, H::Vmar(0), H::Vmo(0), RW, (0, 2), 6),
        store(0, known(1, 3), 0x1111),
        load(1, known(2, 1)),
        store(1, known(2, 0), 0x2222),
        load(2, known(1, 2)),
        Op::VmarProtect {
            p: 0,
            h: H::Vmar(0),
            options: ZX_VM_PERM_READ,
            addr: known(1, 2),
            len: Len::Pages(2),
        },
        store(0, known(1, 2), 0x3333),
        // Decommit through process 0 what process 1 maps too.
        vmar_decommit(known(1, 1), 4),
        load(1, known(2, 0)),
        load(0, known(1, 5)),
    ];
    ops.extend(tour_sub_vmar());
    ops
}

/// The end of [`tour`]: a sub-VMAR with a mapping, decommitted through, unmapped, destroyed.
fn tour_sub_vmar() -> Vec<Op> {
    vec![
        Op::VmarAllocate {
            p: 0,
            h: H::Vmar(0),
            options: ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC,
            offset: Off::Pages(0),
            size: Len::Pages(16),
        },
        map(0, H::Vmar(1), H::Vmo(0), RW | ZX_VM_SPECIFIC, (4, 0), 4),
        store(2, known(4, 0), 0x4444),
        vmar_decommit(known(3, 4), 1),
        Op::VmarUnmap {
            p: 0,
            h: H::Vmar(0),
            addr: known(1, 3),
            len: Len::Pages(2),
        },
        load(0, known(1, 3)),
        Op::VmarDestroy {
            p: 0,
            h: H::Vmar(1),
        },
        Op::VmoInfo { p: 0, h: H::Vmo(0) },
        Op::Check,
    ]
}

/// Children: a snapshot of a mapped VMO (written through a CPU before and after), written and
/// read through its own mapping; a slice written through and mapped (and mapped past its end); a
/// reference to the snapshot; DECOMMIT refused while relatives live and ZERO instead; a
/// resizable snapshot past its parent's end, grown; relatives closed (one kept alive by a
/// reference, then by nothing), after which DECOMMIT works again. Every call succeeds but those
/// in [`CHILDREN_TOUR_REFUSED`].
pub fn children_tour() -> Vec<Op> {
    let recent = H::RecentVmo;
    let mut ops = vec![
        // A, mapped at addrs[1], written, and written through CPU 0 (a writable TLB entry).
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(8),
            options: 0,
        },
        write(0, recent(0), Off::Pages(0), 5 * PAGE as u16, 1),
        map(0, H::Vmar(0), recent(0), RW | ZX_VM_MAP_RANGE, (0, 0), 8),
        store(0, known(1, 1), 0x11),
        // S: a snapshot of A; A's writes after it stay A's.
        child(recent(0), ZX_VMO_CHILD_SNAPSHOT, 0, 8),
        store(0, known(1, 1), 0x22),
        store(2, known(1, 2), 0x33),
        Op::VmoRead {
            p: 0,
            h: recent(0),
            offset: Off::Pages(1),
            len: 16,
        },
        // S mapped at addrs[2]: it reads as A did, and copies what it writes.
        map(0, H::Vmar(0), recent(0), RW, (0, 0), 8),
        load(2, known(2, 1)),
        store(2, known(2, 3), 0x44),
        load(0, known(1, 3)),
    ];
    ops.extend(children_aliases());
    ops.extend(children_relatives());
    ops
}

/// The ops of [`children_tour`] that are refused, by index, with their status.
pub const CHILDREN_TOUR_REFUSED: [(usize, zx_status_t); 4] = [
    (17, ZX_ERR_OUT_OF_RANGE),
    (20, ZX_ERR_NOT_SUPPORTED),
    (22, ZX_ERR_NOT_SUPPORTED),
    (33, ZX_ERR_NOT_SUPPORTED),
];

/// [`children_tour`] goes on (newest handles first: S, A): a slice and a reference, and A's
/// pages shared.
fn children_aliases() -> Vec<Op> {
    let recent = H::RecentVmo;
    vec![
        // L: a slice of A's pages 2..5, written through, mapped at addrs[3]; not past its end.
        child(recent(1), ZX_VMO_CHILD_SLICE, 2, 3),
        write(0, recent(0), Off::Raw(100), 5000, 2),
        load(0, known(1, 2)),
        map(0, H::Vmar(0), recent(0), RW, (0, 1), 2),
        store(2, known(3, 0), 0x55),
        map(0, H::Vmar(0), recent(0), RW, (0, 2), 2),
        // R: a reference to S, written through.
        child(recent(1), ZX_VMO_CHILD_REFERENCE, 0, 0),
        write(0, recent(0), Off::Pages(5), 100, 3),
        // A shares pages: no DECOMMIT, through the VMO or a mapping; ZERO writes over.
        vmo_op(recent(3), ZX_VMO_OP_DECOMMIT, Off::Pages(0), Len::Pages(2)),
        vmo_op(recent(3), ZX_VMO_OP_ZERO, Off::Raw(PAGE + 8), Len::Pages(2)),
        vmar_decommit(known(1, 0), 2),
    ]
}

/// [`children_tour`] ends (newest handles first: R, L, S, A): a resizable snapshot, then the
/// relatives closed.
fn children_relatives() -> Vec<Op> {
    let recent = H::RecentVmo;
    let decommit = |h| vmo_op(h, ZX_VMO_OP_DECOMMIT, Off::Pages(0), Len::Pages(2));
    let info = |h| Op::VmoInfo { p: 0, h };
    let close = |h| Op::Close { p: 0, h };
    let snapshot = ZX_VMO_CHILD_SNAPSHOT | ZX_VMO_CHILD_RESIZABLE;
    vec![
        // T: a resizable snapshot of A's pages 6..10 (8 and 9 past A's end), grown.
        child(recent(3), snapshot, 6, 4),
        Op::VmoSetSize {
            p: 0,
            h: recent(0),
            size: Len::Pages(6),
        },
        Op::VmoRead {
            p: 0,
            h: recent(0),
            offset: Off::Pages(1),
            len: 8192,
        },
        info(recent(4)),
        info(recent(3)),
        info(recent(2)),
        info(recent(0)),
        // S closed: its mapping and R keep it; unmapped: R does; R closed: gone.
        close(recent(3)),
        Op::VmarUnmap {
            p: 0,
            h: H::Vmar(0),
            addr: known(2, 0),
            len: Len::Pages(8),
        },
        close(recent(1)),
        decommit(recent(2)),
        // T closed: A is alone, and DECOMMIT works again, through A and through L.
        close(recent(0)),
        decommit(recent(1)),
        vmo_op(recent(0), ZX_VMO_OP_DECOMMIT, Off::Pages(0), Len::Pages(1)),
        load(0, known(1, 2)),
        info(recent(1)),
        info(recent(0)),
        Op::Check,
    ]
}
