//! Address spaces and their VMARs (virtual memory address regions).
//!
//! An [`AddressSpace`] owns one tree of VMARs, rooted at its root VMAR, and one page table. Each
//! VMAR keeps its children (sub-VMARs and mappings) in an intrusive red-black tree keyed by base
//! address ([`Region`]), so finding the child at an address and checking a range for overlap are
//! O(log n).
//!
//! # Lock order
//!
//! This is the crate's one lock order; every path takes locks in it, and never in reverse:
//!
//! 1. an address space's **tree lock** (`AddressSpace::tree`): its VMARs, their children, and the
//!    permissions of its mappings. At most one tree lock is held at a time.
//! 2. **VMO locks** (`Vmo::inner`): a VMO's pages, pins and mapping list. When an operation needs
//!    several at once (a decommit over mappings of several VMOs), it takes them in increasing koid
//!    order.
//! 3. a **page-table lock** (`AddressSpace::mmu`) of any address space, the caller's or another's:
//!    a leaf lock. A decommit reaches other address spaces from the VMO side, through the VMO's
//!    mapping list, taking only their page-table locks, which is why those are separate from the
//!    tree locks.
//!
//! The frame allocator and the TLB invalidation ([`crate::platform::Platform`]) sit below all of
//! them; a [`TlbBatch`] is finished after the locks are dropped.

mod region;

pub use self::region::Region;
pub(crate) use self::region::{RegionKind, TreeAdapter};
pub use crate::vmo::Mapping;

use crate::abi::next_koid;
use crate::abi::{
    is_page_aligned, page_round_up, zx_koid_t, Status, VmOptions, ZxResult, PAGE_SHIFT, PAGE_SIZE,
};
use crate::arch::{
    check_prepared_root, new_page_table_for, translate_format, Format, MmuFlags, PageTableOps,
    PendingFlush, RootProblem, USER_ADDRESS_LIMIT,
};
use crate::platform::{AtomicCpuSet, CpuPin, CpuSet, PhysAddr, Platform, TlbInvalidate, TlbScope};
use crate::tlb::{Deferred, FlushTarget, Item, TlbBatch, ITEM_PAGES};
use crate::vmo::{MappedSpace, Vmo, VmoInner};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use intrusive_collections::{Bound, RBTree};
use spin::{Mutex, MutexGuard};

/// The identity of a VMAR within its address space.
pub type VmarId = u64;

/// The lowest user address: the root VMAR's base.
pub const USER_ASPACE_BASE: u64 = 0x0100_0000;
/// The size of the root VMAR: up to one page below the top of the 47-bit lower half.
pub const USER_ASPACE_SIZE: u64 = USER_ADDRESS_LIMIT - PAGE_SIZE - USER_ASPACE_BASE;

/// Why [`AddressSpace::create`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspaceError {
    /// A bad argument (`ZX_ERR_INVALID_ARGS`) or no memory (`ZX_ERR_NO_MEMORY`).
    Status(Status),
    /// The root table after [`Platform::prepare_root`] (`ZX_ERR_BAD_STATE`).
    Root(RootProblem),
    /// The CPU's translation regime (`ZX_ERR_BAD_STATE`).
    Regime(crate::arch::regime::RegimeProblem),
}

impl From<Status> for AspaceError {
    fn from(status: Status) -> Self {
        AspaceError::Status(status)
    }
}

impl From<AspaceError> for Status {
    fn from(error: AspaceError) -> Self {
        match error {
            AspaceError::Status(status) => status,
            AspaceError::Root(_) | AspaceError::Regime(_) => Status::BadState,
        }
    }
}

impl core::fmt::Display for AspaceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AspaceError::Status(status) => f.write_str(status.name()),
            AspaceError::Root(problem) => write!(f, "{problem}"),
            AspaceError::Regime(problem) => write!(f, "{problem}"),
        }
    }
}

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

impl Access {
    fn required(self) -> MmuFlags {
        match self {
            Access::Read => MmuFlags::READ,
            Access::Write => MmuFlags::WRITE,
            Access::Execute => MmuFlags::EXECUTE,
        }
    }
}

/// What [`AddressSpace::audit`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditError {
    /// The virtual address of the bad translation.
    pub va: u64,
    /// What is wrong with it.
    pub what: &'static str,
}

/// Why a page fault could not be resolved. The kernel turns it into an exception for the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No mapping covers the address.
    NotMapped,
    /// The mapping does not allow the access.
    AccessDenied,
    /// The address maps past the end of the VMO.
    OutOfRange,
    /// No frame could be had.
    NoMemory,
}

/// One VMAR's own state, in its address space's tree.
pub(crate) struct VmarNode {
    base: u64,
    size: u64,
    /// The `ZX_VM_CAN_MAP_*` flags of the VMAR.
    flags: VmOptions,
    parent: Option<VmarId>,
    children: RBTree<TreeAdapter>,
}

impl VmarNode {
    fn end(&self) -> u64 {
        self.base + self.size
    }

    fn contains_range(&self, start: u64, end: u64) -> bool {
        start >= self.base && end <= self.end() && start < end
    }

    /// The child containing `va`.
    fn child_at(&self, va: u64) -> Option<Arc<Region>> {
        let cursor = self.children.upper_bound(Bound::Included(&va));
        let region = cursor.get()?;
        if va < region.end() {
            cursor.clone_pointer()
        } else {
            None
        }
    }

    /// Whether any child overlaps `[start, end)`.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        // Children do not overlap, so the one with the greatest base below `end` reaches furthest.
        self.children
            .upper_bound(Bound::Excluded(&end))
            .get()
            .is_some_and(|region| region.end() > start)
    }

    /// The children overlapping `[start, end)`, in address order, appended to `out`.
    fn children_in(&self, start: u64, end: u64, out: &mut Vec<Arc<Region>>) {
        let mut cursor = self.children.upper_bound(Bound::Included(&start));
        if cursor.get().is_none_or(|region| region.end() <= start) {
            cursor.move_next();
        }
        while let Some(region) = cursor.get() {
            if region.base() >= end {
                break;
            }
            out.extend(cursor.clone_pointer());
            cursor.move_next();
        }
    }

    /// Whether a child overlapping `[start, end)` satisfies `test`.
    fn any_child_in(&self, start: u64, end: u64, test: impl Fn(&Region) -> bool) -> bool {
        let mut cursor = self.children.upper_bound(Bound::Included(&start));
        if cursor.get().is_none_or(|region| region.end() <= start) {
            cursor.move_next();
        }
        while let Some(region) = cursor.get() {
            if region.base() >= end {
                return false;
            }
            if test(region) {
                return true;
            }
            cursor.move_next();
        }
        false
    }

    /// The lowest free, page-aligned gap of `size` bytes.
    fn find_gap(&self, size: u64) -> Option<u64> {
        let mut candidate = self.base;
        for region in self.children.iter() {
            if region.base() >= candidate && region.base() - candidate >= size {
                return Some(candidate);
            }
            candidate = candidate.max(region.end());
        }
        (self.end() - candidate >= size).then_some(candidate)
    }

    /// Unlinks `region` from the children.
    fn unlink(&mut self, region: &Arc<Region>) {
        // SAFETY: callers pass only regions found in this node's tree under the tree lock they
        // still hold, so `region` is linked in `self.children` and in no other tree. The pointer
        // comes from the `Arc`, so it keeps the provenance of the whole allocation that `remove`
        // turns back into an `Arc`.
        let mut cursor = unsafe { self.children.cursor_mut_from_ptr(Arc::as_ptr(region)) };
        cursor.remove();
    }
}

/// The VMAR tree of one address space.
pub(crate) struct AspaceTree {
    vmars: BTreeMap<VmarId, VmarNode>,
    next_id: VmarId,
    /// The lists range operations walk and collect into, kept warm under the tree lock.
    scratch: RangeScratch,
}

impl AspaceTree {
    fn node(&self, id: VmarId) -> ZxResult<&VmarNode> {
        self.vmars.get(&id).ok_or(Status::BadState)
    }

    fn node_mut(&mut self, id: VmarId) -> ZxResult<&mut VmarNode> {
        self.vmars.get_mut(&id).ok_or(Status::BadState)
    }

    /// The mappings that cover `[start, end)` below VMAR `id`, each with the part of the range it
    /// covers and the VMAR it sits in, looking through nested VMARs, into `out` (in address
    /// order). `gap` is returned if a page of the range is not covered by a mapping.
    ///
    /// Iterative, with an explicit stack in `walk`: VMARs nest as deep as a caller makes them, and
    /// a kernel stack must not pay for that.
    fn covering_mappings(
        &self,
        id: VmarId,
        start: u64,
        end: u64,
        gap: Status,
        walk: &mut Vec<WalkFrame>,
        out: &mut Vec<Covered>,
    ) -> ZxResult {
        walk.clear();
        walk.push(WalkFrame {
            vmar: id,
            next: start,
            end,
        });
        let result = loop {
            let Some(top) = walk.last_mut() else {
                break Ok(());
            };
            if top.next >= top.end {
                walk.pop();
                continue;
            }
            let node = match self.node(top.vmar) {
                Ok(node) => node,
                Err(status) => break Err(status),
            };
            // The child holding `next`: the range is covered only if one starts at or before it.
            let Some(region) = node.child_at(top.next) else {
                break Err(gap);
            };
            let (lo, hi) = (top.next, top.end.min(region.end()));
            top.next = hi;
            let vmar = top.vmar;
            match region.kind() {
                RegionKind::Vmar(child) => walk.push(WalkFrame {
                    vmar: *child,
                    next: lo,
                    end: hi,
                }),
                RegionKind::Mapping(_) => out.push(Covered {
                    vmar,
                    region,
                    start: lo,
                    end: hi,
                }),
            }
        };
        walk.clear();
        result
    }

    /// Destroys VMAR `id` and everything below it, unmapping every mapping into `batch`. Its
    /// region in the parent is left to the caller. Iterative (VMARs nest as deep as a caller
    /// makes them): `stack` holds the VMARs still to take apart.
    fn destroy_subtree(
        &mut self,
        aspace: &AddressSpace,
        id: VmarId,
        stack: &mut Vec<VmarId>,
        batch: &mut TlbBatch,
    ) {
        stack.clear();
        stack.push(id);
        while let Some(id) = stack.pop() {
            let Some(mut node) = self.vmars.remove(&id) else {
                continue;
            };
            let mut children = node.children.take();
            let mut cursor = children.front_mut();
            while let Some(region) = cursor.remove() {
                match region.kind() {
                    RegionKind::Vmar(child) => stack.push(*child),
                    RegionKind::Mapping(_) => aspace.unlink_mapping(&region, batch),
                }
            }
        }
    }
}

/// One level of [`AspaceTree::covering_mappings`]'s walk: the part `[next, end)` of VMAR
/// `vmar` still to cover.
pub(crate) struct WalkFrame {
    vmar: VmarId,
    next: u64,
    end: u64,
}

/// The lists a range operation walks and collects into: kept in the address space's tree (used
/// only under its lock), so that they keep their capacity from one operation to the next and a
/// warm decommit, unmap or protect allocates nothing.
#[derive(Default)]
pub(crate) struct RangeScratch {
    walk: Vec<WalkFrame>,
    covered: Vec<Covered>,
    /// The VMOs an operation locks, by koid.
    vmos: Vec<Arc<Vmo>>,
    regions: Vec<Arc<Region>>,
    vmar_ids: Vec<VmarId>,
}

impl RangeScratch {
    /// Takes the lists out of `tree` (so that the tree can be used beside them).
    fn take(tree: &mut AspaceTree) -> RangeScratch {
        core::mem::take(&mut tree.scratch)
    }

    /// Empties the lists and puts them back into `tree`, keeping their capacity.
    fn put(mut self, tree: &mut AspaceTree) {
        self.walk.clear();
        self.covered.clear();
        self.vmos.clear();
        self.regions.clear();
        self.vmar_ids.clear();
        tree.scratch = self;
    }
}

/// A mapping and the part of an operation's range that it covers.
pub(crate) struct Covered {
    vmar: VmarId,
    region: Arc<Region>,
    start: u64,
    end: u64,
}

impl Covered {
    fn mapping(&self) -> &Mapping {
        self.region.mapping().expect("only mappings are collected")
    }

    /// The VMO pages behind `[start, end)`.
    fn vmo_pages(&self) -> (u64, u64) {
        let to_vmo =
            |va: u64| (va - self.region.base() + self.mapping().vmo_offset()) >> PAGE_SHIFT;
        (to_vmo(self.start), to_vmo(self.end))
    }
}

/// An address space: a tree of VMARs and the page table that realises its mappings.
pub struct AddressSpace {
    koid: zx_koid_t,
    platform: Arc<dyn Platform>,
    format: Format,
    /// The root table; fixed for the address space's life.
    root_table: PhysAddr,
    /// The ASID or PCID tag; 0 when untagged.
    asid: u16,
    root_vmar: VmarId,
    /// The user range: the root VMAR's base and size.
    user_base: u64,
    user_size: u64,
    /// The CPUs on which the address space is active: those a shootdown interrupts.
    active: AtomicCpuSet,
    /// The CPUs that have run the address space under its tag (never shrinks): those that may
    /// cache its translations.
    ran: AtomicCpuSet,
    /// The CPUs that must flush the tag before they next run the address space: they may cache
    /// translations that a shootdown, which did not interrupt them, removed.
    stale: AtomicCpuSet,
    weak_self: Weak<AddressSpace>,
    tree: Mutex<AspaceTree>,
    mmu: Mutex<Box<dyn PageTableOps>>,
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
            koid: next_koid(),
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

    /// Checks that every translation in the page table belongs to a live mapping and to the
    /// committed page behind it, with no more than the mapping's permissions. For tests and
    /// debugging: call it while no operation on the address space or its VMOs is under way.
    pub fn audit(&self) -> Result<(), AuditError> {
        let tree = self.lock_tree();
        let mut pages = Vec::new();
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
            if vmo.lookup_page_locked(&vmo.lock(), index) != Some(pa) {
                return fail("a translation to a frame that is not the VMO's page");
            }
        }
        Ok(())
    }

    fn arc(&self) -> Arc<AddressSpace> {
        self.weak_self
            .upgrade()
            .expect("called on a live address space")
    }

    fn lock_tree(&self) -> MutexGuard<'_, AspaceTree> {
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
}

impl FlushTarget for AddressSpace {
    /// This address space's part of a shootdown for what `pending` records: the CPUs to
    /// interrupt are those where it is active; those that ran it but are elsewhere now are marked
    /// stale instead, and flush the tag when they come back ([`AddressSpace::activate`]).
    fn shootdown_item(&self, pending: &PendingFlush) -> Item {
        let mut targets = self.active.load();
        if self.asid != 0 && !self.platform.invalidation_is_broadcast() {
            self.stale.insert_all(self.ran.load().difference(targets));
            // A CPU that joined after the first read either saw the stale mark or is read here.
            targets = targets.union(self.active.load());
        }
        let mut pages = [0; ITEM_PAGES];
        let listed = pending.pages();
        pages[..listed.len()].copy_from_slice(listed);
        Item {
            targets,
            asid: self.asid,
            root: self.root_table,
            pages,
            page_count: listed.len() as u8,
            full: pending.is_full(),
            tables_freed: pending.tables_freed() && !cfg!(feature = "break-table-flush"),
        }
    }
}

impl AddressSpace {
    /// Resolves a page fault at `va`: commits the VMO page if needed and maps it with the
    /// mapping's permissions.
    pub fn page_fault(&self, va: u64, access: Access) -> Result<(), FaultError> {
        let va = va & !(PAGE_SIZE - 1);
        let tree = self.lock_tree();
        let mut node = tree
            .node(self.root_vmar)
            .map_err(|_| FaultError::NotMapped)?;
        let region = loop {
            let region = node.child_at(va).ok_or(FaultError::NotMapped)?;
            match region.kind() {
                RegionKind::Vmar(child) => {
                    node = tree.node(*child).map_err(|_| FaultError::NotMapped)?;
                }
                RegionKind::Mapping(_) => break region,
            }
        };
        let mapping = region.mapping().expect("matched above");
        let flags = mapping.flags();
        if !flags.contains(access.required()) || !flags.contains(MmuFlags::READ) {
            return Err(FaultError::AccessDenied);
        }
        let vmo = mapping.vmo();
        let index = (mapping.vmo_offset() + (va - region.base())) >> PAGE_SHIFT;
        if index >= vmo.size() >> PAGE_SHIFT {
            return Err(FaultError::OutOfRange);
        }
        let mut inner = vmo.lock();
        let pa = vmo
            .commit_page_locked(&mut inner, index)
            .map_err(|_| FaultError::NoMemory)?;
        let replaced = self
            .mmu
            .lock()
            .map(&*self.platform, va, pa, flags | MmuFlags::USER)
            .map_err(|_| FaultError::NoMemory)?;
        crate::arch::publish_new_entries();
        if replaced {
            // The entry was there already: this CPU faulted on a narrower translation it caches
            // (another CPU's fault or a protect upgraded the entry meanwhile). aarch64 keeps such
            // an entry in the TLB after the fault, and the access would fault forever: drop it
            // here, so that the kernel's handler need not. The walk is dropped too
            // (`tables_freed`: TLBI VAE1 rather than VALE1 on aarch64; INVLPG drops it anyway):
            // the CPU may have faulted through a cached walk to a table that another CPU's
            // decommit unlinked and has not invalidated yet, while this fault mapped the page
            // through a new table; keeping that walk would fault again until then.
            self.platform.invalidate_local(&TlbInvalidate {
                asid: self.asid,
                root: self.root_table,
                scope: TlbScope::Pages(&[va]),
                tables_freed: true,
            });
        }
        Ok(())
    }

    /// Unmaps `region` (a mapping, already unlinked from its VMAR): clears its page-table
    /// entries and hands it to `batch`, which takes it off its VMO's list once the shootdown for
    /// those entries completed. Until then a decommit of its pages still sees it, and flushes its
    /// address space too: a CPU may still cache a translation through it.
    fn unlink_mapping(&self, region: &Arc<Region>, batch: &mut TlbBatch) {
        let mapping = region.mapping().expect("a mapping");
        {
            let _inner = mapping.vmo().lock();
            self.unmap_pages(region.base(), region.end(), batch.space(&self.arc()));
            mapping.set_unmapped();
        }
        batch.deferred::<Retired>().0.push(mapping.clone());
    }

    /// Splits the mapping `region` of VMAR `id` at `va` (page aligned, strictly inside it). The
    /// lower part keeps the region; the upper part is a new region, returned.
    fn split_mapping(&self, node: &mut VmarNode, region: &Arc<Region>, va: u64) -> Arc<Region> {
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
    fn split_at_bounds(&self, tree: &mut AspaceTree, id: VmarId, start: u64, end: u64) -> ZxResult {
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
        let mut pending = PendingFlush::new();
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
        mmu.release(&*self.platform, &mut pending);
        let item = self.shootdown_item(&pending);
        {
            let pin = CpuPin::new(&*self.platform);
            self.platform
                .tlb()
                .shoot(&pin, core::slice::from_ref(&item));
        }
        // SAFETY: the tables were unlinked by `release`, and `shoot` returned after every CPU
        // that may cache walks through them completed its invalidation; CPUs that ran the address
        // space elsewhere are in `ran`, and flush the tag before its next owner runs there.
        unsafe { self.platform.free_frames(pending.freed_tables()) };
        self.platform.tlb().asids().free(self.asid, self.ran.load());
        drop(vmos);
    }
}

/// A VMAR: a handle's view of one region of an address space.
pub struct Vmar {
    koid: zx_koid_t,
    aspace: Arc<AddressSpace>,
    id: VmarId,
    base: u64,
    size: u64,
    flags: VmOptions,
}

/// Converts `ZX_VM_PERM_*` bits into page permissions.
pub fn perms_to_mmu(options: VmOptions) -> MmuFlags {
    let mut flags = MmuFlags::empty();
    if options.contains(VmOptions::PERM_READ) {
        flags |= MmuFlags::READ;
    }
    if options.contains(VmOptions::PERM_WRITE) {
        flags |= MmuFlags::WRITE;
    }
    if options.contains(VmOptions::PERM_EXECUTE) {
        flags |= MmuFlags::EXECUTE;
    }
    flags
}

/// The `ZX_VM_CAN_MAP_*` bits that the `ZX_VM_PERM_*` bits of `options` need.
pub fn perms_needing_can_map(options: VmOptions) -> VmOptions {
    let mut can_map = VmOptions::empty();
    if options.contains(VmOptions::PERM_READ) {
        can_map |= VmOptions::CAN_MAP_READ;
    }
    if options.contains(VmOptions::PERM_WRITE) {
        can_map |= VmOptions::CAN_MAP_WRITE;
    }
    if options.contains(VmOptions::PERM_EXECUTE) {
        can_map |= VmOptions::CAN_MAP_EXECUTE;
    }
    can_map
}

/// Whether a set of `ZX_VM_PERM_*` bits is one a mapping can have (no write without read).
fn valid_perms(options: VmOptions) -> bool {
    !options.contains(VmOptions::PERM_WRITE) || options.contains(VmOptions::PERM_READ)
}

impl Vmar {
    /// The kernel object id.
    pub fn koid(&self) -> zx_koid_t {
        self.koid
    }

    /// The first address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `ZX_VM_CAN_MAP_*` flags.
    pub fn flags(&self) -> VmOptions {
        self.flags
    }

    /// The address space.
    pub fn aspace(&self) -> &Arc<AddressSpace> {
        &self.aspace
    }

    /// Whether the VMAR was destroyed.
    pub fn is_destroyed(&self) -> bool {
        !self.aspace.lock_tree().vmars.contains_key(&self.id)
    }

    /// The absolute range `[base + offset, base + offset + size)`, if it fits in the VMAR.
    fn sub_range(&self, offset: u64, size: u64) -> Option<(u64, u64)> {
        let start = self.base.checked_add(offset)?;
        let end = start.checked_add(size)?;
        (end <= self.base + self.size && start < end).then_some((start, end))
    }

    /// `zx_vmar_allocate`: a sub-VMAR of `size` bytes at `offset` (with `ZX_VM_SPECIFIC`) or
    /// wherever it fits. `options` may hold `ZX_VM_CAN_MAP_*`, `ZX_VM_SPECIFIC` and
    /// `ZX_VM_COMPACT`; the caller checked the handle's rights.
    pub fn allocate(&self, options: VmOptions, offset: u64, size: u64) -> ZxResult<Arc<Vmar>> {
        let allowed = VmOptions::CAN_MAP_PERMS
            | VmOptions::CAN_MAP_SPECIFIC
            | VmOptions::SPECIFIC
            | VmOptions::COMPACT;
        if !allowed.contains(options) {
            return Err(Status::InvalidArgs);
        }
        // Zircon: the size is not rounded (AllocateUnsatisfiableTest, InvalidArgsTest).
        if size == 0 || !is_page_aligned(size) || !is_page_aligned(offset) {
            return Err(Status::InvalidArgs);
        }
        let mut tree = self.aspace.lock_tree();
        let node = tree.node(self.id)?;
        let child_flags = options & (VmOptions::CAN_MAP_PERMS | VmOptions::CAN_MAP_SPECIFIC);
        if !node.flags.contains(child_flags & VmOptions::CAN_MAP_PERMS) {
            return Err(Status::AccessDenied);
        }
        let start = if options.contains(VmOptions::SPECIFIC) {
            if !node.flags.contains(VmOptions::CAN_MAP_SPECIFIC) {
                return Err(Status::AccessDenied);
            }
            let (start, end) = self.sub_range(offset, size).ok_or(Status::InvalidArgs)?;
            if node.overlaps(start, end) {
                return Err(Status::AlreadyExists);
            }
            start
        } else {
            if offset != 0 {
                return Err(Status::InvalidArgs);
            }
            // A child larger than its parent can never fit: INVALID_ARGS before any search
            // (Zircon's AllocateUnsatisfiableTest).
            if size > node.size {
                return Err(Status::InvalidArgs);
            }
            node.find_gap(size).ok_or(Status::NoResources)?
        };
        let id = tree.next_id;
        tree.next_id += 1;
        let parent = tree.node_mut(self.id)?;
        parent.children.insert(Region::new_vmar(id, start, size));
        tree.vmars.insert(
            id,
            VmarNode {
                base: start,
                size,
                flags: child_flags,
                parent: Some(self.id),
                children: RBTree::new(TreeAdapter::new()),
            },
        );
        Ok(Arc::new(Vmar {
            koid: next_koid(),
            aspace: self.aspace.clone(),
            id,
            base: start,
            size,
            flags: child_flags,
        }))
    }

    /// `zx_vmar_map`: maps `len` bytes of `vmo` from `vmo_offset`. `options` holds `ZX_VM_PERM_*`
    /// and the placement flags; `can_map` the `ZX_VM_CAN_MAP_*` permissions that the caller's
    /// handles allow (the mapping may never exceed them). Returns the mapped address.
    pub fn map(
        &self,
        options: VmOptions,
        vmar_offset: u64,
        vmo: &Arc<Vmo>,
        vmo_offset: u64,
        len: u64,
        can_map: VmOptions,
    ) -> ZxResult<u64> {
        let allowed = VmOptions::PERMS
            | VmOptions::SPECIFIC
            | VmOptions::SPECIFIC_OVERWRITE
            | VmOptions::MAP_RANGE
            | VmOptions::ALLOW_FAULTS
            | VmOptions::REQUIRE_NON_RESIZABLE;
        if !allowed.contains(options) || !valid_perms(options) {
            return Err(Status::InvalidArgs);
        }
        // As in Zircon: an overwrite cannot also map the range at once (a map that could fail
        // after the overwrite removed the old mappings would change things and fail).
        if options.contains(VmOptions::SPECIFIC_OVERWRITE | VmOptions::MAP_RANGE) {
            return Err(Status::InvalidArgs);
        }
        if len == 0 {
            return Err(Status::InvalidArgs);
        }
        // A length that rounds up past the end of the address space (Zircon: OUT_OF_RANGE).
        let len = page_round_up(len).ok_or(Status::OutOfRange)?;
        if !is_page_aligned(vmar_offset) || !is_page_aligned(vmo_offset) {
            return Err(Status::InvalidArgs);
        }
        vmo_offset.checked_add(len).ok_or(Status::OutOfRange)?;
        let mut tree = self.aspace.lock_tree();
        let node = tree.node(self.id)?;
        let needed = perms_needing_can_map(options);
        if !node.flags.contains(needed) || !can_map.contains(needed) {
            return Err(Status::AccessDenied);
        }
        let can_map = can_map & node.flags & VmOptions::CAN_MAP_PERMS;
        let specific = options.intersects(VmOptions::SPECIFIC | VmOptions::SPECIFIC_OVERWRITE);
        let mut batch = TlbBatch::new(&**self.aspace.platform());
        let start = if specific {
            if !node.flags.contains(VmOptions::CAN_MAP_SPECIFIC) {
                return Err(Status::AccessDenied);
            }
            let (start, end) = self
                .sub_range(vmar_offset, len)
                .ok_or(Status::InvalidArgs)?;
            if node.overlaps(start, end) {
                if !options.contains(VmOptions::SPECIFIC_OVERWRITE) {
                    return Err(Status::AlreadyExists);
                }
                // An overwrite replaces mappings, never sub-VMARs (Zircon: ZX_ERR_INVALID_ARGS).
                let over_vmar =
                    node.any_child_in(start, end, |r| matches!(r.kind(), RegionKind::Vmar(_)));
                if over_vmar {
                    batch.finish(&**self.aspace.platform());
                    return Err(Status::InvalidArgs);
                }
                if let Err(status) = self.unmap_locked(&mut tree, start, end, &mut batch) {
                    drop(tree);
                    batch.finish(&**self.aspace.platform());
                    return Err(status);
                }
            }
            start
        } else {
            if vmar_offset != 0 {
                return Err(Status::InvalidArgs);
            }
            // Longer than the VMAR: it can never fit (Zircon: INVALID_ARGS, before any search).
            if len > node.size {
                return Err(Status::InvalidArgs);
            }
            node.find_gap(len).ok_or(Status::NoResources)?
        };
        let flags = perms_to_mmu(options);
        let space: Weak<dyn MappedSpace> = Arc::downgrade(&self.aspace) as Weak<AddressSpace>;
        let mapping = Mapping::new(space, start, len, vmo.clone(), vmo_offset, flags, can_map);
        let region = Region::new_mapping(mapping.clone());
        let mut result = Ok(start);
        let mapped = {
            let mut inner = vmo.lock();
            Vmo::add_mapping_locked(&mut inner, mapping);
            tree.node_mut(self.id)?.children.insert(region.clone());
            if options.contains(VmOptions::MAP_RANGE) && flags.contains(MmuFlags::READ) {
                self.map_committed_locked(vmo, &inner, start, len, vmo_offset, flags)
            } else {
                Ok(())
            }
        };
        if let Err(status) = mapped {
            // Out of page-table pages: take the new mapping away again, as an unmap would (a CPU
            // may already have walked the entries that were made).
            tree.node_mut(self.id)?.unlink(&region);
            self.aspace.unlink_mapping(&region, &mut batch);
            result = Err(status);
        }
        drop(tree);
        batch.finish(&**self.aspace.platform());
        result
    }

    /// Maps every committed page of a new mapping (`ZX_VM_MAP_RANGE`).
    fn map_committed_locked(
        &self,
        vmo: &Vmo,
        inner: &VmoInner,
        start: u64,
        len: u64,
        vmo_offset: u64,
        flags: MmuFlags,
    ) -> ZxResult {
        let first = vmo_offset >> PAGE_SHIFT;
        let last = ((vmo_offset + len).min(vmo.size())) >> PAGE_SHIFT;
        let mut mmu = self.aspace.mmu.lock();
        for (index, pa) in vmo.committed_in_locked(inner, first, last.max(first)) {
            let va = start + ((index << PAGE_SHIFT) - vmo_offset);
            mmu.map(&**self.aspace.platform(), va, pa, flags | MmuFlags::USER)?;
        }
        Ok(())
    }

    /// Removes everything in `[start, end)` of this VMAR: mappings (split where they straddle the
    /// ends) and sub-VMARs wholly inside. A sub-VMAR partly inside is `ZX_ERR_INVALID_ARGS`, checked
    /// before anything changes.
    fn unmap_locked(
        &self,
        tree: &mut AspaceTree,
        start: u64,
        end: u64,
        batch: &mut TlbBatch,
    ) -> ZxResult {
        let node = tree.node(self.id)?;
        let partial_vmar = node.any_child_in(start, end, |region| {
            matches!(region.kind(), RegionKind::Vmar(_))
                && (region.base() < start || region.end() > end)
        });
        if partial_vmar {
            return Err(Status::InvalidArgs);
        }
        self.aspace.split_at_bounds(tree, self.id, start, end)?;
        let mut scratch = RangeScratch::take(tree);
        tree.node(self.id)?
            .children_in(start, end, &mut scratch.regions);
        for region in scratch.regions.drain(..) {
            tree.node_mut(self.id)?.unlink(&region);
            match region.kind() {
                RegionKind::Vmar(child) => {
                    tree.destroy_subtree(&self.aspace, *child, &mut scratch.vmar_ids, batch)
                }
                RegionKind::Mapping(_) => self.aspace.unlink_mapping(&region, batch),
            }
        }
        scratch.put(tree);
        Ok(())
    }

    /// `zx_vmar_unmap`: unmaps `[addr, addr + len)` (length rounded up to pages).
    pub fn unmap(&self, addr: u64, len: u64) -> ZxResult {
        let len = page_round_up(len).ok_or(Status::InvalidArgs)?;
        if len == 0 || !is_page_aligned(addr) {
            return Err(Status::InvalidArgs);
        }
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let result = match tree.node(self.id) {
            Err(status) => Err(status),
            Ok(node) => match addr.checked_add(len) {
                Some(end) if node.contains_range(addr, end) => {
                    self.unmap_locked(&mut tree, addr, end, &mut batch)
                }
                _ => Err(Status::InvalidArgs),
            },
        };
        drop(tree);
        batch.finish(platform);
        result
    }

    /// `zx_vmar_protect`: gives the mappings covering `[addr, addr + len)` the permissions in
    /// `options` (`ZX_VM_PERM_*`). The range must be wholly mapped (`ZX_ERR_NOT_FOUND`), and each
    /// mapping must be allowed the permissions (`ZX_ERR_ACCESS_DENIED`).
    pub fn protect(&self, options: VmOptions, addr: u64, len: u64) -> ZxResult {
        if !VmOptions::PERMS.contains(options) || !valid_perms(options) {
            return Err(Status::InvalidArgs);
        }
        let len = page_round_up(len).ok_or(Status::InvalidArgs)?;
        if len == 0 || !is_page_aligned(addr) {
            return Err(Status::InvalidArgs);
        }
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let mut scratch = RangeScratch::take(&mut tree);
        let result = self.protect_locked(&mut tree, options, addr, len, &mut scratch, &mut batch);
        scratch.put(&mut tree);
        drop(tree);
        batch.finish(platform);
        result
    }

    fn protect_locked(
        &self,
        tree: &mut AspaceTree,
        options: VmOptions,
        addr: u64,
        len: u64,
        scratch: &mut RangeScratch,
        batch: &mut TlbBatch,
    ) -> ZxResult {
        let node = tree.node(self.id)?;
        let end = addr.checked_add(len).ok_or(Status::InvalidArgs)?;
        if !node.contains_range(addr, end) {
            return Err(Status::InvalidArgs);
        }
        let RangeScratch {
            walk,
            covered,
            regions,
            ..
        } = scratch;
        tree.covering_mappings(self.id, addr, end, Status::NotFound, walk, covered)?;
        let needed = perms_needing_can_map(options);
        if covered
            .iter()
            .any(|c| !c.mapping().can_map().contains(needed))
        {
            return Err(Status::AccessDenied);
        }
        let flags = perms_to_mmu(options);
        let aspace = &self.aspace;
        for c in covered.iter() {
            aspace.split_at_bounds(tree, c.vmar, c.start, c.end)?;
        }
        let pending = batch.space(aspace);
        let mut mmu = aspace.mmu.lock();
        for c in covered.iter() {
            regions.clear();
            tree.node(c.vmar)?.children_in(c.start, c.end, regions);
            for region in regions.iter() {
                if let Some(mapping) = region.mapping() {
                    mapping.set_flags(flags);
                }
            }
            mmu.protect(
                &**aspace.platform(),
                c.start,
                c.end,
                flags | MmuFlags::USER,
                pending,
            );
        }
        Ok(())
    }

    /// Whether this is its address space's root VMAR.
    pub fn is_root(&self) -> bool {
        self.id == self.aspace.root_vmar
    }

    /// `zx_vmar_destroy`: unmaps everything in the VMAR and destroys it and its sub-VMARs; later
    /// operations on it fail with `ZX_ERR_BAD_STATE`. (The syscall refuses a root VMAR; the kernel
    /// destroys one when its process dies.)
    pub fn destroy(&self) -> ZxResult {
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let parent = match tree.node(self.id) {
            Ok(node) => node.parent,
            Err(status) => {
                drop(tree);
                batch.finish(platform);
                return Err(status);
            }
        };
        if let Some(parent) = parent {
            if let Ok(node) = tree.node_mut(parent) {
                if let Some(region) = node.child_at(self.base) {
                    debug_assert!(matches!(region.kind(), RegionKind::Vmar(id) if *id == self.id));
                    node.unlink(&region);
                }
            }
        }
        let mut scratch = RangeScratch::take(&mut tree);
        tree.destroy_subtree(&self.aspace, self.id, &mut scratch.vmar_ids, &mut batch);
        scratch.put(&mut tree);
        drop(tree);
        batch.finish(platform);
        Ok(())
    }

    /// `ZX_VMAR_OP_DECOMMIT` over `[addr, addr + len)`, after the syscall checked the handle,
    /// the arguments and the rights: checks 5 to 10 of the contract, in its order, all before
    /// anything changes; then decommits the VMO pages behind every mapping in the range, looking
    /// through nested VMARs, from every mapping of those pages in every address space.
    pub fn decommit(&self, addr: u64, len: u64) -> ZxResult {
        // 5. Size rounding and alignment.
        let size = page_round_up(len).ok_or(Status::OutOfRange)?;
        if size == 0 || !is_page_aligned(addr) {
            return Err(Status::InvalidArgs);
        }
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let mut scratch = RangeScratch::take(&mut tree);
        let result = self.decommit_locked(&tree, addr, size, &mut scratch, &mut batch);
        scratch.put(&mut tree);
        drop(tree);
        batch.finish(platform);
        result
    }

    /// The checks 6 to 10 and the decommit itself, under the tree lock.
    fn decommit_locked(
        &self,
        tree: &AspaceTree,
        addr: u64,
        size: u64,
        scratch: &mut RangeScratch,
        batch: &mut TlbBatch,
    ) -> ZxResult {
        // 6. A live VMAR.
        let node = tree.node(self.id)?;
        // 7. Inside the VMAR.
        let end = addr.checked_add(size).ok_or(Status::OutOfRange)?;
        if addr < node.base || end > node.end() {
            return Err(Status::OutOfRange);
        }
        // 8. Every page mapped.
        let RangeScratch {
            walk,
            covered,
            vmos,
            ..
        } = scratch;
        tree.covering_mappings(self.id, addr, end, Status::BadState, walk, covered)?;
        // 9. Every mapping could be writable.
        if covered
            .iter()
            .any(|c| !c.mapping().can_map().contains(VmOptions::CAN_MAP_WRITE))
        {
            return Err(Status::AccessDenied);
        }
        // 10. Every VMO supports decommit, and no page is pinned.
        if covered
            .iter()
            .any(|c| !c.mapping().vmo().supports_decommit())
        {
            return Err(Status::NotSupported);
        }
        vmos.extend(covered.iter().map(|c| c.mapping().vmo().clone()));
        vmos.sort_unstable_by_key(|vmo| vmo.koid());
        vmos.dedup_by_key(|vmo| vmo.koid());
        let locked = HeldVmos::lock(vmos);
        for c in covered.iter() {
            let (first, last) = c.vmo_pages();
            if Vmo::any_pinned_locked(locked.inner(c.mapping().vmo()), first, last) {
                return Err(Status::BadState);
            }
        }
        // Every check passed: now change things.
        for c in covered.iter() {
            let (first, last) = c.vmo_pages();
            let vmo = c.mapping().vmo();
            vmo.decommit_locked(locked.inner(vmo), first, last, batch);
        }
        Ok(())
    }
}

/// Mappings unmapped by an operation: each leaves its VMO's list only after the operation's
/// shootdown round, so that a decommit meanwhile still flushes its address space, and its VMO
/// (which it holds alive) cannot free frames while a TLB may still map them.
#[derive(Default)]
struct Retired(Vec<Arc<Mapping>>);

impl Deferred for Retired {
    unsafe fn after_flush(&mut self, _platform: &dyn Platform) {
        for mapping in self.0.drain(..) {
            let vmo = mapping.vmo().clone();
            Vmo::remove_mapping_locked(&mut vmo.lock(), &mapping);
            // Dropping the region may drop the VMO, which frees its frames: safe now (the
            // caller's promise).
        }
    }

    fn holds_frames(&self) -> bool {
        false
    }

    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}

/// Several VMO locks held at once, taken in koid order (the lock order), without a list of
/// guards: each lock stays held from [`HeldVmos::lock`] until the value drops.
struct HeldVmos<'a> {
    /// Sorted by koid, no duplicates.
    vmos: &'a [Arc<Vmo>],
}

impl<'a> HeldVmos<'a> {
    fn lock(vmos: &'a [Arc<Vmo>]) -> Self {
        for vmo in vmos {
            vmo.lock_held();
        }
        HeldVmos { vmos }
    }

    /// The state of `vmo`, one of the locked VMOs.
    #[allow(clippy::mut_from_ref)] // one VMO's state at a time: see the SAFETY argument
    fn inner<'v>(&self, vmo: &'v Vmo) -> &'v mut VmoInner {
        debug_assert!(self
            .vmos
            .binary_search_by_key(&vmo.koid(), |v| v.koid())
            .is_ok());
        // SAFETY: `vmo` is one of `self.vmos`, whose locks this value holds until it drops; the
        // callers use each returned reference only until they ask for the next one, so no two
        // references to one VMO's state are alive at once.
        unsafe { vmo.held_inner() }
    }
}

impl Drop for HeldVmos<'_> {
    fn drop(&mut self) {
        for vmo in self.vmos.iter().rev() {
            // SAFETY: `lock` took this lock and forgot its guard; no reference from `inner`
            // outlives this value.
            unsafe { vmo.unlock_held() };
        }
    }
}
