//! The kernel heap (`alloc`), which the crate needs for its objects.
//!
//! A static area in the kernel image, separate from the frame allocator's pool so that the frame
//! counts the tests check are the crate's alone. Small blocks (up to 2 KiB) come from per-size free
//! lists carved out of heap pages; larger ones take whole pages, found first-fit in a bitmap.

use crate::bitmap::Bitmap;
use crate::sync::IrqSpinLock;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};

const PAGE: usize = 4096;
const HEAP_SIZE: usize = 32 << 20;
const HEAP_PAGES: usize = HEAP_SIZE / PAGE;
/// Block sizes 16, 32, ..., 2048.
const CLASSES: usize = 8;
const MIN_BLOCK: usize = 16;

#[repr(C, align(4096))]
struct Area(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: the area is only reached through `Heap`, whose lock hands each block to one owner.
unsafe impl Sync for Area {}

static AREA: Area = Area(UnsafeCell::new([0; HEAP_SIZE]));

struct FreeBlock {
    next: Option<NonNull<FreeBlock>>,
}

struct Heap {
    /// One bit per heap page: in use (by a large block or a size class).
    used: Bitmap<{ HEAP_PAGES / 64 }>,
    free: [Option<NonNull<FreeBlock>>; CLASSES],
    /// Where the next first-fit search starts.
    hint: usize,
}

// SAFETY: the free-list pointers point into AREA and are only followed under the heap lock.
unsafe impl Send for Heap {}

impl Heap {
    fn base() -> usize {
        AREA.0.get() as usize
    }

    /// `count` free pages, the first aligned to `align` bytes.
    fn alloc_pages(&mut self, count: usize, align: usize) -> *mut u8 {
        let align_pages = align.div_ceil(PAGE).max(1);
        match self
            .used
            .find_run(self.hint, HEAP_PAGES, count, align_pages)
        {
            Some(start) => {
                self.used.set_run(start, count, true);
                self.hint = start + count;
                (Self::base() + start * PAGE) as *mut u8
            }
            None => ptr::null_mut(),
        }
    }

    fn free_pages(&mut self, ptr: *mut u8, count: usize) {
        let first = (ptr as usize - Self::base()) / PAGE;
        debug_assert!(
            (first..first + count).all(|p| self.used.is_used(p)),
            "heap page freed twice"
        );
        self.used.set_run(first, count, false);
        self.hint = self.hint.min(first);
    }

    fn class(layout: &Layout) -> Option<usize> {
        let size = layout
            .size()
            .max(layout.align())
            .max(MIN_BLOCK)
            .next_power_of_two();
        let class = (size / MIN_BLOCK).trailing_zeros() as usize;
        (class < CLASSES).then_some(class)
    }

    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(&layout) else {
            return self.alloc_pages(layout.size().div_ceil(PAGE), layout.align());
        };
        if self.free[class].is_none() {
            let page = self.alloc_pages(1, PAGE);
            if page.is_null() {
                return page;
            }
            let size = MIN_BLOCK << class;
            for offset in (0..PAGE).step_by(size).rev() {
                let block = page.wrapping_add(offset) as *mut FreeBlock;
                // SAFETY: `block` lies inside the page just taken for this class, is aligned to
                // `size` (a power of two, at least 16) and no one else can reach it yet.
                unsafe {
                    block.write(FreeBlock {
                        next: self.free[class],
                    })
                };
                self.free[class] = NonNull::new(block);
            }
        }
        let block = self.free[class].expect("refilled above");
        // SAFETY: blocks on a free list are valid `FreeBlock`s written by `alloc` or `dealloc`,
        // owned by the list under the heap lock.
        self.free[class] = unsafe { block.as_ref().next };
        block.as_ptr() as *mut u8
    }

    fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(&layout) else {
            return self.free_pages(ptr, layout.size().div_ceil(PAGE));
        };
        let block = ptr as *mut FreeBlock;
        // SAFETY: `ptr` was returned by `alloc` for the same layout, so it is a block of this
        // class, at least 16 bytes and 16-aligned; its owner gave it back.
        unsafe {
            block.write(FreeBlock {
                next: self.free[class],
            })
        };
        self.free[class] = NonNull::new(block);
    }
}

/// The global allocator.
pub struct KernelHeap(IrqSpinLock<Heap>);

// SAFETY: `alloc` returns blocks of at least the layout's size and alignment from the static area,
// each handed to one owner until `dealloc`; all bookkeeping is under the lock.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.lock().dealloc(ptr, layout)
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSpinLock::new(Heap {
    used: Bitmap::new(false),
    free: [None; CLASSES],
    hint: 0,
}));
