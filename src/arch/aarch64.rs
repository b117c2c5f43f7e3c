//! VMSAv8-64 stage-1 translation, 4 KiB granule, 48-bit addresses: the descriptor codec, and (on
//! bare metal) the TLB maintenance instructions.

use super::{MemoryAttributes, MmuFlags, PteFormat, Shareability};
use crate::platform::PhysAddr;

const VALID: u64 = 1 << 0;
/// Bit 1: a table descriptor at levels 0-2, a page descriptor at level 3.
const TABLE_OR_PAGE: u64 = 1 << 1;
/// AttrIndx, bits 4:2: the MAIR_EL1 attribute the kernel programs as normal write-back memory.
const ATTR_INDEX_SHIFT: u64 = 2;
/// AP[1]: EL0 may access.
const AP_EL0: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_READ_ONLY: u64 = 1 << 7;
/// SH, bits 9:8.
const SH_SHIFT: u64 = 8;
/// The access flag, pre-set so that no access-flag fault is taken.
const ACCESS_FLAG: u64 = 1 << 10;
/// Not global: the translation is tagged with the ASID.
const NOT_GLOBAL: u64 = 1 << 11;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

/// aarch64 VMSAv8-64 descriptors (Arm ARM D8.3).
///
/// User pages are not global (ASID-tagged) and never executable at EL1 (PXN).
#[derive(Clone, Copy, Debug)]
pub enum Aarch64 {}

impl PteFormat for Aarch64 {
    const NAME: &'static str = "aarch64";

    #[inline]
    fn is_valid(entry: u64) -> bool {
        entry & VALID != 0
    }

    #[inline]
    fn is_table(entry: u64, level: usize) -> bool {
        level > 0 && entry & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE
    }

    #[inline]
    fn address(entry: u64) -> PhysAddr {
        PhysAddr(entry & ADDRESS_MASK)
    }

    #[inline]
    fn table_entry(pa: PhysAddr) -> u64 {
        (pa.0 & ADDRESS_MASK) | VALID | TABLE_OR_PAGE
    }

    #[inline]
    fn attribute_bits(attrs: MemoryAttributes) -> u64 {
        let sh = match attrs.shareability {
            Shareability::Non => 0b00,
            Shareability::Outer => 0b10,
            Shareability::Inner => 0b11,
        };
        (u64::from(attrs.mair_index & 7) << ATTR_INDEX_SHIFT) | (sh << SH_SHIFT)
    }

    #[inline]
    fn page_entry_with(pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64 {
        let mut entry = (pa.0 & ADDRESS_MASK) | VALID | TABLE_OR_PAGE | attrs | ACCESS_FLAG;
        if !flags.contains(MmuFlags::WRITE) {
            entry |= AP_READ_ONLY;
        }
        if flags.contains(MmuFlags::USER) {
            entry |= AP_EL0 | NOT_GLOBAL | PXN;
            if !flags.contains(MmuFlags::EXECUTE) {
                entry |= UXN;
            }
        } else {
            entry |= UXN;
            if !flags.contains(MmuFlags::EXECUTE) {
                entry |= PXN;
            }
        }
        entry
    }

    #[inline]
    fn page_flags(entry: u64) -> MmuFlags {
        let mut flags = MmuFlags::READ;
        if entry & AP_READ_ONLY == 0 {
            flags |= MmuFlags::WRITE;
        }
        let user = entry & AP_EL0 != 0;
        if user {
            flags |= MmuFlags::USER;
        }
        let no_exec = if user { UXN } else { PXN };
        if entry & no_exec == 0 {
            flags |= MmuFlags::EXECUTE;
        }
        flags
    }
}

/// The TLB maintenance instructions. Only on bare-metal aarch64.
///
/// TLBI ...IS broadcasts to every CPU of the inner-shareable domain, so no IPIs are needed: the
/// initiator's DSB ISH completes only once every CPU has carried the invalidation out.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod tlb {
    use crate::platform::{PhysAddr, TlbInvalidate, TlbScope};
    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{Writeable, TTBR0_EL1};
    use core::arch::asm;

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
}
