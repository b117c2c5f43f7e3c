//! The model's handle calls: duplicate, replace, close, transfer.

use super::*;

impl Model {
    pub(super) fn handle(&self, p: usize, h: zx_handle_t) -> R<MHandle> {
        self.procs[p]
            .handles
            .get(&h)
            .copied()
            .ok_or(ZX_ERR_BAD_HANDLE)
    }

    pub(super) fn vmo_handle(&self, p: usize, h: zx_handle_t) -> R<(usize, zx_rights_t)> {
        match self.handle(p, h)? {
            MHandle {
                obj: Obj::Vmo(id),
                rights,
            } => Ok((id, rights)),
            _ => Err(ZX_ERR_WRONG_TYPE),
        }
    }

    pub(super) fn vmar_handle(&self, p: usize, h: zx_handle_t) -> R<(usize, zx_rights_t)> {
        match self.handle(p, h)? {
            MHandle {
                obj: Obj::Vmar(id),
                rights,
            } => Ok((id, rights)),
            _ => Err(ZX_ERR_WRONG_TYPE),
        }
    }

    pub(super) fn has_room(&self, p: usize) -> R {
        if self.procs[p].handles.len() >= self.procs[p].limit {
            Err(ZX_ERR_NO_RESOURCES)
        } else {
            Ok(())
        }
    }

    /// Adds a handle under the value the crate issued (the model does not choose values; the
    /// harness checks that the value is new).
    pub(super) fn add_handle(
        &mut self,
        p: usize,
        obj: Obj,
        rights: zx_rights_t,
        value: zx_handle_t,
    ) -> R {
        self.has_room(p)?;
        self.procs[p].handles.insert(value, MHandle { obj, rights });
        Ok(())
    }

    /// The rights a duplicate or replacement asks for: `ZX_RIGHT_SAME_RIGHTS`, or a subset.
    pub(super) fn derived_rights(old: zx_rights_t, rights: zx_rights_t) -> R<zx_rights_t> {
        if rights == ZX_RIGHT_SAME_RIGHTS {
            return Ok(old);
        }
        // Unknown bits are never a subset of what a handle holds.
        if rights & !ALL_RIGHTS != 0 || rights & !old != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        Ok(rights)
    }

    /// `zx_handle_duplicate`: needs `ZX_RIGHT_DUPLICATE`; rights only shrink.
    pub fn duplicate(&mut self, p: usize, h: zx_handle_t, rights: u32, new: zx_handle_t) -> R {
        let old = self.handle(p, h)?;
        need(old.rights, ZX_RIGHT_DUPLICATE)?;
        let rights = Self::derived_rights(old.rights, rights)?;
        self.add_handle(p, old.obj, rights, new)
    }

    /// `zx_handle_replace`: needs no right; rights only shrink. The old handle goes even when
    /// the call fails (Zircon: "*handle* is always invalidated").
    pub fn replace(&mut self, p: usize, h: zx_handle_t, rights: u32, new: zx_handle_t) -> R {
        let old = self.handle(p, h)?;
        self.procs[p].handles.remove(&h);
        let rights = Self::derived_rights(old.rights, rights)?;
        // The old handle's slot is free now, so there is always room.
        self.add_handle(p, old.obj, rights, new)
    }

    /// `zx_handle_close`: `ZX_HANDLE_INVALID` is fine.
    pub fn close(&mut self, p: usize, h: zx_handle_t) -> R {
        if h == ZX_HANDLE_INVALID {
            return Ok(());
        }
        self.procs[p]
            .handles
            .remove(&h)
            .map(drop)
            .ok_or(ZX_ERR_BAD_HANDLE)
    }

    /// Moves handle `h` of process `from` to process `to` (what a channel write and read would
    /// do; a kernel-side operation of the harness). Needs `ZX_RIGHT_TRANSFER`; if `to` is full,
    /// `ZX_ERR_NO_RESOURCES` and the handle stays.
    pub fn transfer(&mut self, from: usize, h: zx_handle_t, to: usize, new: zx_handle_t) -> R {
        let handle = self.handle(from, h)?;
        need(handle.rights, ZX_RIGHT_TRANSFER)?;
        self.add_handle(to, handle.obj, handle.rights, new)?;
        self.procs[from].handles.remove(&h);
        Ok(())
    }
}
