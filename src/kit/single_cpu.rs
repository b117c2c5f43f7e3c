//! A ready [`Platform`] for a kernel that runs on one CPU.
//!
//! [`SingleCpu`] puts together everything the crate asks of a uniprocessor kernel:
//! - frames from a [`FreeListFrames`] over the kernel's [`FrameSource`];
//! - `phys_to_virt` through a [`PhysMapper`], normally the direct map ([`DirectMap`]);
//! - a [`Tlb`] for 1 CPU. `current_cpu` is always 0, no IPI is ever sent, and
//!   `invalidation_is_broadcast` is false: the crate invalidates on the one CPU through
//!   [`CpuOps::invalidate_local`], and flushes an address space's tag when it comes back to it;
//! - the CPU-specific part behind the small [`CpuOps`] trait: `NativeCpu` on bare metal, a
//!   recording fake in host tests;
//! - `prepare_root`, which copies the kernel's root-table entries (the [`KernelSlots`]) from the
//!   kernel's own root table into every new address space's root.
//!
//! Which root slots to copy is a [`KernelSlots`] set, given once at construction; its module
//! ([`super::slots`]) says how to choose them.

use super::frames::{DirectMap, FrameSource, FrameStats, FreeListFrames, PhysMapper};
pub use super::slots::{KernelSlots, SlotError};
use crate::abi::PAGE_SIZE;
use crate::arch::{Format, MemoryAttributes};
use crate::platform::{PhysAddr, Platform, TlbInvalidate};
use crate::tlb::{Tlb, TlbConfigError};
use core::fmt;

/// The CPU-specific part of a [`SingleCpu`]: loading roots and invalidating the local TLB.
///
/// # Safety
/// Each method does what the [`Platform`] method of the same name promises:
/// [`CpuOps::load_root`] makes `root` (tagged `asid`, flushed first with `flush`) the CPU's user
/// address space; [`CpuOps::load_kernel_root`] leaves the CPU with no user address space and no
/// translation from one loaded before (bar tagged ones under their tag);
/// [`CpuOps::invalidate_local`] carries the request out on the CPU, complete when it returns.
pub unsafe trait CpuOps: Send + Sync {
    /// As [`Platform::load_root`].
    ///
    /// # Safety
    /// As for [`Platform::load_root`].
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool);

    /// As [`Platform::load_kernel_root`].
    ///
    /// # Safety
    /// As for [`Platform::load_kernel_root`].
    unsafe fn load_kernel_root(&self);

    /// As [`Platform::invalidate_local`].
    fn invalidate_local(&self, request: &TlbInvalidate<'_>);
}

/// The real instructions, through the crate's `platform::native`: CR3 and INVLPG/INVPCID on
/// x86_64, TTBR0_EL1 and TLBI on aarch64. Bare metal only.
///
/// Without user address space, x86_64 runs on the kernel's own root table (given at
/// construction); aarch64 runs on an empty table loaded into TTBR0_EL1 (its kernel lives behind
/// TTBR1_EL1).
#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[derive(Debug)]
pub struct NativeCpu {
    /// x86_64: the kernel's root table; aarch64: an empty table.
    idle_root: PhysAddr,
}

#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
impl NativeCpu {
    /// x86_64: the CPU runs on `kernel_root` when no user address space is loaded.
    ///
    /// # Safety
    /// `kernel_root` is the kernel's live PML4 (the one in CR3 at boot): it maps the kernel's
    /// code, stack and data, and stays allocated for good. It is loaded with PCID 0.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn new(kernel_root: PhysAddr) -> Self {
        NativeCpu {
            idle_root: kernel_root,
        }
    }

    /// aarch64: the CPU loads `empty_table` into TTBR0_EL1, with ASID 0, when no user address
    /// space is loaded.
    ///
    /// # Safety
    /// `empty_table` is a zeroed 4 KiB frame, used for nothing else and never freed: every
    /// lower-half access through it faults.
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn with_empty_table(empty_table: PhysAddr) -> Self {
        NativeCpu {
            idle_root: empty_table,
        }
    }

    /// The table loaded when no user address space is: the kernel's root (x86_64) or the empty
    /// table (aarch64).
    pub fn idle_root(&self) -> PhysAddr {
        self.idle_root
    }
}

#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
// SAFETY: `native_tlb::load_root` loads CR3 / TTBR0_EL1 as `Platform::load_root` promises (and
// the crate's own bare-metal default does the same). Loading the idle root with tag 0 and a flush
// leaves no translation of a user root (x86_64: CR3 with PCID 0 drops untagged non-global
// entries, and tagged ones stay under their PCID; aarch64: the empty table and TLBI ASIDE1 of
// ASID 0). `invalidate_local` is the crate's bare-metal default: INVLPG/INVPCID on x86_64, TLBI
// ...IS on aarch64 (which on one CPU is the local invalidation).
unsafe impl CpuOps for NativeCpu {
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: forwarded from the caller (`Platform::load_root`'s contract).
        unsafe { crate::platform::native::load_root(root, asid, flush) }
    }

    unsafe fn load_kernel_root(&self) {
        // SAFETY: the idle root maps the kernel (x86_64: it is the kernel's own root, `new`'s
        // contract) or is an empty lower-half table while the kernel runs from TTBR1_EL1
        // (aarch64, `with_empty_table`'s contract); the caller touches no user address next.
        unsafe { crate::platform::native::load_root(self.idle_root, 0, true) }
    }

    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        #[cfg(target_arch = "x86_64")]
        crate::platform::native::invalidate_local(request);
        #[cfg(target_arch = "aarch64")]
        crate::platform::native::invalidate_broadcast(request);
    }
}

/// What a [`SingleCpu`] is built with, besides its frames and its [`CpuOps`].
#[derive(Clone, Copy, Debug)]
pub struct SingleCpuConfig {
    /// The page-table format of the [`Tlb`] (its tag limit). Default: [`Format::NATIVE`].
    pub format: Format,
    /// ASIDs/PCIDs for [`Tlb::new`]. Default 0: untagged, which needs nothing of the CPU. x86_64
    /// may pass up to 4095 only with CR4.PCIDE set and INVPCID present; aarch64 up to 255 with
    /// 8-bit ASIDs, or 65535 with TCR_EL1.AS set.
    pub tags: u16,
    /// The kernel's own root table: the one in CR3 at boot on x86_64 (`Cr3::read()`). Its
    /// `kernel_slots` entries are copied into every new root. Unused (any aligned address) when
    /// `kernel_slots` is empty.
    pub kernel_root: PhysAddr,
    /// The root slots to copy: see the module docs. On x86_64 every present entry of the kernel
    /// root must be among them (`SingleCpuError::KernelEntriesOutsideSlots` otherwise): an entry
    /// left out is a kernel mapping (bootloader 0.9's identity map of low memory, a heap in the
    /// lower half) that vanishes while a process runs.
    pub kernel_slots: KernelSlots,
    /// aarch64: the MAIR_EL1 index the kernel programmed as normal write-back memory, and the
    /// shareability ([`Platform::memory_attributes`]). Default index 0, inner shareable; a kernel
    /// whose index 0 is Device memory must set it, or address spaces are refused
    /// (`ZX_ERR_BAD_STATE`).
    pub memory_attributes: MemoryAttributes,
}

impl SingleCpuConfig {
    /// The native format, no tags, and the kernel's root and slots.
    pub const fn new(kernel_root: PhysAddr, kernel_slots: KernelSlots) -> Self {
        SingleCpuConfig {
            format: Format::NATIVE,
            tags: 0,
            kernel_root,
            kernel_slots,
            memory_attributes: MemoryAttributes::DEFAULT,
        }
    }
}

/// Why a [`SingleCpu`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SingleCpuError {
    /// [`Tlb::new`] refused the tag count.
    Tlb(TlbConfigError),
    /// The kernel root is not 4 KiB aligned.
    UnalignedKernelRoot(PhysAddr),
    /// x86_64 format: none of the kernel slots holds a present entry in the kernel root, so every
    /// address space would unmap the kernel (the crate would refuse to make one).
    NoKernelEntries,
    /// x86_64 format: the kernel root has a present entry in `slot`, which is not among the
    /// kernel slots: that kernel mapping would vanish whenever a process runs.
    KernelEntriesOutsideSlots {
        /// The first such slot.
        slot: usize,
    },
    /// The memory-attribute index is above 7.
    BadMemoryAttributes,
    /// No frame for the setup (aarch64: the empty table of `NativeCpu`).
    NoMemory,
}

impl From<TlbConfigError> for SingleCpuError {
    fn from(error: TlbConfigError) -> Self {
        SingleCpuError::Tlb(error)
    }
}

impl fmt::Display for SingleCpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SingleCpuError::Tlb(error) => write!(f, "TLB configuration: {error}"),
            SingleCpuError::UnalignedKernelRoot(pa) => {
                write!(f, "the kernel root table {pa:?} is not 4 KiB aligned")
            }
            SingleCpuError::KernelEntriesOutsideSlots { slot } => write!(
                f,
                "the kernel root has an entry in slot {slot}, outside the kernel slots: that \
                 mapping would vanish while a process runs (add the slot, and keep user ranges \
                 clear of it)"
            ),
            SingleCpuError::BadMemoryAttributes => {
                f.write_str("the MAIR_EL1 attribute index is above 7")
            }
            SingleCpuError::NoKernelEntries => f.write_str(
                "none of the kernel slots holds a present entry in the kernel's root table",
            ),
            SingleCpuError::NoMemory => f.write_str("no frame for the setup"),
        }
    }
}

/// A [`Platform`] for one CPU: see the module docs.
pub struct SingleCpu<S, C, M = DirectMap> {
    frames: FreeListFrames<S, M>,
    cpu: C,
    tlb: Tlb,
    format: Format,
    kernel_root: PhysAddr,
    kernel_slots: KernelSlots,
    memory_attributes: MemoryAttributes,
}

/// The x86_64 present bit, the same bit as aarch64's valid bit.
const PRESENT: u64 = 1;

impl<S: FrameSource, C: CpuOps> SingleCpu<S, C, DirectMap> {
    /// The platform over `source`, with physical memory mapped at `phys_offset`.
    ///
    /// # Safety
    /// What the kernel guarantees:
    /// - the direct map at `phys_offset` maps all RAM (every frame `source` hands out and the
    ///   kernel root) readable and writable, as normal write-back memory, for good;
    /// - `source` keeps [`FrameSource`]'s contract;
    /// - `config.kernel_root` is the kernel's live root table, whose `config.kernel_slots`
    ///   entries map the kernel (x86_64);
    /// - the machine runs one CPU (or the crate is only ever entered on one): the platform
    ///   answers CPU 0 for `current_cpu`, and sends no IPI;
    /// - `cpu` acts on that CPU.
    pub unsafe fn new(
        source: S,
        cpu: C,
        phys_offset: u64,
        config: SingleCpuConfig,
    ) -> Result<Self, SingleCpuError> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::with_mapper(source, cpu, DirectMap::new(phys_offset), config) }
    }
}

#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
impl<S: FrameSource> SingleCpu<S, NativeCpu, DirectMap> {
    /// The platform with the real instructions ([`NativeCpu`]): on x86_64 the idle root is
    /// `config.kernel_root`; on aarch64 a zeroed frame taken from `source` now.
    ///
    /// # Safety
    /// As for [`SingleCpu::new`], on the CPU this runs on.
    pub unsafe fn native(
        source: S,
        phys_offset: u64,
        config: SingleCpuConfig,
    ) -> Result<Self, SingleCpuError> {
        let map = DirectMap::new(phys_offset);
        // SAFETY: forwarded from the caller: the direct map reaches every frame of `source`.
        let frames = unsafe { FreeListFrames::new(source, map) };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller guarantees `kernel_root` is the kernel's live root table.
        let cpu = unsafe { NativeCpu::new(config.kernel_root) };
        #[cfg(target_arch = "aarch64")]
        let cpu = {
            let empty = frames.alloc().ok_or(SingleCpuError::NoMemory)?;
            // SAFETY: the frame is ours (just allocated), and the direct map reaches its 4 KiB.
            unsafe { core::ptr::write_bytes(map.phys_to_virt(empty), 0, PAGE_SIZE as usize) };
            // SAFETY: a zeroed frame, kept by the `NativeCpu` for good (never freed).
            unsafe { NativeCpu::with_empty_table(empty) }
        };
        // SAFETY: forwarded from the caller.
        unsafe { Self::from_frames(frames, cpu, config) }
    }
}

impl<S: FrameSource, C: CpuOps, M: PhysMapper> SingleCpu<S, C, M> {
    /// As [`SingleCpu::new`], with physical memory reached through `map`.
    ///
    /// # Safety
    /// As for [`SingleCpu::new`], with `map` in place of the direct map: it reaches every frame
    /// `source` hands out and the kernel root, for [`PAGE_SIZE`] bytes, 8-aligned.
    pub unsafe fn with_mapper(
        source: S,
        cpu: C,
        map: M,
        config: SingleCpuConfig,
    ) -> Result<Self, SingleCpuError> {
        // SAFETY: forwarded from the caller.
        let frames = unsafe { FreeListFrames::new(source, map) };
        // SAFETY: forwarded from the caller.
        unsafe { Self::from_frames(frames, cpu, config) }
    }

    /// As [`SingleCpu::with_mapper`], over a free list the kernel has already made (and may have
    /// used).
    ///
    /// # Safety
    /// As for [`SingleCpu::with_mapper`]; `frames`' mapper reaches the kernel root too.
    pub unsafe fn from_frames(
        frames: FreeListFrames<S, M>,
        cpu: C,
        config: SingleCpuConfig,
    ) -> Result<Self, SingleCpuError> {
        let tlb = Tlb::new(1, config.tags, config.format)?;
        if config.kernel_root.0 % PAGE_SIZE != 0 {
            return Err(SingleCpuError::UnalignedKernelRoot(config.kernel_root));
        }
        if !config.memory_attributes.is_valid() {
            return Err(SingleCpuError::BadMemoryAttributes);
        }
        let piece = SingleCpu {
            frames,
            cpu,
            tlb,
            format: config.format,
            kernel_root: config.kernel_root,
            kernel_slots: config.kernel_slots,
            memory_attributes: config.memory_attributes,
        };
        if config.format == Format::X86_64
            && !config
                .kernel_slots
                .iter()
                .any(|slot| piece.kernel_entry(slot) & PRESENT != 0)
        {
            return Err(SingleCpuError::NoKernelEntries);
        }
        if config.format == Format::X86_64 {
            let outside = (0..512).find(|&slot| {
                !config.kernel_slots.contains(slot) && piece.kernel_entry(slot) & PRESENT != 0
            });
            if let Some(slot) = outside {
                return Err(SingleCpuError::KernelEntriesOutsideSlots { slot });
            }
        }
        Ok(piece)
    }

    /// Entry `slot` (below 512) of the kernel root.
    fn kernel_entry(&self, slot: usize) -> u64 {
        let table = self
            .frames
            .mapper()
            .phys_to_virt(self.kernel_root)
            .cast::<u64>();
        // SAFETY: the constructor's caller guaranteed the mapper reaches the kernel root for
        // 4 KiB, 8-aligned; `slot` < 512 keeps the read inside it. Volatile: the kernel may
        // change its root behind the compiler's back.
        unsafe { table.add(slot).read_volatile() }
    }

    /// The frame allocator, which the kernel may use for its own frames too.
    pub fn frames(&self) -> &FreeListFrames<S, M> {
        &self.frames
    }

    /// The frame counts.
    pub fn frame_stats(&self) -> FrameStats {
        self.frames.stats()
    }

    /// The CPU operations.
    pub fn cpu(&self) -> &C {
        &self.cpu
    }

    /// The page-table format the [`Tlb`] was made for.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The kernel root table.
    pub fn kernel_root(&self) -> PhysAddr {
        self.kernel_root
    }

    /// The root slots copied into every new root.
    pub fn kernel_slots(&self) -> KernelSlots {
        self.kernel_slots
    }
}

// SAFETY: the constructors' callers guaranteed what the trait asks for: frames come from the
// `FreeListFrames` (fresh from a `FrameSource`, whose contract makes them unused RAM, or freed
// back by the crate), each handed out once until freed; `phys_to_virt` is the mapper they vouched
// for; one CPU, so `current_cpu` is 0, below the `Tlb`'s count of 1, and never changes; `tlb` is
// always the same; `send_ipi` is never needed (no other CPU); `CpuOps`' contract covers the TLB
// and root operations; `prepare_root` writes only the kernel slots, which the kernel keeps clear
// of its address spaces' user ranges (checked by the crate after `prepare_root`).
unsafe impl<S: FrameSource, C: CpuOps, M: PhysMapper> Platform for SingleCpu<S, C, M> {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        self.frames.alloc()
    }

    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        // SAFETY: the crate frees only frames it allocated here, once each, after every use.
        unsafe { self.frames.free_all(frames) }
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        self.frames.mapper().phys_to_virt(pa)
    }

    fn current_cpu(&self) -> usize {
        0
    }

    fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        self.cpu.invalidate_local(request);
    }

    fn invalidation_is_broadcast(&self) -> bool {
        false
    }

    fn memory_attributes(&self) -> MemoryAttributes {
        self.memory_attributes
    }

    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: forwarded from the caller.
        unsafe { self.cpu.load_root(root, asid, flush) }
    }

    unsafe fn load_kernel_root(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.cpu.load_kernel_root() }
    }

    fn prepare_root(&self, root: PhysAddr) {
        let table = self.frames.mapper().phys_to_virt(root).cast::<u64>();
        for slot in self.kernel_slots.iter() {
            let entry = self.kernel_entry(slot);
            // SAFETY: `root` is a new root table the crate allocated from this platform, so the
            // mapper reaches its 4 KiB, 8-aligned, and nothing else uses it yet; `slot` < 512.
            unsafe { table.add(slot).write_volatile(entry) };
        }
    }
}

#[cfg(test)]
mod tests;
