//! An integration kit for hobby kernels: the pieces between a small kernel and [`Platform`].
//!
//! A typical first kernel on x86_64 boots with bootloader 0.9. It has the `x86_64` crate, a
//! direct map of physical memory at `BootInfo::physical_memory_offset`, an `OffsetPageTable`,
//! a bump frame allocator over the boot memory map that cannot free, and one CPU. This module
//! supplies what is missing between that and the crate:
//!
//! - [`frames`]: [`FreeListFrames`](frames::FreeListFrames), a thread-safe frame allocator that
//!   frees. It sits over any [`FrameSource`](frames::FrameSource) (a source that can only
//!   allocate), keeps freed frames on a free list stored inside the freed frames themselves (no
//!   heap), and hands them out again before it asks the source. It also has
//!   [`DirectMap`](frames::DirectMap), the `offset + pa` mapping.
//! - [`single_cpu`]: [`SingleCpu`](single_cpu::SingleCpu), a ready [`Platform`] for one CPU. It
//!   holds the free list, a 1-CPU [`Tlb`](crate::tlb::Tlb), the direct map, and a
//!   `prepare_root` that copies the kernel's root-table slots
//!   ([`KernelSlots`](single_cpu::KernelSlots)) into every new root. Its CPU instructions sit
//!   behind [`CpuOps`](single_cpu::CpuOps), which `NativeCpu` implements on bare metal.
//! - `x86` (x86_64 targets only, the x86_64 host included): conversions between this crate's
//!   [`PhysAddr`](crate::PhysAddr) and the `x86_64` crate's `PhysAddr` and
//!   `PhysFrame<Size4KiB>`; decoding of the #PF error code into an [`Access`](crate::vmar::Access);
//!   and frame-allocator adapters in both directions. `X86Frames` turns a
//!   `FrameAllocator<Size4KiB>` into a `FrameSource`, and `&FreeListFrames` is a
//!   `FrameAllocator<Size4KiB>`, so that `OffsetPageTable` takes frames from the same pool.
//! - [`aarch64_esr`]: decoding of `ESR_EL1` aborts into an access and a fault class, so a kernel
//!   knows which faults go to
//!   [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault). Its docs also say why a
//!   resolved fault needs no invalidation by the kernel on either architecture (the crate drops
//!   a narrower aarch64 TLB entry itself).
//!
//! Every use of the `x86_64` crate is behind `cfg(target_arch = "x86_64")`, and nothing here uses
//! `aarch64-cpu`, so an aarch64 build of the kit needs neither crate.
//!
//! # Wiring a bootloader-0.9 kernel
//!
//! bootloader 0.9 loads the kernel at its link address, usually a few MiB into root slot 0. It
//! puts the physical-memory map, the stack and the boot info in whatever slots are free unless
//! told where, so first tell it: set `physical-memory-offset`, `kernel-stack-address` and
//! `boot-info-address` under `[package.metadata.bootloader]` to upper-half addresses (e.g.
//! `"0xFFFF800000000000"`, `"0xFFFFFF8000000000"`, `"0xFFFFFFFF80000000"`). Then either link the
//! kernel in the upper half too, pass [`KernelSlots::UPPER_HALF`](single_cpu::KernelSlots::UPPER_HALF)
//! and keep the default user range ([`Process::new`](crate::Process::new)). Or, as below, leave
//! the kernel in slot 0, give processes a user range that starts at slot 1 with
//! [`Process::with_user_range`](crate::Process::with_user_range) (or
//! [`AddressSpace::with_user_range`](crate::vmar::AddressSpace::with_user_range)), and pass the
//! matching [`KernelSlots::outside_user_range`](single_cpu::KernelSlots::outside_user_range)
//! (slot 0 and the upper half).
//!
//! ```rust,ignore
//! use alloc::sync::Arc;
//! use bootloader::BootInfo;
//! use spin::Once;
//! use x86_64::registers::control::{Cr2, Cr3};
//! use x86_64::structures::idt::{InterruptStackFrame, PageFaultErrorCode};
//! use zx_vm::arch::Format;
//! use zx_vm::kit::single_cpu::{KernelSlots, NativeCpu, SingleCpu, SingleCpuConfig};
//! use zx_vm::kit::{frames::DirectMap, x86};
//! use zx_vm::platform::CpuPin;
//! use zx_vm::{AddressSpace, Platform, Process};
//!
//! type KernelPlatform = SingleCpu<x86::X86Frames<BootInfoFrameAllocator>, NativeCpu, DirectMap>;
//! static PLATFORM: Once<Arc<KernelPlatform>> = Once::new();
//!
//! // User address spaces: from slot 1 (512 GiB) to one page below the top of the lower half.
//! const USER_BASE: u64 = 1 << 39;
//! const USER_SIZE: u64 = (1 << 47) - 4096 - USER_BASE;
//!
//! fn init_vm(boot_info: &'static BootInfo) {
//!     // (The kernel heap must already work: the crate allocates.)
//!     let source = x86::X86Frames(unsafe { BootInfoFrameAllocator::init(&boot_info.memory_map) });
//!     let (root, _) = Cr3::read();
//!     let slots = KernelSlots::outside_user_range(USER_BASE, USER_SIZE).expect("a valid range");
//!     let config = SingleCpuConfig::new(root.start_address().into(), slots);
//!     // SAFETY: bootloader 0.9 maps all physical memory at `physical_memory_offset`; CR3 holds
//!     // the kernel's live PML4, whose slot 0 and upper half map the kernel; one CPU.
//!     let platform = unsafe { SingleCpu::native(source, boot_info.physical_memory_offset, config) }
//!         .expect("the VM platform");
//!     PLATFORM.call_once(|| Arc::new(platform));
//! }
//!
//! fn new_process() -> Arc<Process> {
//!     let platform: Arc<dyn Platform> = PLATFORM.get().unwrap().clone();
//!     Process::with_user_range(platform, Format::X86_64, USER_BASE, USER_SIZE).unwrap()
//! }
//!
//! fn switch_to(process: &Process) {
//!     let platform = PLATFORM.get().unwrap();
//!     let pin = CpuPin::new(&**platform);
//!     // SAFETY: the new root holds the kernel's slots (prepare_root); the kernel switches
//!     // address spaces only here and in `AddressSpace::deactivate`.
//!     unsafe { process.aspace().activate(&pin) };
//! }
//!
//! extern "x86-interrupt" fn page_fault(frame: InterruptStackFrame, code: PageFaultErrorCode) {
//!     let va = Cr2::read_raw();
//!     let platform = PLATFORM.get().unwrap();
//!     let pin = CpuPin::new(&**platform);
//!     if let Some(aspace) = AddressSpace::current(&pin) {
//!         let (base, size) = aspace.user_range();
//!         let in_range = (base..base + size).contains(&va);
//!         if in_range && x86::routes_to_page_fault(code.bits()) {
//!             let access = x86::decode_page_fault_error_code(code);
//!             // x86_64 needs no TLB maintenance after this: the fault itself dropped the
//!             // faulting address's translation (see `aarch64_esr` for aarch64).
//!             if aspace.page_fault(va, access).is_ok() {
//!                 return;
//!             }
//!         }
//!     }
//!     panic!("page fault at {va:#x} ({code:?}): {frame:#?}");
//! }
//! ```
//!
//! Later kernel mappings made with an `OffsetPageTable` can take their frames from the same pool:
//! `unsafe { mapper.map_to(page, frame, flags, &mut platform.frames()) }` (x86_64:
//! `&FreeListFrames` is a `FrameAllocator<Size4KiB>`). Make sure every kernel slot's PML4 entry exists before the first
//! address space is made (see [`single_cpu`]).
//!
//! [`Platform`]: crate::Platform

pub mod aarch64_esr;
pub mod frames;
pub mod single_cpu;
pub mod slots;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// What the kit's unit tests share: frames in a host arena, reached through a mapper that keeps
/// the arena's pointer provenance (clean under Miri).
#[cfg(test)]
pub(crate) mod test_arena {
    use super::frames::PhysMapper;
    use crate::platform::PhysAddr;

    /// One 4 KiB frame.
    #[repr(C, align(4096))]
    pub(crate) struct Frame(pub(crate) [u8; 4096]);

    /// Frames whose "physical" addresses are offsets into the arena.
    pub(crate) struct Arena(pub(crate) *mut Frame);
    // SAFETY: test-only: the arena outlives every use, and the tests touch each frame from one
    // thread at a time.
    unsafe impl Send for Arena {}
    // SAFETY: as above.
    unsafe impl Sync for Arena {}

    impl PhysMapper for Arena {
        fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
            self.0.cast::<u8>().wrapping_add(pa.0 as usize)
        }
    }
}
