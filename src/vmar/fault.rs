//! The page-fault path, and the audit that checks every translation against the VMARs and
//! VMOs (the fault path's invariant: a translation maps the VMO's page with at most the
//! mapping's permissions).

use super::*;
use crate::platform::TlbFeatures;

impl AddressSpace {
    /// Checks that every translation in the page table belongs to a live mapping and to the
    /// committed page behind it, with no more than the mapping's permissions. For tests and
    /// debugging: call it while no operation on the address space or its VMOs is under way.
    pub fn audit(&self) -> Result<(), AuditError> {
        let tree = self.lock_tree();
        let mut pages = Vec::new();
        let mut checked = Vec::new();
        self.mmu
            .lock()
            .for_each_page(&*self.platform, &mut |va, pa, flags| {
                pages.push((va, pa, flags))
            });
        for (va, pa, flags) in pages {
            let fail = |what| Err(AuditError { va, what });
            let Ok(mut node) = tree.node(self.root_vmar) else {
                return fail("a translation outlived the root VMAR");
            };
            let region = loop {
                let Some(region) = node.child_at(va) else {
                    return fail("a translation outside every mapping");
                };
                match region.kind() {
                    RegionKind::Vmar(child) => match tree.node(*child) {
                        Ok(child) => node = child,
                        Err(_) => return fail("a translation in a destroyed VMAR"),
                    },
                    RegionKind::Mapping(_) => break region,
                }
            };
            let mapping = region.mapping().expect("matched above");
            if !mapping.flags().union(MmuFlags::USER).contains(flags) {
                return fail("a translation with more permissions than its mapping");
            }
            let index = (va - region.base() + mapping.vmo_offset()) >> PAGE_SHIFT;
            let vmo = mapping.vmo();
            let inner = vmo.lock();
            if vmo.is_zero_frame(pa) {
                // The shared zero page: read-only, for an uncommitted page the VMO lists.
                if flags.contains(MmuFlags::WRITE) {
                    return fail("a writable translation to the zero page");
                }
                if vmo.lookup_page_locked(&inner, index).is_some()
                    || !Vmo::is_zero_mapped_locked(&inner, index)
                {
                    return fail("a zero-page translation for a page the VMO does not list");
                }
                continue;
            }
            match vmo.read_page_locked(&inner, index) {
                Some((frame, own)) if frame == pa => {
                    if !own && flags.contains(MmuFlags::WRITE) {
                        return fail("a writable translation to a page shared with a snapshot");
                    }
                }
                _ => return fail("a translation to a frame that is not the VMO's page"),
            }
            // Each VMO's copy-on-write tree once (a tree check walks all its pages, and a VMO
            // may have thousands of translations).
            if !checked.contains(&vmo.koid()) {
                if let Err(what) = Vmo::check_tree_locked(&inner) {
                    return fail(what);
                }
                checked.push(vmo.koid());
            }
        }
        Ok(())
    }

    /// Resolves a page fault at `va`: commits the VMO page if needed and maps it with the
    /// mapping's permissions.
    ///
    /// A write to a page shared with a snapshot relative waits, holding no lock and serving
    /// this CPU's shootdown mailbox, while a round that invalidates translations of that tree's
    /// pages is under way (docs/cow.md): rounds are short, and each completes.
    pub fn page_fault(&self, va: u64, access: Access) -> Result<(), FaultError> {
        loop {
            match self.fault_once(va, access)? {
                Some(vmo) => vmo.wait_settled(),
                None => return Ok(()),
            }
        }
    }

    /// One attempt at a fault: `Some(vmo)` when it must wait for `vmo`'s tree to settle.
    fn fault_once(&self, va: u64, access: Access) -> Result<Option<Arc<Vmo>>, FaultError> {
        let va = va & !(PAGE_SIZE - 1);
        let tree = self.lock_tree();
        let region = Self::mapping_at(&tree, self.root_vmar, va)?;
        let mapping = region.mapping().expect("a mapping");
        let flags = mapping.flags();
        if !flags.contains(access.required()) || !flags.contains(MmuFlags::READ) {
            return Err(FaultError::AccessDenied);
        }
        let vmo = mapping.vmo();
        let index = (mapping.vmo_offset() + (va - region.base())) >> PAGE_SHIFT;
        // With a zero page, committing a page may have to take its zero-page entries away; a
        // write to a page shared with a snapshot relative may have to clear its entries.
        let mut batch = self
            .platform
            .zero_frame()
            .map(|_| TlbBatch::new(&*self.platform));
        let mut inner = vmo.lock();
        // Under the VMO's lock, which keeps its size (a resizable VMO may have shrunk).
        if index >= vmo.size() >> PAGE_SHIFT {
            return Err(FaultError::OutOfRange);
        }
        let page = if inner.in_cow_tree() {
            let batch = batch.get_or_insert_with(|| TlbBatch::new(&*self.platform));
            vmo.fault_tree_locked(&mut inner, index, access == Access::Write, batch)
                .map_err(|_| FaultError::NoMemory)?
        } else {
            None
        };
        let page = match page {
            Some(page) => page,
            None => Self::fault_untouched(vmo, &mut inner, index, access, &mut batch)?,
        };
        match page {
            FaultPage::Retry => {
                // The page's entries were cleared (its frame changed): the round that
                // invalidates them must complete before an entry to the new frame is made
                // (break-before-make). Run it, and let the access fault once more: that fault
                // maps the page.
                let batch = batch.expect("made by whatever cleared entries");
                let round = Vmo::begin_round_locked(&mut inner, &batch);
                drop((inner, tree));
                vmo.finish_round(batch, round);
                Ok(None)
            }
            FaultPage::Wait => {
                let vmo = vmo.clone();
                drop((inner, tree, batch));
                Ok(Some(vmo))
            }
            FaultPage::Map { frame, writable } => {
                // Read-only unless the page is the VMO's own: the first write faults.
                let flags = if writable {
                    flags
                } else {
                    flags - MmuFlags::WRITE
                };
                let large = if writable {
                    largest_leaf(vmo, &inner, va, index, region.base(), region.end())
                } else {
                    None
                };
                self.map_fault(va, frame, flags, large, (inner, tree), batch)
                    .map(|()| None)
            }
        }
    }

    /// The page a fault maps where neither the VMO nor a snapshot parent has one: the zero page
    /// for a read (if the platform has one), else a new zeroed page, whose zero-page entries
    /// elsewhere are cleared into `batch` first.
    fn fault_untouched(
        vmo: &Vmo,
        inner: &mut VmoInner,
        index: u64,
        access: Access,
        batch: &mut Option<TlbBatch>,
    ) -> Result<FaultPage, FaultError> {
        if access != Access::Write && !vmo.has_large_pages() {
            if let Some(zero) = vmo.zero_page_for_read_locked(inner, index) {
                return Ok(FaultPage::Map {
                    frame: zero,
                    writable: false,
                });
            }
        }
        let frame = vmo
            .commit_page_locked(inner, index)
            .map_err(|_| FaultError::NoMemory)?;
        let unzeroed = batch
            .as_mut()
            .is_some_and(|b| vmo.unmap_zero_pages_locked(inner, index, index + 1, b));
        Ok(if unzeroed {
            FaultPage::Retry
        } else {
            FaultPage::Map {
                frame,
                writable: true,
            }
        })
    }

    /// The mapping region at `va`, looking through nested VMARs from `root`.
    fn mapping_at(tree: &AspaceTree, root: VmarId, va: u64) -> Result<Arc<Region>, FaultError> {
        let mut node = tree.node(root).map_err(|_| FaultError::NotMapped)?;
        loop {
            let region = node.child_at(va).ok_or(FaultError::NotMapped)?;
            match region.kind() {
                RegionKind::Vmar(child) => {
                    node = tree.node(*child).map_err(|_| FaultError::NotMapped)?;
                }
                RegionKind::Mapping(_) => return Ok(region),
            }
        }
    }

    /// Maps the faulting page `va` to `pa` with `flags` (with the large leaf `large` instead,
    /// where one is offered and the table takes it) and lets go of the locks `held`.
    fn map_fault<H>(
        &self,
        va: u64,
        pa: PhysAddr,
        flags: MmuFlags,
        large: Option<(u64, PhysAddr, usize)>,
        held: H,
        batch: Option<TlbBatch>,
    ) -> Result<(), FaultError> {
        let platform = &*self.platform;
        let flags = flags | MmuFlags::USER;
        let mapped = {
            let mut mmu = self.mmu.lock();
            match large.and_then(|(base, run, level)| {
                mmu.map_large(platform, base, run, level, flags).ok()
            }) {
                Some(replaced) => Ok(replaced),
                None => mmu.map(platform, va, pa, flags),
            }
        };
        let replaced = mapped.map_err(|_| FaultError::NoMemory)?;
        crate::arch::publish_new_entries();
        drop(held);
        if let Some(batch) = batch {
            // Empty: this hands its scratch space back for the next operation on this CPU.
            batch.finish(&*self.platform);
        }
        if replaced {
            self.drop_narrower_entry(va);
        }
        Ok(())
    }

    /// After a fault found its entry already there: this CPU faulted on a narrower translation it
    /// caches (another CPU's fault or a protect upgraded the entry meanwhile).
    fn drop_narrower_entry(&self, va: u64) {
        // aarch64 keeps such an entry in the TLB after the fault, and the access would fault
        // forever: drop it here, so that the kernel's handler need not. The walk is dropped too
        // (`tables_freed`: TLBI VAE1 rather than VALE1 on aarch64; INVLPG drops it anyway):
        // the CPU may have faulted through a cached walk to a table that another CPU's
        // decommit unlinked and has not invalidated yet, while this fault mapped the page
        // through a new table; keeping that walk would fault again until then.
        self.platform.invalidate_local(&TlbInvalidate {
            asid: self.asid,
            root: self.root_table,
            scope: TlbScope::Pages(&[va]),
            features: TlbFeatures::NONE,
            tables_freed: true,
        });
    }
}
