//! Host tests of the single-CPU platform, with a recording fake CPU.

use super::*;
use crate::vmar::{Access, AddressSpace, USER_ASPACE_BASE, USER_ASPACE_SIZE};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::kit::test_arena::{Arena, Frame};

struct Bump(u64, u64);
// SAFETY: frames 2.. of the arena, once each (frame 1 is the kernel root).
unsafe impl FrameSource for Bump {
    fn alloc(&mut self) -> Option<PhysAddr> {
        (self.0 < self.1).then(|| {
            self.0 += 1;
            PhysAddr::from_frame_number(self.0 - 1)
        })
    }
}

#[derive(Default)]
struct CountingCpu {
    loads: AtomicUsize,
    invalidations: AtomicUsize,
}
// SAFETY: no real CPU: nothing runs through the tables.
unsafe impl CpuOps for CountingCpu {
    unsafe fn load_root(&self, _root: PhysAddr, _asid: u16, _flush: bool) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }
    unsafe fn load_kernel_root(&self) {}
    fn invalidate_local(&self, _request: &TlbInvalidate<'_>) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn kernel_slots_sets() {
    assert_eq!(
        KernelSlots::outside_user_range(USER_ASPACE_BASE, USER_ASPACE_SIZE),
        Ok(KernelSlots::UPPER_HALF)
    );
    let mut slots = KernelSlots::range(3..=5).unwrap();
    assert_eq!(slots.insert(512), Err(SlotError::OutOfRange { slot: 512 }));
    slots.insert(511).unwrap();
    assert_eq!(slots.iter().collect::<Vec<_>>(), [3, 4, 5, 511]);
    assert!(!slots.contains(usize::MAX));
    assert!(slots.is_clear_of(6 << 39, 250 << 39));
    assert!(!slots.is_clear_of(0, u64::MAX));
    assert_eq!(
        KernelSlots::outside_user_range(0, u64::MAX),
        Err(SlotError::BadUserRange {
            base: 0,
            size: u64::MAX
        })
    );
}

#[test]
fn prepare_root_copies_the_kernel_slots_and_frames_recycle() {
    // Declared first, so dropped last: after every user of the arena.
    let mut memory: Vec<Frame> = (0..16).map(|_| Frame([0; 4096])).collect();
    let arena = Arena(memory.as_mut_ptr());
    let kernel_root = PhysAddr(0x1000);
    // SAFETY: frame 1 of the arena.
    unsafe {
        arena
            .phys_to_virt(kernel_root)
            .cast::<u64>()
            .add(300)
            .write(0x5003)
    };
    let config = SingleCpuConfig {
        format: Format::X86_64,
        tags: 4,
        ..SingleCpuConfig::new(kernel_root, KernelSlots::UPPER_HALF)
    };
    // SAFETY: the arena reaches the bump's frames and the kernel root; one CPU.
    let piece =
        unsafe { SingleCpu::with_mapper(Bump(2, 16), CountingCpu::default(), arena, config) }
            .unwrap();
    let piece = Arc::new(piece);
    let aspace = AddressSpace::new(piece.clone(), Format::X86_64).unwrap();
    let root = piece.phys_to_virt(aspace.root_table()).cast::<u64>();
    // SAFETY: the root is a frame of the arena, 512 entries.
    let entries: Vec<u64> = (0..512)
        .map(|slot| unsafe { root.add(slot).read() })
        .collect();
    assert_eq!(entries[300], 0x5003);
    assert_eq!(entries.iter().filter(|&&entry| entry != 0).count(), 1);

    let vmo = crate::Vmo::create(piece.clone(), PAGE_SIZE).unwrap();
    let vmar = aspace.root_vmar();
    let rw = crate::VmOptions::PERM_READ | crate::VmOptions::PERM_WRITE;
    let can_map = crate::VmOptions::CAN_MAP_PERMS;
    let mapping = vmar.map(rw, 0, &vmo, 0, PAGE_SIZE, can_map).unwrap();
    aspace.page_fault(mapping, Access::Write).unwrap();
    let taken = piece.frame_stats().from_source;
    vmar.decommit(mapping, PAGE_SIZE).unwrap();
    assert!(piece.frame_stats().free >= 1);
    aspace.page_fault(mapping, Access::Read).unwrap();
    assert_eq!(
        piece.frame_stats().from_source,
        taken,
        "the freed frame came back"
    );
    drop((vmar, vmo, aspace));
    let stats = piece.frame_stats();
    assert_eq!((stats.allocated, stats.free), (0, stats.from_source));
    assert_eq!(piece.cpu().loads.load(Ordering::Relaxed), 0);
}
