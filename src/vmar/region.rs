//! The children of a VMAR: sub-VMARs and mappings, as nodes of an intrusive red-black tree.
//!
//! A [`Region`] sits in its parent VMAR's tree, keyed by base address. A mapping's region is also
//! linked into its VMO's mapping list, so one `Arc<Region>` is shared by both collections.
//!
//! A region's base (its tree key) and a mapping's VMO offset never change. Its size shrinks when a
//! mapping is split; that is written only with both the address space's tree lock and the VMO's
//! lock held, and read with either, so it is atomic.

use super::{AddressSpace, VmarId};
use crate::abi::VmOptions;
use crate::arch::MmuFlags;
use crate::vmo::Vmo;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use intrusive_collections::{intrusive_adapter, linked_list, rbtree, KeyAdapter};

/// A child of a VMAR.
pub struct Region {
    tree_link: rbtree::AtomicLink,
    vmo_link: linked_list::AtomicLink,
    base: u64,
    size: AtomicU64,
    kind: RegionKind,
}

/// What a [`Region`] is.
pub(crate) enum RegionKind {
    /// A sub-VMAR, whose own children live in the address space's tree under this id.
    Vmar(VmarId),
    /// A mapping of a VMO range.
    Mapping(Mapping),
}

/// A mapping of part of a VMO into an address space.
pub struct Mapping {
    aspace: Weak<AddressSpace>,
    vmo: Arc<Vmo>,
    vmo_offset: u64,
    /// The current permissions ([`MmuFlags`] bits, without `USER`). Guarded by the tree lock.
    flags: AtomicU8,
    /// The `ZX_VM_CAN_MAP_*` permissions the mapping may ever have: those that both the VMO
    /// handle and the VMAR handle granted when it was made.
    can_map: VmOptions,
    /// Unmapped: out of its VMAR and its page-table entries cleared, but still on its VMO's list
    /// until the shootdown for those entries completes (see [`crate::tlb::TlbBatch::retire`]).
    /// Written under the VMO lock.
    unmapped: AtomicBool,
}

intrusive_adapter!(pub(crate) TreeAdapter = Arc<Region>: Region { tree_link => rbtree::AtomicLink });
intrusive_adapter!(pub(crate) VmoListAdapter = Arc<Region>: Region { vmo_link => linked_list::AtomicLink });

impl<'a> KeyAdapter<'a> for TreeAdapter {
    type Key = u64;
    fn get_key(&self, region: &'a Region) -> u64 {
        region.base()
    }
}

impl Region {
    pub(crate) fn new_vmar(id: VmarId, base: u64, size: u64) -> Arc<Region> {
        Arc::new(Region {
            tree_link: rbtree::AtomicLink::new(),
            vmo_link: linked_list::AtomicLink::new(),
            base,
            size: AtomicU64::new(size),
            kind: RegionKind::Vmar(id),
        })
    }

    pub(crate) fn new_mapping(
        aspace: Weak<AddressSpace>,
        base: u64,
        size: u64,
        vmo: Arc<Vmo>,
        vmo_offset: u64,
        flags: MmuFlags,
        can_map: VmOptions,
    ) -> Arc<Region> {
        Arc::new(Region {
            tree_link: rbtree::AtomicLink::new(),
            vmo_link: linked_list::AtomicLink::new(),
            base,
            size: AtomicU64::new(size),
            kind: RegionKind::Mapping(Mapping {
                aspace,
                vmo,
                vmo_offset,
                flags: AtomicU8::new(flags.bits()),
                can_map,
                unmapped: AtomicBool::new(false),
            }),
        })
    }

    /// The first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// The first address past the region.
    pub fn end(&self) -> u64 {
        self.base() + self.size()
    }

    pub(crate) fn kind(&self) -> &RegionKind {
        &self.kind
    }

    /// The mapping, if this region is one.
    pub fn mapping(&self) -> Option<&Mapping> {
        match &self.kind {
            RegionKind::Mapping(mapping) => Some(mapping),
            RegionKind::Vmar(_) => None,
        }
    }

    /// Sets the size. Caller holds the tree lock and, for a mapping, the VMO lock.
    pub(crate) fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }
}

impl Mapping {
    /// The VMO mapped.
    pub fn vmo(&self) -> &Arc<Vmo> {
        &self.vmo
    }

    /// The VMO offset that the mapping's base maps.
    pub fn vmo_offset(&self) -> u64 {
        self.vmo_offset
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
    pub(crate) fn aspace(&self) -> Option<Arc<AddressSpace>> {
        self.aspace.upgrade()
    }

    pub(crate) fn aspace_weak(&self) -> &Weak<AddressSpace> {
        &self.aspace
    }
}
