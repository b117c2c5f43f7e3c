//! A frame allocator that can free, over a frame source that cannot.
//!
//! A hobby kernel's first allocator is usually a bump allocator over the boot memory map: it hands
//! out each usable frame once and has no way to take one back. The crate frees frames all the time
//! (a decommit, an unmap, a torn-down address space), so [`FreeListFrames`] keeps the freed frames
//! on a free list and hands them out again before it asks the source for a new one.
//!
//! The list costs no memory of its own and never touches the heap: it is stored in the freed
//! frames themselves. The first 8 bytes of each free frame hold the physical address of the next
//! free frame (`u64::MAX` ends the list), written and read through a [`PhysMapper`], usually the
//! kernel's direct map of physical memory ([`DirectMap`]: `offset + pa`).

use crate::abi::PAGE_SIZE;
use crate::platform::PhysAddr;
use spin::Mutex;

/// A source of fresh 4 KiB frames that may be unable to take any back: a bump allocator over
/// the boot memory map, for example. On x86_64, `kit::x86::X86Frames` adapts any
/// `x86_64::structures::paging::FrameAllocator<Size4KiB>`.
///
/// # Safety
/// Every address [`FrameSource::alloc`] answers is the start of a 4 KiB frame of RAM that
/// nothing else uses (not the kernel's image, its page tables, its heap, nor any frame the source
/// handed out before), and it never answers the same frame twice: once handed out, a frame
/// belongs to the caller for good. The frame is reachable through the [`PhysMapper`] the
/// [`FreeListFrames`] over the source is made with.
pub unsafe trait FrameSource: Send {
    /// A fresh frame, or `None` when the source is exhausted.
    fn alloc(&mut self) -> Option<PhysAddr>;
}

/// How the kernel reaches a physical frame: the same answer as [`crate::Platform::phys_to_virt`].
///
/// Any `Fn(PhysAddr) -> *mut u8 + Send + Sync` closure is one; [`DirectMap`] is the usual one.
pub trait PhysMapper: Send + Sync {
    /// Where the kernel can read and write the frame at `pa`.
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8;
}

impl<F: Fn(PhysAddr) -> *mut u8 + Send + Sync> PhysMapper for F {
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        self(pa)
    }
}

/// A direct map of physical memory at a fixed virtual offset: `pa` is at `offset + pa`. This is
/// what bootloader 0.9 sets up with its `map_physical_memory` feature
/// (`BootInfo::physical_memory_offset`), and what the bootloader crate's later versions and
/// Limine's higher-half direct map provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirectMap {
    offset: u64,
}

impl DirectMap {
    /// The direct map at `offset`. Making one is safe; what is unsafe is to promise that it maps
    /// memory, which the constructors that take one do in their `# Safety` sections.
    pub const fn new(offset: u64) -> Self {
        DirectMap { offset }
    }

    /// The offset.
    pub const fn offset(self) -> u64 {
        self.offset
    }
}

impl PhysMapper for DirectMap {
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        // The address comes from the kernel's page tables, not from a Rust allocation: a pointer
        // with exposed provenance is what it is.
        core::ptr::with_exposed_provenance_mut(self.offset.wrapping_add(pa.0) as usize)
    }
}

/// The end of the free list: no frame starts at an unaligned address.
const END: u64 = u64::MAX;

/// What a [`FreeListFrames`] has done, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames handed out and not freed yet.
    pub allocated: u64,
    /// Frames on the free list.
    pub free: u64,
    /// Frames taken from the source, ever (each one exactly once).
    pub from_source: u64,
    /// Addresses refused because they were not 4 KiB aligned: answered by the source (which
    /// broke its contract; the address is dropped and the allocation fails) or given to
    /// [`FreeListFrames::free`] (ignored).
    pub rejected: u64,
    /// Frames dropped from the free list because a link read back from a free frame was not a
    /// frame address: something wrote into a frame after it was freed. The list is cut at that
    /// point (the frames behind it are lost, never handed out twice).
    pub lost: u64,
}

struct Inner<S> {
    source: S,
    /// The first free frame, or [`END`].
    head: u64,
    stats: FrameStats,
}

/// A thread-safe frame allocator that frees: freed frames go on an intrusive free list and are
/// handed out again, most recently freed first, before the [`FrameSource`] is asked for a new one.
/// No heap allocation, ever. Behind a `spin::Mutex`, held for one list operation.
pub struct FreeListFrames<S, M = DirectMap> {
    inner: Mutex<Inner<S>>,
    map: M,
}

impl<S: FrameSource, M: PhysMapper> FreeListFrames<S, M> {
    /// A free list over `source`, whose frames `map` reaches.
    ///
    /// # Safety
    /// For every frame `source` hands out, `map.phys_to_virt` answers a pointer valid for reads
    /// and writes of [`PAGE_SIZE`] bytes, 8-aligned, for as long as this value lives, and nothing
    /// but this allocator and the frame's current owner uses that memory: the free list is written
    /// into the first 8 bytes of each freed frame through it.
    pub unsafe fn new(source: S, map: M) -> Self {
        FreeListFrames {
            inner: Mutex::new(Inner {
                source,
                head: END,
                stats: FrameStats::default(),
            }),
            map,
        }
    }

    /// A frame: the most recently freed one if there is one, else a fresh one from the source;
    /// `None` when both are exhausted. Its contents are unspecified (a reused frame still holds
    /// its old data and a link word).
    pub fn alloc(&self) -> Option<PhysAddr> {
        let mut inner = self.inner.lock();
        if inner.head != END {
            let frame = PhysAddr(inner.head);
            // SAFETY: `frame` is on the free list, so it was given to `free`, whose caller
            // guaranteed it came from this allocator and is no longer used; `new`'s caller
            // guaranteed that `map` reaches it (valid, 8-aligned, 8 bytes at least).
            let next = unsafe { self.map.phys_to_virt(frame).cast::<u64>().read_volatile() };
            if next == END || (next % PAGE_SIZE == 0) {
                inner.head = next;
                inner.stats.free -= 1;
            } else {
                // The link was overwritten after the free: keep this frame (it was freed
                // properly), drop the rest of the list rather than follow garbage.
                inner.head = END;
                inner.stats.lost += inner.stats.free - 1;
                inner.stats.free = 0;
            }
            inner.stats.allocated += 1;
            return Some(frame);
        }
        let frame = inner.source.alloc()?;
        if frame.0 % PAGE_SIZE != 0 {
            inner.stats.rejected += 1;
            return None;
        }
        inner.stats.from_source += 1;
        inner.stats.allocated += 1;
        Some(frame)
    }

    /// Puts `frame` on the free list. An address that is not 4 KiB aligned cannot be a frame this
    /// allocator handed out: it is ignored (and counted in [`FrameStats::rejected`]).
    ///
    /// # Safety
    /// `frame` was handed out by [`FreeListFrames::alloc`] of this allocator and not freed since,
    /// and nothing uses it any more (no page-table entry, TLB or pointer reaches it).
    pub unsafe fn free(&self, frame: PhysAddr) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_all(core::slice::from_ref(&frame)) }
    }

    /// Puts every frame of `frames` on the free list, under one lock.
    ///
    /// # Safety
    /// As for [`FreeListFrames::free`], for each frame (and no frame twice in `frames`).
    pub unsafe fn free_all(&self, frames: &[PhysAddr]) {
        let mut inner = self.inner.lock();
        for &frame in frames {
            if frame.0 % PAGE_SIZE != 0 {
                inner.stats.rejected += 1;
                continue;
            }
            // SAFETY: the caller guarantees the frame came from this allocator and is unused, so
            // `new`'s caller guaranteed `map` reaches it for 8 aligned bytes at least; it is ours
            // to write.
            unsafe {
                self.map
                    .phys_to_virt(frame)
                    .cast::<u64>()
                    .write_volatile(inner.head)
            };
            inner.head = frame.0;
            inner.stats.free += 1;
            inner.stats.allocated = inner.stats.allocated.saturating_sub(1);
        }
    }
}

impl<S, M> FreeListFrames<S, M> {
    /// The counts, at this moment.
    pub fn stats(&self) -> FrameStats {
        self.inner.lock().stats
    }

    /// How the frames are reached.
    pub fn mapper(&self) -> &M {
        &self.map
    }

    /// Runs `f` on the source, under the allocator's lock: to ask a bump allocator how much it
    /// has left, say. `f` must not call back into this allocator (the lock is a spin lock).
    pub fn with_source<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.inner.lock().source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    use crate::kit::test_arena::{Arena, Frame};

    /// Hands out frames 1, 2, ... of the arena once each, and counts its calls.
    struct Bump {
        next: u64,
        end: u64,
        calls: u64,
    }

    // SAFETY: each frame index is handed out once, inside the arena.
    unsafe impl FrameSource for Bump {
        fn alloc(&mut self) -> Option<PhysAddr> {
            self.calls += 1;
            if self.next == self.end {
                return None;
            }
            self.next += 1;
            Some(PhysAddr::from_frame_number(self.next - 1))
        }
    }

    fn arena(frames: usize) -> Vec<Frame> {
        (0..frames).map(|_| Frame([0; 4096])).collect()
    }

    #[test]
    fn freed_frames_come_back_first_and_the_source_is_not_asked() {
        let mut memory = arena(5);
        let bump = Bump {
            next: 1,
            end: 5,
            calls: 0,
        };
        // SAFETY: the arena outlives the allocator, and the bump hands out its frames only.
        let frames = unsafe { FreeListFrames::new(bump, Arena(memory.as_mut_ptr())) };
        let a = frames.alloc().unwrap();
        let b = frames.alloc().unwrap();
        assert_eq!((a, b), (PhysAddr(0x1000), PhysAddr(0x2000)));
        // SAFETY: both came from `frames` and are unused.
        unsafe { frames.free_all(&[a, b]) };
        let stats = frames.stats();
        assert_eq!((stats.allocated, stats.free, stats.from_source), (0, 2, 2));
        // Most recently freed first.
        assert_eq!(frames.alloc(), Some(b));
        assert_eq!(frames.alloc(), Some(a));
        assert_eq!(frames.with_source(|bump| bump.calls), 2);
        let rest = vec![frames.alloc(), frames.alloc(), frames.alloc()];
        assert_eq!(
            rest,
            vec![Some(PhysAddr(0x3000)), Some(PhysAddr(0x4000)), None]
        );
        assert_eq!(frames.stats().allocated, 4);
    }

    #[test]
    fn unaligned_addresses_and_broken_links_are_refused() {
        let mut memory = arena(4);
        let bump = Bump {
            next: 1,
            end: 4,
            calls: 0,
        };
        // SAFETY: as above.
        let frames = unsafe { FreeListFrames::new(bump, Arena(memory.as_mut_ptr())) };
        let a = frames.alloc().unwrap();
        let b = frames.alloc().unwrap();
        // SAFETY: an unaligned address is ignored; `a` and `b` came from `frames`.
        unsafe {
            frames.free(PhysAddr(a.0 + 8));
            frames.free(a);
            frames.free(b);
        }
        assert_eq!(frames.stats().rejected, 1);
        // Something scribbles over `b`'s link after the free.
        // SAFETY: `b` is a frame of the arena.
        unsafe { frames.mapper().phys_to_virt(b).cast::<u64>().write(0x1234) };
        assert_eq!(frames.alloc(), Some(b));
        let stats = frames.stats();
        assert_eq!((stats.free, stats.lost), (0, 1));
        // `a` is lost, never handed out twice: the next frame is a fresh one.
        assert_eq!(frames.alloc(), Some(PhysAddr(0x3000)));
    }
}
