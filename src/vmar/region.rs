//! The children of a VMAR: sub-VMARs and mappings, as nodes of an intrusive red-black tree.
//!
//! A [`Region`] sits in its parent VMAR's tree, keyed by base address. A mapping's region holds
//! the [`Mapping`], which is also linked into its VMO's mapping list ([`crate::vmo::Mapping`]).
//!
//! A region's base (its tree key) never changes, nor does a VMAR's size; a mapping's size is the
//! mapping's own.

use super::VmarId;
use crate::vmo::Mapping;
use alloc::sync::Arc;
use intrusive_collections::{intrusive_adapter, rbtree, KeyAdapter};

/// A child of a VMAR.
pub struct Region {
    tree_link: rbtree::AtomicLink,
    base: u64,
    /// A VMAR's size (a mapping's is the mapping's).
    size: u64,
    kind: RegionKind,
}

/// What a [`Region`] is.
pub(crate) enum RegionKind {
    /// A sub-VMAR, whose own children live in the address space's tree under this id.
    Vmar(VmarId),
    /// A mapping of a VMO range.
    Mapping(Arc<Mapping>),
}

intrusive_adapter!(pub(crate) TreeAdapter = Arc<Region>: Region { tree_link => rbtree::AtomicLink });

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
            base,
            size,
            kind: RegionKind::Vmar(id),
        })
    }

    /// The region of `mapping`, at the mapping's base and size.
    pub(crate) fn new_mapping(mapping: Arc<Mapping>) -> Arc<Region> {
        Arc::new(Region {
            tree_link: rbtree::AtomicLink::new(),
            base: mapping.base(),
            size: 0,
            kind: RegionKind::Mapping(mapping),
        })
    }

    /// The first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes (a mapping's own, which a split changes).
    pub fn size(&self) -> u64 {
        match &self.kind {
            RegionKind::Mapping(mapping) => mapping.size(),
            RegionKind::Vmar(_) => self.size,
        }
    }

    /// The first address past the region.
    pub fn end(&self) -> u64 {
        self.base() + self.size()
    }

    pub(crate) fn kind(&self) -> &RegionKind {
        &self.kind
    }

    /// The mapping, if this region is one.
    pub fn mapping(&self) -> Option<&Arc<Mapping>> {
        match &self.kind {
            RegionKind::Mapping(mapping) => Some(mapping),
            RegionKind::Vmar(_) => None,
        }
    }
}
