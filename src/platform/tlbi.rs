//! Invalidation the hardware offers beyond one page at a time, as pure encoders: arm64
//! FEAT_TLBIRANGE range operands (with FEAT_TTL level hints) and AMD's INVLPGB operands. The
//! bare-metal platforms issue what these produce; the simulation decodes the same operands the
//! way the hardware does (by its own code) and counts them, so an encoding error shows as a
//! stale translation there.
//!
//! # The range operand (`TLBI RVAE1IS` / `RVALE1IS`, 4 KiB granule)
//!
//! `ASID[63:48] TG[47:46] SCALE[45:44] NUM[43:39] TTL[38:37] BaseADDR[36:0]`: the range is
//! `(NUM + 1) << (5 * SCALE + 1)` pages from page number `BaseADDR`; TG is 0b01 for 4 KiB; TTL 0
//! means no hint, 1 to 3 the level of every leaf in the range. One operand covers an even count
//! of pages up to [`MAX_RANGE_PAGES`] (2^21). [`arm_span_ops`] splits a count from scale 3
//! down to 0, taking at each scale as many units as fit (`NUM` up to 31, never masked: the
//! full 2^21 pages is scale 3, NUM 31), and ends an odd count with one single-page TLBI: at most
//! 4 range operations and 1 single one for up to 2^21 pages.
//!
//! # The INVLPGB operand (`0F 01 FE`)
//!
//! `rAX`: the page-aligned address, bit 0 "address valid", bit 1 "PCID valid"; `ECX[15:0]`: the
//! pages after the first, `ECX[31]`: 2 MiB stride instead of 4 KiB; `EDX[27:16]`: the PCID. One
//! INVLPGB reaches every CPU; `TLBSYNC` (`0F 01 FF`) waits until those this CPU issued
//! completed everywhere. The most pages per INVLPGB is `CPUID 0x8000_0008 EDX[15:0] + 1`.

use super::PhysAddr;
use crate::abi::PAGE_SIZE as PAGE;

/// What to invalidate in one address space's translations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbScope<'a> {
    /// These page-aligned virtual addresses: one invalidation each (of a 4 KiB page, or of the
    /// large leaf that maps the address).
    Pages(&'a [u64]),
    /// These spans of entries, with the features of [`TlbInvalidate::features`]: range
    /// operations where it has them ([`arm_span_ops`], [`invlpgb_span_ops`]), single pages
    /// otherwise.
    Spans(&'a [Span]),
    /// Every translation of the address space.
    All,
}

/// One invalidation: some or all of one address space's translations.
#[derive(Clone, Copy, Debug)]
pub struct TlbInvalidate<'a> {
    /// The address space's tag: its ASID (aarch64) or PCID (x86_64); 0 for an untagged one.
    pub asid: u16,
    /// The root page table of the address space.
    pub root: PhysAddr,
    /// What to invalidate.
    pub scope: TlbScope<'a>,
    /// Whether page-table pages were freed, so that cached intermediate walks must go too.
    pub tables_freed: bool,
    /// The features to carry [`TlbScope::Spans`] out with: what
    /// [`super::Platform::tlb_features`] answered, less what this address space cannot use (an
    /// untagged one gets no INVLPGB).
    pub features: TlbFeatures,
}

/// The bytes one leaf entry of `level` maps (0: 4 KiB, 1: 2 MiB, 2: 1 GiB).
const fn entry_span(level: usize) -> u64 {
    PAGE << (9 * level)
}

/// What a CPU's TLB maintenance can do beyond single pages, as the platform found it at boot
/// ([`super::Platform::tlb_features`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbFeatures {
    /// arm64 FEAT_TLBIRANGE (`ID_AA64ISAR0_EL1.TLB` = 2): `TLBI RVAE1IS` and `RVALE1IS`.
    pub range: bool,
    /// arm64 FEAT_TTL (`ID_AA64MMFR2_EL1.TTL` = 1): level hints in TLBI operands.
    pub ttl: bool,
    /// AMD INVLPGB and TLBSYNC (`CPUID 0x8000_0008 EBX[3]`): the most pages one INVLPGB
    /// covers (`EDX[15:0] + 1`); 0 without the feature.
    pub invlpgb: u32,
}

impl TlbFeatures {
    /// Single-page invalidation only: every architecture has that.
    pub const NONE: TlbFeatures = TlbFeatures {
        range: false,
        ttl: false,
        invlpgb: 0,
    };

    /// What `read` answers, read once per boot and kept (reading ID registers or CPUID may
    /// trap to a hypervisor: not something to do at every shootdown).
    #[cfg_attr(not(target_os = "none"), allow(dead_code))]
    pub(crate) fn once(read: fn() -> TlbFeatures) -> TlbFeatures {
        static CACHE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        Self::once_in(&CACHE, read)
    }

    /// [`TlbFeatures::once`] with its cache: bit 63 set once read; bit 0 range, bit 1 ttl,
    /// bits 32..63 the INVLPGB count.
    pub(crate) fn once_in(
        cache: &core::sync::atomic::AtomicU64,
        read: fn() -> TlbFeatures,
    ) -> Self {
        use core::sync::atomic::Ordering;
        let packed = cache.load(Ordering::Relaxed);
        if packed >> 63 == 1 {
            return TlbFeatures {
                range: packed & 1 != 0,
                ttl: packed & 2 != 0,
                invlpgb: ((packed >> 32) & 0x7fff_ffff) as u32,
            };
        }
        let read = read();
        let packed = (1 << 63)
            | u64::from(read.range)
            | (u64::from(read.ttl) << 1)
            | (u64::from(read.invlpgb.min(0x7fff_ffff)) << 32);
        cache.store(packed, Ordering::Relaxed);
        read
    }
}

/// Consecutive leaf entries of one size whose translations changed: `count` entries of level
/// `level` (0: 4 KiB pages, 1: 2 MiB, 2: 1 GiB) from the virtual address `va`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The first entry's address (aligned to its size).
    pub va: u64,
    /// How many entries.
    pub count: u64,
    /// Their level: 0, 1 or 2.
    pub level: u8,
}

impl Span {
    /// The 4 KiB pages the span covers.
    pub fn pages(&self) -> u64 {
        self.count * (self.entry_bytes() / PAGE)
    }

    /// The address just past the span.
    pub fn end(&self) -> u64 {
        self.va + self.count * self.entry_bytes()
    }

    /// The bytes one of its entries maps.
    pub fn entry_bytes(&self) -> u64 {
        entry_span(usize::from(self.level))
    }
}

/// The most pages one arm64 range operation covers: 32 units of 2^16 pages (8 GiB).
pub const MAX_RANGE_PAGES: u64 = 32 << 16;

/// The TG field of a range operand for the 4 KiB granule (the 16 KiB one in the deliberately
/// broken `break-range` build).
pub const TG_4K: u64 = if cfg!(feature = "break-range") {
    0b10
} else {
    0b01
};

/// One arm64 TLB invalidation by address, as its operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmTlbi {
    /// `TLBI VAE1IS` (`VALE1IS` for leaves only): one page's translations.
    Page(u64),
    /// `TLBI RVAE1IS` (`RVALE1IS` for leaves only): a range of pages.
    Range(u64),
}

/// The operand of a single-page TLBI: the ASID, the TTL hint (`TG << 2 | level`, where a level
/// is given and the CPU has FEAT_TTL; else 0) and the page number.
pub fn arm_page_operand(asid: u16, va: u64, ttl_level: u8) -> u64 {
    let ttl = if ttl_level == 0 {
        0
    } else {
        (TG_4K << 2) | u64::from(ttl_level)
    };
    (u64::from(asid) << 48) | (ttl << 44) | ((va >> 12) & ((1 << 44) - 1))
}

/// The operand of a range TLBI: `(num + 1) << (5 * scale + 1)` pages from `va`, at level
/// `ttl_level` (0: no hint).
pub fn arm_range_operand(asid: u16, va: u64, scale: u64, num: u64, ttl_level: u8) -> u64 {
    debug_assert!(scale < 4 && num < 32);
    (u64::from(asid) << 48)
        | (TG_4K << 46)
        | (scale << 44)
        | (num << 39)
        | (u64::from(ttl_level) << 37)
        | ((va >> 12) & ((1 << 37) - 1))
}

/// The TLBIs that invalidate `span` under `asid`: one range operation per scale that has
/// units left (3 down to 0) and a single-page one for an odd page at the end where `features`
/// has FEAT_TLBIRANGE and the span more than one page (past [`MAX_RANGE_PAGES`], in pieces of
/// that many); one single-page operation per entry otherwise. Level hints go in where the CPU
/// has FEAT_TTL and `hint` is set (leaves only: no table was freed under the span).
pub fn arm_span_ops(
    asid: u16,
    span: Span,
    features: TlbFeatures,
    hint: bool,
) -> impl Iterator<Item = ArmTlbi> {
    // The arm64 level of the span's leaves: 3 for pages, 2 for 2 MiB, 1 for 1 GiB.
    let level = if hint && features.ttl {
        3 - span.level
    } else {
        0
    };
    let ranged = features.range && span.pages() > 1;
    let mut va = span.va;
    let mut left = if ranged { span.pages() } else { span.count };
    let step = if ranged {
        PAGE
    } else {
        entry_span(usize::from(span.level))
    };
    let mut scale = 3u64;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        if !ranged || left == 1 {
            let op = ArmTlbi::Page(arm_page_operand(asid, va, level));
            va += step;
            left -= 1;
            return Some(op);
        }
        loop {
            let shift = 5 * scale + 1;
            // Units at this scale, at most 32 (NUM 31); never masked.
            let units = (left >> shift).min(32);
            if units == 0 {
                // (With 2 pages or more left, scale 0 always has a unit: it is 2 pages.)
                scale -= 1;
                continue;
            }
            let op = ArmTlbi::Range(arm_range_operand(asid, va, scale, units - 1, level));
            va += (units << shift) * PAGE;
            left -= units << shift;
            return Some(op);
        }
    })
}

/// One INVLPGB, as its three register operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invlpgb {
    /// The address and what to match: bit 0 "address valid", bit 1 "PCID valid".
    pub rax: u64,
    /// The entries after the first (bits 15:0); bit 31: a 2 MiB stride.
    pub ecx: u32,
    /// The PCID, in bits 27:16.
    pub edx: u32,
}

/// INVLPGB's "address valid" bit.
pub const INVLPGB_VA: u64 = 1 << 0;
/// INVLPGB's "PCID valid" bit.
pub const INVLPGB_PCID: u64 = 1 << 1;
/// INVLPGB's 2 MiB-stride bit, in ECX.
pub const INVLPGB_STRIDE_2M: u32 = 1 << 31;

/// The INVLPGBs that invalidate `span` under `pcid`, at most `max` entries each: pages with a
/// 4 KiB stride, 2 MiB leaves with a 2 MiB one, 1 GiB leaves one each (any address in a leaf
/// reaches its translation). `max` is at least 1.
pub fn invlpgb_span_ops(pcid: u16, span: Span, max: u32) -> impl Iterator<Item = Invlpgb> {
    let max = u64::from(max.clamp(1, 1 << 16));
    let (per_op, stride, flag) = match span.level {
        0 => (max, PAGE, 0),
        1 => (max, entry_span(1), INVLPGB_STRIDE_2M),
        _ => (1, entry_span(2), INVLPGB_STRIDE_2M),
    };
    let edx = u32::from(pcid) << 16;
    let mut va = span.va;
    let mut left = span.count;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(per_op);
        let op = Invlpgb {
            rax: va | INVLPGB_VA | INVLPGB_PCID,
            ecx: (n - 1) as u32 | flag,
            edx,
        };
        va += n * stride;
        left -= n;
        Some(op)
    })
}

/// Calls `f` with each INVLPGB that carries `request` out: its spans in pieces of at most
/// `request.features.invlpgb` entries, its single pages one each, or one for the whole PCID.
pub fn for_each_invlpgb(request: &TlbInvalidate<'_>, mut f: impl FnMut(Invlpgb)) {
    let max = request.features.invlpgb.max(1);
    match request.scope {
        TlbScope::All => f(invlpgb_all(request.asid)),
        TlbScope::Spans(spans) => {
            for &span in spans {
                invlpgb_span_ops(request.asid, span, max).for_each(&mut f);
            }
        }
        TlbScope::Pages(pages) => {
            for &va in pages {
                let one = Span {
                    va,
                    count: 1,
                    level: 0,
                };
                invlpgb_span_ops(request.asid, one, max).for_each(&mut f);
            }
        }
    }
}

/// The INVLPGB that drops every non-global translation tagged `pcid`, on every CPU.
pub fn invlpgb_all(pcid: u16) -> Invlpgb {
    Invlpgb {
        rax: INVLPGB_PCID,
        ecx: 0,
        edx: u32::from(pcid) << 16,
    }
}

/// How many instructions `spans` take with `features` (single-page ones where a feature is
/// missing): what the full-flush threshold weighs.
pub fn instructions(spans: &[Span], features: TlbFeatures) -> u64 {
    spans
        .iter()
        .map(|&span| {
            if features.invlpgb > 0 {
                invlpgb_span_ops(0, span, features.invlpgb).count() as u64
            } else if features.range {
                arm_span_ops(0, span, features, false).count() as u64
            } else {
                span.count
            }
        })
        .sum()
}
