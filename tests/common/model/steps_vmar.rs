//! The harness's VMAR, handle and CPU steps: each runs one op on the crate and on the model and compares.

use super::*;

impl World {
    /// The VMAR calls of [`World::step_unchecked`].
    pub(super) fn step_vmar_call(&mut self, op: &Op) -> R2 {
        match *op {
            Op::VmarAllocate {
                p,
                h,
                options,
                offset,
                size,
            } => self.step_vmar_allocate(p, h, options, offset, size)?,
            Op::VmarMap {
                p,
                vmar,
                vmo,
                options,
                vmar_offset,
                vmo_offset,
                len,
            } => self.step_vmar_map(p, vmar, vmo, options, vmar_offset, vmo_offset, len)?,
            Op::VmarUnmap { p, h, addr, len } => self.step_vmar_unmap(p, h, addr, len)?,
            Op::VmarProtect {
                p,
                h,
                options,
                addr,
                len,
            } => self.step_vmar_protect(p, h, options, addr, len)?,
            Op::VmarDestroy { p, h } => self.step_vmar_destroy(p, h)?,
            Op::VmarOpRange {
                p,
                h,
                op,
                addr,
                len,
                buffer,
                buffer_size,
            } => self.step_vmar_op_range(p, h, op, addr, len, buffer, buffer_size)?,
            _ => unreachable!("not a VMAR call: {op:?}"),
        }
        Ok(())
    }

    /// `Op::VmarAllocate`, on the crate and on the model.
    pub(super) fn step_vmar_allocate(
        &mut self,
        p: u8,
        h: H,
        options: u32,
        offset: Off,
        size: Len,
    ) -> R2 {
        let p = self.proc(p);
        let (h, offset, size) = (self.handle(p, h), Self::off(offset), Self::len(size));
        let what = || {
            format!(
                "zx_vmar_allocate(p{p}, {h:#x}, options {options:#x}, offset {offset:#x}, size {size:#x})"
            )
        };
        let saved = self.saved();
        let (mut child, mut addr) = (ZX_HANDLE_INVALID, 0);
        let got = zx_vmar_allocate(
            &self.procs[p],
            h,
            options,
            offset,
            size,
            &mut child,
            &mut addr,
        );
        if got == ZX_OK {
            self.check_new_handle(p, child, &what)?;
        }
        let want = self.model.vmar_allocate(p, h, options, offset, size, child);
        if self.settle(&what, saved, got, status(want.map(drop)))? {
            if Ok(addr) != want {
                return Err(format!("{}: address {addr:#x}, model {want:x?}", what()));
            }
            self.issue(p, child);
            self.register_vmar(p, child);
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// `Op::VmarMap`, on the crate and on the model.
    #[allow(clippy::too_many_arguments)] // the operation's fields, as `Op` names them
    pub(super) fn step_vmar_map(
        &mut self,
        p: u8,
        vmar: H,
        vmo: H,
        options: u32,
        vmar_offset: Off,
        vmo_offset: Off,
        len: Len,
    ) -> R2 {
        let p = self.proc(p);
        let (vmar, vmo) = (self.handle(p, vmar), self.handle(p, vmo));
        let (vmar_offset, vmo_offset) = (Self::off(vmar_offset), Self::off(vmo_offset));
        let len = Self::len(len);
        let what = || {
            format!(
                "zx_vmar_map(p{p}, {vmar:#x}, options {options:#x}, vmar_offset {vmar_offset:#x}, vmo {vmo:#x}, vmo_offset {vmo_offset:#x}, len {len:#x})"
            )
        };
        let saved = self.saved();
        let mut addr = 0;
        let got = zx_vmar_map(
            &self.procs[p],
            vmar,
            options,
            vmar_offset,
            vmo,
            vmo_offset,
            len,
            &mut addr,
        );
        let want = self
            .model
            .vmar_map(p, vmar, options, vmar_offset, vmo, vmo_offset, len);
        if self.settle(&what, saved, got, status(want.map(drop)))? {
            if Ok(addr) != want {
                return Err(format!("{}: address {addr:#x}, model {want:x?}", what()));
            }
            self.addrs.push(addr);
            if len >= MIB2 {
                let maps = &mut self.large_maps[p];
                if maps.len() >= 8 {
                    maps.remove(0);
                }
                maps.push((addr, len));
            }
        }
        Ok(())
    }

    /// `Op::VmarUnmap`, on the crate and on the model.
    pub(super) fn step_vmar_unmap(&mut self, p: u8, h: H, addr: Addr, len: Len) -> R2 {
        let p = self.proc(p);
        let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
        let what = || format!("zx_vmar_unmap(p{p}, {h:#x}, {addr:#x}, len {len:#x})");
        let got = zx_vmar_unmap(&self.procs[p], h, addr, len);
        let want = status(self.model.vmar_unmap(p, h, addr, len));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::VmarProtect`, on the crate and on the model.
    pub(super) fn step_vmar_protect(
        &mut self,
        p: u8,
        h: H,
        options: u32,
        addr: Addr,
        len: Len,
    ) -> R2 {
        let p = self.proc(p);
        let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
        let what = || {
            format!("zx_vmar_protect(p{p}, {h:#x}, options {options:#x}, {addr:#x}, len {len:#x})")
        };
        let got = zx_vmar_protect(&self.procs[p], h, options, addr, len);
        let want = status(self.model.vmar_protect(p, h, options, addr, len));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::VmarDestroy`, on the crate and on the model.
    pub(super) fn step_vmar_destroy(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_vmar_destroy(p{p}, {h:#x})");
        let got = zx_vmar_destroy(&self.procs[p], h);
        let want = status(self.model.vmar_destroy(p, h));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::VmarOpRange`, on the crate and on the model.
    #[allow(clippy::too_many_arguments)] // the operation's fields, as `Op` names them
    pub(super) fn step_vmar_op_range(
        &mut self,
        p: u8,
        h: H,
        op: u32,
        addr: Addr,
        len: Len,
        buffer: u64,
        buffer_size: usize,
    ) -> R2 {
        let p = self.proc(p);
        let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
        let what = || {
            format!(
                "zx_vmar_op_range(p{p}, {h:#x}, op {op}, {addr:#x}, size {len:#x}, buffer {buffer:#x}, {buffer_size})"
            )
        };
        let got = zx_vmar_op_range(&self.procs[p], h, op, addr, len, buffer, buffer_size);
        let want = status(
            self.model
                .vmar_op_range(p, h, op, addr, len, buffer, buffer_size),
        );
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::Duplicate`, on the crate and on the model.
    pub(super) fn step_duplicate(&mut self, p: u8, h: H, rights: RightsArg) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let rights = self.rights_arg(p, h, rights);
        let what = || format!("zx_handle_duplicate(p{p}, {h:#x}, rights {rights:#x})");
        let saved = self.saved();
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_handle_duplicate(&self.procs[p], h, rights, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.duplicate(p, h, rights, out));
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
        }
        Ok(())
    }

    /// `Op::Replace`, on the crate and on the model.
    pub(super) fn step_replace(&mut self, p: u8, h: H, rights: RightsArg) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let rights = self.rights_arg(p, h, rights);
        let what = || format!("zx_handle_replace(p{p}, {h:#x}, rights {rights:#x})");
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_handle_replace(&self.procs[p], h, rights, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.replace(p, h, rights, out));
        if self.settle(&what, None, got, want)? {
            self.issue(p, out);
        }
        Ok(())
    }

    /// `Op::Close`, on the crate and on the model.
    pub(super) fn step_close(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_handle_close(p{p}, {h:#x})");
        let got = zx_handle_close(&self.procs[p], h);
        let want = status(self.model.close(p, h));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::Transfer`, on the crate and on the model.
    pub(super) fn step_transfer(&mut self, p: u8, h: H) -> R2 {
        let from = self.proc(p);
        let to = (from + 1) % self.procs.len();
        let h = self.handle(from, h);
        let what = || format!("transfer(p{from} {h:#x} -> p{to})");
        // What a channel would do: needs TRANSFER; the handle moves only if it fits.
        let mut out = ZX_HANDLE_INVALID;
        let got = match self.procs[from].handle(h) {
            Err(status) => status.into_raw(),
            Ok(handle) if !handle.rights.contains(Rights::TRANSFER) => ZX_ERR_ACCESS_DENIED,
            Ok(handle) => match self.procs[to].add_handle(handle.object, handle.rights) {
                Err(status) => status.into_raw(),
                Ok(value) => {
                    out = value;
                    self.procs[from]
                        .remove_handle(h)
                        .expect("the handle was just looked up");
                    ZX_OK
                }
            },
        };
        if got == ZX_OK {
            self.check_new_handle(to, out, &what)?;
        }
        let want = status(self.model.transfer(from, h, to, out));
        if self.settle(&what, None, got, want)? {
            self.issue(to, out);
        }
        Ok(())
    }

    /// `Op::Load`, on the crate and on the model.
    pub(super) fn step_load(&mut self, cpu: u8, addr: Addr) -> R2 {
        let c = self.cpu(cpu);
        let va = self.addr(self.model.cpus[c].unwrap_or(0), addr) & !7;
        self.access(c, va, None)?;
        Ok(())
    }

    /// `Op::Store`, on the crate and on the model.
    pub(super) fn step_store(&mut self, cpu: u8, addr: Addr, value: u64) -> R2 {
        let c = self.cpu(cpu);
        let va = self.addr(self.model.cpus[c].unwrap_or(0), addr) & !7;
        self.access(c, va, Some(value))?;
        Ok(())
    }

    /// `Op::Switch`, on the crate and on the model.
    pub(super) fn step_switch(&mut self, cpu: u8, to: Option<u8>) -> R2 {
        let c = self.cpu(cpu);
        let to = to.map(|p| self.proc(p));
        self.cpus[c].switch_to(to.map(|p| self.procs[p].aspace()));
        self.model.cpus[c] = to;
        Ok(())
    }

    /// A load or store on CPU `c`, compared with the model: the value, or the fault.
    pub(super) fn access(&mut self, c: usize, va: u64, store: Option<u64>) -> R2 {
        self.last_cpu = c;
        if let Some(p) = self.model.cpus[c] {
            let touched = &mut self.touched[p];
            if touched.len() >= 16 {
                touched.remove(0);
            }
            touched.push(va);
            self.accessed[p].insert(va & !(PAGE - 1));
        }
        let what = || match store {
            None => format!("cpu{c}.load({va:#x})"),
            Some(v) => format!("cpu{c}.store({va:#x}, {v:#x})"),
        };
        let saved = self.saved();
        // Whether a fault on a large-page VMO can commit a whole run (the model asks no more of
        // the machine than that).
        self.model.run_available = self.machine.has_aligned_run(RUN_PAGES as usize);
        let got = match store {
            None => self.cpus[c].load(va),
            Some(value) => self.cpus[c].store(va, value).map(|()| 0),
        };
        let want = self.model.access(c, va, store);
        match &got {
            Ok(_) => record(self.current, "Ok"),
            Err(e) => record(self.current, &format!("{e:?}")),
        }
        self.last_fault = Some(got.err());
        let same = match (&got, &want) {
            (Ok(a), Ok(b)) => a == b,
            (Err(FaultError::NotMapped), Err(MFault::NotMapped))
            | (Err(FaultError::AccessDenied), Err(MFault::AccessDenied))
            | (Err(FaultError::OutOfRange), Err(MFault::OutOfRange)) => true,
            (Err(FaultError::NoMemory), Ok(_)) if self.exhaustion => {
                // The fault ran out of memory: for the page (nothing changed), or for a page
                // table after committing the page (which then stays committed, zero-filled, as
                // in Zircon). Follow whichever happened.
                self.model = saved.expect("a copy is kept in exhaustion mode");
                self.no_memory += 1;
                if let Some((vmo, index)) = self.model.fault_target(c, va) {
                    let committed = self.vmo_objs[vmo]
                        .upgrade()
                        .map_or(0, |v| v.committed_bytes());
                    if committed == (self.model.committed_pages(vmo) + 1) * PAGE
                        && self.model.vmos[vmo].kind == MKind::Paged
                    {
                        self.model.commit_page(vmo, index);
                        self.notes.push(format!(
                            "{}: NoMemory after committing VMO page {index}",
                            what()
                        ));
                    }
                }
                true
            }
            _ => false,
        };
        if !same {
            return Err(format!("{}: crate {got:x?}, model {want:x?}", what()));
        }
        Ok(())
    }
}
