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
    const BREAK_BEFORE_MAKE: bool = true;

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
    fn is_page(entry: u64) -> bool {
        entry & (VALID | TABLE_OR_PAGE) == VALID | TABLE_OR_PAGE
    }

    #[inline]
    fn block_entry_with(pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64 {
        // A block descriptor has the attributes of a page descriptor, with bit 1 clear.
        Self::page_entry_with(pa, flags, attrs) & !TABLE_OR_PAGE
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
