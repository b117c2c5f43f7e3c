//! Page tables in both real formats, and the instructions that maintain the TLB.
//!
//! One walker ([`PageTable`]) builds, walks and tears down 4-level tables of 512 eight-byte entries
//! for both architectures; the formats differ only in how an entry is encoded ([`PteFormat`]):
//! [`X86_64`] for x86_64's 4-level paging, [`Aarch64`] for VMSAv8-64 with a 4 KiB granule and
//! 48-bit addresses. Both formats are built and walked on every host, so the tests run each of them.
//!
//! The instructions themselves (INVLPG, CR3, TLBI, barriers) are compiled only for the bare-metal
//! target of their own architecture (`cfg(target_arch)` and `cfg(target_os = "none")`).

mod aarch64;
mod flush;
mod page_table;
pub mod regime;
mod x86_64;

pub use self::aarch64::Aarch64;
pub use self::flush::{PendingFlush, FULL_FLUSH_THRESHOLD};
pub use self::page_table::{
    check_prepared_root, new_page_table, new_page_table_for, translate, translate_format,
    valid_user_range, walk, walk_format, LeafCounts, PageTable, PageTableOps, RootProblem,
};
pub use self::x86_64::X86_64;

/// The local CPU's TLB instructions (bare metal only), under their old name.
#[cfg(target_os = "none")]
pub use crate::platform::native as native_tlb;
pub use crate::platform::{Format, MemoryAttributes, Shareability};

use crate::platform::PhysAddr;
use bitflags::bitflags;

bitflags! {
    /// The permissions of one page translation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MmuFlags: u8 {
        /// Loads are allowed. A translation without it is never installed.
        const READ = 1 << 0;
        /// Stores are allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches are allowed.
        const EXECUTE = 1 << 2;
        /// User mode may access the page.
        const USER = 1 << 3;
    }
}

/// Number of levels in both formats (x86_64 PML4..PT; aarch64 L0..L3).
pub const LEVELS: usize = 4;
/// Entries in one table.
pub const ENTRIES: usize = 512;
/// The first address past the lower half that both formats translate (48 bits).
pub const USER_ADDRESS_LIMIT: u64 = 1 << 47;

/// How one architecture encodes page-table entries.
///
/// Levels count down to the leaves: level 3 is the root (x86_64 PML4, aarch64 L0) and level 0 holds
/// the 4 KiB page entries (x86_64 PT, aarch64 L3). Levels 1 and 2 hold either a table or a large
/// leaf: a 2 MiB or 1 GiB page (x86_64 PS entries in a PD or PDPT; aarch64 block descriptors at
/// L2 or L1).
pub trait PteFormat: Send + Sync + 'static {
    /// A short name for messages and benchmarks.
    const NAME: &'static str;

    /// Whether replacing a large leaf with a table of smaller ones needs break-before-make: the
    /// entry made invalid and its translation invalidated on every CPU before the table goes in
    /// (aarch64, ARM ARM D8.16.1; x86_64 lets the table replace the leaf directly when the
    /// translations agree, Intel SDM 4.10.2.3).
    const BREAK_BEFORE_MAKE: bool;

    /// Whether `entry` is valid (present).
    fn is_valid(entry: u64) -> bool;

    /// Whether `entry`, valid at `level` (1..=3), points at a table of the next level.
    fn is_table(entry: u64, level: usize) -> bool;

    /// The physical address in a valid entry (next table or page frame).
    fn address(entry: u64) -> PhysAddr;

    /// An entry pointing at the next-level table at `pa`.
    fn table_entry(pa: PhysAddr) -> u64;

    /// A level-0 entry mapping the frame at `pa` with `flags` (which include [`MmuFlags::READ`]),
    /// with the default memory attributes ([`MemoryAttributes::DEFAULT`]).
    fn page_entry(pa: PhysAddr, flags: MmuFlags) -> u64 {
        Self::page_entry_with(pa, flags, Self::attribute_bits(MemoryAttributes::DEFAULT))
    }

    /// A level-0 entry as [`PteFormat::page_entry`], with the memory-attribute bits `attrs`
    /// (from [`PteFormat::attribute_bits`]).
    fn page_entry_with(pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64;

    /// The entry bits that give a page the memory attributes `attrs` (aarch64: AttrIndx and SH;
    /// x86_64: none, PAT entry 0 is write-back).
    fn attribute_bits(attrs: MemoryAttributes) -> u64;

    /// Whether `entry`, found in a last-level table, is a valid page descriptor, as the MMU
    /// reads it: aarch64 wants both low bits set at level 3 (`0b01` there is reserved and
    /// faults); x86_64 takes any present entry.
    fn is_page(entry: u64) -> bool {
        Self::is_valid(entry)
    }

    /// A large leaf at level 1 (2 MiB) or 2 (1 GiB) mapping the frames from `pa` (aligned to the
    /// level's span) with `flags` and the memory-attribute bits `attrs`.
    fn block_entry_with(pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64;

    /// The permissions of a valid leaf (a page or a large leaf).
    fn page_flags(entry: u64) -> MmuFlags;

    /// A leaf at `level` (0: a page; 1, 2: a large leaf) mapping `pa` with `flags` and `attrs`.
    #[inline]
    fn leaf_entry(level: usize, pa: PhysAddr, flags: MmuFlags, attrs: u64) -> u64 {
        if level == 0 {
            Self::page_entry_with(pa, flags, attrs)
        } else {
            Self::block_entry_with(pa, flags, attrs)
        }
    }

    /// Whether `entry`, found at `level`, is a valid leaf (a page at level 0, a large leaf above).
    #[inline]
    fn is_leaf(entry: u64, level: usize) -> bool {
        Self::is_valid(entry) && !Self::is_table(entry, level)
    }
}

/// The levels whose leaves map large pages: 1 (2 MiB) and 2 (1 GiB).
pub const LARGE_LEVELS: [usize; 2] = [1, 2];

/// Makes entries just made valid visible to this CPU's MMU before the faulting access is
/// retried. x86_64 needs nothing: its walks see earlier stores, and the return from the fault is
/// serialising. aarch64 needs `DSB ISHST` (the store reaches the walker) and `ISB`.
#[inline]
pub fn publish_new_entries() {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        use aarch64_cpu::asm::barrier;
        // Barrier: the descriptor stores complete for the table walkers before later accesses.
        barrier::dsb(barrier::ISHST);
        // Barrier: the retried access is fetched and translated after the DSB.
        barrier::isb(barrier::SY);
    }
}

/// The index of `va`'s entry in a table of `level`.
#[inline]
pub(crate) const fn table_index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * level)) & 0x1ff) as usize
}

/// Bytes covered by one entry of a table of `level`: 4 KiB, 2 MiB, 1 GiB, 512 GiB.
#[inline]
pub const fn entry_span(level: usize) -> u64 {
    1 << (12 + 9 * level)
}
