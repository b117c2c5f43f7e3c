//! What `ZX_INFO_VMO` reports about a VMO.

use super::{Vmo, VmoInner, VmoKind};
use crate::abi::{
    zx_info_vmo_t, zx_rights_t, PAGE_SHIFT, ZX_CACHE_POLICY_CACHED, ZX_INFO_VMO_CONTIGUOUS,
    ZX_INFO_VMO_IS_COW_CLONE, ZX_INFO_VMO_RESIZABLE, ZX_INFO_VMO_TYPE_PAGED,
    ZX_INFO_VMO_VIA_HANDLE,
};

impl Vmo {
    /// Bytes of memory committed to the VMO.
    pub fn committed_bytes(&self) -> u64 {
        if self.alias.is_some() {
            // A slice or reference owns no pages (Zircon reports 0 too).
            return 0;
        }
        match self.kind {
            VmoKind::Paged => {
                let inner = self.lock();
                let shared = match inner.cow.as_ref() {
                    Some(link) => link.tree.lock().attributed(link.node),
                    None => 0,
                };
                (inner.pages.committed_pages() + shared) << PAGE_SHIFT
            }
            VmoKind::Contiguous { .. } => self.size(),
            VmoKind::Physical { .. } => 0,
        }
    }

    /// `zx_object_get_info(ZX_INFO_VMO)` through a handle with `rights`.
    pub fn info(&self, rights: zx_rights_t) -> zx_info_vmo_t {
        let kind = match self.kind {
            VmoKind::Paged => ZX_INFO_VMO_TYPE_PAGED,
            VmoKind::Contiguous { .. } => ZX_INFO_VMO_TYPE_PAGED | ZX_INFO_VMO_CONTIGUOUS,
            VmoKind::Physical { .. } => 0,
        };
        let resizable = if self.resizable {
            ZX_INFO_VMO_RESIZABLE
        } else {
            0
        };
        let clone = if self.is_cow_clone() {
            ZX_INFO_VMO_IS_COW_CLONE
        } else {
            0
        };
        let (num_mappings, share_count) = {
            let inner = self.lock();
            (inner.mapping_count, Self::address_spaces_locked(&inner))
        };
        zx_info_vmo_t {
            koid: self.koid,
            size_bytes: self.size(),
            num_mappings,
            share_count,
            parent_koid: self.parent_koid(),
            num_children: self.num_children(),
            flags: kind | resizable | clone | ZX_INFO_VMO_VIA_HANDLE,
            committed_bytes: self.committed_bytes(),
            handle_rights: rights,
            cache_policy: ZX_CACHE_POLICY_CACHED,
            ..zx_info_vmo_t::default()
        }
    }

    /// How many distinct address spaces map the VMO (O(mappings^2), no allocation).
    fn address_spaces_locked(inner: &VmoInner) -> u64 {
        let live = || {
            inner
                .mappings
                .iter()
                .filter(|mapping| !mapping.is_unmapped())
        };
        live()
            .enumerate()
            .filter(|(index, mapping)| {
                !live()
                    .take(*index)
                    .any(|earlier| earlier.same_space(mapping))
            })
            .count() as u64
    }
}
