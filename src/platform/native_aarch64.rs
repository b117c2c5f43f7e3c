//! The TLB maintenance instructions. Only on bare-metal aarch64.
//!
//! TLBI ...IS broadcasts to every CPU of the inner-shareable domain, so no IPIs are needed: the
//! initiator's DSB ISH completes only once every CPU has carried the invalidation out.

use crate::platform::tlbi::{arm_span_ops, ArmTlbi};
use crate::platform::{PhysAddr, TlbFeatures, TlbInvalidate, TlbScope};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Writeable, TTBR0_EL1};
use core::arch::asm;

/// The calling CPU's range-TLBI features: `ID_AA64ISAR0_EL1.TLB` (bits 59:56) 2 or more for
/// FEAT_TLBIRANGE, `ID_AA64MMFR2_EL1.TTL` (bits 51:48) 1 or more for FEAT_TTL.
pub fn tlb_features() -> TlbFeatures {
    let isar0: u64;
    let mmfr2: u64;
    // SAFETY: reading ID registers at EL1 has no side effects and cannot fault.
    unsafe {
        asm!("mrs {0}, ID_AA64ISAR0_EL1", out(reg) isar0, options(nomem, nostack));
        asm!("mrs {0}, ID_AA64MMFR2_EL1", out(reg) mmfr2, options(nomem, nostack));
    }
    TlbFeatures {
        range: (isar0 >> 56) & 0xf >= 2,
        ttl: (mmfr2 >> 48) & 0xf >= 1,
        invlpgb: 0,
    }
}

/// Loads `root` with `asid` into TTBR0_EL1, making it the current user address space; with
/// `flush`, first drops this CPU's translations under `asid`.
///
/// # Safety
/// `root` is a complete L0 table for the lower half that stays alive while it is loaded; the
/// kernel runs from TTBR1_EL1, so the switch does not unmap the running code.
pub unsafe fn load_root(root: PhysAddr, asid: u16, flush: bool) {
    TTBR0_EL1.set((u64::from(asid) << 48) | root.0);
    // Barrier: ISB makes every later access translate through the new TTBR0_EL1.
    barrier::isb(barrier::SY);
    if flush {
        let operand = u64::from(asid) << 48;
        // Barrier: earlier descriptor stores complete before the invalidation.
        barrier::dsb(barrier::NSHST);
        // SAFETY: TLBI ASIDE1 only drops this CPU's cached translations of one ASID.
        unsafe { asm!("tlbi aside1, {0}", in(reg) operand, options(nostack)) };
        // Barrier: the local invalidation completes before any later access.
        barrier::dsb(barrier::NSH);
        barrier::isb(barrier::SY);
    }
}

/// Carries out `request` for every CPU of the inner-shareable domain.
///
/// DSB ISHST makes the cleared descriptors visible to every walker before the TLBI; the
/// invalidations are then broadcast; DSB ISH waits until every CPU has completed them; ISB makes
/// the local instruction stream see the result.
pub fn invalidate_broadcast(request: &TlbInvalidate<'_>) {
    let asid = u64::from(request.asid) << 48;
    // Barrier: DSB ISHST completes the stores that cleared descriptors, for every walker of
    // the inner-shareable domain, before any TLBI below is issued; otherwise a walker could
    // refill a translation from a descriptor we already cleared.
    barrier::dsb(barrier::ISHST);
    match request.scope {
        TlbScope::Pages(pages) => {
            for &va in pages {
                let operand = asid | ((va >> 12) & ((1 << 44) - 1));
                if request.tables_freed {
                    // SAFETY: TLBI VAE1IS only drops cached translations (walk caches too) for
                    // one VA and ASID; it cannot fault or touch memory.
                    unsafe { asm!("tlbi vae1is, {0}", in(reg) operand, options(nostack)) };
                } else {
                    // SAFETY: TLBI VALE1IS only drops the last-level translation for one VA
                    // and ASID; it cannot fault or touch memory.
                    unsafe { asm!("tlbi vale1is, {0}", in(reg) operand, options(nostack)) };
                }
            }
        }
        TlbScope::Spans(spans) => {
            for &span in spans {
                for op in arm_span_ops(request.asid, span, request.features, !request.tables_freed)
                {
                    issue(op, request.tables_freed);
                }
            }
        }
        TlbScope::All => {
            // SAFETY: TLBI ASIDE1IS only drops the cached translations of one ASID.
            unsafe { asm!("tlbi aside1is, {0}", in(reg) asid, options(nostack)) };
        }
    }
    // Barrier: DSB ISH returns only when every CPU of the domain has completed the TLBIs, so
    // after it no CPU holds the old translations and the frames may be freed.
    barrier::dsb(barrier::ISH);
    // Barrier: ISB discards instructions fetched through the old translations locally.
    barrier::isb(barrier::SY);
}

/// Issues one TLBI by address: the non-leaf form (walk caches too) where tables were freed.
///
/// A TLBI by address only drops cached translations (and, in the non-leaf forms, walks) of the
/// addresses and ASID in its operand; it cannot fault or touch memory. The range forms exist
/// where FEAT_TLBIRANGE does, which the caller checked (`TlbFeatures::range` is what
/// [`tlb_features`] read, or what the kernel says every CPU has).
fn issue(op: ArmTlbi, tables_freed: bool) {
    match (op, tables_freed) {
        (ArmTlbi::Page(operand), true) => {
            // SAFETY: see above.
            unsafe { asm!("tlbi vae1is, {0}", in(reg) operand, options(nostack)) }
        }
        (ArmTlbi::Page(operand), false) => {
            // SAFETY: see above.
            unsafe { asm!("tlbi vale1is, {0}", in(reg) operand, options(nostack)) }
        }
        (ArmTlbi::Range(operand), true) => {
            // SAFETY: see above.
            unsafe {
                asm!(".arch armv8.4-a", "tlbi rvae1is, {0}", in(reg) operand, options(nostack))
            }
        }
        (ArmTlbi::Range(operand), false) => {
            // SAFETY: see above.
            unsafe {
                asm!(".arch armv8.4-a", "tlbi rvale1is, {0}", in(reg) operand, options(nostack))
            }
        }
    }
}
