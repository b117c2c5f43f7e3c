//! The `Platform` implementation README.md shows, compiled: CI builds this crate for
//! `x86_64-unknown-none` and `aarch64-unknown-none`, and `tests/readme.rs` checks that README's
//! snippet is this file's text between the markers. A kernel fills in the `todo_*` functions.
#![no_std]
#![allow(dead_code)]

extern crate alloc;

use zx_vm::arch::Format;
use zx_vm::kit::frames::{DirectMap, FrameSource, FreeListFrames};
use zx_vm::platform::{CpuSet, PhysAddr, Platform};
use zx_vm::tlb::{Tlb, TlbConfigError};

/// The kernel's own pieces, which the sketch leaves to it.
mod kernel {
    use super::*;
    pub fn this_cpu() -> usize {
        0
    }
    pub fn send_tlb_ipi(_cpus: CpuSet) {}
    pub fn kernel_pml4() -> PhysAddr {
        PhysAddr(0)
    }
    pub unsafe fn load_cr3_or_empty_ttbr0() {}
    pub fn preempt_disable() {}
    pub fn preempt_enable() {}
    pub struct BootFrames;
    // SAFETY: a sketch: hands out nothing.
    unsafe impl FrameSource for BootFrames {
        fn alloc(&mut self) -> Option<PhysAddr> {
            None
        }
    }
}

// README-BEGIN
pub struct MyKernel {
    frames: FreeListFrames<kernel::BootFrames, DirectMap>,
    phys_offset: u64,
    tlb: Tlb,
}

impl MyKernel {
    /// # Safety
    /// `phys_offset` maps all RAM write-back; `BootFrames` hands out unused RAM.
    pub unsafe fn new(cpus: usize, tags: u16, phys_offset: u64) -> Result<Self, TlbConfigError> {
        Ok(MyKernel {
            // SAFETY: forwarded from the caller: the direct map covers every frame.
            frames: unsafe { FreeListFrames::new(kernel::BootFrames, DirectMap::new(phys_offset)) },
            phys_offset,
            tlb: Tlb::new(cpus, tags, Format::NATIVE)?,
        })
    }
}

// SAFETY: frames are unused RAM, the direct map covers them, `current_cpu` is stable while
// preemption is off, the IPI handler calls `tlb().handle_ipi(&CpuPin::new(self))`.
unsafe impl Platform for MyKernel {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        self.frames.alloc()
    }
    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        // SAFETY: forwarded: the crate frees only frames it got here, after the flush.
        unsafe { self.frames.free_all(frames) }
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        (self.phys_offset + pa.0) as *mut u8
    }
    fn current_cpu(&self) -> usize {
        kernel::this_cpu()
    }
    fn tlb(&self) -> &Tlb {
        &self.tlb
    }
    unsafe fn load_kernel_root(&self) {
        // x86_64: the kernel's own PML4; aarch64: an empty table in TTBR0_EL1.
        // SAFETY: forwarded from the caller.
        unsafe { kernel::load_cr3_or_empty_ttbr0() }
    }
    fn prepare_root(&self, root: PhysAddr) {
        // x86_64: copy the kernel's PML4 entries (slots 256-511 for an upper-half kernel).
        if cfg!(target_arch = "x86_64") {
            let from = self.phys_to_virt(kernel::kernel_pml4()) as *const u64;
            let to = self.phys_to_virt(root) as *mut u64;
            // SAFETY: both are live 4 KiB tables reached through the direct map.
            unsafe { core::ptr::copy_nonoverlapping(from.add(256), to.add(256), 256) };
        }
    }

    // Optional, with defaults:
    fn send_ipi(&self, targets: CpuSet) {
        // x86_64 SMP; never called where invalidation is broadcast (aarch64).
        kernel::send_tlb_ipi(targets)
    }
    fn preempt_disable(&self) {
        kernel::preempt_disable()
    }
    fn preempt_enable(&self) {
        kernel::preempt_enable()
    }
    // alloc_contiguous (contiguous VMOs), alloc_aligned_run, free_run, free_runs (large-page VMOs),
    // max_leaf_level (2 MiB / 1 GiB leaves), memory_attributes (aarch64 MAIR index), zero_frame
    // (a shared zero page), invalidation_is_broadcast, wait_hint, and on bare metal
    // invalidate_local and load_root (the crate's own instructions), tlb_features (arm64 range
    // TLBIs, AMD INVLPGB: read from the CPU once), invalidate_broadcast and sync_broadcast
    // (INVLPGB, TLBSYNC) keep their defaults.
}
// README-END
