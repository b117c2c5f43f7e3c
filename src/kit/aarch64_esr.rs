//! Decoding aarch64 aborts (`ESR_EL1`) into what [`AddressSpace::page_fault`] needs.
//!
//! Plain bit decoding, compiled on every target (so it is tested on the host) and without the
//! `aarch64-cpu` crate. A kernel's synchronous-exception handler reads `ESR_EL1` and `FAR_EL1`,
//! calls [`decode_esr`], and routes the fault to [`AddressSpace::page_fault`] when
//! [`FaultKind::routes_to_page_fault`] says so and the address lies in the current address space's
//! user range.
//!
//! # After a resolved fault: nothing to invalidate
//!
//! **x86_64**: a page fault itself drops the faulting CPU's TLB entries for the faulting address
//! (Intel SDM vol. 3A, 4.10.4.1), so the retried access walks the tables again.
//!
//! **aarch64**: a translation fault needs nothing: invalid descriptors are never cached, and
//! [`AddressSpace::page_fault`] publishes the new entry itself (`DSB ISHST; ISB`,
//! [`crate::arch::publish_new_entries`]). A permission fault is different: the TLB may hold the
//! valid, narrower translation the CPU faulted on, and unlike x86 the fault does not drop it. The
//! crate handles that too: when [`AddressSpace::page_fault`] finds the entry already valid (it
//! was widened after the CPU cached it), it invalidates the page on the faulting CPU before it
//! returns, so a kernel's handler routes the fault and returns, nothing more.
//! [`FaultKind::needs_local_invalidate`] and `invalidate_page_local` remain for kernels that
//! change entries behind the crate's back.
//!
//! ```rust,ignore
//! // In the EL1 synchronous-exception handler (`esr`, `far` read from ESR_EL1 and FAR_EL1).
//! let Some(kind) = aarch64_esr::decode_esr(esr) else { return other_exception(esr) };
//! let pin = CpuPin::new(&**platform);
//! let resolved = match AddressSpace::current(&pin) {
//!     Some(aspace) if kind.routes_to_page_fault() && in_user_range(&aspace, far) => {
//!         aspace.page_fault(far, kind.access).is_ok()
//!     }
//!     _ => false,
//! };
//! if !resolved {
//!     deliver_fault_to_thread(kind, far);
//! }
//! ```
//!
//! [`AddressSpace::page_fault`]: crate::vmar::AddressSpace::page_fault
//! [`AddressSpace::asid`]: crate::vmar::AddressSpace::asid

use crate::vmar::Access;

/// Exception class: instruction abort from a lower exception level (EL0: user code).
pub const EC_INSTRUCTION_ABORT_LOWER: u8 = 0x20;
/// Exception class: instruction abort taken without a change of exception level (EL1).
pub const EC_INSTRUCTION_ABORT_SAME: u8 = 0x21;
/// Exception class: data abort from a lower exception level (EL0: user code).
pub const EC_DATA_ABORT_LOWER: u8 = 0x24;
/// Exception class: data abort taken without a change of exception level (EL1: the kernel
/// touching user memory, e.g. copying from a user buffer).
pub const EC_DATA_ABORT_SAME: u8 = 0x25;

/// ISS bit 6, WnR: the data abort was caused by a write.
const WNR: u64 = 1 << 6;
/// ISS bit 8, CM: the data abort came from a cache-maintenance or address-translation
/// instruction (for which WnR reads as 1 whatever the access).
const CM: u64 = 1 << 8;
/// ISS bit 10, FnV: FAR_EL1 is not valid.
const FNV: u64 = 1 << 10;

/// What kind of fault the status code (DFSC/IFSC, ESR bits 5:0) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultClass {
    /// No valid descriptor at table level `level` (0-3): the page (or a table above it) is not
    /// mapped yet. Route to [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault).
    Translation {
        /// The table level of the walk that found no descriptor.
        level: u8,
    },
    /// The descriptor at `level` (1-3) has its access flag clear. The crate sets the access
    /// flag in every descriptor it writes, so this never comes from the crate's entries:
    /// something else wrote the table.
    AccessFlag {
        /// The table level.
        level: u8,
    },
    /// The descriptor at `level` (1-3) does not allow the access. Route to
    /// [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault), which answers
    /// `AccessDenied` when the mapping does not allow it either, and otherwise upgrades the entry
    /// (the crate then drops the narrower cached translation itself: see the module docs).
    Permission {
        /// The table level.
        level: u8,
    },
    /// Any other status: alignment faults, external aborts, address-size faults, TLB conflicts,
    /// and the level 0 and -1 codes of 52-bit addressing (FEAT_LPA2), which the crate's 48-bit
    /// tables never cause. Not a page fault.
    Other {
        /// The raw status code (ESR bits 5:0).
        status: u8,
    },
}

impl FaultClass {
    /// Classifies a DFSC/IFSC status code (the low 6 bits of `status`; the rest are ignored).
    pub const fn from_status(status: u8) -> Self {
        let status = status & 0x3f;
        let level = status & 0b11;
        match status >> 2 {
            0b0001 => FaultClass::Translation { level },
            0b0010 if level >= 1 => FaultClass::AccessFlag { level },
            0b0011 if level >= 1 => FaultClass::Permission { level },
            _ => FaultClass::Other { status },
        }
    }
}

/// An instruction or data abort, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultKind {
    /// What the faulting access was: a load, a store, or an instruction fetch.
    pub access: Access,
    /// What kind of fault it is.
    pub class: FaultClass,
    /// The abort came from a lower exception level (EL0, user code) rather than from the kernel.
    pub from_lower_el: bool,
    /// FAR_EL1 holds the faulting address. Always true for translation, access-flag and
    /// permission faults; false (FnV) only for some external aborts.
    pub far_valid: bool,
}

impl FaultKind {
    /// Whether the kernel should hand the fault to
    /// [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault): a translation or
    /// permission fault, with a valid FAR (and, the kernel checks, an address in the current
    /// address space's user range). Anything else is a bug or an exception for the thread.
    pub const fn routes_to_page_fault(&self) -> bool {
        self.far_valid
            && matches!(
                self.class,
                FaultClass::Translation { .. } | FaultClass::Permission { .. }
            )
    }

    /// Whether the CPU may still cache a narrower translation of the page: a permission fault.
    /// [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault) invalidates it itself
    /// when it resolves the fault (see the module docs); a kernel that changes entries behind the
    /// crate's back uses this with `invalidate_page_local` (bare-metal aarch64).
    pub const fn needs_local_invalidate(&self) -> bool {
        matches!(self.class, FaultClass::Permission { .. })
    }
}

/// Decodes `ESR_EL1` for an instruction abort (EC 0x20, 0x21: [`Access::Execute`]) or a data
/// abort (EC 0x24, 0x25: [`Access::Write`] when WnR, bit 6, is set, else [`Access::Read`]);
/// `None` for any other exception class. A data abort from a cache-maintenance or
/// address-translation instruction (CM, bit 8) reads as [`Access::Read`]: its WnR bit is always
/// set, and such an instruction needs only read permission (Linux decides the same way).
pub const fn decode_esr(esr: u64) -> Option<FaultKind> {
    let ec = ((esr >> 26) & 0x3f) as u8;
    let class = FaultClass::from_status((esr & 0x3f) as u8);
    let far_valid = esr & FNV == 0;
    let (access, from_lower_el) = match ec {
        EC_INSTRUCTION_ABORT_LOWER => (Access::Execute, true),
        EC_INSTRUCTION_ABORT_SAME => (Access::Execute, false),
        EC_DATA_ABORT_LOWER | EC_DATA_ABORT_SAME => {
            let access = if esr & WNR != 0 && esr & CM == 0 {
                Access::Write
            } else {
                Access::Read
            };
            (access, ec == EC_DATA_ABORT_LOWER)
        }
        _ => return None,
    };
    Some(FaultKind {
        access,
        class,
        from_lower_el,
        far_valid,
    })
}

/// The operand of `TLBI VALE1` (and `VAE1`, `VALE1IS`...) for the page at `va` under `asid`:
/// the ASID in bits 63:48, the virtual page number (`va >> 12`, 44 bits) below.
pub const fn tlbi_va_operand(va: u64, asid: u16) -> u64 {
    ((asid as u64) << 48) | ((va >> 12) & ((1 << 44) - 1))
}

/// Drops the calling CPU's last-level translation of the page at `va` under `asid`:
/// `DSB ISH; TLBI VALE1; DSB NSH; ISB`. Called after
/// [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault) resolved a permission
/// fault (see the module docs), with the faulting address and the address space's ASID.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn invalidate_page_local(va: u64, asid: u16) {
    let operand = tlbi_va_operand(va, asid);
    // SAFETY: DSB ISH completes earlier descriptor stores for the walkers; TLBI VALE1 only drops
    // one cached last-level translation of this CPU (it cannot fault or touch memory); DSB NSH
    // completes it and ISB makes the retried access translate afresh.
    unsafe {
        core::arch::asm!(
            "dsb ish",
            "tlbi vale1, {0}",
            "dsb nsh",
            "isb",
            in(reg) operand,
            options(nostack, preserves_flags)
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn esr(ec: u8, iss: u64) -> u64 {
        ((ec as u64) << 26) | (1 << 25) | iss
    }

    #[test]
    fn data_and_instruction_aborts() {
        let read = decode_esr(esr(EC_DATA_ABORT_LOWER, 0b000111)).unwrap();
        assert_eq!(read.access, Access::Read);
        assert_eq!(read.class, FaultClass::Translation { level: 3 });
        assert!(read.from_lower_el && read.routes_to_page_fault());
        assert!(!read.needs_local_invalidate());
        let write = decode_esr(esr(EC_DATA_ABORT_SAME, WNR | 0b001111)).unwrap();
        assert_eq!(write.access, Access::Write);
        assert_eq!(write.class, FaultClass::Permission { level: 3 });
        assert!(!write.from_lower_el && write.needs_local_invalidate());
        let dc = decode_esr(esr(EC_DATA_ABORT_LOWER, CM | WNR | 0b000111)).unwrap();
        assert_eq!(dc.access, Access::Read);
        let fetch = decode_esr(esr(EC_INSTRUCTION_ABORT_LOWER, WNR | 0b000101)).unwrap();
        assert_eq!(fetch.access, Access::Execute);
        assert_eq!(fetch.class, FaultClass::Translation { level: 1 });
        assert_eq!(decode_esr(esr(0x15, 0)), None); // SVC
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            FaultClass::from_status(0b001010),
            FaultClass::AccessFlag { level: 2 }
        );
        for other in [0b000000, 0b001000, 0b001100, 0b010000, 0b100001, 0b101011] {
            assert_eq!(
                FaultClass::from_status(other),
                FaultClass::Other { status: other }
            );
        }
        let external = decode_esr(esr(EC_DATA_ABORT_LOWER, FNV | 0b010000)).unwrap();
        assert!(!external.far_valid && !external.routes_to_page_fault());
        assert_eq!(
            tlbi_va_operand(0x7fff_ffff_f000, 5),
            (5 << 48) | 0x7_ffff_ffff
        );
    }
}
