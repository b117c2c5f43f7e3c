//! x86_64 4-level paging: the entry codec, and (on bare metal) the TLB instructions.

use super::{MemoryAttributes, MmuFlags, PteFormat};
use crate::platform::PhysAddr;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// x86_64 page-table entries (Intel SDM vol. 3, 4.5).
///
/// Table entries are present, writable and user-accessible, so that the leaf alone decides a
/// page's permissions. Leaves are pre-set accessed (and dirty when writable) so that the MMU never
/// writes them back behind the walker.
#[derive(Clone, Copy, Debug)]
pub enum X86_64 {}

impl PteFormat for X86_64 {
    const NAME: &'static str = "x86_64";
    const BREAK_BEFORE_MAKE: bool = false;

    #[inline]
    fn is_valid(entry: u64) -> bool {
        entry & PRESENT != 0
    }

    #[inline]
    fn is_table(entry: u64, level: usize) -> bool {
        level > 0 && entry & (PRESENT | HUGE) == PRESENT
    }

    #[inline]
    fn address(entry: u64) -> PhysAddr {
        PhysAddr(entry & ADDRESS_MASK)
    }

    #[inline]
    fn table_entry(pa: PhysAddr) -> u64 {
        (pa.0 & ADDRESS_MASK) | PRESENT | WRITABLE | USER
    }

    #[inline]
    fn attribute_bits(_attrs: MemoryAttributes) -> u64 {
        0
    }

    #[inline]
    fn page_entry_with(pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64 {
        let mut entry = (pa.0 & ADDRESS_MASK) | PRESENT | ACCESSED | attrs;
        if flags.contains(MmuFlags::WRITE) {
            entry |= WRITABLE | DIRTY;
        }
        if flags.contains(MmuFlags::USER) {
            entry |= USER;
        }
        if !flags.contains(MmuFlags::EXECUTE) {
            entry |= NO_EXECUTE;
        }
        entry
    }

    #[inline]
    fn block_entry_with(pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64 {
        // The same bits as a page, with PS; the PAT bit (12 in a large leaf) stays clear.
        Self::page_entry_with(pa, flags, attrs) | HUGE
    }

    #[inline]
    fn page_flags(entry: u64) -> MmuFlags {
        let mut flags = MmuFlags::READ;
        if entry & WRITABLE != 0 {
            flags |= MmuFlags::WRITE;
        }
        if entry & USER != 0 {
            flags |= MmuFlags::USER;
        }
        if entry & NO_EXECUTE == 0 {
            flags |= MmuFlags::EXECUTE;
        }
        flags
    }
}
