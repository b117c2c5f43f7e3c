//! Glue for kernels built on the `x86_64` crate: address and frame conversions, the #PF error
//! code, and frame-allocator adapters both ways.
//!
//! Compiled only for x86_64 targets (the x86_64 host included, where it is tested).

use super::frames::{FrameSource, FreeListFrames, PhysMapper};
use crate::abi::PAGE_SIZE;
use crate::platform::PhysAddr;
use crate::vmar::Access;
use core::fmt;
use x86_64::structures::idt::PageFaultErrorCode;
use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};

/// Why a [`PhysAddr`] has no `x86_64` crate counterpart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// Bits 52-63 are set: no x86_64 physical address has them.
    TooWide(PhysAddr),
    /// Not 4 KiB aligned, so it does not start a frame.
    Unaligned(PhysAddr),
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::TooWide(pa) => write!(f, "{pa:?} has bits above the 52-bit limit"),
            AddrError::Unaligned(pa) => write!(f, "{pa:?} is not 4 KiB aligned"),
        }
    }
}

impl From<x86_64::PhysAddr> for PhysAddr {
    fn from(pa: x86_64::PhysAddr) -> Self {
        PhysAddr(pa.as_u64())
    }
}

impl TryFrom<PhysAddr> for x86_64::PhysAddr {
    type Error = AddrError;

    /// Fails for an address with bits 52-63 set (which `x86_64::PhysAddr::new` would panic on).
    fn try_from(pa: PhysAddr) -> Result<Self, AddrError> {
        x86_64::PhysAddr::try_new(pa.0).map_err(|_| AddrError::TooWide(pa))
    }
}

impl From<PhysFrame<Size4KiB>> for PhysAddr {
    fn from(frame: PhysFrame<Size4KiB>) -> Self {
        frame.start_address().into()
    }
}

impl TryFrom<PhysAddr> for PhysFrame<Size4KiB> {
    type Error = AddrError;

    /// Fails for an unaligned address (rather than rounding down, as
    /// `PhysFrame::containing_address` does) and for one too wide.
    fn try_from(pa: PhysAddr) -> Result<Self, AddrError> {
        let addr = x86_64::PhysAddr::try_from(pa)?;
        PhysFrame::from_start_address(addr).map_err(|_| AddrError::Unaligned(pa))
    }
}

/// #PF error code bit 1 (W/R): the access was a write.
const PF_WRITE: u64 = 1 << 1;
/// #PF error code bit 4 (I/D): the access was an instruction fetch.
const PF_INSTRUCTION: u64 = 1 << 4;
/// Bits that mean something else than a missing or insufficient user translation: reserved bit
/// set in a paging entry (3), protection key (5), shadow stack (6), HLAT (7), SGX (15), RMP (31).
const PF_NOT_OURS: u64 = (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 15) | (1 << 31);

/// The access a page fault's error code (pushed by the CPU for vector 14) describes: a write
/// when W/R (bit 1) is set, otherwise an instruction fetch ([`Access::Execute`]) when I/D
/// (bit 4) is set, otherwise a read. The CPU never sets both; were both set, the write wins, as
/// in Linux's handler. Bits this function does not look at are ignored.
pub const fn decode_page_fault(error_code: u64) -> Access {
    if error_code & PF_WRITE != 0 {
        Access::Write
    } else if error_code & PF_INSTRUCTION != 0 {
        Access::Execute
    } else {
        Access::Read
    }
}

/// [`decode_page_fault`] for the `x86_64` crate's error code, as an
/// `extern "x86-interrupt" fn(InterruptStackFrame, PageFaultErrorCode)` handler receives it.
pub const fn decode_page_fault_error_code(code: PageFaultErrorCode) -> Access {
    decode_page_fault(code.bits())
}

/// Whether a fault with this error code is one for
/// [`AddressSpace::page_fault`](crate::vmar::AddressSpace::page_fault): a not-present page
/// (P, bit 0, clear) or a protection violation (P set) on an ordinary access. Not when a
/// reserved bit was set in a paging entry (a corrupt table), nor for protection-key, shadow-stack,
/// HLAT, SGX or RMP faults, which the crate's entries never cause. The kernel also checks that
/// CR2 lies in the current address space's user range.
pub const fn routes_to_page_fault(error_code: u64) -> bool {
    error_code & PF_NOT_OURS == 0
}

/// A [`FrameSource`] over any `x86_64` crate frame allocator, such as a bump allocator over
/// bootloader 0.9's memory map (`BootInfoFrameAllocator`).
#[derive(Debug)]
pub struct X86Frames<A>(pub A);

// SAFETY: `FrameAllocator` is an unsafe trait whose implementations promise to yield only unused
// frames; a `PhysFrame<Size4KiB>` starts at a 4 KiB aligned address. The frames are handed out
// once each and never given back to `A` (a `FreeListFrames` keeps them).
unsafe impl<A: FrameAllocator<Size4KiB> + Send> FrameSource for X86Frames<A> {
    fn alloc(&mut self) -> Option<PhysAddr> {
        self.0.allocate_frame().map(PhysAddr::from)
    }
}

// SAFETY: every frame `FreeListFrames::alloc` answers is unused: a fresh one from its source
// (whose contract says so) or one given back through `free`, whose caller promised nothing uses
// it any more. Each is handed out once until freed again.
unsafe impl<S: FrameSource, M: PhysMapper> FrameAllocator<Size4KiB> for &FreeListFrames<S, M> {
    /// A frame for the kernel's own use, e.g. a page table that `OffsetPageTable::map_to` needs:
    /// the kernel and the crate then share one pool of frames.
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        // `alloc` answers aligned frames only; one with bits above 52 cannot be RAM on x86_64
        // (a broken source) and is dropped, counted as allocated.
        PhysFrame::try_from(self.alloc()?).ok()
    }
}

static_assertions::const_assert_eq!(PAGE_SIZE, 4096);
