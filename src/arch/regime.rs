//! Checks of the translation regime a kernel set up against what the crate's page tables need,
//! each problem named in words.
//!
//! The checks are plain functions of register values, so that they are tested on the host; on
//! bare metal `check_translation_regime` reads the registers itself. A kernel calls it once at
//! boot, before its first address space, and refuses to go on (or logs) on a problem: QEMU's
//! emulation passes with several of these wrong (TCG ignores ASIDs and memory types), hardware
//! does not.

use super::MemoryAttributes;
use core::fmt;

/// One requirement of the crate's page tables that the translation regime does not meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegimeProblem {
    /// aarch64: TCR_EL1.EPD0 = 1, so TTBR0_EL1 walks (every user address) fault.
    Ttbr0WalksDisabled,
    /// aarch64: TCR_EL1.T0SZ is not 16; the crate's tables start at level 0 of a 48-bit space.
    T0szNot16 {
        /// The value found.
        t0sz: u8,
    },
    /// aarch64: TCR_EL1.TG0 is not the 4 KiB granule (TTBR1's may differ).
    Granule0Not4K,
    /// aarch64: TCR_EL1.IRGN0/ORGN0 are not write-back: table walks would bypass the caches
    /// the crate's table stores go through.
    WalksNotCacheable,
    /// aarch64: TCR_EL1.SH0 is not inner shareable, so other CPUs' walkers may not see table
    /// stores that a `DSB ISH` published.
    WalksNotInnerShareable,
    /// aarch64: TCR_EL1.A1 = 1: the ASID would come from TTBR1_EL1, not the one the crate loads.
    AsidFromTtbr1,
    /// aarch64: more than 255 tags asked for, but 16-bit ASIDs are off (TCR_EL1.AS = 0) or not
    /// implemented (ID_AA64MMFR0_EL1.ASIDBits).
    SixteenBitAsidsOff {
        /// The tags asked for.
        tags: u16,
    },
    /// aarch64: the MAIR_EL1 attribute the crate maps user pages with is not normal memory.
    DeviceMemoryAttribute {
        /// The attribute index.
        index: u8,
        /// Its MAIR_EL1 byte.
        attr: u8,
    },
    /// x86_64: CR0.WP = 0: the kernel could write through read-only user translations.
    WriteProtectOff,
    /// x86_64: EFER.NXE = 0: the no-execute bit the crate sets is reserved, every access faults.
    NoExecuteOff,
    /// x86_64: tags asked for, but CR4.PCIDE = 0.
    PcidsOff,
}

impl fmt::Display for RegimeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RegimeProblem::Ttbr0WalksDisabled => {
                f.write_str("TCR_EL1.EPD0 = 1: user addresses (TTBR0_EL1) are never walked")
            }
            RegimeProblem::T0szNot16 { t0sz } => write!(
                f,
                "TCR_EL1.T0SZ = {t0sz}: the crate's tables need T0SZ = 16 (48-bit, from level 0)"
            ),
            RegimeProblem::Granule0Not4K => {
                f.write_str("TCR_EL1.TG0 is not 4 KiB: the crate's tables use the 4 KiB granule")
            }
            RegimeProblem::WalksNotCacheable => f.write_str(
                "TCR_EL1.IRGN0/ORGN0 are not write-back: walks must be cacheable (0b01)",
            ),
            RegimeProblem::WalksNotInnerShareable => {
                f.write_str("TCR_EL1.SH0 is not inner shareable (0b11)")
            }
            RegimeProblem::AsidFromTtbr1 => {
                f.write_str("TCR_EL1.A1 = 1: the ASID must come from TTBR0_EL1 (A1 = 0)")
            }
            RegimeProblem::SixteenBitAsidsOff { tags } => write!(
                f,
                "{tags} ASIDs asked for, but 16-bit ASIDs are off (TCR_EL1.AS) or missing \
                 (ID_AA64MMFR0_EL1.ASIDBits): at most 255"
            ),
            RegimeProblem::DeviceMemoryAttribute { index, attr } => write!(
                f,
                "MAIR_EL1 attribute {index} is {attr:#04x}, Device memory: user pages need normal \
                 write-back memory (e.g. 0xff); pass the right index in Platform::memory_attributes"
            ),
            RegimeProblem::WriteProtectOff => {
                f.write_str("CR0.WP = 0: read-only pages are writable by the kernel")
            }
            RegimeProblem::NoExecuteOff => {
                f.write_str("EFER.NXE = 0: the NX bit in the crate's entries would fault")
            }
            RegimeProblem::PcidsOff => f.write_str("tags asked for, but CR4.PCIDE = 0"),
        }
    }
}

/// The problems one check found (at most one of each kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegimeProblems {
    found: [Option<RegimeProblem>; 8],
    len: usize,
}

impl RegimeProblems {
    fn push(&mut self, problem: RegimeProblem) {
        if self.len < self.found.len() {
            self.found[self.len] = Some(problem);
            self.len += 1;
        }
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The problems, in the order checked.
    pub fn iter(&self) -> impl Iterator<Item = RegimeProblem> + '_ {
        self.found[..self.len].iter().flatten().copied()
    }

    /// `Ok` when nothing is wrong.
    pub fn into_result(self) -> Result<(), RegimeProblems> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for RegimeProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Whether a MAIR_EL1 attribute byte describes normal memory (its outer nibble is not 0: Device
/// memory has 0b0000 there).
pub const fn is_normal_memory(attr: u8) -> bool {
    attr >> 4 != 0
}

/// The MAIR_EL1 problem, if the attribute `attrs` names is not normal memory.
pub fn check_mair(mair: u64, attrs: MemoryAttributes) -> Option<RegimeProblem> {
    let index = attrs.mair_index & 7;
    let attr = (mair >> (8 * index)) as u8;
    (!is_normal_memory(attr)).then_some(RegimeProblem::DeviceMemoryAttribute { index, attr })
}

/// How many ASIDs the hardware and TCR_EL1 give: 65535 with 16-bit ASIDs implemented
/// (ID_AA64MMFR0_EL1.ASIDBits = 0b0010) and enabled (TCR_EL1.AS = 1), else 255.
pub const fn aarch64_asid_tags(id_aa64mmfr0: u64, tcr: u64) -> u16 {
    let sixteen_bits = (id_aa64mmfr0 >> 4) & 0xf == 0b0010;
    let enabled = tcr & (1 << 36) != 0;
    if sixteen_bits && enabled {
        u16::MAX
    } else {
        255
    }
}

/// Checks TCR_EL1 and MAIR_EL1 (and, for `tags`, ID_AA64MMFR0_EL1) against the crate's
/// aarch64 tables: TTBR0 walks on, T0SZ = 16, 4 KiB granule, cacheable inner-shareable walks,
/// ASIDs from TTBR0, 16-bit ASIDs where more than 255 tags are asked for, and a normal-memory
/// attribute at `attrs.mair_index`.
pub fn check_aarch64(
    tcr: u64,
    mair: u64,
    id_aa64mmfr0: u64,
    attrs: MemoryAttributes,
    tags: u16,
) -> RegimeProblems {
    let mut problems = RegimeProblems::default();
    if tcr & (1 << 7) != 0 {
        problems.push(RegimeProblem::Ttbr0WalksDisabled);
    }
    let t0sz = (tcr & 0x3f) as u8;
    if t0sz != 16 {
        problems.push(RegimeProblem::T0szNot16 { t0sz });
    }
    if (tcr >> 14) & 0b11 != 0b00 {
        problems.push(RegimeProblem::Granule0Not4K);
    }
    if (tcr >> 8) & 0b11 != 0b01 || (tcr >> 10) & 0b11 != 0b01 {
        problems.push(RegimeProblem::WalksNotCacheable);
    }
    if (tcr >> 12) & 0b11 != 0b11 {
        problems.push(RegimeProblem::WalksNotInnerShareable);
    }
    if tcr & (1 << 22) != 0 {
        problems.push(RegimeProblem::AsidFromTtbr1);
    }
    if tags > 255 && aarch64_asid_tags(id_aa64mmfr0, tcr) < tags {
        problems.push(RegimeProblem::SixteenBitAsidsOff { tags });
    }
    if let Some(problem) = check_mair(mair, attrs) {
        problems.push(problem);
    }
    problems
}

/// Checks CR0, CR4 and EFER against the crate's x86_64 tables: CR0.WP, EFER.NXE, and CR4.PCIDE
/// where `tags` are asked for. (CR4.SMAP is the kernel's business: the crate never touches user
/// addresses.)
pub fn check_x86_64(cr0: u64, cr4: u64, efer: u64, tags: u16) -> RegimeProblems {
    let mut problems = RegimeProblems::default();
    if cr0 & (1 << 16) == 0 {
        problems.push(RegimeProblem::WriteProtectOff);
    }
    if efer & (1 << 11) == 0 {
        problems.push(RegimeProblem::NoExecuteOff);
    }
    if tags > 0 && cr4 & (1 << 17) == 0 {
        problems.push(RegimeProblem::PcidsOff);
    }
    problems
}

/// Reads TCR_EL1, MAIR_EL1 and ID_AA64MMFR0_EL1 and checks them ([`check_aarch64`]).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn check_translation_regime(attrs: MemoryAttributes, tags: u16) -> Result<(), RegimeProblems> {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1, MAIR_EL1, TCR_EL1};
    check_aarch64(
        TCR_EL1.get(),
        MAIR_EL1.get(),
        ID_AA64MMFR0_EL1.get(),
        attrs,
        tags,
    )
    .into_result()
}

/// The ASIDs this CPU gives the crate ([`aarch64_asid_tags`] of its registers), for
/// [`crate::tlb::Tlb::new`].
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn detect_asid_tags() -> u16 {
    use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1, TCR_EL1};
    aarch64_asid_tags(ID_AA64MMFR0_EL1.get(), TCR_EL1.get())
}

/// The MAIR_EL1 problem of `attrs` on this CPU, if any.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn check_memory_attributes(attrs: MemoryAttributes) -> Option<RegimeProblem> {
    use aarch64_cpu::registers::{Readable, MAIR_EL1};
    check_mair(MAIR_EL1.get(), attrs)
}

/// Reads CR0, CR4 and EFER and checks them ([`check_x86_64`]).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub fn check_translation_regime(tags: u16) -> Result<(), RegimeProblems> {
    use x86_64::registers::control::{Cr0, Cr4};
    use x86_64::registers::model_specific::Efer;
    check_x86_64(Cr0::read_raw(), Cr4::read_raw(), Efer::read_raw(), tags).into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Shareability;

    /// The test kernel's TCR_EL1: T0SZ = T1SZ = 16, 4 KiB granules, write-back inner-shareable
    /// walks, 48-bit IPS.
    const GOOD_TCR: u64 = 16
        | (0b01 << 8)
        | (0b01 << 10)
        | (0b11 << 12)
        | (16 << 16)
        | (0b01 << 24)
        | (0b01 << 26)
        | (0b11 << 28)
        | (0b10 << 30)
        | (0b101 << 32);
    /// Attribute 0 Device-nGnRnE, attribute 1 normal write-back.
    const MAIR: u64 = 0xff << 8;

    /// `is_empty` says whether a check found anything.
    #[test]
    fn problems_are_empty_only_when_nothing_was_found() {
        let attrs = MemoryAttributes {
            mair_index: 1,
            shareability: Shareability::Inner,
        };
        assert!(check_aarch64(GOOD_TCR, MAIR, 0, attrs, 255).is_empty());
        let bad = check_aarch64(
            GOOD_TCR | (1 << 22),
            MAIR,
            0,
            MemoryAttributes::DEFAULT,
            255,
        );
        assert!(!bad.is_empty());
        assert_eq!(bad.into_result(), Err(bad));
        // Printed as its problems, in order, joined by "; ".
        let words: alloc::vec::Vec<alloc::string::String> =
            bad.iter().map(|p| alloc::format!("{p}")).collect();
        assert!(words.len() >= 2);
        assert_eq!(alloc::format!("{bad}"), words.join("; "));
    }

    #[test]
    fn a_good_aarch64_regime_passes() {
        let attrs = MemoryAttributes {
            mair_index: 1,
            shareability: Shareability::Inner,
        };
        assert_eq!(
            check_aarch64(GOOD_TCR, MAIR, 0, attrs, 255).into_result(),
            Ok(())
        );
    }

    #[test]
    fn each_aarch64_problem_is_named() {
        let attrs = MemoryAttributes::DEFAULT; // index 0: Device here
        let tcr = (GOOD_TCR | (1 << 7) | (1 << 22) | (0b10 << 14)) & !(0b11 << 12) & !0x3f | 25;
        let found = check_aarch64(tcr, MAIR, 0, attrs, 1000);
        let all: alloc::vec::Vec<_> = found.iter().collect();
        assert_eq!(
            all,
            [
                RegimeProblem::Ttbr0WalksDisabled,
                RegimeProblem::T0szNot16 { t0sz: 25 },
                RegimeProblem::Granule0Not4K,
                RegimeProblem::WalksNotInnerShareable,
                RegimeProblem::AsidFromTtbr1,
                RegimeProblem::SixteenBitAsidsOff { tags: 1000 },
                RegimeProblem::DeviceMemoryAttribute { index: 0, attr: 0 },
            ]
        );
        let words = alloc::format!("{found}");
        assert!(
            words.contains("EPD0") && words.contains("Device"),
            "{words}"
        );
        let uncached = GOOD_TCR & !(0b11 << 8);
        assert_eq!(
            check_aarch64(uncached, 0xff, 0, MemoryAttributes::DEFAULT, 1)
                .iter()
                .next(),
            Some(RegimeProblem::WalksNotCacheable)
        );
    }

    #[test]
    fn asid_width() {
        let sixteen = 0b0010 << 4;
        assert_eq!(aarch64_asid_tags(sixteen, 1 << 36), 65535);
        assert_eq!(aarch64_asid_tags(sixteen, 0), 255);
        assert_eq!(aarch64_asid_tags(0, 1 << 36), 255);
        let tcr = GOOD_TCR | (1 << 36);
        assert!(check_aarch64(tcr, 0xff, sixteen, MemoryAttributes::DEFAULT, 65535).is_empty());
    }

    #[test]
    fn x86_64_problems() {
        let (wp, pcide, nxe) = (1 << 16, 1 << 17, 1 << 11);
        assert!(check_x86_64(wp, pcide, nxe, 4095).is_empty());
        assert!(check_x86_64(wp, 0, nxe, 0).is_empty());
        let all: alloc::vec::Vec<_> = check_x86_64(0, 0, 0, 1).iter().collect();
        assert_eq!(
            all,
            [
                RegimeProblem::WriteProtectOff,
                RegimeProblem::NoExecuteOff,
                RegimeProblem::PcidsOff
            ]
        );
    }

    #[test]
    fn normal_and_device_attributes() {
        for device in [0x00, 0x04, 0x08, 0x0c] {
            assert!(!is_normal_memory(device));
        }
        for normal in [0xff, 0x44, 0xee, 0xbb] {
            assert!(is_normal_memory(normal));
        }
    }
}
