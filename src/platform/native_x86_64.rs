//! The local CPU's TLB instructions. Only on bare-metal x86_64.
//!
//! With tag 0 the crate assumes PCIDs are off (CR4.PCIDE clear): a CR3 load drops every non-global
//! translation. With tags 1..=4095 it assumes CR4.PCIDE is set and the CPU has INVPCID, which the
//! kernel checks (CPUID.7.0:EBX bit 10) before it gives [`crate::tlb::Tlb::new`] any tags.

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
                unsafe { flush_pcid(InvPcidCommand::Address(VirtAddr::new_truncate(va), pcid)) };
            }
        }
        TlbScope::All => {
            // SAFETY: as above.
            unsafe { flush_pcid(InvPcidCommand::Single(pcid)) };
        }
    }
}

/// The largest leaf this CPU's paging takes: 2 (1 GiB pages) where CPUID reports them
/// (leaf 0x8000_0001, EDX bit 26, "Page1GB"), else 1 (2 MiB pages, which 4-level paging always
/// has).
pub fn max_leaf_level() -> usize {
    use core::arch::x86_64::__cpuid;
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification registers; leaf
    // 0x8000_0000 answers the highest extended leaf, checked before 0x8000_0001 is asked.
    let (max_extended, edx) = unsafe {
        let max = __cpuid(0x8000_0000).eax;
        let edx = if max >= 0x8000_0001 {
            __cpuid(0x8000_0001).edx
        } else {
            0
        };
        (max, edx)
    };
    if max_extended >= 0x8000_0001 && edx & (1 << 26) != 0 {
        2
    } else {
        1
    }
}
