//! The local CPU's TLB instructions. Only on bare-metal x86_64.
//!
//! With tag 0 the crate assumes PCIDs are off (CR4.PCIDE clear): a CR3 load drops every non-global
//! translation. With tags 1..=4095 it assumes CR4.PCIDE is set and the CPU has INVPCID, which the
//! kernel checks (CPUID.7.0:EBX bit 10) before it gives [`crate::tlb::Tlb::new`] any tags.

use crate::platform::tlbi::{for_each_invlpgb, Invlpgb};
use crate::platform::{PhysAddr, TlbFeatures, TlbInvalidate, TlbScope};
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
            TlbScope::All => x86_64::instructions::tlb::flush_all(),
            scope => each_entry(scope, |va| {
                x86_64::instructions::tlb::flush(VirtAddr::new_truncate(va))
            }),
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
        TlbScope::All => {
            // SAFETY: tags are only handed out when the CPU has INVPCID (module docs);
            // INVPCID only drops cached translations.
            unsafe { flush_pcid(InvPcidCommand::Single(pcid)) };
        }
        scope if current_is_ours => each_entry(scope, |va| {
            x86_64::instructions::tlb::flush(VirtAddr::new_truncate(va))
        }),
        scope => each_entry(scope, |va| {
            // SAFETY: as above.
            unsafe { flush_pcid(InvPcidCommand::Address(VirtAddr::new_truncate(va), pcid)) }
        }),
    }
}

/// Calls `f` with one address in each entry `scope` names (INVLPG of any address in a large
/// leaf drops its translation). Not for [`TlbScope::All`].
fn each_entry(scope: TlbScope<'_>, mut f: impl FnMut(u64)) {
    match scope {
        TlbScope::Pages(pages) => pages.iter().for_each(|&va| f(va)),
        TlbScope::Spans(spans) => {
            for span in spans {
                (0..span.count).for_each(|i| f(span.va + i * span.entry_bytes()));
            }
        }
        TlbScope::All => {}
    }
}

/// The calling CPU's INVLPGB: `CPUID 0x8000_0008` EBX bit 3, with `EDX[15:0] + 1` pages per
/// instruction at most.
pub fn tlb_features() -> TlbFeatures {
    use core::arch::x86_64::__cpuid;
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification registers; leaf
    // 0x8000_0000 answers the highest extended leaf, checked before 0x8000_0008 is asked.
    let (ebx, edx) = unsafe {
        if __cpuid(0x8000_0000).eax >= 0x8000_0008 {
            let leaf = __cpuid(0x8000_0008);
            (leaf.ebx, leaf.edx)
        } else {
            (0, 0)
        }
    };
    TlbFeatures {
        invlpgb: if ebx & (1 << 3) != 0 {
            (edx & 0xffff) + 1
        } else {
            0
        },
        ..TlbFeatures::NONE
    }
}

/// Broadcasts `request` to every CPU with INVLPGB, without waiting ([`sync_broadcast`] waits).
/// Only for a tagged address space on a CPU with INVLPGB (the caller checked both).
pub fn invalidate_broadcast(request: &TlbInvalidate<'_>) {
    for_each_invlpgb(request, invlpgb);
}

/// Issues one INVLPGB (`0F 01 FE`).
fn invlpgb(op: Invlpgb) {
    // SAFETY: INVLPGB only drops cached translations (and paging-structure entries) matching
    // its operands, on every CPU; it reads and writes no memory. The caller checked that the
    // CPU has it (`TlbFeatures::invlpgb`). As in Linux, no fence precedes it: the entries were
    // cleared by earlier stores of this CPU, and TLBSYNC waits for it to complete everywhere.
    unsafe {
        core::arch::asm!(
            ".byte 0x0f, 0x01, 0xfe",
            in("rax") op.rax,
            in("ecx") op.ecx,
            in("edx") op.edx,
            options(nostack)
        )
    };
}

/// Waits until every INVLPGB this CPU issued has completed on every CPU (TLBSYNC, `0F 01 FF`).
pub fn sync_broadcast() {
    // SAFETY: TLBSYNC only waits; it exists wherever INVLPGB does, and is only called after
    // a round that broadcast, on the CPU that did (the round is pinned).
    unsafe { core::arch::asm!(".byte 0x0f, 0x01, 0xff", options(nostack)) };
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
