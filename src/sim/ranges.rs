//! The simulation's model of range invalidation: arm64 FEAT_TLBIRANGE operands and AMD's
//! INVLPGB broadcasts, decoded here from their bits as the hardware decodes them (not through
//! the encoder's own arithmetic), so that a wrong operand leaves a stale translation that the
//! freed-frame check finds. Counts every instruction.

use super::cpu::CpuTlb;
use super::SimMachine;
use crate::abi::PAGE_SIZE;
use crate::arch::{entry_span, LARGE_LEVELS};
use crate::platform::tlbi::{arm_span_ops, for_each_invlpgb, ArmTlbi, Invlpgb};
use crate::platform::{Platform, Span, TlbFeatures, TlbInvalidate};
use core::sync::atomic::Ordering;

impl SimMachine {
    /// Sets what [`Platform::tlb_features`] answers (none by default): arm64 range TLBIs and
    /// level hints, or INVLPGB with its most pages per instruction.
    pub fn set_tlb_features(&self, features: TlbFeatures) {
        self.range.store(features.range, Ordering::Relaxed);
        self.ttl.store(features.ttl, Ordering::Relaxed);
        self.invlpgb.store(features.invlpgb, Ordering::Relaxed);
    }

    pub(super) fn features(&self) -> TlbFeatures {
        TlbFeatures {
            range: self.range.load(Ordering::Relaxed),
            ttl: self.ttl.load(Ordering::Relaxed),
            invlpgb: self.invlpgb.load(Ordering::Relaxed),
        }
    }

    /// How many translations (of any size) all CPUs' TLBs hold: what a decommit keeps.
    pub fn cached_translations(&self) -> usize {
        self.cpus
            .iter()
            .map(|cpu| {
                let tlb = super::lock(&cpu.tlb);
                tlb.entries.len() + tlb.large.len()
            })
            .sum()
    }

    /// Carries out [`TlbScope::Spans`] in one CPU's TLB: the arm64 TLBIs the spans encode to
    /// (ranges with FEAT_TLBIRANGE), or one invalidation per entry.
    pub(super) fn invalidate_spans(
        &self,
        tlb: &mut CpuTlb,
        request: &TlbInvalidate<'_>,
        spans: &[Span],
    ) {
        let walks = request.tables_freed;
        let mut ops = 0;
        let mut ranges = 0;
        for &span in spans {
            // (Without FEAT_TLBIRANGE, one single-page operation per entry.)
            for op in arm_span_ops(request.asid, span, request.features, !walks) {
                match op {
                    ArmTlbi::Page(operand) => {
                        ops += 1;
                        apply_arm_page(tlb, operand, walks);
                    }
                    ArmTlbi::Range(operand) => {
                        ranges += 1;
                        apply_arm_range(tlb, operand, walks);
                    }
                }
            }
        }
        let c = &self.counters;
        c.page_invalidations.fetch_add(ops, Ordering::SeqCst);
        c.range_invalidations.fetch_add(ranges, Ordering::SeqCst);
        if walks {
            c.table_invalidations
                .fetch_add(ops + ranges, Ordering::SeqCst);
        }
    }

    /// [`Platform::invalidate_broadcast`]: the INVLPGBs of `request`, carried out at once on
    /// every CPU; the calling CPU owes a TLBSYNC before it frees anything.
    pub(super) fn broadcast(&self, request: &TlbInvalidate<'_>) {
        let mut ops = 0;
        for cpu in &self.cpus {
            let mut tlb = super::lock(&cpu.tlb);
            ops = 0;
            for_each_invlpgb(request, |op| {
                ops += 1;
                apply_invlpgb(&mut tlb, &op, request.tables_freed);
            });
        }
        self.counters
            .broadcast_invalidations
            .fetch_add(ops, Ordering::SeqCst);
        self.cpus[self.current_cpu()]
            .unsynced
            .store(true, Ordering::SeqCst);
    }

    /// [`Platform::sync_broadcast`]: TLBSYNC.
    pub(super) fn sync(&self) {
        self.counters.tlbsyncs.fetch_add(1, Ordering::SeqCst);
        self.cpus[self.current_cpu()]
            .unsynced
            .store(false, Ordering::SeqCst);
    }
}

/// `TLBI VAE1IS` / `VALE1IS` with operand `operand`: `ASID[63:48] TTL[47:44] VA[55:12]` in
/// `[43:0]`. A TTL hint (`TG[3:2]` 0b01, level `[1:0]`) limits it to leaves of that level.
fn apply_arm_page(tlb: &mut CpuTlb, operand: u64, walks: bool) {
    let asid = (operand >> 48) as u16;
    let ttl = (operand >> 44) & 0xf;
    let va = (operand & ((1 << 44) - 1)) << 12;
    let level = (ttl >> 2 == 0b01 && ttl & 3 != 0).then(|| 3 - (ttl & 3) as usize);
    drop_range(tlb, asid, va, 1, level);
    tlb.drop_walks(asid, va, walks);
}

/// `TLBI RVAE1IS` / `RVALE1IS`: `ASID[63:48] TG[47:46] SCALE[45:44] NUM[43:39] TTL[38:37]
/// BaseADDR[36:0]`, `(NUM + 1) << (5 * SCALE + 1)` pages from page `BaseADDR`. A TG other than
/// 4 KiB (0b01) invalidates nothing, as QEMU does.
fn apply_arm_range(tlb: &mut CpuTlb, operand: u64, walks: bool) {
    let asid = (operand >> 48) as u16;
    let tg = (operand >> 46) & 3;
    let scale = (operand >> 44) & 3;
    let num = (operand >> 39) & 31;
    let ttl = (operand >> 37) & 3;
    let va = (operand & ((1 << 37) - 1)) << 12;
    if tg != 0b01 {
        return;
    }
    let pages = (num + 1) << (5 * scale + 1);
    let level = (ttl != 0).then(|| 3 - ttl as usize);
    drop_range(tlb, asid, va, pages, level);
    if walks {
        drop_walks_in(tlb, asid, va, pages);
    }
}

/// INVLPGB: `rAX` bit 0 "address valid" (else every translation of the PCID), bit 1 "PCID
/// valid"; `ECX[15:0]` the entries after the first, `ECX[31]` a 2 MiB stride; `EDX[27:16]` the
/// PCID.
fn apply_invlpgb(tlb: &mut CpuTlb, op: &Invlpgb, walks: bool) {
    let pcid = ((op.edx >> 16) & 0xfff) as u16;
    if op.rax & 1 == 0 {
        tlb.drop_tag(pcid);
        return;
    }
    let va = op.rax & !0xfff;
    let count = u64::from(op.ecx & 0xffff) + 1;
    if op.ecx >> 31 == 1 {
        for i in 0..count {
            let at = va + i * entry_span(1);
            drop_range(tlb, pcid, at, 1, None);
            tlb.drop_walks(pcid, at, walks);
        }
    } else {
        drop_range(tlb, pcid, va, count, None);
        tlb.drop_walks(pcid, va, walks);
        if walks {
            drop_walks_in(tlb, pcid, va, count);
        }
    }
}

/// Drops the translations under `tag` that cover any of `pages` pages from `va`: of leaves of
/// `level` only where a hint gives one, of every size otherwise.
fn drop_range(tlb: &mut CpuTlb, tag: u16, va: u64, pages: u64, level: Option<usize>) {
    let (first, end) = (va / PAGE_SIZE, va / PAGE_SIZE + pages);
    if level.is_none_or(|l| l == 0) {
        cut(&mut tlb.entries, (tag, first), (tag, end));
    }
    for l in LARGE_LEVELS {
        if level.is_some_and(|hint| hint != l) {
            continue;
        }
        let span = entry_span(l) / PAGE_SIZE;
        cut(&mut tlb.large, (tag, l, first & !(span - 1)), (tag, l, end));
    }
}

/// Removes the keys in `[from, to)` from `map`, in bulk (ranges of thousands of pages are common
/// here).
fn cut<K: Ord + Copy, V>(map: &mut alloc::collections::BTreeMap<K, V>, from: K, to: K) {
    if from >= to {
        return;
    }
    let mut inside = map.split_off(&from);
    let mut after = inside.split_off(&to);
    map.append(&mut after);
}

/// Drops the cached walks under `tag` through tables that map any of `pages` pages from `va`.
fn drop_walks_in(tlb: &mut CpuTlb, tag: u16, va: u64, pages: u64) {
    let end = va + pages * PAGE_SIZE;
    for level in 0..3 {
        let span = entry_span(level + 1);
        cut(
            &mut tlb.walks,
            (tag, level, va & !(span - 1)),
            (tag, level, end),
        );
    }
}
