//! The seam between this crate and the kernel that links it.
//!
//! A kernel implements [`Platform`] once: where frames come from and go back to, how the kernel
//! reaches physical memory, which CPU is running, and how the TLBs of a set of CPUs are invalidated.
//! The host simulation (`sim` feature) is another implementation, and the one the tests use.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// A physical address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    /// The frame number (address / 4096).
    pub const fn frame_number(self) -> u64 {
        self.0 >> crate::abi::PAGE_SHIFT
    }

    /// The address of frame number `pfn`.
    pub const fn from_frame_number(pfn: u64) -> Self {
        PhysAddr(pfn << crate::abi::PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

/// The most CPUs the crate tracks.
pub const MAX_CPUS: usize = 64;

/// A set of CPUs, as a bitmap of CPU indices below [`MAX_CPUS`].
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuSet(pub u64);

impl CpuSet {
    /// No CPU.
    pub const EMPTY: CpuSet = CpuSet(0);

    /// The set holding only `cpu`.
    pub const fn single(cpu: usize) -> Self {
        CpuSet(1 << cpu)
    }

    /// Whether `cpu` is in the set.
    pub const fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many CPUs are in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The union of two sets.
    pub const fn union(self, other: CpuSet) -> Self {
        CpuSet(self.0 | other.0)
    }

    /// The CPUs in `self` but not in `other`.
    pub const fn difference(self, other: CpuSet) -> Self {
        CpuSet(self.0 & !other.0)
    }

    /// The set without `cpu`.
    pub const fn without(self, cpu: usize) -> Self {
        if cpu < MAX_CPUS {
            CpuSet(self.0 & !(1 << cpu))
        } else {
            self
        }
    }

    /// The CPUs in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let cpu = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(cpu)
        })
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A [`CpuSet`] that CPUs join and leave concurrently, without a lock.
#[derive(Default, Debug)]
pub struct AtomicCpuSet(AtomicU64);

impl From<CpuSet> for AtomicCpuSet {
    fn from(set: CpuSet) -> Self {
        AtomicCpuSet(AtomicU64::new(set.0))
    }
}

impl AtomicCpuSet {
    /// An empty set.
    pub const fn new() -> Self {
        AtomicCpuSet(AtomicU64::new(0))
    }

    /// Adds `cpu`.
    pub fn insert(&self, cpu: usize) {
        assert!(cpu < MAX_CPUS, "CPU index {cpu} is beyond MAX_CPUS");
        // SeqCst: a CPU that joins must be seen by any shootdown that starts after the join, and
        // the page-table reads that follow the join must not move before it.
        self.0.fetch_or(1 << cpu, Ordering::SeqCst);
    }

    /// Removes `cpu`.
    pub fn remove(&self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.0.fetch_and(!(1 << cpu), Ordering::SeqCst);
        }
    }

    /// A snapshot of the set.
    pub fn load(&self) -> CpuSet {
        CpuSet(self.0.load(Ordering::SeqCst))
    }

    /// Adds every CPU of `set`.
    pub fn insert_all(&self, set: CpuSet) {
        if !set.is_empty() {
            self.0.fetch_or(set.0, Ordering::SeqCst);
        }
    }

    /// Removes `cpu`, telling whether it was there.
    pub fn take(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0.fetch_and(!(1 << cpu), Ordering::SeqCst) & (1 << cpu) != 0
    }
}

/// What to invalidate in one address space's translations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbScope<'a> {
    /// These page-aligned virtual addresses (one 4 KiB page each).
    Pages(&'a [u64]),
    /// Every translation of the address space.
    All,
}

/// One invalidation: some or all of one address space's translations.
#[derive(Clone, Copy, Debug)]
pub struct TlbInvalidate<'a> {
    /// The address space's tag: its ASID (aarch64) or PCID (x86_64); 0 for an untagged one.
    pub asid: u16,
    /// The root page table of the address space.
    pub root: PhysAddr,
    /// What to invalidate.
    pub scope: TlbScope<'a>,
    /// Whether page-table pages were freed, so that cached intermediate walks must go too.
    pub tables_freed: bool,
}

/// What a kernel provides to the crate.
///
/// Every method may be called from any CPU, and all but [`Platform::send_ipi`] with the crate's
/// own locks held (see the lock order in [`crate::vmar`]); none may call back into the crate.
pub trait Platform: Send + Sync {
    /// Allocates one 4 KiB frame. Its contents are unspecified; the crate zeroes what it needs.
    fn alloc_frame(&self) -> Option<PhysAddr>;

    /// Allocates `count` physically contiguous frames, for contiguous VMOs. The default has none.
    fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
        let _ = count;
        None
    }

    /// Returns frames to the allocator.
    ///
    /// # Safety
    /// Each frame was returned by [`Platform::alloc_frame`] or is one frame of a range from
    /// [`Platform::alloc_contiguous`], is not freed twice, and no CPU may still reach it: every
    /// page-table entry that pointed at it is gone and every TLB invalidation covering it completed.
    unsafe fn free_frames(&self, frames: &[PhysAddr]);

    /// Where the kernel can read and write the frame at `pa`. The pointer is valid for
    /// [`crate::abi::PAGE_SIZE`] bytes, 8-aligned, for as long as the frame is allocated.
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8;

    /// How many CPUs the machine has (at most [`MAX_CPUS`]).
    fn cpu_count(&self) -> usize;

    /// The index of the CPU running the caller, below [`Platform::cpu_count`].
    fn current_cpu(&self) -> usize;

    /// The machine's TLB-maintenance state, made once by the kernel with [`crate::tlb::Tlb::new`].
    fn tlb(&self) -> &crate::tlb::Tlb;

    /// Sends the TLB-shootdown IPI to every CPU in `targets` (never the caller). The kernel's
    /// handler for it calls [`crate::tlb::Tlb::handle_ipi`]. Called with no crate lock held.
    fn send_ipi(&self, targets: CpuSet);

    /// Carries out `request` in the calling CPU's TLB, whether or not the address space is the
    /// current one there. On bare metal the default runs the architecture's instructions
    /// (`arch::native_tlb::invalidate_local` on x86_64, `invalidate_broadcast` on aarch64); a host
    /// platform (the simulation) must provide it.
    #[cfg(target_os = "none")]
    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        #[cfg(target_arch = "x86_64")]
        crate::arch::native_tlb::invalidate_local(request);
        #[cfg(target_arch = "aarch64")]
        crate::arch::native_tlb::invalidate_broadcast(request);
    }

    /// Carries out `request` in the calling CPU's TLB (see the bare-metal default).
    #[cfg(not(target_os = "none"))]
    fn invalidate_local(&self, request: &TlbInvalidate<'_>);

    /// Whether [`Platform::invalidate_local`] reaches every CPU by itself, as aarch64's
    /// `TLBI ...IS` does; then the crate sends no IPIs.
    fn invalidation_is_broadcast(&self) -> bool {
        cfg!(target_arch = "aarch64")
    }

    /// Called in every turn of a shootdown's wait for acknowledgements (after serving the calling
    /// CPU's own mailbox). The default is a spin-loop hint; a kernel may also poll for its own
    /// cross-CPU work, and a hosted simulation yields its thread.
    fn wait_hint(&self) {
        core::hint::spin_loop();
    }

    /// Makes `root`, tagged `asid`, the calling CPU's user address space; with `flush`, first drops
    /// every translation the CPU holds under that tag. On bare metal the default loads CR3 or
    /// TTBR0_EL1 itself (`arch::native_tlb::load_root`); a host platform must provide it.
    #[cfg(target_os = "none")]
    fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: `root` is an address space's root table, alive while the address space is (the
        // crate calls this only from `AddressSpace::activate`). On x86_64 it holds the kernel's
        // own mappings, which `prepare_root` put there when it was made; on aarch64 the kernel
        // runs from TTBR1_EL1, untouched by the switch. A non-zero tag exists only when the kernel
        // made the `Tlb` with tags, which it does only with PCIDs (x86_64) or ASIDs enabled.
        unsafe { crate::arch::native_tlb::load_root(root, asid, flush) }
    }

    /// Makes `root`, tagged `asid`, the calling CPU's user address space (see the bare-metal
    /// default).
    #[cfg(not(target_os = "none"))]
    fn load_root(&self, root: PhysAddr, asid: u16, flush: bool);

    /// Called once for each new address space, with its empty root table, before it is used. An
    /// x86_64 kernel copies its own upper-half entries (PML4 slots 256-511) in here, so that the
    /// kernel stays mapped under every address space; the crate never touches that half. The
    /// default does nothing (aarch64 kernels run from TTBR1_EL1).
    fn prepare_root(&self, root: PhysAddr) {
        let _ = root;
    }
}
