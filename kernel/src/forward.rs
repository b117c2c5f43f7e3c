//! One forwarding platform for the scenarios that need the kernel's platform with a small change:
//! a frame count (the contract tests' `SimMachine`), a record of the frames a page table took (the
//! stale-TLB negative control), or other memory attributes (the kit scenario on aarch64).
//!
//! [`Forward`] passes every [`Platform`] method to the platform it wraps, defaults included (so
//! that a wrapper cannot drift from what it wraps by forgetting one), and tells its [`Hooks`]
//! about frames handed out and given back.

use zx_vm::arch::MemoryAttributes;
use zx_vm::platform::{CpuSet, TlbInvalidate};
use zx_vm::tlb::Tlb;
use zx_vm::{PhysAddr, Platform};

/// What a wrapper adds to the platform it forwards to. Every hook observes; none may call into
/// the crate.
pub trait Hooks: Send + Sync {
    /// `count` frames from `first` (contiguous) were handed to the crate.
    fn allocated(&self, _first: PhysAddr, _count: usize) {}
    /// `frames` are about to go back to the wrapped platform.
    fn freed(&self, _frames: &[PhysAddr]) {}
    /// The memory attributes to answer instead of the wrapped platform's, if any.
    fn memory_attributes(&self) -> Option<MemoryAttributes> {
        None
    }
}

/// `inner`, observed by `hooks`.
pub struct Forward<P, H> {
    pub inner: P,
    pub hooks: H,
}

// SAFETY: every method forwards to `inner` (whose implementation carries the argument) with the
// same arguments, and answers what it answers; the hooks only observe the frames passing through
// (they hand out, free or map nothing). The one answer that may differ, `memory_attributes`, is a
// wrapper's promise of its own (see each `Hooks` implementation): it names memory attributes that
// the kernel programmed as normal write-back memory.
unsafe impl<P: Platform, H: Hooks> Platform for Forward<P, H> {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        let frame = self.inner.alloc_frame()?;
        self.hooks.allocated(frame, 1);
        Some(frame)
    }

    fn alloc_contiguous(&self, count: usize) -> Option<PhysAddr> {
        let first = self.inner.alloc_contiguous(count)?;
        self.hooks.allocated(first, count);
        Some(first)
    }

    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        self.hooks.freed(frames);
        // SAFETY: forwarded from the crate, which calls this under the same contract.
        unsafe { self.inner.free_frames(frames) }
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        self.inner.phys_to_virt(pa)
    }

    fn current_cpu(&self) -> usize {
        self.inner.current_cpu()
    }

    fn memory_attributes(&self) -> MemoryAttributes {
        self.hooks
            .memory_attributes()
            .unwrap_or_else(|| self.inner.memory_attributes())
    }

    fn zero_frame(&self) -> Option<PhysAddr> {
        self.inner.zero_frame()
    }

    fn preempt_disable(&self) {
        self.inner.preempt_disable()
    }

    fn preempt_enable(&self) {
        self.inner.preempt_enable()
    }

    fn tlb(&self) -> &Tlb {
        self.inner.tlb()
    }

    fn send_ipi(&self, targets: CpuSet) {
        self.inner.send_ipi(targets)
    }

    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        self.inner.invalidate_local(request)
    }

    fn invalidation_is_broadcast(&self) -> bool {
        self.inner.invalidation_is_broadcast()
    }

    fn wait_hint(&self) {
        self.inner.wait_hint()
    }

    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: forwarded under the same contract.
        unsafe { self.inner.load_root(root, asid, flush) }
    }

    unsafe fn load_kernel_root(&self) {
        // SAFETY: forwarded under the same contract.
        unsafe { self.inner.load_kernel_root() }
    }

    fn prepare_root(&self, root: PhysAddr) {
        self.inner.prepare_root(root)
    }
}
