//! The seam between this crate and the kernel that links it.
//!
//! A kernel implements [`Platform`] once: where frames come from and go back to, how the kernel
//! reaches physical memory, which CPU is running, and how the TLBs of a set of CPUs are invalidated.
//! The host simulation (`sim` feature) is another implementation, and the one the tests use.

mod asid;
mod machine;
pub mod tlbi;

pub use self::asid::AsidAllocator;
pub(crate) use self::machine::{Node, Spare};
pub use self::machine::{Tlb, TlbConfigError};
pub use self::tlbi::{Span, TlbFeatures, TlbInvalidate, TlbScope};

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

/// The atomics of the shootdown protocol: `loom`'s under `cfg(loom)`, so that the
/// handshake can be model-checked, and `core`'s otherwise.
pub(crate) mod sync {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
}

/// The TLB and translation-register instructions of the architecture the crate is compiled for:
/// what the default [`Platform::invalidate_local`] and [`Platform::load_root`] run. Only on bare
/// metal (`target_os = "none"`).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[path = "native_x86_64.rs"]
pub mod native;
/// The TLB and translation-register instructions of the architecture the crate is compiled for:
/// what the default [`Platform::invalidate_local`] and [`Platform::load_root`] run. Only on bare
/// metal (`target_os = "none"`).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[path = "native_aarch64.rs"]
pub mod native;

/// The page-table formats, for choosing one at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// x86_64's 4-level paging ([`crate::arch::X86_64`]).
    X86_64,
    /// VMSAv8-64, 4 KiB granule, 48-bit addresses ([`crate::arch::Aarch64`]).
    Aarch64,
}

impl Format {
    /// Both formats, for tests that run on each.
    pub const ALL: [Format; 2] = [Format::X86_64, Format::Aarch64];

    /// The format of the architecture the crate is compiled for (x86_64 on other hosts).
    pub const NATIVE: Format = if cfg!(target_arch = "aarch64") {
        Format::Aarch64
    } else {
        Format::X86_64
    };

    /// The most ASIDs or PCIDs the format's TLBs can tell apart (tags 1..=max; 0 is untagged):
    /// 4095 PCIDs on x86_64, 65535 ASIDs on aarch64 (16-bit ASIDs, TCR_EL1.AS = 1; a kernel with
    /// 8-bit ASIDs passes at most 255).
    pub const fn max_tags(self) -> u16 {
        match self {
            Format::X86_64 => 4095,
            Format::Aarch64 => u16::MAX,
        }
    }

    /// The format's name.
    pub const fn name(self) -> &'static str {
        match self {
            Format::X86_64 => "x86_64",
            Format::Aarch64 => "aarch64",
        }
    }
}

/// How normal memory (user pages) is described to the MMU. aarch64 only: x86_64 pages use PAT
/// entry 0, write-back after reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryAttributes {
    /// The MAIR_EL1 attribute index (0-7) that the kernel programmed as normal write-back memory.
    pub mair_index: u8,
    /// The shareability of user pages.
    pub shareability: Shareability,
}

impl MemoryAttributes {
    /// Attribute index 0, inner shareable: what the crate used before it asked.
    pub const DEFAULT: MemoryAttributes = MemoryAttributes {
        mair_index: 0,
        shareability: Shareability::Inner,
    };

    /// Whether the values can be encoded (an index below 8).
    pub const fn is_valid(self) -> bool {
        self.mair_index < 8
    }
}

impl Default for MemoryAttributes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The shareability domain of normal memory (aarch64 SH bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shareability {
    /// SH = 0b00.
    Non,
    /// SH = 0b10.
    Outer,
    /// SH = 0b11: every CPU of an SMP system.
    Inner,
}

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

/// What a kernel provides to the crate.
///
/// Every method may be called from any CPU, and all but [`Platform::send_ipi`] with the crate's
/// own locks held (see the lock order in [`crate::vmar`]); none may call back into the crate.
///
/// # Safety
///
/// The crate's `unsafe` code trusts what these methods answer, so an implementation promises:
/// - [`Platform::alloc_frame`], [`Platform::alloc_contiguous`] and
///   [`Platform::alloc_aligned_run`] hand out frames of RAM that
///   nothing else uses until the crate gives them back through [`Platform::free_frames`], and never
///   the same frame twice while it is allocated.
/// - [`Platform::phys_to_virt`] returns, for every frame the allocator handed out (and every frame
///   of a physical VMO the kernel creates), a pointer valid for reads and writes of
///   [`crate::abi::PAGE_SIZE`] bytes, 8-aligned, for as long as the frame is allocated, through a
///   mapping of the same memory type the MMU uses for page tables and user pages (normal
///   write-back memory). Page-table pages are reached through it too.
/// - [`Platform::current_cpu`] answers the index of the calling CPU, below the CPU count given
///   to [`Tlb::new`], and keeps answering the same index between
///   [`Platform::preempt_disable`] and [`Platform::preempt_enable`] (the thread does not migrate).
/// - [`Platform::tlb`] always returns the same [`Tlb`].
/// - [`Platform::send_ipi`] makes every target CPU run [`Tlb::handle_ipi`] once its
///   interrupts are enabled, and the heap is usable from that handler's context (the crate's
///   handler does not allocate, but a kernel's own handler code may).
/// - [`Platform::invalidate_local`] carries out the request on the calling CPU (on every CPU, when
///   [`Platform::invalidation_is_broadcast`] answers true), complete when it returns.
/// - [`Platform::load_root`] and [`Platform::load_kernel_root`] do what their documentation says,
///   and [`Platform::prepare_root`] leaves the root's user range empty.
pub unsafe trait Platform: Send + Sync {
    /// Allocates one 4 KiB frame. Its contents are unspecified; the crate zeroes what it needs.
    fn alloc_frame(&self) -> Option<PhysAddr>;

    /// Allocates `count` physically contiguous frames, for contiguous VMOs. Optional: the default
    /// has none.
    fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
        let _ = count;
        None
    }

    /// Allocates `count` physically contiguous frames whose first is aligned to `count` frames
    /// (`count` a power of two): a run that a large leaf can map, for paged VMOs made with
    /// [`crate::vmo::Vmo::create_large_pages`]. Optional: the default has none, and such VMOs then
    /// commit 4 KiB pages.
    fn alloc_aligned_run(&self, count: usize) -> Option<PhysAddr> {
        let _ = count;
        None
    }

    /// Returns the `count` frames from `base` to the allocator in one call: a run that
    /// [`Platform::alloc_aligned_run`] handed out, leaving a VMO whole (a run that lost pages
    /// goes back through [`Platform::free_frames`], the rest of it page by page). The default
    /// frees them page by page through [`Platform::free_frames`].
    ///
    /// # Safety
    /// As for [`Platform::free_frames`], for each frame of the run.
    unsafe fn free_run(&self, base: PhysAddr, count: usize) {
        let mut batch = [PhysAddr(0); 64];
        let mut done = 0;
        while done < count {
            let n = (count - done).min(batch.len());
            for (i, slot) in batch[..n].iter_mut().enumerate() {
                *slot = PhysAddr(base.0 + ((done + i) as u64) * crate::abi::PAGE_SIZE);
            }
            // SAFETY: forwarded from the caller, frame by frame.
            unsafe { self.free_frames(&batch[..n]) };
            done += n;
        }
    }

    /// Returns several runs of `count` frames each, every one as [`Platform::free_run`] returns
    /// one (which the default calls, run by run): each base is one that
    /// [`Platform::alloc_aligned_run`] handed out for `count` frames. A decommit of many whole
    /// runs gives them back in batches of up to 64, so that an allocator can take its lock once
    /// per batch rather than once per run; no run is ever split across calls.
    ///
    /// # Safety
    /// As for [`Platform::free_run`], for each run.
    unsafe fn free_runs(&self, bases: &[PhysAddr], count: usize) {
        for &base in bases {
            // SAFETY: forwarded from the caller, run by run.
            unsafe { self.free_run(base, count) };
        }
    }

    /// Returns frames to the allocator.
    ///
    /// # Safety
    /// Each frame was returned by [`Platform::alloc_frame`] or is one frame of a range from
    /// [`Platform::alloc_contiguous`] or [`Platform::alloc_aligned_run`] (the crate frees the
    /// frames of a run one by one once part of it was decommitted), is not freed twice, and no CPU may still reach it: every
    /// page-table entry that pointed at it is gone and every TLB invalidation covering it completed.
    unsafe fn free_frames(&self, frames: &[PhysAddr]);

    /// Where the kernel can read and write the frame at `pa`: valid for
    /// [`crate::abi::PAGE_SIZE`] bytes, 8-aligned, for as long as the frame is allocated (e.g. a
    /// direct map of physical memory at a fixed offset).
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8;

    /// The index of the CPU running the caller, below the CPU count given to
    /// [`Tlb::new`] (the crate's one source for the number of CPUs).
    fn current_cpu(&self) -> usize;

    /// The memory attributes of user pages (aarch64: the MAIR_EL1 index the kernel programmed as
    /// normal write-back memory, and the shareability). Optional: the default is index 0, inner
    /// shareable. On bare-metal aarch64 the crate reads MAIR_EL1 when it makes an address space
    /// and refuses an index that holds a Device attribute.
    fn memory_attributes(&self) -> MemoryAttributes {
        MemoryAttributes::DEFAULT
    }

    /// The shared zero page: one frame of zeroes that the kernel never writes, never frees and
    /// never hands out, for as long as the platform lives. A read fault on an uncommitted page of a
    /// paged VMO maps it read-only instead of committing a frame; the first write replaces it.
    /// The crate never maps it writable, never writes or frees it, and never counts it as
    /// committed. Optional: the default has none, and a read fault commits a zeroed frame.
    /// (Part of the `unsafe trait`'s contract: user code can read this frame.)
    fn zero_frame(&self) -> Option<PhysAddr> {
        None
    }

    /// Keeps the calling thread on its CPU until the matching [`Platform::preempt_enable`]; calls
    /// nest. The crate calls it through [`CpuPin`] around every shootdown and activation. Optional:
    /// the default does nothing, which is right for a kernel that never migrates a thread while it
    /// runs kernel code (no kernel preemption, or the crate is only entered with interrupts off).
    fn preempt_disable(&self) {}

    /// Undoes one [`Platform::preempt_disable`]. Optional, as that is.
    fn preempt_enable(&self) {}

    /// The machine's TLB-maintenance state, made once by the kernel with [`Tlb::new`].
    fn tlb(&self) -> &Tlb;

    /// Sends the TLB-shootdown IPI to every CPU in `targets` (never the caller). The kernel's
    /// handler for it calls [`Tlb::handle_ipi`]. Called with no crate lock held.
    /// Never called when [`Platform::invalidation_is_broadcast`] answers true; the default, for
    /// such a platform (and a single-CPU one, which has no other CPU to send to), does nothing.
    fn send_ipi(&self, targets: CpuSet) {
        let _ = targets;
    }

    /// Carries out `request` in the calling CPU's TLB, whether or not the address space is the
    /// current one there. On bare metal the default runs the architecture's instructions
    /// (`platform::native::invalidate_local` on x86_64, `invalidate_broadcast` on aarch64); a host
    /// platform (the simulation) must provide it.
    #[cfg(target_os = "none")]
    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        #[cfg(target_arch = "x86_64")]
        self::native::invalidate_local(request);
        #[cfg(target_arch = "aarch64")]
        self::native::invalidate_broadcast(request);
    }

    /// Carries out `request` in the calling CPU's TLB (see the bare-metal default).
    #[cfg(not(target_os = "none"))]
    fn invalidate_local(&self, request: &TlbInvalidate<'_>);

    /// What the CPUs' TLB maintenance offers beyond single pages: arm64 range TLBIs and level
    /// hints, AMD's INVLPGB. Called at every shootdown, so a kernel answers a value it read at
    /// boot. Every CPU must have what this answers. Optional: on bare metal the default reads it
    /// once from the boot CPU (`ID_AA64ISAR0_EL1.TLB` and `ID_AA64MMFR2_EL1.TTL` on aarch64,
    /// `CPUID 0x8000_0008` on x86_64); on a host it answers [`TlbFeatures::NONE`].
    fn tlb_features(&self) -> TlbFeatures {
        #[cfg(target_os = "none")]
        {
            TlbFeatures::once(self::native::tlb_features)
        }
        #[cfg(not(target_os = "none"))]
        {
            TlbFeatures::NONE
        }
    }

    /// Starts `request` on every CPU with one broadcast per piece (x86_64 INVLPGB) and returns
    /// without waiting; [`Platform::sync_broadcast`] waits. Called instead of IPIs, only when
    /// [`Platform::tlb_features`] reports INVLPGB and the address space has a tag (the same on
    /// every CPU, see [`AsidAllocator`]). On bare-metal x86_64 the default issues the INVLPGBs;
    /// elsewhere it carries `request` out locally (a platform that reports INVLPGB on a host
    /// must provide both).
    fn invalidate_broadcast(&self, request: &TlbInvalidate<'_>) {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        self::native::invalidate_broadcast(request);
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        self.invalidate_local(request);
    }

    /// Waits until every [`Platform::invalidate_broadcast`] this CPU issued has completed on
    /// every CPU (x86_64 TLBSYNC). Called once per shootdown round that broadcast, on the CPU
    /// that broadcast (the round is pinned). The default runs TLBSYNC on bare-metal x86_64 and
    /// does nothing elsewhere.
    fn sync_broadcast(&self) {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        self::native::sync_broadcast();
    }

    /// The largest leaf the crate may put in a page table: 0 (4 KiB pages only), 1 (2 MiB
    /// leaves too) or 2 (1 GiB leaves too); higher answers count as 2. Optional: the default
    /// answers 2 on aarch64 (with a 4 KiB granule, level-2 and level-1 block descriptors always
    /// exist), on bare-metal x86_64 2 where CPUID reports 1 GiB pages and 1 otherwise, and 2 on a
    /// host (the simulation). A kernel answers 0 to keep every mapping in 4 KiB pages.
    fn max_leaf_level(&self) -> usize {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        {
            self::native::max_leaf_level()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        {
            2
        }
    }

    /// Whether [`Platform::invalidate_local`] reaches every CPU by itself, as aarch64's
    /// `TLBI ...IS` does; then the crate sends no IPIs. Optional: the default says true on aarch64.
    fn invalidation_is_broadcast(&self) -> bool {
        cfg!(target_arch = "aarch64")
    }

    /// Called in every turn of a shootdown's wait for acknowledgements (after serving the calling
    /// CPU's own mailbox). Optional: the default is a spin-loop hint; a kernel may also poll for
    /// its own cross-CPU work, and a hosted simulation yields its thread.
    fn wait_hint(&self) {
        core::hint::spin_loop();
    }

    /// Makes `root`, tagged `asid`, the calling CPU's user address space; with `flush`, first
    /// drops every translation the CPU holds under that tag. The crate calls it only from
    /// [`crate::vmar::AddressSpace::activate`]. On bare metal the default loads CR3 or
    /// TTBR0_EL1 itself (`platform::native::load_root`); a host platform must provide it.
    ///
    /// # Safety
    /// `root` is the root table of a live address space, prepared by [`Platform::prepare_root`],
    /// which stays alive while it is loaded; the caller runs pinned to its CPU.
    #[cfg(target_os = "none")]
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: forwarded from the caller: `root` is a live, prepared root table. On x86_64 it
        // holds the kernel's own mappings (`prepare_root`); on aarch64 the kernel runs from
        // TTBR1_EL1, untouched by the switch. A non-zero tag exists only when the kernel made the
        // `Tlb` with tags, which it does only with PCIDs (x86_64) or ASIDs enabled.
        unsafe { self::native::load_root(root, asid, flush) }
    }

    /// Makes `root`, tagged `asid`, the calling CPU's user address space (see the bare-metal
    /// default).
    ///
    /// # Safety
    /// As for the bare-metal default.
    #[cfg(not(target_os = "none"))]
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool);

    /// Makes the calling CPU run with no user address space: x86_64 loads the kernel's own root
    /// table (one without user mappings); aarch64 loads an empty table into TTBR0_EL1 (or sets
    /// TCR_EL1.EPD0). Afterwards no TLB entry or cached walk of the CPU comes from a user root
    /// loaded before (loading another root drops non-global translations when untagged; tagged
    /// ones stay under their tag, which the crate tracks). The crate calls it only from
    /// [`crate::vmar::AddressSpace::deactivate`].
    ///
    /// # Safety
    /// The caller runs pinned to its CPU and touches no user address until it activates an
    /// address space again.
    unsafe fn load_kernel_root(&self);

    /// Called once for each new address space, with its empty root table, before it is used. An
    /// x86_64 kernel copies its own entries in here (the upper half, PML4 slots 256-511, and any
    /// lower-half slot it keeps outside the address space's user range), so that the kernel
    /// stays mapped under every address space; the crate never touches an entry outside the user
    /// range, and [`crate::vmar::AddressSpace::new`] checks afterwards that the user range is
    /// still empty and (x86_64) that some kernel entry is there. Optional: the default does
    /// nothing, which is right for aarch64 kernels (they run from TTBR1_EL1).
    fn prepare_root(&self, root: PhysAddr) {
        let _ = root;
    }
}

/// The calling thread, pinned to its CPU for as long as the value lives: the crate reads the CPU
/// index once and relies on it (a shootdown flushes this CPU and serves its mailbox; an
/// activation records this CPU in an address space's active set). Made by [`CpuPin::new`], which
/// calls [`Platform::preempt_disable`]; dropping it calls [`Platform::preempt_enable`]. Not `Send`.
pub struct CpuPin<'a> {
    platform: &'a dyn Platform,
    cpu: usize,
    _not_send: PhantomData<*const ()>,
}

impl<'a> CpuPin<'a> {
    /// Pins the calling thread to its CPU.
    ///
    /// # Panics
    /// If [`Platform::current_cpu`] answers an index at or above the CPU count of the platform's
    /// [`Tlb`]: a broken `Platform` implementation, never a caller's argument.
    pub fn new(platform: &'a dyn Platform) -> Self {
        platform.preempt_disable();
        let cpu = platform.current_cpu();
        let cpus = platform.tlb().cpu_count();
        if cpu >= cpus {
            platform.preempt_enable();
            panic!("Platform::current_cpu() answered {cpu}, but the Tlb was made for {cpus} CPUs");
        }
        CpuPin {
            platform,
            cpu,
            _not_send: PhantomData,
        }
    }

    /// The CPU's index.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The platform.
    pub fn platform(&self) -> &'a dyn Platform {
        self.platform
    }
}

impl Drop for CpuPin<'_> {
    fn drop(&mut self) {
        self.platform.preempt_enable();
    }
}

#[cfg(test)]
mod tests;
