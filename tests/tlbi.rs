//! Invalidation the hardware offers beyond single pages: arm64 range TLBIs (FEAT_TLBIRANGE,
//! with FEAT_TTL level hints) and AMD's INVLPGB broadcast, on the simulated machine.
//!
//! - The encoders against a decoder written here from the operand layouts: every span is
//!   covered exactly, at every boundary of the range encoding (2^21 pages included, which
//!   Linux once encoded as NUM = -1).
//! - What one invalidation issues for 1, 32, 33, 512, 2^21 and 2^21 + 1 pages, with and without
//!   each feature, through the simulation's decoders.
//! - End to end: a DECOMMIT on two CPUs issues what the plan says, INVLPGB sends no IPI (but an
//!   untagged address space still does), and translations outside a ranged DECOMMIT survive it.

mod common;

use common::*;
use zx_vm::abi::*;
use zx_vm::arch::{Format, PendingFlush};
use zx_vm::platform::tlbi::*;
use zx_vm::platform::{PhysAddr, Platform, Span, TlbFeatures, TlbInvalidate, TlbScope};
use zx_vm::sim::{SimConfig, SimMachine};
use zx_vm::syscall::*;

const RANGE: TlbFeatures = TlbFeatures {
    range: true,
    ttl: true,
    invlpgb: 0,
};

const INVLPGB: TlbFeatures = TlbFeatures {
    range: false,
    ttl: false,
    invlpgb: 8,
};

const MAX: u64 = 1 << 21;

/// A range operand's fields: (ASID, TG, first page, pages, TTL), decoded from the layout
/// `ASID[63:48] TG[47:46] SCALE[45:44] NUM[43:39] TTL[38:37] BaseADDR[36:0]`.
fn decode_range(op: u64) -> (u64, u64, u64, u64, u64) {
    let scale = (op >> 44) & 3;
    let num = (op >> 39) & 31;
    (
        op >> 48,
        (op >> 46) & 3,
        op & ((1 << 37) - 1),
        (num + 1) << (5 * scale + 1),
        (op >> 37) & 3,
    )
}

/// A single-page operand's fields: (ASID, page, TTL), from `ASID[63:48] TTL[47:44] VA[55:12]`.
fn decode_page(op: u64) -> (u64, u64, u64) {
    (op >> 48, op & ((1 << 44) - 1), (op >> 44) & 0xf)
}

/// The pages each operation of `ops` covers, in order: (first page, pages).
fn coverage(ops: &[ArmTlbi], asid: u64) -> Vec<(u64, u64)> {
    ops.iter()
        .map(|&op| match op {
            ArmTlbi::Range(op) => {
                let (a, tg, first, pages, _) = decode_range(op);
                assert_eq!((a, tg), (asid, 0b01), "ASID and the 4 KiB granule");
                (first, pages)
            }
            ArmTlbi::Page(op) => {
                let (a, page, _) = decode_page(op);
                assert_eq!(a, asid);
                (page, 1)
            }
        })
        .collect()
}

/// Every count at every boundary of the encoding: the operations cover the span exactly, in
/// order, without overlap; up to 2^21 pages take at most four range operations and one single
/// one (only for an odd count, last); 2^21 pages are one operation (scale 3, NUM 31).
#[test]
fn range_operands_cover_exactly_the_span_at_every_boundary() {
    let mut counts: Vec<u64> = (1..=700).collect();
    for scale in 0..4u64 {
        let unit = 1u64 << (5 * scale + 1);
        for n in [1, 2, 31, 32, 33] {
            for delta in [-1i64, 0, 1] {
                counts.push((unit * n).saturating_add_signed(delta).max(1));
            }
        }
    }
    counts.extend([MAX - 1, MAX, MAX + 1, MAX + 2, 2 * MAX + 3, 3 * MAX - 1]);
    let va = 0x7f_0000_0000u64;
    for pages in counts {
        let span = Span {
            va,
            count: pages,
            level: 0,
        };
        let ops: Vec<ArmTlbi> = arm_span_ops(9, span, RANGE, false).collect();
        let mut next = va >> 12;
        for (first, n) in coverage(&ops, 9) {
            assert_eq!(first, next, "{pages} pages: a gap or an overlap");
            next += n;
        }
        assert_eq!(next, (va >> 12) + pages, "{pages} pages: covered exactly");
        let singles = ops
            .iter()
            .filter(|op| matches!(op, ArmTlbi::Page(_)))
            .count();
        if pages <= MAX {
            assert!(ops.len() <= 5, "{pages} pages: {} operations", ops.len());
            assert_eq!(
                singles as u64,
                pages % 2,
                "{pages} pages: one single for an odd count"
            );
            if singles == 1 {
                assert!(
                    matches!(ops.last(), Some(ArmTlbi::Page(_))),
                    "{pages}: last"
                );
            }
        }
    }
    let whole: Vec<ArmTlbi> = arm_span_ops(
        1,
        Span {
            va,
            count: MAX,
            level: 0,
        },
        RANGE,
        false,
    )
    .collect();
    match whole[..] {
        [ArmTlbi::Range(op)] => assert_eq!(((op >> 44) & 3, (op >> 39) & 31), (3, 31)),
        _ => panic!("2^21 pages: {whole:?}"),
    }
}

/// Level hints name the leaves: a range of pages says level 3, of 2 MiB blocks 2, of 1 GiB
/// blocks 1; single pages carry the 4 KiB granule and the level; no hint without FEAT_TTL or
/// where tables were freed. Without FEAT_TLBIRANGE every entry is one single-page operation.
#[test]
fn level_hints_name_the_leaves() {
    for (level, arm_level) in [(0u8, 3u64), (1, 2), (2, 1)] {
        let span = Span {
            va: 0x40_0000_0000,
            count: 2,
            level,
        };
        let ops: Vec<ArmTlbi> = arm_span_ops(3, span, RANGE, true).collect();
        let ArmTlbi::Range(op) = ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(decode_range(op).4, arm_level, "level {level}");
        assert_eq!(decode_range(op).3, span.pages(), "level {level}");
        let no_ttl = TlbFeatures {
            ttl: false,
            ..RANGE
        };
        let ArmTlbi::Range(op) = arm_span_ops(3, span, no_ttl, true).next().unwrap() else {
            panic!()
        };
        assert_eq!(decode_range(op).4, 0);
        let ArmTlbi::Range(op) = arm_span_ops(3, span, RANGE, false).next().unwrap() else {
            panic!()
        };
        assert_eq!(decode_range(op).4, 0, "no hint where tables were freed");
        let singles: Vec<ArmTlbi> = arm_span_ops(3, span, TlbFeatures::NONE, true).collect();
        assert_eq!(singles.len(), 2, "one per entry without ranges");
        let step = span.pages() / 2;
        assert_eq!(
            coverage(&singles, 3),
            [(span.va >> 12, 1), ((span.va >> 12) + step, 1)]
        );
    }
    let one = Span {
        va: 0x1000,
        count: 1,
        level: 0,
    };
    let ttl_only = TlbFeatures {
        range: false,
        ..RANGE
    };
    let [ArmTlbi::Page(op)] = arm_span_ops(3, one, ttl_only, true).collect::<Vec<_>>()[..] else {
        panic!()
    };
    assert_eq!(decode_page(op), (3, 1, 0b0111));
}

/// INVLPGB operands: `count` entries in pieces of at most `max`, pages with a 4 KiB stride, 2
/// MiB leaves with a 2 MiB one, 1 GiB leaves one each; the PCID in EDX[27:16].
#[test]
fn invlpgb_operands_cover_exactly() {
    for max in [1u32, 8, 64] {
        for count in [1u64, 2, 7, 8, 9, 63, 64, 65, 100] {
            for level in 0..3u8 {
                let span = Span {
                    va: 0x40_0000_0000,
                    count,
                    level,
                };
                let ops: Vec<Invlpgb> = invlpgb_span_ops(5, span, max).collect();
                let size = 4096u64 << (9 * level);
                let mut next = span.va;
                for op in &ops {
                    assert_eq!(op.rax & 3, 3, "address and PCID valid");
                    assert_eq!(op.ecx >> 31 == 1, level > 0, "a 2 MiB stride for leaves");
                    assert_eq!(op.edx >> 16, 5);
                    let stride = if op.ecx >> 31 == 1 { 2 << 20 } else { 4096 };
                    let n = u64::from(op.ecx & 0xffff) + 1;
                    assert!(n <= u64::from(max));
                    assert_eq!(op.rax & !0xfff, next, "max {max}, {count}, level {level}");
                    // A 1 GiB leaf is reached by any address in it: one operation, one address.
                    next += if level == 2 { size } else { n * stride };
                }
                assert_eq!(
                    next,
                    span.end(),
                    "max {max}, {count} entries, level {level}"
                );
                let expected = if level == 2 {
                    count
                } else {
                    count.div_ceil(u64::from(max))
                };
                assert_eq!(ops.len() as u64, expected);
            }
        }
    }
    let all = invlpgb_all(7);
    assert_eq!((all.rax, all.edx >> 16), (INVLPGB_PCID, 7));
}

/// What one address space's invalidation of `pages` consecutive pages issues on a one-CPU
/// machine with `features` (through INVLPGB where it has it): (single-page, range, full,
/// INVLPGB, TLBSYNC).
fn issued(pages: u64, features: TlbFeatures) -> (u64, u64, u64, u64, u64) {
    let machine = SimMachine::with_frames(64);
    machine.set_tlb_features(features);
    let mut pending = PendingFlush::new();
    for i in 0..pages {
        pending.add_page(0x10_0000_0000 + i * 4096);
    }
    let request = TlbInvalidate {
        asid: 1,
        root: PhysAddr(0x2000),
        scope: pending.scope_with(features),
        tables_freed: false,
        features,
    };
    let before = machine.counters();
    if features.invlpgb > 0 {
        machine.invalidate_broadcast(&request);
        machine.sync_broadcast();
    } else {
        machine.invalidate_local(&request);
    }
    let d = machine.counters().since(&before);
    (
        d.page_invalidations,
        d.range_invalidations,
        d.full_invalidations,
        d.broadcast_invalidations,
        d.tlbsyncs,
    )
}

/// The instructions for 1, 32, 33, 512, 2^21 and 2^21 + 1 pages. Without a feature: one per
/// page up to 32, then one full flush. With FEAT_TLBIRANGE: a range per scale with units and a
/// single page for an odd count, up to 2^21 pages; past that one full flush (as Linux). With
/// INVLPGB (8 pages each): one per 8 pages up to 32 instructions, then one for the whole PCID.
#[test]
fn instructions_issued_per_size() {
    let sizes = [1, 32, 33, 512, MAX, MAX + 1];
    // (single, range, full, INVLPGB, TLBSYNC) for each size.
    let full = (0, 0, 1, 0, 0);
    let pcid = (0, 0, 0, 1, 1);
    let expected = [
        (
            TlbFeatures::NONE,
            [(1, 0, 0, 0, 0), (32, 0, 0, 0, 0), full, full, full, full],
        ),
        (
            RANGE,
            [
                (1, 0, 0, 0, 0),
                (0, 1, 0, 0, 0),
                (1, 1, 0, 0, 0),
                (0, 1, 0, 0, 0),
                (0, 1, 0, 0, 0),
                full,
            ],
        ),
        (
            INVLPGB,
            [pcid, (0, 0, 0, 4, 1), (0, 0, 0, 5, 1), pcid, pcid, pcid],
        ),
    ];
    for (features, want) in expected {
        let got: Vec<_> = sizes.iter().map(|&n| issued(n, features)).collect();
        assert_eq!(got, want, "{features:?}");
    }
}

/// DECOMMIT of `pages` pages from `addr` in `p`'s root VMAR.
fn decommit(p: &zx_vm::Process, addr: u64, pages: u64) {
    let status = zx_vmar_op_range(
        p,
        p.root_vmar_handle(),
        ZX_VMAR_OP_DECOMMIT,
        addr,
        pages * PAGE_SIZE,
        0,
        0,
    );
    assert_eq!(status, ZX_OK);
}

/// A 2-CPU machine (IPIs, as x86_64) with `features`, a process in `format` running on both
/// CPUs, and a mapping of `pages` patterned pages.
fn two_cpus(
    format: Format,
    features: TlbFeatures,
    tags: u16,
    pages: u64,
) -> (
    std::sync::Arc<SimMachine>,
    std::sync::Arc<zx_vm::Process>,
    u64,
) {
    let machine = SimMachine::new(SimConfig {
        frames: 8192,
        cpus: 2,
        tags,
        ..SimConfig::default()
    });
    machine.set_tlb_features(features);
    let p = process(&machine, format);
    let vmo = patterned_vmo(&p, pages);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, pages);
    for cpu in 0..2 {
        machine.cpu(cpu).switch_to(Some(p.aspace()));
    }
    (machine, p, addr)
}

/// DECOMMITs of 1, 32, 33 and 512 pages on two CPUs that cache every page: each CPU carries
/// out the plan (ranges on aarch64 with FEAT_TLBIRANGE; INVLPGB on x86_64 with it, once for the
/// machine and without an IPI), and no translation of a decommitted page is left.
#[test]
fn decommits_issue_the_plan_on_both_formats() {
    const PAGES: u64 = 600;
    for (format, features) in [
        (Format::Aarch64, TlbFeatures::NONE),
        (Format::Aarch64, RANGE),
        (Format::X86_64, TlbFeatures::NONE),
        (Format::X86_64, INVLPGB),
    ] {
        let (machine, p, addr) = two_cpus(format, features, 64, PAGES);
        for pages in [1u64, 32, 33, 512] {
            for cpu in 0..2 {
                for page in 0..pages {
                    machine.cpu(cpu).load(addr + page * PAGE_SIZE).unwrap();
                }
            }
            machine.cpu(0).enter();
            let before = machine.counters();
            decommit(&p, addr, pages);
            let d = machine.counters().since(&before);
            let what = format!("{format:?} {features:?} {pages} pages");
            let got = (
                d.ipis,
                d.page_invalidations,
                d.range_invalidations,
                d.full_invalidations,
                d.broadcast_invalidations,
                d.tlbsyncs,
            );
            let per_cpu =
                |(single, range, full): (u64, u64, u64)| (1, 2 * single, 2 * range, 2 * full, 0, 0);
            let want = match (features.range, features.invlpgb > 0, pages) {
                (false, false, 1) => per_cpu((1, 0, 0)),
                (false, false, 32) => per_cpu((32, 0, 0)),
                (false, false, _) => per_cpu((0, 0, 1)),
                (true, _, 1) => per_cpu((1, 0, 0)),
                (true, _, 33) => per_cpu((1, 1, 0)),
                (true, _, _) => per_cpu((0, 1, 0)),
                (_, true, 1) => (0, 0, 0, 0, 1, 1),
                (_, true, 32) => (0, 0, 0, 0, 4, 1),
                (_, true, 33) => (0, 0, 0, 0, 5, 1),
                (_, true, _) => (0, 0, 0, 0, 1, 1),
            };
            assert_eq!(
                got, want,
                "{what}: (IPIs, single, range, full, INVLPGB, TLBSYNC)"
            );
            for cpu in 0..2 {
                for page in 0..pages {
                    let va = addr + page * PAGE_SIZE;
                    assert!(machine.cpu(cpu).tlb_entry(va).is_none(), "{what}: {va:#x}");
                }
            }
        }
        for cpu in 0..2 {
            machine.cpu(cpu).switch_to(None);
        }
    }
}

/// An address space without a tag (the machine has none to give) has no PCID for INVLPGB to
/// name: its shootdown goes by IPI, page by page, as without the feature.
#[test]
fn untagged_address_spaces_fall_back_to_ipis() {
    let (machine, p, addr) = two_cpus(Format::X86_64, INVLPGB, 0, 8);
    for cpu in 0..2 {
        machine.cpu(cpu).load(addr).unwrap();
    }
    machine.cpu(0).enter();
    let before = machine.counters();
    decommit(&p, addr, 4);
    let d = machine.counters().since(&before);
    assert_eq!((d.ipis, d.broadcast_invalidations, d.tlbsyncs), (1, 0, 0));
    assert!(machine.cpu(1).tlb_entry(addr).is_none());
    for cpu in 0..2 {
        machine.cpu(cpu).switch_to(None);
    }
}

/// An address space active on the initiator alone needs no broadcast: with INVLPGB it is
/// invalidated locally, page by page, with no IPI and no TLBSYNC.
#[test]
fn a_space_active_only_here_is_invalidated_locally() {
    let machine = SimMachine::new(SimConfig {
        frames: 8192,
        cpus: 2,
        ..SimConfig::default()
    });
    machine.set_tlb_features(INVLPGB);
    let p = process(&machine, Format::X86_64);
    let vmo = patterned_vmo(&p, 40);
    let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 40);
    let cpu0 = machine.cpu(0);
    cpu0.switch_to(Some(p.aspace()));
    for page in 0..4 {
        cpu0.load(addr + page * PAGE_SIZE).unwrap();
    }
    let before = machine.counters();
    decommit(&p, addr, 4);
    let d = machine.counters().since(&before);
    assert_eq!(
        (
            d.ipis,
            d.page_invalidations,
            d.broadcast_invalidations,
            d.tlbsyncs
        ),
        (0, 4, 0, 0)
    );
    // 40 pages, which INVLPGB would take in 5 instructions: locally, single pages past 32 are a
    // full flush, as without the feature.
    for page in 0..40 {
        cpu0.load(addr + page * PAGE_SIZE).unwrap();
    }
    let before = machine.counters();
    decommit(&p, addr, 40);
    let d = machine.counters().since(&before);
    assert_eq!(
        (
            d.page_invalidations,
            d.full_invalidations,
            d.broadcast_invalidations
        ),
        (0, 1, 0)
    );
    cpu0.switch_to(None);
}

/// Translations outside a DECOMMIT of 40 pages (past the single-page threshold) survive it on
/// the other CPU where a range feature covers the 40 pages (a read there hits its TLB, no walk),
/// and go with the full flush where none does.
#[test]
fn translations_outside_a_ranged_decommit_survive() {
    for (format, features) in [
        (Format::Aarch64, RANGE),
        (Format::X86_64, INVLPGB),
        (Format::Aarch64, TlbFeatures::NONE),
        (Format::X86_64, TlbFeatures::NONE),
    ] {
        let (machine, p, addr) = two_cpus(format, features, 64, 64);
        let cpu1 = machine.cpu(1);
        for page in 0..64 {
            cpu1.load(addr + page * PAGE_SIZE).unwrap();
        }
        machine.cpu(0).enter();
        decommit(&p, addr + 8 * PAGE_SIZE, 40);
        let ranged = features != TlbFeatures::NONE;
        let kept = (0..64)
            .filter(|&page| cpu1.tlb_entry(addr + page * PAGE_SIZE).is_some())
            .count();
        assert_eq!(kept, if ranged { 24 } else { 0 }, "{format:?} {features:?}");
        let before = machine.counters();
        let word = cpu1.load(addr + 60 * PAGE_SIZE).unwrap();
        assert_eq!(word, pattern(60, 0));
        let d = machine.counters().since(&before);
        assert_eq!(
            (d.tlb_hits, d.tlb_misses),
            if ranged { (1, 0) } else { (0, 1) },
            "{format:?} {features:?}: read through the surviving entry"
        );
        for cpu in 0..2 {
            machine.cpu(cpu).switch_to(None);
        }
    }
}

/// A record keeps spans of consecutive entries of one size only: a gap, or a change of size,
/// starts a new span; past 32 spans the spans are not used (the single entries, or the whole
/// address space, are); `add_all` and `clear` empty them.
#[test]
fn spans_hold_consecutive_entries_of_one_size() {
    const MIB2: u64 = 2 << 20;
    let base = 0x40_0000_0000u64;
    let mut pending = PendingFlush::new();
    pending.add_page(base);
    pending.add_page(base + 0x1000);
    pending.add_page(base + 0x3000);
    pending.add_leaf(base + MIB2, 1);
    pending.add_leaf(base + 2 * MIB2, 1);
    pending.add_page(base + 3 * MIB2);
    let span = |va, count, level| Span { va, count, level };
    assert_eq!(
        pending.spans(),
        [
            span(base, 2, 0),
            span(base + 0x3000, 1, 0),
            span(base + MIB2, 2, 1),
            span(base + 3 * MIB2, 1, 0)
        ]
    );
    assert_eq!(pending.scope_with(RANGE), TlbScope::Spans(pending.spans()));
    // 3 + 1 + 1 (2 MiB leaves: one range of 1024 pages) + 1 instructions.
    assert_eq!(instructions(pending.spans(), RANGE), 4);
    assert_eq!(instructions(pending.spans(), INVLPGB), 4);
    assert_eq!(instructions(pending.spans(), TlbFeatures::NONE), 6);
    pending.clear();
    assert!(pending.spans().is_empty() && pending.is_empty());
    // 33 separate pages: 33 spans are more than a record keeps.
    for i in 0..33 {
        pending.add_page(base + 2 * i * 0x1000);
    }
    assert_eq!(pending.scope_with(RANGE), TlbScope::All);
    assert_eq!(pending.scope_with(INVLPGB), TlbScope::All);
    pending.clear();
    // 32 of them fit, as 32 single instructions.
    for i in 0..32 {
        pending.add_page(base + 2 * i * 0x1000);
    }
    assert!(matches!(pending.scope_with(RANGE), TlbScope::Spans(s) if s.len() == 32));
    assert!(matches!(pending.scope_with(TlbFeatures::NONE), TlbScope::Pages(p) if p.len() == 32));
    pending.add_all();
    assert_eq!(pending.scope_with(RANGE), TlbScope::All);
    assert!(pending.spans().is_empty());
    // Nine 1 GiB leaves: past 2^21 pages, so arm64 flushes everything; INVLPGB takes one
    // instruction per leaf (9), whatever the pages.
    pending.clear();
    for i in 0..9 {
        pending.add_leaf(base + (i << 30), 2);
    }
    assert_eq!(pending.scope_with(RANGE), TlbScope::All);
    assert_eq!(
        pending.scope_with(INVLPGB),
        TlbScope::Spans(pending.spans())
    );
    assert_eq!(instructions(pending.spans(), INVLPGB), 9);
}

/// End to end for 2^21 and 2^21 + 1 pages, on both formats: a physical VMO mapped page by page
/// (`ZX_VM_MAP_RANGE` with 4 KiB leaves only), then unmapped while two CPUs run the address
/// space. With the format's range feature 2^21 pages are one instruction per CPU (a range TLBI;
/// or, with INVLPGB, past 32 instructions, one for the whole PCID, for every CPU at once), and
/// 2^21 + 1 pages flush the address space (arm64, as Linux past MAX_TLBI_RANGE_PAGES); without,
/// both flush it.
#[test]
#[cfg_attr(miri, ignore = "two million page-table entries")]
fn unmaps_of_two_million_pages_on_both_formats() {
    use zx_vm::{KernelObject, Rights, Vmo};
    const DEVICE: u64 = 64 << 30;
    for (format, features) in [
        (Format::Aarch64, RANGE),
        (Format::Aarch64, TlbFeatures::NONE),
        (Format::X86_64, INVLPGB),
        (Format::X86_64, TlbFeatures::NONE),
    ] {
        let machine = SimMachine::new(SimConfig {
            frames: 8192,
            cpus: 2,
            ..SimConfig::default()
        });
        machine.set_max_leaf_level(0);
        machine.set_tlb_features(features);
        let p = process(&machine, format);
        for cpu in 0..2 {
            machine.cpu(cpu).switch_to(Some(p.aspace()));
        }
        machine.cpu(0).enter();
        for pages in [MAX, MAX + 1] {
            let vmo = Vmo::create_physical(machine.clone(), PhysAddr(DEVICE), pages * PAGE_SIZE)
                .expect("a physical VMO");
            let rights = Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
            let handle = p.add_handle(KernelObject::Vmo(vmo), rights).unwrap();
            let mut addr = 0;
            let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_MAP_RANGE;
            let status = zx_vmar_map(
                &p,
                p.root_vmar_handle(),
                options,
                0,
                handle,
                0,
                pages * PAGE_SIZE,
                &mut addr,
            );
            assert_eq!(status, ZX_OK);
            assert_eq!(p.aspace().leaf_counts().pages, pages as usize);
            let before = machine.counters();
            let status = zx_vmar_unmap(&p, p.root_vmar_handle(), addr, pages * PAGE_SIZE);
            assert_eq!(status, ZX_OK);
            let d = machine.counters().since(&before);
            let got = (
                d.page_invalidations,
                d.range_invalidations,
                d.full_invalidations,
                d.broadcast_invalidations,
            );
            // Per CPU, where the shootdown goes by IPI (the machine's default).
            let want = match (features == TlbFeatures::NONE, features.range, pages == MAX) {
                (true, _, _) => (0, 0, 2, 0),
                (false, true, true) => (0, 2, 0, 0),
                (false, true, false) => (0, 0, 2, 0),
                (false, false, _) => (0, 0, 0, 1),
            };
            assert_eq!(got, want, "{format:?} {features:?} {pages} pages");
            assert_eq!(zx_handle_close(&p, handle), ZX_OK);
        }
        for cpu in 0..2 {
            machine.cpu(cpu).switch_to(None);
        }
    }
}
