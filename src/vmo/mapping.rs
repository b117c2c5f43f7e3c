//! A mapping as its VMO sees it.
//!
//! Each VMO keeps, under its lock, the list of every mapping of it in every address space, so
//! that a decommit reaches every translation of its pages. The address spaces belong to the
//! layer above ([`crate::vmar`]); a mapping reaches its own through [`MappedSpace`], which that
//! layer implements. That trait is the one place where the VMO layer calls up: the mapping back-
//! reference is the one cycle in the object model, and it is cut here.
//!
//! A mapping's base and VMO offset never change. Its size shrinks when the mapping is split;
//! that is written only with both the address space's tree lock and the VMO's lock held, and
//! read with either, so it is atomic.

use super::Vmo;
use crate::abi::VmOptions;
use crate::arch::MmuFlags;
use crate::tlb::TlbBatch;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use intrusive_collections::{intrusive_adapter, linked_list};

/// The address space a mapping lives in, as a VMO needs it: to clear the translations of some
/// of its pages, or to have a whole round flush it.
pub(crate) trait MappedSpace: Send + Sync {
    /// Clears the translations of `[start, end)`, recording what to invalidate in `batch`.
    /// Called under the VMO's lock (the lock order allows the page-table lock below it).
    fn unmap_pages(self: Arc<Self>, start: u64, end: u64, batch: &mut TlbBatch);
    /// Makes `batch` invalidate the whole address space.
    fn flush_all(self: Arc<Self>, batch: &mut TlbBatch);
    /// Gives the translations of `[start, end)` the permissions `flags` (fewer than they
    /// have), recording what to invalidate in `batch`. Called under the VMO's lock.
    fn protect_pages(self: Arc<Self>, start: u64, end: u64, flags: MmuFlags, batch: &mut TlbBatch);
}

/// A mapping of part of a VMO into an address space.
pub struct Mapping {
    vmo_link: linked_list::AtomicLink,
    space: Weak<dyn MappedSpace>,
    vmo: Arc<Vmo>,
    vmo_offset: u64,
    base: u64,
    size: AtomicU64,
    /// The current permissions ([`MmuFlags`] bits, without `USER`). Guarded by the tree lock.
    flags: AtomicU8,
    /// The `ZX_VM_CAN_MAP_*` permissions the mapping may ever have: those that both the VMO
    /// handle and the VMAR handle granted when it was made.
    can_map: VmOptions,
    /// Unmapped: out of its VMAR and its page-table entries cleared, but still on its VMO's list
    /// until the shootdown for those entries completes. Written under the VMO lock.
    unmapped: AtomicBool,
}

intrusive_adapter!(pub(crate) VmoListAdapter = Arc<Mapping>: Mapping { vmo_link => linked_list::AtomicLink });

impl Mapping {
    /// A mapping of `vmo` from `vmo_offset`, at `[base, base + size)` of `space`; not yet on
    /// the VMO's list ([`Vmo::add_mapping_locked`]).
    pub(crate) fn new(
        space: Weak<dyn MappedSpace>,
        base: u64,
        size: u64,
        vmo: Arc<Vmo>,
        vmo_offset: u64,
        flags: MmuFlags,
        can_map: VmOptions,
    ) -> Arc<Mapping> {
        Arc::new(Mapping {
            vmo_link: linked_list::AtomicLink::new(),
            space,
            vmo,
            vmo_offset,
            base,
            size: AtomicU64::new(size),
            flags: AtomicU8::new(flags.bits()),
            can_map,
            unmapped: AtomicBool::new(false),
        })
    }

    /// The VMO mapped.
    pub fn vmo(&self) -> &Arc<Vmo> {
        &self.vmo
    }

    /// The VMO offset that the mapping's base maps.
    pub fn vmo_offset(&self) -> u64 {
        self.vmo_offset
    }

    /// The first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Sets the size. Caller holds the tree lock and the VMO lock.
    pub(crate) fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }

    /// The current permissions.
    pub fn flags(&self) -> MmuFlags {
        MmuFlags::from_bits_truncate(self.flags.load(Ordering::Relaxed))
    }

    pub(crate) fn set_flags(&self, flags: MmuFlags) {
        self.flags.store(flags.bits(), Ordering::Relaxed);
    }

    /// The permissions the mapping may ever have, as `ZX_VM_CAN_MAP_*` bits.
    pub fn can_map(&self) -> VmOptions {
        self.can_map
    }

    /// Whether the mapping was unmapped and only waits for its shootdown.
    pub(crate) fn is_unmapped(&self) -> bool {
        self.unmapped.load(Ordering::Relaxed)
    }

    pub(crate) fn set_unmapped(&self) {
        self.unmapped.store(true, Ordering::Relaxed);
    }

    /// The address space, unless it is being torn down.
    pub(crate) fn space(&self) -> Option<Arc<dyn MappedSpace>> {
        self.space.upgrade()
    }

    /// Whether `self` and `other` live in the same address space.
    pub(crate) fn same_space(&self, other: &Mapping) -> bool {
        Weak::ptr_eq(&self.space, &other.space)
    }
}
