//! Address spaces and their VMARs (virtual memory address regions).
//!
//! An [`AddressSpace`] owns one tree of VMARs, rooted at its root VMAR, and one page table. Each
//! VMAR keeps its children (sub-VMARs and mappings) in an intrusive red-black tree keyed by base
//! address ([`Region`]), so finding the child at an address and checking a range for overlap are
//! O(log n).
//!
//! # Lock order
//!
//! This is the crate's one lock order; every path takes locks in it, and never in reverse:
//!
//! 1. an address space's **tree lock** (`AddressSpace::tree`): its VMARs, their children, and the
//!    permissions of its mappings. At most one tree lock is held at a time.
//! 2. **VMO locks** (`Vmo::inner`): a VMO's pages, pins and mapping list. When an operation needs
//!    several at once (a decommit over mappings of several VMOs), it takes them in increasing koid
//!    order.
//! 3. a **copy-on-write tree lock** (`CowTree`, `src/vmo/cow.rs`): the hidden nodes and links of
//!    one tree of snapshot relatives, taken while holding the lock of one of its VMOs (or none,
//!    when a VMO dies). At most one tree lock is held at a time.
//! 4. a **page-table lock** (`AddressSpace::mmu`) of any address space, the caller's or another's:
//!    a leaf lock. A decommit reaches other address spaces from the VMO side, through the VMO's
//!    mapping list, taking only their page-table locks, which is why those are separate from the
//!    tree locks.
//!
//! The frame allocator and the TLB invalidation ([`crate::platform::Platform`]) sit below all of
//! them; a [`TlbBatch`] is finished after the locks are dropped. The one invalidation made with
//! locks held is a split's break-before-make on aarch64 (`src/arch/page_table/large.rs`): a
//! broadcast `TLBI` under the page-table lock, which waits for no other CPU.

mod aspace;
mod fault;
mod ops;
mod perms;
mod range;
mod region;
mod tree;

pub use self::aspace::AddressSpace;
pub use self::ops::Vmar;
pub use self::perms::{
    perms_needing_can_map, perms_to_mmu, rights_for_perms, valid_perms, Permission, PERMISSIONS,
};
use self::range::RangeRules;
use self::tree::{AspaceTree, Covered, RangeScratch, VmarNode};
use crate::vmo::RetiredMappings;

/// The largest leaf that may map page `index` of `vmo`, which sits at `va`: its address, first
/// frame and level, where the leaf lies inside `[lo, hi)` and the VMO has a suitably aligned run
/// of frames there, in a size the platform has (the fault path passes its mapping's bounds; `ZX_VM_MAP_RANGE` the page
/// itself as `lo`, so that the leaf starts there).
fn largest_leaf(
    vmo: &Vmo,
    inner: &VmoInner,
    va: u64,
    index: u64,
    lo: u64,
    hi: u64,
) -> Option<(u64, PhysAddr, usize)> {
    let max = vmo.platform().max_leaf_level();
    LARGE_LEVELS.iter().rev().find_map(|&level| {
        let span = entry_span(level);
        let base = va & !(span - 1);
        if level > max || base < lo || base.checked_add(span)? > hi {
            return None;
        }
        let first = index - ((va - base) >> PAGE_SHIFT);
        let pa = vmo.large_run_locked(inner, first, level)?;
        Some((base, pa, level))
    })
}

pub use self::region::Region;
pub(crate) use self::region::{RegionKind, TreeAdapter};
pub use crate::vmo::Mapping;

use crate::abi::next_koid;
use crate::abi::{
    is_page_aligned, page_round_up, zx_koid_t, Status, VmOptions, ZxResult, PAGE_SHIFT, PAGE_SIZE,
};
use crate::arch::{
    check_prepared_root, entry_span, new_page_table_for, translate_format, Format, LeafCounts,
    MmuFlags, PageTableOps, PendingFlush, RootProblem, LARGE_LEVELS, USER_ADDRESS_LIMIT,
};
use crate::platform::{AtomicCpuSet, CpuPin, CpuSet, PhysAddr, Platform, TlbInvalidate, TlbScope};
use crate::tlb::{FlushTarget, Item, Reach, TlbBatch};
use crate::vmo::{FaultPage, MappedSpace, Vmo, VmoInner};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use intrusive_collections::{Bound, RBTree};
use spin::{Mutex, MutexGuard};

/// The identity of a VMAR within its address space.
pub type VmarId = u64;

/// The lowest user address: the root VMAR's base.
pub const USER_ASPACE_BASE: u64 = 0x0100_0000;
/// The size of the root VMAR: up to one page below the top of the 47-bit lower half.
pub const USER_ASPACE_SIZE: u64 = USER_ADDRESS_LIMIT - PAGE_SIZE - USER_ASPACE_BASE;

/// Why [`AddressSpace::create`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspaceError {
    /// A bad argument (`ZX_ERR_INVALID_ARGS`) or no memory (`ZX_ERR_NO_MEMORY`).
    Status(Status),
    /// The root table after [`Platform::prepare_root`] (`ZX_ERR_BAD_STATE`).
    Root(RootProblem),
    /// The CPU's translation regime (`ZX_ERR_BAD_STATE`).
    Regime(crate::arch::regime::RegimeProblem),
}

impl From<Status> for AspaceError {
    fn from(status: Status) -> Self {
        AspaceError::Status(status)
    }
}

impl From<AspaceError> for Status {
    fn from(error: AspaceError) -> Self {
        match error {
            AspaceError::Status(status) => status,
            AspaceError::Root(_) | AspaceError::Regime(_) => Status::BadState,
        }
    }
}

impl core::fmt::Display for AspaceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AspaceError::Status(status) => f.write_str(status.name()),
            AspaceError::Root(problem) => write!(f, "{problem}"),
            AspaceError::Regime(problem) => write!(f, "{problem}"),
        }
    }
}

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

impl Access {
    fn required(self) -> MmuFlags {
        match self {
            Access::Read => MmuFlags::READ,
            Access::Write => MmuFlags::WRITE,
            Access::Execute => MmuFlags::EXECUTE,
        }
    }
}

/// What [`AddressSpace::audit`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditError {
    /// The virtual address of the bad translation.
    pub va: u64,
    /// What is wrong with it.
    pub what: &'static str,
}

/// Why a page fault could not be resolved. The kernel turns it into an exception for the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No mapping covers the address.
    NotMapped,
    /// The mapping does not allow the access.
    AccessDenied,
    /// The address maps past the end of the VMO.
    OutOfRange,
    /// No frame could be had.
    NoMemory,
}
