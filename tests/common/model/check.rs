//! The harness's checks: the crate's state against the model's after every step, contents, and the
//! final teardown.

use super::*;

impl World {
    /// The crate's state matches the model's, and the crate's own invariants hold.
    pub fn check(&self) -> R2 {
        let live_vmos = self.model.live_vmos();
        let counts = self.model.mapping_counts();
        // Handle tables: the same values, rights and objects.
        for (p, proc) in self.procs.iter().enumerate() {
            let model = &self.model.procs[p];
            if proc.handle_count() != model.handles.len() {
                return Err(format!(
                    "p{p}: {} handles, model {}",
                    proc.handle_count(),
                    model.handles.len()
                ));
            }
            for (&value, mh) in &model.handles {
                let handle = proc
                    .handle(value)
                    .map_err(|e| format!("p{p}: handle {value:#x} missing: {e:?}"))?;
                if handle.rights.bits() != mh.rights {
                    return Err(format!(
                        "p{p}: handle {value:#x} rights {:#x}, model {:#x}",
                        handle.rights.bits(),
                        mh.rights
                    ));
                }
                let same = match (&handle.object, mh.obj) {
                    (KernelObject::Vmo(vmo), Obj::Vmo(id)) => {
                        std::ptr::eq(Arc::as_ptr(vmo), self.vmo_objs[id].as_ptr())
                    }
                    (KernelObject::Vmar(vmar), Obj::Vmar(id)) => {
                        Arc::ptr_eq(vmar, &self.vmar_objs[id])
                    }
                    _ => false,
                };
                if !same {
                    return Err(format!("p{p}: handle {value:#x} names another object"));
                }
            }
        }
        // VMOs: alive exactly while referenced; committed bytes and mapping counts.
        let mut committed_frames = 0;
        for (id, weak) in self.vmo_objs.iter().enumerate() {
            let vmo = weak.upgrade();
            let live = live_vmos.contains(&id);
            match (vmo, live) {
                (None, false) => {}
                (Some(_), false) => {
                    return Err(format!("VMO {id} is still alive, model: gone"));
                }
                (None, true) => return Err(format!("VMO {id} is gone, model: alive")),
                (Some(vmo), true) => {
                    let want = self.model.committed_pages(id) * PAGE;
                    if vmo.committed_bytes() != want {
                        return Err(format!(
                            "VMO {id}: {} bytes committed, model {want}",
                            vmo.committed_bytes()
                        ));
                    }
                    let mappings = counts.get(&id).copied().unwrap_or(0);
                    if vmo.num_mappings() != mappings {
                        return Err(format!(
                            "VMO {id}: {} mappings, model {mappings}",
                            vmo.num_mappings()
                        ));
                    }
                    if self.model.vmos[id].kind != MKind::Physical {
                        committed_frames += want / PAGE;
                    }
                }
            }
        }
        // VMARs: destroyed exactly when the model says.
        for (id, vmar) in self.vmar_objs.iter().enumerate() {
            if vmar.is_destroyed() == self.model.vmars[id].alive {
                return Err(format!(
                    "VMAR {id} destroyed: {}, model alive: {}",
                    vmar.is_destroyed(),
                    self.model.vmars[id].alive
                ));
            }
        }
        // Page tables: every translation is of a live mapping's committed page with no more than
        // its permissions, and no table page is empty.
        let mut table_pages = 0;
        for (p, proc) in self.procs.iter().enumerate() {
            let aspace = proc.aspace();
            aspace.audit().map_err(|e| format!("p{p}: audit: {e:?}"))?;
            let tables = aspace.page_table_pages();
            let needed = needed_tables(aspace);
            if tables != needed {
                return Err(format!(
                    "p{p}: {tables} page-table pages, but the translations need {needed}"
                ));
            }
            table_pages += tables as u64;
        }
        // Frames: nothing leaked, nothing freed early.
        let phys: u64 = self.phys.iter().map(|&(_, n)| n).sum();
        let want = committed_frames + table_pages + phys;
        if self.machine.frames_in_use() != want {
            return Err(format!(
                "{} frames in use; committed pages {committed_frames} + page tables {table_pages} + physical {phys} = {want}",
                self.machine.frames_in_use()
            ));
        }
        Ok(())
    }

    /// Every live VMO's contents match the model's, byte for byte.
    pub fn deep_check(&self) -> R2 {
        for id in self.model.live_vmos() {
            let vmo = self.vmo_objs[id]
                .upgrade()
                .ok_or_else(|| format!("VMO {id} is gone"))?;
            let m = &self.model.vmos[id];
            if let Some(&base) = self.phys_base.get(&id) {
                for (&index, page) in &m.data {
                    let got: Vec<u8> = (0..PAGE / 8)
                        .flat_map(|w| {
                            self.machine
                                .read_phys(PhysAddr(base.0 + index * PAGE + w * 8))
                                .to_le_bytes()
                        })
                        .collect();
                    if got[..] != page[..] {
                        return Err(format!(
                            "physical VMO {id} page {index}: {}",
                            diff_bytes(&got, &page[..], index * PAGE)
                        ));
                    }
                }
                continue;
            }
            // The pages the model has, and a zero page where it has none (for small VMOs).
            let mut pages: BTreeSet<u64> = m.data.keys().copied().collect();
            if m.pages <= 16 {
                pages.extend(0..m.pages);
            }
            let mut got = vec![0u8; PAGE_BYTES];
            for index in pages {
                vmo.read(index * PAGE, &mut got)
                    .map_err(|e| format!("VMO {id}: read: {e:?}"))?;
                let want = m
                    .data
                    .get(&index)
                    .map_or(&[0u8; PAGE_BYTES][..], |p| &p[..]);
                if got[..] != want[..] {
                    return Err(format!(
                        "VMO {id} page {index}: {}",
                        diff_bytes(&got, want, index * PAGE)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Compares contents a last time, then takes everything down: every frame must come back.
    pub fn finish(mut self) -> R2 {
        self.deep_check()?;
        self.teardown();
        let left = self.machine.frames_in_use();
        if left != 0 {
            return Err(format!("{left} frames still in use after teardown"));
        }
        Ok(())
    }

    /// Drops the processes and everything built on them, and frees the physical VMOs' frames.
    pub(super) fn teardown(&mut self) {
        for cpu in &self.cpus {
            cpu.switch_to(None);
        }
        self.vmar_objs.clear();
        self.procs.clear();
        let phys = std::mem::take(&mut self.phys);
        if self.vmo_objs.iter().all(|v| v.upgrade().is_none()) {
            for (base, pages) in phys {
                let frames: Vec<PhysAddr> =
                    (0..pages).map(|i| PhysAddr(base.0 + i * PAGE)).collect();
                // SAFETY: every VMO is gone, so no mapping, page table or TLB entry refers to
                // these frames (the CPUs left every address space, dropping its tag's use).
                unsafe { self.machine.free_frames(&frames) };
            }
        }
    }

    /// The machine's counters.
    pub fn frames_allocated(&self) -> u64 {
        self.machine.counters().frames_allocated
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // On a failed run, break the CPU -> address space -> machine cycle, so that the machine
        // (and its memory) goes away.
        self.teardown();
        if self.machine.frames_in_use() != 0 {
            // The run failed with frames still in use (and said why): keep the machine's leak
            // check from panicking over the report.
            std::mem::forget(self.machine.clone());
        }
    }
}

/// The page-table pages the translations in `aspace` need: the root, and one table per level for
/// each distinct 512 GiB, 1 GiB and 2 MiB region holding a translation.
pub(super) fn needed_tables(aspace: &zx_vm::AddressSpace) -> usize {
    let mut vas = Vec::new();
    aspace.with_page_table_unsynchronized(|table, platform| {
        table.for_each_page(platform, &mut |va, _, _| vas.push(va));
    });
    let distinct = |shift: u32| {
        vas.iter()
            .map(|va| va >> shift)
            .collect::<BTreeSet<_>>()
            .len()
    };
    1 + distinct(39) + distinct(30) + distinct(21)
}

/// Where two byte strings first differ.
pub(super) fn diff_bytes(got: &[u8], want: &[u8], offset: u64) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let mut s = String::new();
    match first {
        Some(i) => {
            let end = (i + 16).min(got.len());
            let _ = write!(
                s,
                "bytes differ from offset {:#x}: crate {:02x?}, model {:02x?}",
                offset + i as u64,
                &got[i..end],
                &want[i..end]
            );
        }
        None => {
            let _ = write!(s, "lengths differ: {} vs {}", got.len(), want.len());
        }
    }
    s
}
