//! An address space's life: creation (its page table, tag and root VMAR), activation on a
//! CPU, queries, the page-table operations the other layers reach it through, and teardown.

use super::*;

/// An address space: a tree of VMARs and the page table that realises its mappings.
pub struct AddressSpace {
    pub(super) koid: zx_koid_t,
    pub(super) platform: Arc<dyn Platform>,
    pub(super) format: Format,
    /// The root table; fixed for the address space's life.
    pub(super) root_table: PhysAddr,
    /// The ASID or PCID tag; 0 when untagged.
    pub(super) asid: u16,
    pub(super) root_vmar: VmarId,
    /// The root VMAR's koid: the same for every [`AddressSpace::root_vmar`] object.
    pub(super) root_vmar_koid: zx_koid_t,
    /// The user range: the root VMAR's base and size.
    pub(super) user_base: u64,
    pub(super) user_size: u64,
    /// The CPUs on which the address space is active: those a shootdown interrupts.
    pub(super) active: AtomicCpuSet,
    /// The CPUs that have run the address space under its tag (never shrinks): those that may
    /// cache its translations.
    pub(super) ran: AtomicCpuSet,
    /// The CPUs that must flush the tag before they next run the address space: they may cache
    /// translations that a shootdown, which did not interrupt them, removed.
    pub(super) stale: AtomicCpuSet,
    pub(super) weak_self: Weak<AddressSpace>,
    pub(super) tree: Mutex<AspaceTree>,
    pub(super) mmu: Mutex<Box<dyn PageTableOps>>,
}

impl AddressSpace {
    /// A new address space with an empty root VMAR covering the default user range
    /// ([`USER_ASPACE_BASE`], [`USER_ASPACE_SIZE`]: the lower half but its first 16 MiB and last
    /// page), and page tables in `format`.
    pub fn new(platform: Arc<dyn Platform>, format: Format) -> ZxResult<Arc<AddressSpace>> {
        Self::with_user_range(platform, format, USER_ASPACE_BASE, USER_ASPACE_SIZE)
    }

    /// A new address space whose root VMAR is `[base, base + size)`: page aligned, inside the
    /// lower half (below 2^47), else `ZX_ERR_INVALID_ARGS`. The crate owns the root-table slots
    /// (512 GiB each) that cover the range, and never reads, writes or frees any other slot, so a
    /// kernel that lives in the lower half keeps its slots by choosing a range clear of them.
    ///
    /// A root that [`Platform::prepare_root`] got wrong, or memory attributes the CPU does not
    /// describe as normal memory, are `ZX_ERR_BAD_STATE`; [`AddressSpace::create`] says which, in
    /// words.
    pub fn with_user_range(
        platform: Arc<dyn Platform>,
        format: Format,
        base: u64,
        size: u64,
    ) -> ZxResult<Arc<AddressSpace>> {
        Self::create(platform, format, base, size).map_err(Status::from)
    }

    /// As [`AddressSpace::with_user_range`], with the reason for a refusal: after
    /// [`Platform::prepare_root`] the root is checked (the user range's slots must be empty and,
    /// for x86_64 tables, some other slot must hold the kernel: [`RootProblem`]), and on
    /// bare-metal aarch64 MAIR_EL1 must describe the platform's attribute index as normal memory
    /// ([`crate::arch::regime::RegimeProblem`]). Each problem prints as a sentence for the
    /// kernel's bring-up log.
    pub fn create(
        platform: Arc<dyn Platform>,
        format: Format,
        base: u64,
        size: u64,
    ) -> Result<Arc<AddressSpace>, AspaceError> {
        let end = base.checked_add(size).ok_or(Status::InvalidArgs)?;
        let attrs = platform.memory_attributes();
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        if format == Format::Aarch64 && attrs.is_valid() {
            if let Some(problem) = crate::arch::regime::check_memory_attributes(attrs) {
                return Err(AspaceError::Regime(problem));
            }
        }
        let mut mmu = new_page_table_for(&*platform, format, base, end, attrs)?;
        let root_table = mmu.root();
        platform.prepare_root(root_table);
        if let Err(problem) = check_prepared_root(&*platform, format, root_table, mmu.user_slots())
        {
            let mut pending = PendingFlush::new();
            // Not `release`: the user range's slots may hold the kernel's tables.
            mmu.abandon(&mut pending);
            // SAFETY: the root was never loaded or shared: no CPU can reach it.
            unsafe { platform.free_frames(pending.freed_tables()) };
            return Err(AspaceError::Root(problem));
        }
        let (asid, dirty) = platform.tlb().asids().alloc();
        mmu.set_tag(asid);
        let root_vmar = 1;
        let mut vmars = BTreeMap::new();
        vmars.insert(
            root_vmar,
            VmarNode {
                base,
                size,
                flags: VmOptions::CAN_MAP_PERMS | VmOptions::CAN_MAP_SPECIFIC,
                parent: None,
                children: RBTree::new(TreeAdapter::new()),
            },
        );
        Ok(Arc::new_cyclic(|weak_self| AddressSpace {
            koid: next_koid(),
            platform,
            format,
            root_table,
            asid,
            root_vmar,
            root_vmar_koid: next_koid(),
            user_base: base,
            user_size: size,
            active: AtomicCpuSet::new(),
            ran: AtomicCpuSet::from(dirty),
            stale: AtomicCpuSet::from(dirty),
            weak_self: weak_self.clone(),
            tree: Mutex::new(AspaceTree {
                scratch: RangeScratch::default(),
                vmars,
                next_id: root_vmar + 1,
            }),
            mmu: Mutex::new(mmu),
        }))
    }

    /// The root VMAR.
    pub fn root_vmar(self: &Arc<Self>) -> Arc<Vmar> {
        Arc::new(Vmar {
            koid: self.root_vmar_koid,
            aspace: self.clone(),
            id: self.root_vmar,
            base: self.user_base,
            size: self.user_size,
            flags: VmOptions::CAN_MAP_PERMS | VmOptions::CAN_MAP_SPECIFIC,
        })
    }

    /// The user range `(base, size)`: the root VMAR's.
    pub fn user_range(&self) -> (u64, u64) {
        (self.user_base, self.user_size)
    }

    /// The kernel object id.
    pub fn koid(&self) -> zx_koid_t {
        self.koid
    }

    /// The page-table format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The physical address of the root page table (for CR3 or TTBR0_EL1).
    pub fn root_table(&self) -> PhysAddr {
        self.root_table
    }

    /// The ASID or PCID tag of the address space's translations (0: untagged).
    pub fn asid(&self) -> u16 {
        self.asid
    }

    /// The platform the address space was made on.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Makes this address space the one the calling CPU runs: the context switch into user
    /// space. The crate keeps, per CPU, the address space it runs (holding it alive while it is
    /// loaded), so the kernel names only the next one.
    ///
    /// The order is join, load, leave: the CPU joins this address space's active set, flushes
    /// the tag if it may hold stale translations under it (always, when untagged), loads the root
    /// table ([`Platform::load_root`]), and only then leaves the previous address space's active
    /// set. Until the load, the previous tables are still in use here, and every shootdown of the
    /// previous address space still reaches this CPU; a shootdown of this one that starts before
    /// the join either is seen by the stale mark or finds the CPU in the active set.
    ///
    /// If the previous address space's last other reference is gone, it is torn down here, after
    /// the switch (a shootdown round; no crate lock is held).
    ///
    /// # Safety
    /// - The kernel's code, stack and data stay mapped after the load: on x86_64 the root holds
    ///   the kernel's entries (`Platform::prepare_root`), on aarch64 the kernel runs from
    ///   TTBR1_EL1.
    /// - The calling CPU loads user roots only through [`AddressSpace::activate`] and
    ///   [`AddressSpace::deactivate`], so the crate's record of what it runs is true.
    /// - `pin` was made on this address space's platform.
    pub unsafe fn activate(self: &Arc<Self>, pin: &CpuPin<'_>) {
        let cpu = pin.cpu();
        let slot = self.platform.tlb().current_slot(cpu);
        let previous = slot.load(Ordering::Acquire) as *const AddressSpace;
        let same = core::ptr::eq(previous, Arc::as_ptr(self));
        // Join.
        self.active.insert(cpu);
        self.ran.insert(cpu);
        let flush = self.asid == 0 || self.stale.take(cpu);
        if same && !flush {
            return;
        }
        // Load.
        // SAFETY: `self` is alive (we hold an `Arc`) and stays alive while loaded (the slot holds
        // one); its root was prepared when it was made; the caller guarantees the rest.
        unsafe { self.platform.load_root(self.root_table, self.asid, flush) };
        if same {
            return;
        }
        slot.store(Arc::into_raw(self.clone()) as *mut (), Ordering::Release);
        // Leave.
        if !previous.is_null() {
            // SAFETY: the slot held the pointer from `Arc::into_raw` of a live address space;
            // we replaced it, so this is the one owner of that reference.
            let previous = unsafe { Arc::from_raw(previous) };
            previous.active.remove(cpu);
            drop(previous);
        }
    }

    /// Takes the calling CPU out of user space: loads a root without user mappings
    /// ([`Platform::load_kernel_root`]), then leaves the address space it ran, if any (which is
    /// torn down here if nothing else holds it).
    ///
    /// # Safety
    /// As for [`AddressSpace::activate`]; and the CPU touches no user address until it activates
    /// an address space again.
    pub unsafe fn deactivate(pin: &CpuPin<'_>) {
        let platform = pin.platform();
        let cpu = pin.cpu();
        // SAFETY: forwarded from the caller.
        unsafe { platform.load_kernel_root() };
        let previous = platform
            .tlb()
            .current_slot(cpu)
            .swap(core::ptr::null_mut(), Ordering::AcqRel)
            as *const AddressSpace;
        if !previous.is_null() {
            // SAFETY: as in `activate`: the slot's reference, now ours alone.
            let previous = unsafe { Arc::from_raw(previous) };
            previous.active.remove(cpu);
        }
    }

    /// The address space the pinned CPU runs, if any.
    pub fn current(pin: &CpuPin<'_>) -> Option<Arc<AddressSpace>> {
        let slot = pin.platform().tlb().current_slot(pin.cpu());
        let current = slot.load(Ordering::Acquire) as *const AddressSpace;
        if current.is_null() {
            return None;
        }
        // SAFETY: only this CPU changes its slot (in `activate`/`deactivate`, which need the pin
        // we hold, so they are not running now on this CPU), and the slot's reference keeps the
        // address space alive: taking one more reference to it is sound.
        unsafe {
            Arc::increment_strong_count(current);
            Some(Arc::from_raw(current))
        }
    }

    /// The CPUs on which the address space is active.
    pub fn active_cpus(&self) -> CpuSet {
        self.active.load()
    }

    /// How many page-table pages the address space holds.
    pub fn page_table_pages(&self) -> usize {
        self.mmu.lock().table_pages()
    }

    /// The page table's leaves by size (taking its lock): 4 KiB pages, 2 MiB and 1 GiB leaves.
    /// For tests and diagnostics, e.g. a kernel checking that a mapping got large leaves.
    pub fn leaf_counts(&self) -> LeafCounts {
        self.mmu.lock().leaf_counts(&*self.platform)
    }

    /// The frame and permissions `va` translates to in the page table (taking its lock).
    pub fn query(&self, va: u64) -> Option<(PhysAddr, MmuFlags)> {
        self.mmu.lock().query(&*self.platform, va)
    }

    /// Walks the page table for `va` without a lock, as the MMU does.
    ///
    /// # Safety
    /// As for [`crate::arch::translate`]: the tables stay readable during the walk (the host
    /// simulation's memory always is).
    pub unsafe fn translate(&self, va: u64) -> Option<(PhysAddr, MmuFlags)> {
        // SAFETY: forwarded from the caller.
        unsafe { translate_format(self.format, &*self.platform, self.root_table, va) }
    }

    /// Runs `f` on the page table with its lock held and no TLB maintenance at all: for tests
    /// that need a stale translation on purpose, and for diagnostics.
    #[cfg(feature = "sim")]
    pub fn with_page_table_unsynchronized<R>(
        &self,
        f: impl FnOnce(&mut dyn PageTableOps, &dyn Platform) -> R,
    ) -> R {
        let mut mmu = self.mmu.lock();
        f(&mut **mmu, &*self.platform)
    }

    pub(super) fn arc(&self) -> Arc<AddressSpace> {
        self.weak_self
            .upgrade()
            .expect("called on a live address space")
    }

    pub(super) fn lock_tree(&self) -> MutexGuard<'_, AspaceTree> {
        self.tree.lock()
    }

    /// Removes the translations of `[start, end)` from the page table into `pending`.
    pub(crate) fn unmap_pages(&self, start: u64, end: u64, pending: &mut PendingFlush) {
        self.mmu.lock().unmap(&*self.platform, start, end, pending);
    }
}

impl MappedSpace for AddressSpace {
    fn unmap_pages(self: Arc<Self>, start: u64, end: u64, batch: &mut TlbBatch) {
        AddressSpace::unmap_pages(&self, start, end, batch.space(&self));
    }

    fn flush_all(self: Arc<Self>, batch: &mut TlbBatch) {
        batch.space(&self).add_all();
    }

    fn protect_pages(self: Arc<Self>, start: u64, end: u64, flags: MmuFlags, batch: &mut TlbBatch) {
        let pending = batch.space(&self);
        self.mmu
            .lock()
            .protect(&*self.platform, start, end, flags | MmuFlags::USER, pending);
    }
}

impl FlushTarget for AddressSpace {
    /// Where this address space's invalidation goes: the CPUs to interrupt are those where it
    /// is active; those that ran it but are elsewhere now are marked stale instead, and flush the
    /// tag when they come back ([`AddressSpace::activate`]).
    fn reach(&self, _pending: &PendingFlush) -> Reach {
        let mut targets = self.active.load();
        if self.asid != 0 && !self.platform.invalidation_is_broadcast() {
            self.stale.insert_all(self.ran.load().difference(targets));
            // A CPU that joined after the first read either saw the stale mark or is read here.
            targets = targets.union(self.active.load());
        }
        Reach {
            targets,
            asid: self.asid,
            root: self.root_table,
        }
    }
}

impl AddressSpace {
    /// Unmaps `region` (a mapping, already unlinked from its VMAR): clears its page-table
    /// entries and hands it to `batch`, which takes it off its VMO's list once the shootdown for
    /// those entries completed. Until then a decommit of its pages still sees it, and flushes its
    /// address space too: a CPU may still cache a translation through it.
    pub(super) fn unlink_mapping(&self, region: &Arc<Region>, batch: &mut TlbBatch) {
        let mapping = region.mapping().expect("a mapping");
        {
            let _inner = mapping.vmo().lock();
            self.unmap_pages(region.base(), region.end(), batch.space(&self.arc()));
            mapping.set_unmapped();
        }
        batch.deferred::<RetiredMappings>().0.push(mapping.clone());
    }

    /// Splits the mapping `region` of VMAR `id` at `va` (page aligned, strictly inside it). The
    /// lower part keeps the region; the upper part is a new region, returned.
    pub(super) fn split_mapping(
        &self,
        node: &mut VmarNode,
        region: &Arc<Region>,
        va: u64,
    ) -> Arc<Region> {
        let mapping = region.mapping().expect("a mapping");
        debug_assert!(va > region.base() && va < region.end() && is_page_aligned(va));
        let delta = va - region.base();
        let upper = Mapping::new(
            self.weak_self.clone(),
            va,
            mapping.size() - delta,
            mapping.vmo().clone(),
            mapping.vmo_offset() + delta,
            mapping.flags(),
            mapping.can_map(),
        );
        let mut inner = mapping.vmo().lock();
        mapping.set_size(delta);
        Vmo::add_mapping_locked(&mut inner, upper.clone());
        let upper = Region::new_mapping(upper);
        node.children.insert(upper.clone());
        upper
    }

    /// Splits the mappings of VMAR `id` so that none straddles `start` or `end`.
    pub(super) fn split_at_bounds(
        &self,
        tree: &mut AspaceTree,
        id: VmarId,
        start: u64,
        end: u64,
    ) -> ZxResult {
        let node = tree.node_mut(id)?;
        for va in [start, end] {
            if let Some(region) = node.child_at(va) {
                if region.mapping().is_some() && region.base() < va {
                    self.split_mapping(node, &region, va);
                }
            }
        }
        Ok(())
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // Tear down whatever is still mapped. No CPU runs here any more (a CPU that did would hold
        // the address space alive), but TLBs may keep its translations, so invalidate before the
        // table pages are freed.
        let tree = self.tree.get_mut();
        let mut item = Item::new();
        let mut vmos = Vec::new();
        for (_, mut node) in core::mem::take(&mut tree.vmars) {
            let mut children = node.children.take();
            let mut cursor = children.front_mut();
            while let Some(region) = cursor.remove() {
                if let Some(mapping) = region.mapping() {
                    let mut inner = mapping.vmo().lock();
                    Vmo::remove_mapping_locked(&mut inner, mapping);
                    drop(inner);
                    vmos.push(mapping.vmo().clone());
                }
            }
        }
        let mmu = self.mmu.get_mut();
        mmu.release(&*self.platform, &mut item.pending);
        item.reach = self.reach(&item.pending);
        {
            let pin = CpuPin::new(&*self.platform);
            self.platform
                .tlb()
                .shoot(&pin, core::slice::from_ref(&item));
        }
        // SAFETY: the tables were unlinked by `release`, and `shoot` returned after every CPU
        // that may cache walks through them completed its invalidation; CPUs that ran the address
        // space elsewhere are in `ran`, and flush the tag before its next owner runs there.
        unsafe { self.platform.free_frames(item.pending.freed_tables()) };
        self.platform.tlb().asids().free(self.asid, self.ran.load());
        drop(vmos);
    }
}
