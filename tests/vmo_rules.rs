//! The VMO rules that the contract and syscall tests reach only in passing: size limits of each
//! kind of VMO, zeroed contiguous memory, reads and writes at any offset, pins, what
//! `zx_object_get_info` counts, and which frames `ZX_VM_MAP_RANGE` maps for a VMO that is not
//! paged. Each test here was asked for by a mutant that the rest of the suite let live
//! (docs/mutants.md).

mod common;

use common::*;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;
use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
use zx_vm::sim::SimMachine;
use zx_vm::syscall::*;
use zx_vm::vmar::Access;
use zx_vm::vmo::{VmoKind, MAX_VMO_SIZE};
use zx_vm::{PhysAddr, Platform, Vmo};

fn platform(machine: &Arc<SimMachine>) -> Arc<dyn Platform> {
    machine.clone()
}

/// Each kind of VMO takes sizes up to [`MAX_VMO_SIZE`] and refuses anything past it, and the
/// kinds with fixed memory refuse an empty one.
#[test]
fn size_limits_of_each_kind() {
    let machine = machine(1);
    let p = platform(&machine);
    assert_eq!(
        Vmo::create(p.clone(), MAX_VMO_SIZE).unwrap().size(),
        MAX_VMO_SIZE
    );
    assert_eq!(
        Vmo::create(p.clone(), MAX_VMO_SIZE + PAGE_SIZE).err(),
        Some(Status::OutOfRange)
    );
    // Contiguous: the size is fine, the memory is not there.
    assert_eq!(
        Vmo::create_contiguous(p.clone(), MAX_VMO_SIZE).err(),
        Some(Status::NoMemory)
    );
    for size in [0, MAX_VMO_SIZE + PAGE_SIZE] {
        assert_eq!(
            Vmo::create_contiguous(p.clone(), size).err(),
            Some(Status::InvalidArgs),
            "{size:#x}"
        );
    }
    let base = PhysAddr(1 << 40);
    assert!(Vmo::create_physical(p.clone(), base, MAX_VMO_SIZE).is_ok());
    for (base, size) in [
        (PhysAddr((1 << 40) + 8), PAGE_SIZE),
        (base, PAGE_SIZE + 8),
        (base, 0),
        (base, MAX_VMO_SIZE + PAGE_SIZE),
        (PhysAddr(!(PAGE_SIZE - 1)), PAGE_SIZE),
    ] {
        assert_eq!(
            Vmo::create_physical(p.clone(), base, size).err(),
            Some(Status::InvalidArgs),
            "{base:?} {size:#x}"
        );
    }
}

/// A contiguous VMO reads as zeroes in every page, also where its frames held data before.
#[test]
fn contiguous_memory_is_zeroed_in_every_page() {
    let machine = SimMachine::with_frames(64);
    let p = platform(&machine);
    // Dirty eight frames, and give them back (the simulation poisons freed frames).
    let dirty = Vmo::create(p.clone(), 8 * PAGE_SIZE).unwrap();
    dirty.write(0, &[0xa5; 8 * PAGE_SIZE as usize]).unwrap();
    drop(dirty);
    let vmo = Vmo::create_contiguous(p.clone(), 8 * PAGE_SIZE).unwrap();
    let mut bytes = vec![0xff; 8 * PAGE_SIZE as usize];
    vmo.read(0, &mut bytes).unwrap();
    assert!(bytes.iter().all(|&b| b == 0));
}

/// Reads and writes at an offset inside a later page, and across page boundaries, land where
/// they should, and nowhere else. The pages are committed out of order with another VMO's
/// between them, so that neighbours in the VMO are not neighbours in memory (a copy that ran
/// past the end of a page would read or write the wrong frame).
#[test]
fn reads_and_writes_at_any_offset() {
    let machine = machine(1);
    let vmo = Vmo::create(platform(&machine), 4 * PAGE_SIZE).unwrap();
    let other = Vmo::create(platform(&machine), 4 * PAGE_SIZE).unwrap();
    for page in (0..4).rev() {
        vmo.commit(page * PAGE_SIZE, PAGE_SIZE).unwrap();
        other.commit(page * PAGE_SIZE, PAGE_SIZE).unwrap();
    }
    other.write(0, &[0xee; 4 * PAGE_SIZE as usize]).unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 + 1).collect();
    let offset = PAGE_SIZE + 100;
    vmo.write(offset, &data).unwrap();
    let mut back = vec![0; data.len()];
    vmo.read(offset, &mut back).unwrap();
    assert_eq!(back, data);
    // Whole pages: zeroes up to the offset, then the data, then zeroes again.
    let mut pages = vec![0xff; 4 * PAGE_SIZE as usize];
    vmo.read(0, &mut pages).unwrap();
    let (start, end) = (offset as usize, offset as usize + data.len());
    assert!(pages[..start].iter().all(|&b| b == 0), "before the data");
    assert_eq!(&pages[start..end], &data[..]);
    assert!(pages[end..].iter().all(|&b| b == 0), "after the data");
    let mut small = [0; 3];
    vmo.read(2 * PAGE_SIZE + 7, &mut small).unwrap();
    let at = (2 * PAGE_SIZE + 7 - offset) as usize;
    assert_eq!(small, data[at..at + 3]);
    // The other VMO's pages, in memory between ours, kept their bytes.
    let mut theirs = vec![0; 4 * PAGE_SIZE as usize];
    other.read(0, &mut theirs).unwrap();
    assert!(theirs.iter().all(|&b| b == 0xee));
}

/// A pin (and an unpin) needs a page-aligned offset and a non-zero page-aligned length, each
/// on its own.
#[test]
fn pin_arguments() {
    let machine = machine(1);
    let vmo = Vmo::create(platform(&machine), 4 * PAGE_SIZE).unwrap();
    for (offset, len) in [(8, PAGE_SIZE), (0, PAGE_SIZE + 8), (0, 0), (PAGE_SIZE, 0)] {
        assert_eq!(
            vmo.pin(offset, len),
            Err(Status::InvalidArgs),
            "{offset} {len}"
        );
        assert_eq!(
            vmo.unpin(offset, len),
            Err(Status::InvalidArgs),
            "{offset} {len}"
        );
    }
    assert_eq!(vmo.pin(0, PAGE_SIZE), Ok(()));
    assert_eq!(vmo.unpin(0, PAGE_SIZE), Ok(()));
}

/// The page list's heap use grows with what is committed.
#[test]
fn page_list_heap_bytes_count() {
    let machine = machine(1);
    let vmo = Vmo::create(platform(&machine), 64 * PAGE_SIZE).unwrap();
    assert_eq!(vmo.page_list_heap_bytes(), 0);
    vmo.commit(0, 64 * PAGE_SIZE).unwrap();
    assert!(vmo.page_list_heap_bytes() > 64);
}

/// `zx_object_get_info` counts mappings and the distinct address spaces they are in (its
/// `share_count`); a mapping gone is counted in neither.
#[test]
fn info_counts_mappings_and_address_spaces() {
    for format in Format::ALL {
        let machine = machine(1);
        let a = process(&machine, format);
        let b = process(&machine, format);
        let vmo_a = patterned_vmo(&a, 2);
        let vmo = a.vmo(vmo_a).unwrap().0;
        let info = |vmo: &Vmo| vmo.info(0);
        assert_eq!((info(&vmo).num_mappings, info(&vmo).share_count), (0, 0));
        let first = map_rw(&a, a.root_vmar_handle(), vmo_a, 0, 1);
        assert_eq!((info(&vmo).num_mappings, info(&vmo).share_count), (1, 1));
        map_rw(&a, a.root_vmar_handle(), vmo_a, 1, 1);
        assert_eq!((info(&vmo).num_mappings, info(&vmo).share_count), (2, 1));
        let vmo_b = b
            .add_handle(zx_vm::KernelObject::Vmo(vmo.clone()), Rights::all())
            .unwrap();
        map_rw(&b, b.root_vmar_handle(), vmo_b, 0, 2);
        assert_eq!((info(&vmo).num_mappings, info(&vmo).share_count), (3, 2));
        assert_eq!(
            zx_vmar_unmap(&a, a.root_vmar_handle(), first, PAGE_SIZE),
            ZX_OK
        );
        assert_eq!((info(&vmo).num_mappings, info(&vmo).share_count), (2, 2));
        let flags = info(&vmo).flags;
        assert_eq!(flags, ZX_INFO_VMO_TYPE_PAGED | ZX_INFO_VMO_VIA_HANDLE);
    }
}

/// `ZX_VM_MAP_RANGE` of a contiguous VMO from a VMO offset maps the frames at that offset.
#[test]
fn map_range_of_a_contiguous_vmo_at_an_offset() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = Vmo::create_contiguous(p.platform().clone(), 4 * PAGE_SIZE).unwrap();
        let VmoKind::Contiguous { base } = vmo.kind() else {
            panic!("a contiguous VMO");
        };
        let handle = p
            .add_handle(zx_vm::KernelObject::Vmo(vmo.clone()), Rights::all())
            .unwrap();
        let mut addr = 0;
        let options = ZX_VM_PERM_READ | ZX_VM_MAP_RANGE;
        let status = zx_vmar_map(
            &p,
            p.root_vmar_handle(),
            options,
            0,
            handle,
            2 * PAGE_SIZE,
            2 * PAGE_SIZE,
            &mut addr,
        );
        assert_eq!(status, ZX_OK);
        let r_user = MmuFlags::READ | MmuFlags::USER;
        for page in 0..2 {
            assert_eq!(
                p.aspace().query(addr + page * PAGE_SIZE),
                Some((PhysAddr(base.0 + (2 + page) * PAGE_SIZE), r_user)),
                "{format:?}"
            );
        }
    }
}

/// A platform that, once asked to, checks from another thread whether a VMO's lock is held at
/// the moment the crate reads a page table (which a decommit does with its VMOs locked).
struct LockProbe {
    machine: Arc<SimMachine>,
    vmo: Mutex<Option<Arc<Vmo>>>,
    /// Whether another thread could read the VMO's committed bytes while the table was read.
    unlocked: Mutex<Option<bool>>,
}

// SAFETY: forwards to the simulated machine; the probe only reads a VMO from another thread.
unsafe impl Platform for LockProbe {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        self.machine.alloc_frame()
    }
    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        // SAFETY: forwarded from the caller.
        unsafe { self.machine.free_frames(frames) }
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        if let Some(vmo) = self.vmo.lock().unwrap().take() {
            let (tx, rx) = mpsc::channel();
            let reader = thread::spawn(move || tx.send(vmo.committed_bytes()).unwrap());
            let answered = rx.recv_timeout(Duration::from_millis(200)).is_ok();
            *self.unlocked.lock().unwrap() = Some(answered);
            if answered {
                reader.join().unwrap();
            }
            // Otherwise the reader finishes once the decommit drops the lock.
        }
        self.machine.phys_to_virt(pa)
    }
    fn current_cpu(&self) -> usize {
        self.machine.current_cpu()
    }
    fn tlb(&self) -> &zx_vm::tlb::Tlb {
        self.machine.tlb()
    }
    fn invalidate_local(&self, request: &zx_vm::platform::TlbInvalidate<'_>) {
        self.machine.invalidate_local(request)
    }
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: forwarded from the caller.
        unsafe { self.machine.load_root(root, asid, flush) }
    }
    unsafe fn load_kernel_root(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.machine.load_kernel_root() }
    }
    fn prepare_root(&self, root: PhysAddr) {
        self.machine.prepare_root(root)
    }
}

/// A decommit through a VMAR holds the lock of every VMO it changes while it clears their
/// translations: no other thread reads a VMO's pages half-way through.
#[test]
fn a_vmar_decommit_holds_the_vmo_locks() {
    let probe = Arc::new(LockProbe {
        machine: machine(1),
        vmo: Mutex::new(None),
        unlocked: Mutex::new(None),
    });
    let platform: Arc<dyn Platform> = probe.clone();
    let p = zx_vm::Process::new(platform, Format::NATIVE).unwrap();
    let handle = patterned_vmo(&p, 2);
    let addr = map_rw(&p, p.root_vmar_handle(), handle, 0, 2);
    let vmo = p.vmo(handle).unwrap().0;
    assert_eq!(p.aspace().page_fault(addr, Access::Read), Ok(()));
    *probe.vmo.lock().unwrap() = Some(vmo);
    let status = zx_vmar_op_range(
        &p,
        p.root_vmar_handle(),
        ZX_VMAR_OP_DECOMMIT,
        addr,
        2 * PAGE_SIZE,
        0,
        0,
    );
    assert_eq!(status, ZX_OK);
    assert_eq!(
        *probe.unlocked.lock().unwrap(),
        Some(false),
        "another thread read the VMO while its pages were being decommitted"
    );
}

/// The page list holds frames below `PAGE_LIST_PHYS_LIMIT` and none at it.
#[test]
fn the_page_list_holds_frames_below_its_limit() {
    use zx_vm::vmo::{PageList, PAGE_LIST_PHYS_LIMIT};
    assert!(PageList::can_hold(PhysAddr(
        PAGE_LIST_PHYS_LIMIT - PAGE_SIZE
    )));
    assert!(!PageList::can_hold(PhysAddr(PAGE_LIST_PHYS_LIMIT)));
}
