//! The physical frame allocator behind [`zx_vm::Platform::alloc_frame`] and `free_frames`.
//!
//! A bitmap over the RAM the boot information reported (less the kernel image and whatever the
//! boot code keeps), searched next-fit: the search continues where the last one stopped, so a
//! frame that was just freed is not handed out again soon. Together with the poison that every
//! freed frame is filled with, that makes a use of a freed frame through a stale TLB entry show
//! as a poison read rather than as a plausible zero.
//!
//! The allocator counts frames allocated and freed; the scenarios check that every frame the crate
//! took came back.

use crate::arch;
use crate::bitmap::Bitmap;
use crate::sync::IrqSpinLock;
use core::sync::atomic::{AtomicU64, Ordering};
use zx_vm::abi::PAGE_SIZE;
use zx_vm::PhysAddr;

/// The most physical memory tracked: 4 GiB above `base`.
const MAX_FRAMES: usize = 1 << 20;
/// What a freed frame is filled with (the host simulation uses the same value).
pub const FREED_POISON: u64 = 0xdead_f4ee_dead_f4ee;

/// The frames `base + i * PAGE_SIZE` for `i` below `frames`, in use or free.
struct Frames {
    /// Physical address of frame 0 of the bitmap.
    base: u64,
    /// Set when the frame is not available (in use, or not RAM).
    used: Bitmap<{ MAX_FRAMES / 64 }>,
    /// Frames tracked (RAM or not) from `base`.
    frames: usize,
    /// Where the next search starts (next fit).
    cursor: usize,
}

/// The frame allocator.
pub struct FrameAllocator {
    bitmap: IrqSpinLock<Frames>,
    allocated: AtomicU64,
    freed: AtomicU64,
    total: AtomicU64,
}

/// The one frame allocator.
pub static FRAMES: FrameAllocator = FrameAllocator {
    bitmap: IrqSpinLock::new(Frames {
        base: 0,
        used: Bitmap::new(true),
        frames: 0,
        cursor: 0,
    }),
    allocated: AtomicU64::new(0),
    freed: AtomicU64::new(0),
    total: AtomicU64::new(0),
};

impl FrameAllocator {
    /// Sets the physical address of the lowest frame the allocator may ever track.
    pub fn init(&self, base: u64) {
        self.bitmap.lock().base = base;
    }

    /// Adds the RAM `[start, end)` (rounded inwards to frames) to the pool.
    pub fn add_region(&self, start: u64, end: u64) {
        let mut bitmap = self.bitmap.lock();
        let start = start.next_multiple_of(PAGE_SIZE).max(bitmap.base);
        let end = end & !(PAGE_SIZE - 1);
        if end <= start {
            return;
        }
        let first = ((start - bitmap.base) / PAGE_SIZE) as usize;
        let last = (((end - bitmap.base) / PAGE_SIZE) as usize).min(MAX_FRAMES);
        let mut added = 0;
        for frame in first..last {
            if bitmap.used.is_used(frame) {
                bitmap.used.set(frame, false);
                added += 1;
            }
        }
        bitmap.frames = bitmap.frames.max(last);
        self.total.fetch_add(added, Ordering::Relaxed);
    }

    /// Allocates `count` physically contiguous frames.
    pub fn alloc(&self, count: usize) -> Option<PhysAddr> {
        let mut bitmap = self.bitmap.lock();
        let first = bitmap
            .used
            .find_run(bitmap.cursor, bitmap.frames, count, 1)?;
        bitmap.used.set_run(first, count, true);
        bitmap.cursor = first + count;
        self.allocated.fetch_add(count as u64, Ordering::Relaxed);
        Some(PhysAddr(bitmap.base + first as u64 * PAGE_SIZE))
    }

    /// Allocates `count` physically contiguous frames whose first is aligned to `count` frames
    /// (`count` a power of two): the runs large pages are made of. `None` when no such run is
    /// free (or the pool's base is not itself aligned so, which boot never does: x86_64 starts
    /// at 0, aarch64 at the 1 GiB its RAM begins at).
    pub fn alloc_aligned(&self, count: usize) -> Option<PhysAddr> {
        let mut bitmap = self.bitmap.lock();
        if !(bitmap.base / PAGE_SIZE).is_multiple_of(count as u64) {
            return None;
        }
        let first = bitmap
            .used
            .find_run(bitmap.cursor, bitmap.frames, count, count)?;
        bitmap.used.set_run(first, count, true);
        bitmap.cursor = first + count;
        self.allocated.fetch_add(count as u64, Ordering::Relaxed);
        Some(PhysAddr(bitmap.base + first as u64 * PAGE_SIZE))
    }

    /// Returns the `count` frames from `base`, as [`FrameAllocator::free`] does each, with one
    /// check and one update of the bitmap for the whole run.
    pub fn free_run(&self, base: PhysAddr, count: usize) {
        let first = {
            let bitmap = self.bitmap.lock();
            let first = base.0.wrapping_sub(bitmap.base) / PAGE_SIZE;
            assert!(
                first + count as u64 <= bitmap.frames as u64
                    && (first..first + count as u64).all(|i| bitmap.used.is_used(i as usize)),
                "free of the run of {count} frames at {base:?}, not all allocated"
            );
            first as usize
        };
        for i in 0..count as u64 {
            poison(PhysAddr(base.0 + i * PAGE_SIZE));
        }
        self.bitmap.lock().used.set_run(first, count, false);
        self.freed.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Returns `frame`, filling it with [`FREED_POISON`] first. Panics on a frame that is not
    /// allocated: a double free is a bug the tests must see.
    pub fn free(&self, frame: PhysAddr) {
        let index = {
            let bitmap = self.bitmap.lock();
            let index = frame.0.wrapping_sub(bitmap.base) / PAGE_SIZE;
            assert!(
                index < bitmap.frames as u64 && bitmap.used.is_used(index as usize),
                "free of frame {frame:?}, which is not allocated"
            );
            index as usize
        };
        poison(frame);
        self.bitmap.lock().used.set(index, false);
        self.freed.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames handed out since boot.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Frames given back since boot.
    pub fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }

    /// Frames in use now.
    pub fn in_use(&self) -> u64 {
        // Read `freed` first: a free between the two loads can only make the answer too high,
        // never show a frame as returned that is not.
        let freed = self.freed();
        self.allocated() - freed
    }

    /// Frames in the pool.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Fills `frame` with [`FREED_POISON`]. The caller checked that it is allocated (it stays marked
/// in use until the caller clears its bit afterwards, so no one else can be handed it meanwhile)
/// and frees it: no CPU reaches it through a user mapping any more (the `Platform::free_frames`
/// contract).
fn poison(frame: PhysAddr) {
    let words = arch::phys_to_virt(frame) as *mut u64;
    for i in 0..(PAGE_SIZE / 8) as usize {
        // SAFETY: as the caller vouches (above), the frame is allocated and given up; the direct
        // map maps all RAM writable.
        unsafe { words.add(i).write_volatile(FREED_POISON) };
    }
}
