//! The harness's VMO steps: each runs one op on the crate and on the model and compares.

use super::*;

impl World {
    /// `Op::VmoCreate`, on the crate and on the model.
    pub(super) fn step_vmo_create(&mut self, p: u8, size: Len, options: u32) -> R2 {
        let p = self.proc(p);
        let size = Self::len(size);
        let what = || format!("zx_vmo_create(p{p}, size {size:#x}, options {options:#x})");
        let saved = self.saved();
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_vmo_create(&self.procs[p], size, options, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.vmo_create(p, size, options, out));
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }

    /// `Op::VmoRead`, on the crate and on the model.
    pub(super) fn step_vmo_read(&mut self, p: u8, h: H, offset: Off, len: u16) -> R2 {
        let p = self.proc(p);
        let (h, offset) = (self.handle(p, h), Self::off(offset));
        let what = || format!("zx_vmo_read(p{p}, {h:#x}, offset {offset:#x}, len {len})");
        let mut buf = vec![0xa5; usize::from(len)];
        let got = zx_vmo_read(&self.procs[p], h, &mut buf, offset);
        let want = self.model.vmo_read(p, h, offset, usize::from(len));
        if self.settle(
            &what,
            None,
            got,
            status(want.as_ref().map(drop).map_err(|&e| e)),
        )? {
            let want = want.expect("ok");
            if buf != want {
                return Err(format!("{}: {}", what(), diff_bytes(&buf, &want, offset)));
            }
        }
        Ok(())
    }

    /// `Op::VmoWrite`, on the crate and on the model.
    pub(super) fn step_vmo_write(&mut self, p: u8, h: H, offset: Off, len: u16, seed: u8) -> R2 {
        let p = self.proc(p);
        let (h, offset) = (self.handle(p, h), Self::off(offset));
        let data = write_data(seed, usize::from(len));
        let what = || format!("zx_vmo_write(p{p}, {h:#x}, offset {offset:#x}, len {len})");
        let saved = self.saved();
        let got = zx_vmo_write(&self.procs[p], h, &data, offset);
        let want = status(self.model.vmo_write(p, h, offset, &data));
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::VmoOpRange`, on the crate and on the model.
    pub(super) fn step_vmo_op_range(
        &mut self,
        p: u8,
        h: H,
        op: u32,
        offset: Off,
        size: Len,
        buffer: u64,
    ) -> R2 {
        let p = self.proc(p);
        let (h, offset, size) = (self.handle(p, h), Self::off(offset), Self::len(size));
        let what = || {
            format!(
                "zx_vmo_op_range(p{p}, {h:#x}, op {op}, offset {offset:#x}, size {size:#x}, buffer {buffer:#x})"
            )
        };
        let saved = self.saved();
        let got = zx_vmo_op_range(&self.procs[p], h, op, offset, size, buffer, 0);
        let want = status(self.model.vmo_op_range(p, h, op, offset, size, buffer, 0));
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::VmoGetSize`, on the crate and on the model.
    pub(super) fn step_vmo_get_size(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_vmo_get_size(p{p}, {h:#x})");
        let mut size = 0;
        let got = zx_vmo_get_size(&self.procs[p], h, &mut size);
        let want = self.model.vmo_get_size(p, h);
        if self.settle(&what, None, got, status(want.map(drop)))? && Ok(size) != want {
            return Err(format!("{}: size {size:#x}, model {want:?}", what()));
        }
        Ok(())
    }

    /// `Op::VmoSetSize`, on the crate and on the model.
    pub(super) fn step_vmo_set_size(&mut self, p: u8, h: H, size: Len) -> R2 {
        let p = self.proc(p);
        let (h, size) = (self.handle(p, h), Self::len(size));
        let what = || format!("zx_vmo_set_size(p{p}, {h:#x}, {size:#x})");
        let saved = self.saved();
        let got = zx_vmo_set_size(&self.procs[p], h, size);
        let want = status(self.model.vmo_set_size(p, h, size));
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::VmoInfo`, on the crate and on the model.
    pub(super) fn step_vmo_info(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_object_get_info_vmo(p{p}, {h:#x})");
        let mut info = zx_info_vmo_t::default();
        let got = zx_object_get_info_vmo(&self.procs[p], h, &mut info);
        let want = self.model.vmo_info(p, h);
        if self.settle(&what, None, got, status(want.map(drop)))? {
            let want = want.expect("ok");
            let (low, high) = want.committed_bytes;
            let parent_koid = want.parent.map_or(0, |parent| self.koids[parent]);
            let same = info.size_bytes == want.size_bytes
                && (low..=high).contains(&info.committed_bytes)
                && info.num_mappings == want.num_mappings
                && info.num_children == want.num_children
                && info.parent_koid == parent_koid
                && (info.flags & ZX_INFO_VMO_IS_COW_CLONE != 0) == want.cow_clone;
            if !same {
                return Err(format!(
                    "{}: {info:?}, model {want:?} (parent koid {parent_koid})",
                    what()
                ));
            }
        }
        Ok(())
    }

    /// `Op::VmoCreateChild`, on the crate and on the model.
    pub(super) fn step_vmo_create_child(
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
                "zx_vmo_create_child(p{p}, {h:#x}, options {options:#x}, offset {offset:#x}, size {size:#x})"
            )
        };
        let saved = self.saved();
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_vmo_create_child(&self.procs[p], h, options, offset, size, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let before = self.model.vmos.len();
        self.model.depth_override = Some(got == ZX_ERR_NO_RESOURCES);
        let want = status(
            self.model
                .vmo_create_child(p, h, options, offset, size, out),
        );
        self.model.depth_override = None;
        record(
            &format!("{} {}", self.current, child_kind(options)),
            status_name(got),
        );
        let made = self.model.vmos.len() > before;
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
            self.register_vmo(p, out);
        } else if made {
            self.register_dead_vmo();
        }
        Ok(())
    }

    /// `Op::Pin` (with `pin`) or `Op::Unpin`, on the crate and on the model.
    pub(super) fn step_pin(&mut self, pin: bool, p: u8, h: H, offset: Off, len: Len) -> R2 {
        let p = self.proc(p);
        let (h, offset, len) = (self.handle(p, h), Self::off(offset), Self::len(len));
        let what = || {
            let name = if pin { "pin" } else { "unpin" };
            format!("Vmo::{name}(p{p} {h:#x}, offset {offset:#x}, len {len:#x})")
        };
        let saved = self.saved();
        let got = match self.procs[p].vmo(h) {
            Err(status) => status.into_raw(),
            Ok((vmo, _)) if pin => to_status(vmo.pin(offset, len)),
            Ok((vmo, _)) => to_status(vmo.unpin(offset, len)),
        };
        let want = status(if pin {
            self.model.pin(p, h, offset, len)
        } else {
            self.model.unpin(p, h, offset, len)
        });
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::Contiguous`, on the crate and on the model.
    pub(super) fn step_contiguous(&mut self, p: u8, pages: u8) -> R2 {
        let p = self.proc(p);
        let size = u64::from(pages) * PAGE;
        let what = || format!("Vmo::create_contiguous(p{p}, size {size:#x})");
        let saved = self.saved();
        let platform: Arc<dyn Platform> = self.machine.clone();
        let mut out = ZX_HANDLE_INVALID;
        let got = match Vmo::create_contiguous(platform, size) {
            Err(status) => status.into_raw(),
            Ok(vmo) => match self.procs[p].add_handle(
                KernelObject::Vmo(vmo),
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
            ) {
                Err(status) => status.into_raw(),
                Ok(value) => {
                    out = value;
                    ZX_OK
                }
            },
        };
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.vmo_create_contiguous(p, size, out));
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }

    /// `Op::Physical`, on the crate and on the model.
    pub(super) fn step_physical(&mut self, p: u8, pages: u8) -> R2 {
        let p = self.proc(p);
        let pages = u64::from(pages.max(1));
        let what = || format!("Vmo::create_physical(p{p}, {pages} pages)");
        // Device memory stand-in: frames the harness takes from the allocator and zeroes,
        // so that the allocator never hands them out while the VMO exists.
        let Some(base) = self.machine.alloc_contiguous(pages as usize) else {
            return Ok(());
        };
        for i in 0..pages {
            // SAFETY: the frame was just allocated for the harness and nothing else uses
            // it; `phys_to_virt` gives PAGE_SIZE writable bytes (the Platform contract).
            unsafe {
                std::ptr::write_bytes(
                    self.machine.phys_to_virt(PhysAddr(base.0 + i * PAGE)),
                    0,
                    PAGE_BYTES,
                )
            };
        }
        self.phys.push((base, pages));
        let platform: Arc<dyn Platform> = self.machine.clone();
        let vmo = Vmo::create_physical(platform, base, pages * PAGE)
            .map_err(|e| format!("{}: {e:?}", what()))?;
        let mut out = ZX_HANDLE_INVALID;
        let got = match self.procs[p].add_handle(
            KernelObject::Vmo(vmo),
            Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
        ) {
            Err(status) => status.into_raw(),
            Ok(value) => {
                out = value;
                ZX_OK
            }
        };
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.vmo_create_physical(p, pages, out));
        if self.settle(&what, None, got, want)? {
            self.phys_base.insert(self.model.vmos.len() - 1, base);
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }
}

impl World {
    /// `Op::LargeVmo`, on the crate and on the model.
    pub(super) fn step_large_vmo(&mut self, p: u8, kind: LargeKind, runs: u8, extra: u8) -> R2 {
        let p = self.proc(p);
        let runs = u64::from(runs.clamp(1, 2));
        let size = runs * MIB2 + u64::from(extra) * PAGE;
        let what = || format!("large VMO {kind:?} (p{p}, size {size:#x})");
        let platform: Arc<dyn Platform> = self.machine.clone();
        let mut phys = None;
        if kind == LargeKind::Contiguous {
            // Whether the machine's frames (fragmented by the runs) still hold that many in a
            // row is no part of the contract: none, and nothing happens.
            let pages = size / PAGE;
            let Some(base) = self.machine.alloc_contiguous(pages as usize) else {
                return Ok(());
            };
            let frames: Vec<PhysAddr> = (0..pages).map(|i| PhysAddr(base.0 + i * PAGE)).collect();
            // SAFETY: allocated just now, and never mapped or used.
            unsafe { self.machine.free_frames(&frames) };
        }
        let made = match kind {
            LargeKind::Pages => Vmo::create_large_pages(platform, size),
            LargeKind::Contiguous => Vmo::create_contiguous(platform, size),
            LargeKind::Physical => {
                // Device memory stand-in over a 2 MiB-aligned run the harness owns, zeroed;
                // none free: nothing happens.
                let pages = runs * RUN_PAGES;
                let Some(base) = self.machine.alloc_aligned_run(pages as usize) else {
                    return Ok(());
                };
                for i in 0..pages {
                    // SAFETY: the frame was just allocated for the harness and nothing else uses
                    // it; `phys_to_virt` gives PAGE_SIZE writable bytes (the Platform contract).
                    unsafe {
                        std::ptr::write_bytes(
                            self.machine.phys_to_virt(PhysAddr(base.0 + i * PAGE)),
                            0,
                            PAGE_BYTES,
                        )
                    };
                }
                self.phys.push((base, pages));
                phys = Some((base, pages));
                Vmo::create_physical(platform, base, pages * PAGE)
            }
        };
        let mut out = ZX_HANDLE_INVALID;
        let got = match made {
            Err(status) => status.into_raw(),
            Ok(vmo) => match self.procs[p].add_handle(
                KernelObject::Vmo(vmo),
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
            ) {
                Err(status) => status.into_raw(),
                Ok(value) => {
                    out = value;
                    ZX_OK
                }
            },
        };
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let saved = self.saved();
        let want = status(match (kind, phys) {
            (LargeKind::Pages, _) => self.model.vmo_create_large_pages(p, size, out),
            (LargeKind::Contiguous, _) => self.model.vmo_create_contiguous(p, size, out),
            (LargeKind::Physical, Some((_, pages))) => {
                self.model.vmo_create_physical(p, pages, out)
            }
            (LargeKind::Physical, None) => unreachable!("returned above"),
        });
        if self.settle(&what, saved, got, want)? {
            if let Some((base, _)) = phys {
                self.phys_base.insert(self.model.vmos.len() - 1, base);
            }
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }
}

/// The kind of child `options` ask for, for outcome counts.
fn child_kind(options: u32) -> &'static str {
    let kind = options & !(ZX_VMO_CHILD_NO_WRITE | ZX_VMO_CHILD_RESIZABLE);
    match kind {
        ZX_VMO_CHILD_SNAPSHOT
        | ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE
        | ZX_VMO_CHILD_SNAPSHOT_MODIFIED => "snapshot",
        ZX_VMO_CHILD_SLICE => "slice",
        ZX_VMO_CHILD_REFERENCE => "reference",
        _ => "bad options",
    }
}
