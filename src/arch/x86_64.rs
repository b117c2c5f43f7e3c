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

/// The local CPU's TLB instructions. Only on bare-metal x86_64.
///
/// With tag 0 the crate assumes PCIDs are off (CR4.PCIDE clear): a CR3 load drops every non-global
/// translation. With tags 1..=4095 it assumes CR4.PCIDE is set and the CPU has INVPCID, which the
/// kernel checks (CPUID.7.0:EBX bit 10) before it gives [`crate::tlb::Tlb::new`] any tags.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod tlb {
    use crate::platform::{PhysAddr, TlbInvalidate, TlbScope};
    use x86_64::instructions::tlb::{flush_pcid, InvPcidCommand, Pcid};
    use x86_64::registers::control::{Cr3, Cr3Flags};
    use x86_64::structures::paging::PhysFrame;
    use x86_64::{PhysAddr as X86PhysAddr, VirtAddr};

    /// Loads `root` into CR3 with PCID `asid`; without `flush`, the PCID's cached translations are
    /// kept (CR3 bit 63). With `asid` 0 (PCIDs off) the load always drops non-global translations.
    ///
    /// # Safety
    /// `root` is a complete PML4 that maps the running code, its stack and every kernel address
    /// the caller will touch next, and stays alive while it is loaded; a non-zero `asid` needs
    /// CR4.PCIDE set.
    pub unsafe fn load_root(root: PhysAddr, asid: u16, flush: bool) {
        let frame = PhysFrame::containing_address(X86PhysAddr::new(root.0));
        if asid == 0 {
            // SAFETY: the caller guarantees `root` maps everything the CPU touches after the
            // switch; writing CR3 is then the architectural way to switch address spaces.
            unsafe { Cr3::write(frame, Cr3Flags::empty()) };
            return;
        }
        let Ok(pcid) = Pcid::new(asid) else {
            // `Tlb::new` refuses more than 4095 tags for this format, so this is unreachable;
            // were it reached, loading untagged is still correct (and drops everything).
            // SAFETY: as below.
            unsafe { Cr3::write(frame, Cr3Flags::empty()) };
            return;
        };
        if flush {
            // SAFETY: as above; the caller guarantees CR4.PCIDE is set for a non-zero PCID.
            unsafe { Cr3::write_pcid(frame, pcid) };
        } else {
            // SAFETY: as above; keeping the PCID's entries is safe because the crate flushes a
            // PCID before reuse whenever this CPU may hold stale ones (then `flush` is set).
            unsafe { Cr3::write_pcid_no_flush(frame, pcid) };
        }
    }

    /// Carries out `request` on the calling CPU only.
    ///
    /// For the current address space INVLPG (or a CR3 reload for all); it also drops the
    /// paging-structure caches of the current PCID, so freed table pages are covered. For another
    /// PCID, INVPCID by address or by context. Stores to the page tables are ordinary write-back
    /// stores, ordered before INVLPG/INVPCID, which are serialising.
    pub fn invalidate_local(request: &TlbInvalidate<'_>) {
        let (current, current_pcid) = Cr3::read_pcid();
        let is_current = current.start_address().as_u64() == request.root.0;
        if request.asid == 0 {
            if !is_current {
                // PCIDs are off and the address space is not loaded here: its translations went
                // at the last CR3 switch, and none can have been made since.
                return;
            }
            match request.scope {
                TlbScope::Pages(pages) => {
                    for &va in pages {
                        x86_64::instructions::tlb::flush(VirtAddr::new_truncate(va));
                    }
                }
                TlbScope::All => x86_64::instructions::tlb::flush_all(),
            }
            return;
        }
        let Ok(pcid) = Pcid::new(request.asid) else {
            // Unreachable (`Tlb::new` refuses more than 4095 tags); dropping every context's
            // translations is still correct.
            // SAFETY: a non-zero tag means the CPU has INVPCID (module docs); it only drops
            // cached translations.
            unsafe { flush_pcid(InvPcidCommand::All) };
            return;
        };
        let current_is_ours = is_current && current_pcid.value() == request.asid;
        match request.scope {
            TlbScope::Pages(pages) if current_is_ours => {
                for &va in pages {
                    x86_64::instructions::tlb::flush(VirtAddr::new_truncate(va));
                }
            }
            TlbScope::Pages(pages) => {
                for &va in pages {
                    // SAFETY: tags are only handed out when the CPU has INVPCID (module docs);
                    // INVPCID only drops cached translations.
                    unsafe {
                        flush_pcid(InvPcidCommand::Address(VirtAddr::new_truncate(va), pcid))
                    };
                }
            }
            TlbScope::All => {
                // SAFETY: as above.
                unsafe { flush_pcid(InvPcidCommand::Single(pcid)) };
            }
        }
    }
}
