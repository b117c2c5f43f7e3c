//! Which root-table slots are the kernel's: [`KernelSlots`], the set that a [`SingleCpu`] copies
//! from the kernel's root into every new address space's root.
//!
//! An x86_64 kernel stays mapped under every address space only if each new root table holds its
//! PML4 entries. The crate owns the root slots that cover an address space's user range and never
//! touches any other. After `prepare_root`, [`AddressSpace::with_user_range`] checks that the
//! user range's slots are still empty. `prepare_root` is told only the new root, not the address
//! space's user range, so the slots to copy are given once, at construction, as a
//! [`KernelSlots`] set:
//! - [`KernelSlots::UPPER_HALF`] (slots 256-511) suits a higher-half kernel whose address spaces
//!   use the default user range ([`AddressSpace::new`]: the lower half, slots 0-255).
//! - A kernel with something in the lower half gives its address spaces a user range clear of
//!   those slots ([`Process::with_user_range`](crate::Process::with_user_range),
//!   [`AddressSpace::with_user_range`]), and passes
//!   [`KernelSlots::outside_user_range`] of that range. bootloader 0.9, for one, loads the kernel
//!   at its link address, usually a few MiB into slot 0, and puts the physical-memory map, the
//!   stack and the boot info in whatever slots are free unless told where.
//!
//! The entries are copied when each address space is made. An x86_64 kernel therefore fills every
//! kernel slot of its own root before the first address space exists, for example by allocating
//! the level-3 table of each kernel slot it will ever use. Its later mappings then go into those
//! shared tables and reach every address space. An entry it adds to its root afterwards reaches
//! only the address spaces made after that. aarch64 kernels run from `TTBR1_EL1` and pass
//! [`KernelSlots::NONE`].
//!
//!
//! [`SingleCpu`]: super::single_cpu::SingleCpu
//! [`AddressSpace::new`]: crate::vmar::AddressSpace::new
//! [`AddressSpace::with_user_range`]: crate::vmar::AddressSpace::with_user_range

use crate::abi::PAGE_SIZE;
use crate::arch::{ENTRIES, USER_ADDRESS_LIMIT};
use core::fmt;
use core::ops::RangeInclusive;

/// Bytes one root-table slot covers (512 GiB) in both formats.
const SLOT_SPAN: u64 = 1 << 39;

/// A set of root-table slots (0-511): the kernel's entries, which
/// [`SingleCpu`](super::single_cpu::SingleCpu) copies into every new root table. See the module
/// docs for how to choose them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KernelSlots {
    bits: [u64; ENTRIES / 64],
}

/// Why a [`KernelSlots`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// A slot at or above 512.
    OutOfRange {
        /// The slot given.
        slot: usize,
    },
    /// A user range that is empty, unaligned or not inside the 47-bit lower half.
    BadUserRange {
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SlotError::OutOfRange { slot } => write!(f, "root slot {slot} is not below 512"),
            SlotError::BadUserRange { base, size } => write!(
                f,
                "user range {base:#x} + {size:#x} is not a page-aligned, non-empty range below 2^47"
            ),
        }
    }
}

impl KernelSlots {
    /// No slot: for aarch64, whose kernel runs from `TTBR1_EL1`.
    pub const NONE: KernelSlots = KernelSlots {
        bits: [0; ENTRIES / 64],
    };

    /// Slots 256-511: the upper half, for a higher-half x86_64 kernel.
    pub const UPPER_HALF: KernelSlots = KernelSlots {
        bits: [0, 0, 0, 0, u64::MAX, u64::MAX, u64::MAX, u64::MAX],
    };

    /// The slots of `range`, or an error if it reaches past 511 (an empty range is no slot).
    pub fn range(range: RangeInclusive<usize>) -> Result<Self, SlotError> {
        let mut slots = KernelSlots::NONE;
        for slot in range {
            slots.insert(slot)?;
        }
        Ok(slots)
    }

    /// Every slot but those covering the user range `[base, base + size)`: what an address space
    /// with that range leaves to the kernel. The range is checked as
    /// [`AddressSpace::with_user_range`](crate::vmar::AddressSpace::with_user_range) checks it.
    pub fn outside_user_range(base: u64, size: u64) -> Result<Self, SlotError> {
        let bad = SlotError::BadUserRange { base, size };
        let end = base.checked_add(size).ok_or(bad)?;
        if size == 0
            || (base % PAGE_SIZE != 0)
            || (size % PAGE_SIZE != 0)
            || end > USER_ADDRESS_LIMIT
        {
            return Err(bad);
        }
        let (first, last) = (
            (base / SLOT_SPAN) as usize,
            ((end - 1) / SLOT_SPAN) as usize,
        );
        let mut slots = KernelSlots::NONE;
        for slot in (0..ENTRIES).filter(|slot| !(first..=last).contains(slot)) {
            slots.insert(slot)?;
        }
        Ok(slots)
    }

    /// Adds `slot`.
    pub fn insert(&mut self, slot: usize) -> Result<(), SlotError> {
        if slot >= ENTRIES {
            return Err(SlotError::OutOfRange { slot });
        }
        self.bits[slot / 64] |= 1 << (slot % 64);
        Ok(())
    }

    /// Whether `slot` is in the set.
    pub const fn contains(&self, slot: usize) -> bool {
        slot < ENTRIES && self.bits[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// How many slots are in the set.
    pub fn len(&self) -> usize {
        self.bits
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits == [0; ENTRIES / 64]
    }

    /// Whether no slot of the set covers any of `[base, base + size)` (a range that wraps is
    /// never clear): then an address space with that user range keeps every slot the set copies.
    pub fn is_clear_of(&self, base: u64, size: u64) -> bool {
        let Some(end) = base.checked_add(size) else {
            return false;
        };
        if size == 0 {
            return true;
        }
        let (first, last) = (base / SLOT_SPAN, (end - 1) / SLOT_SPAN);
        (first..=last.min(ENTRIES as u64 - 1)).all(|slot| !self.contains(slot as usize))
    }

    /// The slots, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..ENTRIES).filter(|&slot| self.contains(slot))
    }
}

impl fmt::Debug for KernelSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
