//! What a VMO operation leaves for after its shootdown round ([`Deferred`] work in a
//! [`crate::tlb::TlbBatch`]): mappings to take off their VMO's list, and pages to free.

use super::{Mapping, RemovedPages, Vmo};
use crate::platform::Platform;
use crate::tlb::Deferred;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

/// Mappings unmapped by an operation: each leaves its VMO's list only after the operation's
/// shootdown round, so that a decommit meanwhile still flushes its address space, and its VMO
/// (which it holds alive) cannot free frames while a TLB may still map them.
#[derive(Default)]
pub(crate) struct RetiredMappings(pub(crate) Vec<Arc<Mapping>>);

impl Deferred for RetiredMappings {
    unsafe fn after_flush(&mut self, _platform: &dyn Platform) {
        for mapping in self.0.drain(..) {
            let vmo = mapping.vmo().clone();
            Vmo::remove_mapping_locked(&mut vmo.lock(), &mapping);
            // Dropping the mapping may drop the VMO, which frees its frames: safe now (the
            // caller's promise).
        }
    }

    fn holds_frames(&self) -> bool {
        false
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Pages taken out of VMOs wait in their operation's batch for its shootdown round.
impl Deferred for RemovedPages {
    unsafe fn after_flush(&mut self, platform: &dyn Platform) {
        // SAFETY: forwarded: the frames left their page lists under the VMOs' locks, and every
        // entry that mapped them was cleared and is covered by the round that completed.
        unsafe { self.free(platform) };
    }

    fn holds_frames(&self) -> bool {
        !self.is_empty()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
