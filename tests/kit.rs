//! The integration kit (`zx_vm::kit`): a freeing frame allocator over a bump source, the
//! single-CPU platform driven through the syscalls, fault decoding, and the `x86_64` crate glue.
//!
//! "Physical memory" is either a page-aligned host arena whose base address is the direct map's
//! offset (fake physical address `pa` lives at `base + pa`, as in a kernel's direct map), or a
//! simulated machine's memory reached through a closure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zx_vm::abi::*;
use zx_vm::arch::{Format, MemoryAttributes, Shareability};
use zx_vm::kit::aarch64_esr::{self, FaultClass};
use zx_vm::kit::frames::{DirectMap, FrameSource, FreeListFrames, PhysMapper};
use zx_vm::kit::single_cpu::{
    CpuOps, KernelSlots, SingleCpu, SingleCpuConfig, SingleCpuError, SlotError,
};
use zx_vm::platform::{CpuPin, TlbInvalidate, TlbScope};
use zx_vm::sim::SimMachine;
use zx_vm::syscall::*;
use zx_vm::tlb::TlbConfigError;
use zx_vm::vmar::{Access, USER_ASPACE_BASE, USER_ASPACE_SIZE};
use zx_vm::{AddressSpace, PhysAddr, Platform, Process, VmOptions};

/// Host memory standing in for physical memory: frame `n` is at `base + n * 4096`.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

struct Arena {
    base: u64,
    frames: u64,
}

impl Arena {
    /// `frames` zeroed frames, leaked: the platform and anything that outlives a test's scope
    /// may still point into them.
    fn new(frames: u64) -> Arena {
        let pages: Vec<Page> = (0..frames).map(|_| Page([0; 4096])).collect();
        let base = Box::leak(pages.into_boxed_slice()).as_mut_ptr();
        Arena {
            base: base.expose_provenance() as u64,
            frames,
        }
    }

    fn map(&self) -> DirectMap {
        DirectMap::new(self.base)
    }

    fn word(&self, pa: PhysAddr) -> *mut u64 {
        assert!(
            pa.0 / PAGE_SIZE < self.frames,
            "{pa:?} is outside the arena"
        );
        self.map().phys_to_virt(pa).cast()
    }

    fn read(&self, pa: PhysAddr) -> u64 {
        // SAFETY: inside the leaked arena, 8-aligned.
        unsafe { self.word(pa).read_volatile() }
    }

    fn write(&self, pa: PhysAddr, value: u64) {
        // SAFETY: as above.
        unsafe { self.word(pa).write_volatile(value) }
    }
}

/// A bump allocator: frames `next..end` once each, never freed. It records every call and every
/// frame it hands out.
struct Bump {
    next: u64,
    end: u64,
    calls: Arc<AtomicU64>,
    handed: Arc<Mutex<Vec<PhysAddr>>>,
}

impl Bump {
    fn new(first: u64, end: u64) -> Bump {
        Bump {
            next: first,
            end,
            calls: Arc::default(),
            handed: Arc::default(),
        }
    }
}

// SAFETY: each frame of the arena's range is handed out once; the tests keep other frames (the
// kernel root) out of the range.
unsafe impl FrameSource for Bump {
    fn alloc(&mut self) -> Option<PhysAddr> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.next >= self.end {
            return None;
        }
        let frame = PhysAddr::from_frame_number(self.next);
        self.next += 1;
        self.handed.lock().unwrap().push(frame);
        Some(frame)
    }
}

/// What the recording CPU saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    LoadRoot {
        root: PhysAddr,
        asid: u16,
        flush: bool,
    },
    LoadKernelRoot,
    Invalidate {
        asid: u16,
        root: PhysAddr,
        /// `None`: the whole address space.
        pages: Option<Vec<u64>>,
    },
}

#[derive(Default)]
struct RecordingCpu {
    log: Arc<Mutex<Vec<Call>>>,
}

// SAFETY: there is no real CPU: the host runs no code through these tables, and the test reads
// the log instead.
unsafe impl CpuOps for RecordingCpu {
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        self.log
            .lock()
            .unwrap()
            .push(Call::LoadRoot { root, asid, flush });
    }

    unsafe fn load_kernel_root(&self) {
        self.log.lock().unwrap().push(Call::LoadKernelRoot);
    }

    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        let pages = match request.scope {
            TlbScope::Pages(pages) => Some(pages.to_vec()),
            // (This platform reports no range feature: the crate never sends spans.)
            TlbScope::Spans(spans) => Some(spans.iter().map(|span| span.va).collect()),
            TlbScope::All => None,
        };
        self.log.lock().unwrap().push(Call::Invalidate {
            asid: request.asid,
            root: request.root,
            pages,
        });
    }
}

/// The fake kernel root lives in arena frame 1; its slots 256 and 511 point at frame 2.
const KERNEL_ROOT: PhysAddr = PhysAddr(0x1000);
const KERNEL_ENTRY: u64 = 0x2000 | 0x3;
/// Frames from 3 on belong to the bump source.
const FIRST_FREE: u64 = 3;

fn kernel_arena(frames: u64) -> Arena {
    let arena = Arena::new(frames);
    for slot in [256u64, 511] {
        arena.write(PhysAddr(KERNEL_ROOT.0 + slot * 8), KERNEL_ENTRY);
    }
    arena
}

fn config(tags: u16) -> SingleCpuConfig {
    SingleCpuConfig {
        tags,
        ..SingleCpuConfig::new(KERNEL_ROOT, KernelSlots::UPPER_HALF)
    }
}

type ArenaPlatform = SingleCpu<Bump, RecordingCpu, DirectMap>;

fn arena_platform(arena: &Arena, tags: u16) -> (Arc<ArenaPlatform>, Arc<Mutex<Vec<Call>>>) {
    let cpu = RecordingCpu::default();
    let log = cpu.log.clone();
    let bump = Bump::new(FIRST_FREE, arena.frames);
    // SAFETY: the arena is the direct map of every frame the bump hands out and of the kernel
    // root; one (simulated) CPU.
    let piece = unsafe { SingleCpu::new(bump, cpu, arena.base, config(tags)) }.unwrap();
    (Arc::new(piece), log)
}

fn take_log(log: &Mutex<Vec<Call>>) -> Vec<Call> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn free_list_reuses_frames_and_never_asks_the_source_again() {
    let arena = Arena::new(64);
    let bump = Bump::new(1, 64);
    let (calls, handed) = (bump.calls.clone(), bump.handed.clone());
    // SAFETY: the arena maps every frame of the bump.
    let frames = unsafe { FreeListFrames::new(bump, arena.map()) };
    let first: Vec<PhysAddr> = (0..10).map(|_| frames.alloc().unwrap()).collect();
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    // SAFETY: allocated above, unused.
    unsafe { frames.free_all(&first[..6]) };
    let stats = frames.stats();
    assert_eq!((stats.allocated, stats.free, stats.from_source), (4, 6, 10));
    // The links live in the freed frames: the last freed holds the one freed before it.
    assert_eq!(arena.read(first[5]), first[4].0);
    // Six allocations come back from the list, most recently freed first; the source is idle.
    let again: Vec<PhysAddr> = (0..6).map(|_| frames.alloc().unwrap()).collect();
    assert_eq!(again, first[..6].iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    // The seventh is fresh.
    assert_eq!(frames.alloc(), Some(PhysAddr(11 * PAGE_SIZE)));
    let handed = handed.lock().unwrap();
    let unique: HashSet<_> = handed.iter().collect();
    assert_eq!(
        unique.len(),
        handed.len(),
        "the source handed a frame out twice"
    );
    assert_eq!(frames.stats().from_source, handed.len() as u64);
}

#[test]
fn free_list_runs_dry_without_panicking() {
    let arena = Arena::new(3);
    // SAFETY: as above.
    let frames = unsafe { FreeListFrames::new(Bump::new(1, 3), arena.map()) };
    let (a, b) = (frames.alloc().unwrap(), frames.alloc().unwrap());
    assert_eq!(frames.alloc(), None);
    assert_eq!(frames.alloc(), None);
    // SAFETY: allocated above; an unaligned address is refused, not stored.
    unsafe {
        frames.free(PhysAddr(b.0 | 0x10));
        frames.free(a);
    }
    assert_eq!(frames.stats().rejected, 1);
    assert_eq!(frames.alloc(), Some(a));
    assert_eq!(frames.alloc(), None);
    assert_eq!(frames.stats().allocated, 2);
}

#[test]
fn free_list_is_thread_safe() {
    let arena = Arena::new(40);
    // SAFETY: as above.
    let frames = Arc::new(unsafe { FreeListFrames::new(Bump::new(1, 40), arena.map()) });
    let owners: Arc<Mutex<HashSet<PhysAddr>>> = Arc::default();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (frames, owners) = (frames.clone(), owners.clone());
            std::thread::spawn(move || {
                for round in 0..2000 {
                    let held: Vec<PhysAddr> =
                        (0..1 + round % 5).filter_map(|_| frames.alloc()).collect();
                    for frame in &held {
                        assert!(
                            owners.lock().unwrap().insert(*frame),
                            "{frame:?} handed out twice"
                        );
                    }
                    for frame in &held {
                        owners.lock().unwrap().remove(frame);
                    }
                    // SAFETY: ours, and no longer used.
                    unsafe { frames.free_all(&held) };
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = frames.stats();
    assert_eq!(stats.allocated, 0);
    assert_eq!(stats.free, stats.from_source);
    assert!(
        stats.from_source <= 20,
        "4 threads hold at most 20 frames at once"
    );
}

#[test]
fn kernel_slots() {
    assert_eq!(
        KernelSlots::outside_user_range(USER_ASPACE_BASE, USER_ASPACE_SIZE),
        Ok(KernelSlots::UPPER_HALF)
    );
    assert_eq!(KernelSlots::range(256..=511), Ok(KernelSlots::UPPER_HALF));
    assert_eq!(KernelSlots::UPPER_HALF.len(), 256);
    assert_eq!(
        KernelSlots::range(500..=512),
        Err(SlotError::OutOfRange { slot: 512 })
    );
    // A user range from slot 1: the kernel keeps slot 0 and the upper half.
    let base = 1 << 39;
    let size = (1 << 47) - PAGE_SIZE - base;
    let slots = KernelSlots::outside_user_range(base, size).unwrap();
    assert!(slots.contains(0) && !slots.contains(1) && !slots.contains(255) && slots.contains(256));
    assert_eq!(slots.len(), 257);
    assert!(slots.is_clear_of(base, size));
    assert!(!slots.is_clear_of(USER_ASPACE_BASE, USER_ASPACE_SIZE));
    for (base, size) in [
        (0, 0),
        (0x1000, 0x800),
        (0x10, 0x1000),
        (1 << 47, 0x1000),
        (u64::MAX - 0xfff, 0x2000),
    ] {
        assert_eq!(
            KernelSlots::outside_user_range(base, size),
            Err(SlotError::BadUserRange { base, size })
        );
    }
    assert!(KernelSlots::NONE.is_empty());
}

#[test]
fn single_cpu_refuses_bad_configurations_with_errors() {
    let arena = kernel_arena(8);
    let make = |config: SingleCpuConfig| {
        // SAFETY: the arena maps the bump's frames and the kernel root.
        unsafe {
            SingleCpu::new(
                Bump::new(FIRST_FREE, 8),
                RecordingCpu::default(),
                arena.base,
                config,
            )
        }
        .map(|_| ())
    };
    assert_eq!(
        make(SingleCpuConfig {
            format: Format::X86_64,
            ..config(5000)
        }),
        Err(SingleCpuError::Tlb(TlbConfigError::TooManyTags {
            tags: 5000,
            max: 4095
        }))
    );
    assert_eq!(
        make(SingleCpuConfig {
            format: Format::Aarch64,
            ..config(5000)
        }),
        Ok(())
    );
    assert_eq!(
        make(SingleCpuConfig {
            kernel_root: PhysAddr(KERNEL_ROOT.0 + 8),
            ..config(0)
        }),
        Err(SingleCpuError::UnalignedKernelRoot(PhysAddr(
            KERNEL_ROOT.0 + 8
        )))
    );
    // The kernel root's entries are in 256 and 511; slots 300-310 hold nothing.
    let empty = KernelSlots::range(300..=310).unwrap();
    assert_eq!(
        make(SingleCpuConfig {
            format: Format::X86_64,
            kernel_slots: empty,
            ..config(0)
        }),
        Err(SingleCpuError::NoKernelEntries)
    );
    // aarch64 roots need no kernel entries.
    assert_eq!(
        make(SingleCpuConfig {
            format: Format::Aarch64,
            kernel_slots: KernelSlots::NONE,
            ..config(0)
        }),
        Ok(())
    );
    // An x86_64 kernel entry left out of the slots (here 511) would vanish under every process.
    let only_256 = KernelSlots::range(256..=256).unwrap();
    let refused = make(SingleCpuConfig {
        format: Format::X86_64,
        kernel_slots: only_256,
        ..config(0)
    });
    assert_eq!(
        refused,
        Err(SingleCpuError::KernelEntriesOutsideSlots { slot: 511 })
    );
    assert!(refused.unwrap_err().to_string().contains("slot 511"));
    assert_eq!(
        make(SingleCpuConfig {
            memory_attributes: MemoryAttributes {
                mair_index: 8,
                shareability: Shareability::Inner
            },
            ..config(0)
        }),
        Err(SingleCpuError::BadMemoryAttributes)
    );
}

/// The memory attributes a kernel configures are the ones its address spaces' leaves carry.
#[test]
fn single_cpu_hands_its_memory_attributes_to_the_page_tables() {
    let arena = kernel_arena(16);
    let attrs = MemoryAttributes {
        mair_index: 1,
        shareability: Shareability::Inner,
    };
    // SAFETY: the arena maps the bump's frames and the kernel root.
    let piece = unsafe {
        SingleCpu::new(
            Bump::new(FIRST_FREE, 16),
            RecordingCpu::default(),
            arena.base,
            SingleCpuConfig {
                format: Format::Aarch64,
                memory_attributes: attrs,
                ..config(0)
            },
        )
    }
    .unwrap();
    assert_eq!(piece.memory_attributes(), attrs);
    let platform: Arc<dyn Platform> = Arc::new(piece);
    let process = Process::new(platform, Format::Aarch64).unwrap();
    let vmo = zx_vm::Vmo::create(process.platform().clone(), PAGE_SIZE).unwrap();
    let (root, _) = process.vmar(process.root_vmar_handle()).unwrap();
    let addr = root
        .map(
            VmOptions::PERM_READ | VmOptions::PERM_WRITE | VmOptions::MAP_RANGE,
            0,
            &vmo,
            0,
            PAGE_SIZE,
            VmOptions::CAN_MAP_PERMS,
        )
        .unwrap();
    vmo.write(0, &[1]).unwrap();
    process
        .aspace()
        .page_fault(addr, zx_vm::vmar::Access::Read)
        .unwrap();
    // The leaf's AttrIndx (bits 4:2) is the kernel's index.
    let (frame, _) = process.aspace().query(addr).unwrap();
    let root_table = process.aspace().root_table();
    let read = |pa: PhysAddr, index: usize| {
        let table = process.platform().phys_to_virt(pa) as *const u64;
        // SAFETY: a live table of the address space, reached through the platform's mapper.
        unsafe { table.add(index).read() }
    };
    let mut table = root_table;
    for level in (1..4).rev() {
        let entry = read(table, ((addr >> (12 + 9 * level)) & 0x1ff) as usize);
        table = PhysAddr(entry & 0x0000_ffff_ffff_f000);
    }
    let entry = read(table, ((addr >> 12) & 0x1ff) as usize);
    assert_eq!(entry & 0x0000_ffff_ffff_f000, frame.0);
    assert_eq!((entry >> 2) & 7, 1, "AttrIndx");
    assert_eq!((entry >> 8) & 3, 0b11, "SH: inner shareable");
}

/// The whole path on the single-CPU platform: a process, a VMO mapped and faulted in, context
/// switches, decommits while active and while not, and every frame back on the free list at the
/// end, with the bump source asked only for frames it had never handed out.
#[test]
fn single_cpu_runs_a_process_and_recycles_frames() {
    let arena = kernel_arena(256);
    let (piece, log) = arena_platform(&arena, 16);
    let calls = piece.frames().with_source(|bump| bump.calls.clone());
    let platform: Arc<dyn Platform> = piece.clone();
    let process = Process::new(platform.clone(), Format::NATIVE).unwrap();
    let aspace = process.aspace().clone();
    let root = aspace.root_table();

    // prepare_root copied the kernel's slots, and only those.
    for slot in 0..512u64 {
        let entry = arena.read(PhysAddr(root.0 + slot * 8));
        let expected = if slot == 256 || slot == 511 {
            KERNEL_ENTRY
        } else {
            0
        };
        assert_eq!(entry, expected, "root slot {slot}");
    }

    const PAGES: u64 = 16;
    let (mut vmo, mut addr) = (0, 0);
    assert_eq!(
        zx_vmo_create(&process, PAGES * PAGE_SIZE, 0, &mut vmo),
        ZX_OK
    );
    for page in 0..PAGES {
        assert_eq!(
            zx_vmo_write(&process, vmo, &page.to_le_bytes(), page * PAGE_SIZE),
            ZX_OK
        );
    }
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let root_vmar = process.root_vmar_handle();
    assert_eq!(
        zx_vmar_map(
            &process,
            root_vmar,
            rw,
            0,
            vmo,
            0,
            PAGES * PAGE_SIZE,
            &mut addr
        ),
        ZX_OK
    );

    // Switch to the process: the CPU loads its root under its tag.
    let pin = CpuPin::new(&*platform);
    // SAFETY: the recording CPU runs nothing through the tables; switches go only through
    // activate and deactivate.
    unsafe { aspace.activate(&pin) };
    assert!(Arc::ptr_eq(&AddressSpace::current(&pin).unwrap(), &aspace));
    let log_now = take_log(&log);
    assert_eq!(log_now.len(), 1);
    assert!(
        matches!(log_now[0], Call::LoadRoot { root: r, asid, .. } if r == root && asid == aspace.asid())
    );
    assert_ne!(aspace.asid(), 0, "16 tags were configured");

    // Fault every page in, as the CPU's page-fault handler would; the translation reaches the
    // page's data through the direct map.
    for page in 0..PAGES {
        let va = addr + page * PAGE_SIZE;
        aspace.page_fault(va, Access::Write).unwrap();
        let (pa, _) = aspace.query(va).unwrap();
        assert_eq!(arena.read(pa), page);
    }
    aspace.audit().unwrap();

    // Decommit half while active: the CPU is told to drop exactly those pages.
    let before = piece.frame_stats();
    let source_calls = calls.load(Ordering::SeqCst);
    let half = PAGES / 2;
    let freed: HashSet<PhysAddr> = (0..half)
        .map(|page| aspace.query(addr + page * PAGE_SIZE).unwrap().0)
        .collect();
    assert_eq!(
        zx_vmar_op_range(
            &process,
            root_vmar,
            ZX_VMAR_OP_DECOMMIT,
            addr,
            half * PAGE_SIZE,
            0,
            0
        ),
        ZX_OK
    );
    let expected_pages: Vec<u64> = (0..half).map(|page| addr + page * PAGE_SIZE).collect();
    assert_eq!(
        take_log(&log),
        vec![Call::Invalidate {
            asid: aspace.asid(),
            root,
            pages: Some(expected_pages)
        }]
    );
    let after = piece.frame_stats();
    assert_eq!(after.free, before.free + half);
    assert_eq!(after.allocated, before.allocated - half);
    let mut bytes = [0xff; 8];
    assert_eq!(zx_vmo_read(&process, vmo, &mut bytes, 0), ZX_OK);
    assert_eq!(bytes, [0; 8], "a decommitted page reads as zeros");

    // Faulting the pages back in reuses exactly the freed frames: the bump source is not asked.
    for page in 0..half {
        aspace
            .page_fault(addr + page * PAGE_SIZE, Access::Read)
            .unwrap();
    }
    let reused: HashSet<PhysAddr> = (0..half)
        .map(|page| aspace.query(addr + page * PAGE_SIZE).unwrap().0)
        .collect();
    assert_eq!(reused, freed);
    assert_eq!(calls.load(Ordering::SeqCst), source_calls);
    assert_eq!(piece.frame_stats().from_source, before.from_source);
    aspace.audit().unwrap();

    // Switch away: the CPU goes back to the kernel root. A decommit now needs no invalidation
    // on this CPU, but the tag is flushed when the process comes back.
    // SAFETY: as above.
    unsafe { AddressSpace::deactivate(&pin) };
    assert_eq!(take_log(&log), vec![Call::LoadKernelRoot]);
    assert!(AddressSpace::current(&pin).is_none());
    assert_eq!(
        zx_vmar_op_range(
            &process,
            root_vmar,
            ZX_VMAR_OP_DECOMMIT,
            addr,
            PAGES * PAGE_SIZE,
            0,
            0
        ),
        ZX_OK
    );
    assert_eq!(take_log(&log), vec![]);
    // SAFETY: as above.
    unsafe { aspace.activate(&pin) };
    assert_eq!(
        take_log(&log),
        vec![Call::LoadRoot {
            root,
            asid: aspace.asid(),
            flush: true
        }]
    );
    // SAFETY: as above.
    unsafe { AddressSpace::deactivate(&pin) };
    drop(pin);

    // Tear everything down: every frame, the page tables included, is back on the free list,
    // and the bump handed each frame out once.
    let from_source = piece.frame_stats().from_source;
    drop(aspace);
    drop(process);
    let stats = piece.frame_stats();
    assert_eq!(stats.allocated, 0);
    assert_eq!(stats.free, from_source);
    assert_eq!(stats.from_source, from_source);
    let handed = piece.frames().with_source(|bump| bump.handed.clone());
    let handed = handed.lock().unwrap();
    assert_eq!(handed.len() as u64, from_source);
    assert_eq!(handed.iter().collect::<HashSet<_>>().len(), handed.len());
}

/// Untagged (tags 0): every activation flushes, and a decommit of an active address space is
/// invalidated on the CPU.
#[test]
fn single_cpu_untagged() {
    let arena = kernel_arena(64);
    let (piece, log) = arena_platform(&arena, 0);
    let platform: Arc<dyn Platform> = piece.clone();
    let process = Process::new(platform.clone(), Format::NATIVE).unwrap();
    let aspace = process.aspace().clone();
    assert_eq!(aspace.asid(), 0);
    let (mut vmo, mut addr) = (0, 0);
    assert_eq!(zx_vmo_create(&process, 2 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let root_vmar = process.root_vmar_handle();
    assert_eq!(
        zx_vmar_map(&process, root_vmar, rw, 0, vmo, 0, 2 * PAGE_SIZE, &mut addr),
        ZX_OK
    );
    let pin = CpuPin::new(&*platform);
    for _ in 0..2 {
        // SAFETY: as in the test above.
        unsafe { aspace.activate(&pin) };
    }
    let root = aspace.root_table();
    assert_eq!(
        take_log(&log),
        vec![
            Call::LoadRoot {
                root,
                asid: 0,
                flush: true
            };
            2
        ]
    );
    aspace.page_fault(addr, Access::Write).unwrap();
    assert_eq!(
        zx_vmar_op_range(
            &process,
            root_vmar,
            ZX_VMAR_OP_DECOMMIT,
            addr,
            PAGE_SIZE,
            0,
            0
        ),
        ZX_OK
    );
    assert_eq!(
        take_log(&log),
        vec![Call::Invalidate {
            asid: 0,
            root,
            pages: Some(vec![addr])
        }]
    );
    // SAFETY: as above.
    unsafe { AddressSpace::deactivate(&pin) };
    drop(pin);
    drop(aspace);
    drop(process);
    assert_eq!(piece.frame_stats().allocated, 0);
}

/// Frames from a simulated machine, reached through a closure mapper, in both page-table
/// formats. At the end every frame the source took from the machine goes back to it, which the
/// machine checks (double frees, leaks).
#[test]
fn single_cpu_over_simulated_memory() {
    for format in Format::ALL {
        let machine = SimMachine::with_frames(256);
        let kernel_root = machine.alloc_frame().unwrap();
        let handed: Arc<Mutex<Vec<PhysAddr>>> = Arc::default();
        struct SimSource(Arc<SimMachine>, Arc<Mutex<Vec<PhysAddr>>>);
        // SAFETY: the machine's allocator hands each frame out once until freed, and the test
        // frees them only after the platform is gone.
        unsafe impl FrameSource for SimSource {
            fn alloc(&mut self) -> Option<PhysAddr> {
                let frame = self.0.alloc_frame()?;
                self.1.lock().unwrap().push(frame);
                Some(frame)
            }
        }
        let map = {
            let machine = machine.clone();
            move |pa: PhysAddr| machine.phys_to_virt(pa)
        };
        // The simulated kernel root: one entry in slot 511 (zeroed frames otherwise).
        // SAFETY: the frame is ours; the machine's memory is 8-aligned words.
        unsafe {
            map(kernel_root)
                .cast::<u64>()
                .add(511)
                .write_volatile(0x1000 | 0x3)
        };
        let config = SingleCpuConfig {
            format,
            tags: 8,
            ..SingleCpuConfig::new(kernel_root, KernelSlots::UPPER_HALF)
        };
        // SAFETY: the closure reaches every frame of the machine; one CPU.
        let piece = unsafe {
            SingleCpu::with_mapper(
                SimSource(machine.clone(), handed.clone()),
                RecordingCpu::default(),
                map,
                config,
            )
        }
        .unwrap();
        let piece = Arc::new(piece);
        let process = Process::new(piece.clone(), format).unwrap();
        let aspace = process.aspace().clone();
        assert_eq!(
            machine.read_phys(PhysAddr(aspace.root_table().0 + 511 * 8)),
            0x1003
        );

        let (mut vmo, mut addr) = (0, 0);
        assert_eq!(zx_vmo_create(&process, 8 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
        let root_vmar = process.root_vmar_handle();
        assert_eq!(
            zx_vmar_map(&process, root_vmar, rw, 0, vmo, 0, 8 * PAGE_SIZE, &mut addr),
            ZX_OK
        );
        let mut steady = None;
        for round in 0..3u64 {
            for page in 0..8 {
                let va = addr + page * PAGE_SIZE;
                aspace.page_fault(va, Access::Write).unwrap();
                let (pa, _) = aspace.query(va).unwrap();
                assert_eq!(machine.read_phys(pa), 0, "a fresh page is zeroed");
            }
            assert_eq!(zx_vmo_write(&process, vmo, b"data", 0), ZX_OK);
            // Rounds after the first take no frame from the machine: the decommitted ones come
            // back from the free list.
            let in_use = machine.frames_in_use();
            assert_eq!(*steady.get_or_insert(in_use), in_use, "round {round}");
            assert_eq!(handed.lock().unwrap().len() as u64, in_use - 1);
            assert_eq!(
                zx_vmar_op_range(
                    &process,
                    root_vmar,
                    ZX_VMAR_OP_DECOMMIT,
                    addr,
                    8 * PAGE_SIZE,
                    0,
                    0
                ),
                ZX_OK,
                "{} round {round}",
                format.name()
            );
            // The decommitted frames stay with the free list, not the machine.
            assert_eq!(machine.frames_in_use(), in_use);
            assert!(piece.frame_stats().free >= 8);
        }
        drop(aspace);
        drop(process);
        let piece = Arc::try_unwrap(piece)
            .ok()
            .expect("the platform's last reference");
        let stats = piece.frame_stats();
        assert_eq!(stats.allocated, 0, "{}", format.name());
        drop(piece);
        let mut frames = handed.lock().unwrap().clone();
        frames.push(kernel_root);
        // SAFETY: the platform is gone; nothing uses these frames any more.
        unsafe { machine.free_frames(&frames) };
    }
}

/// A kernel that keeps slot 0 (bootloader 0.9's kernel image): address spaces start at slot 1,
/// and the platform copies slot 0 and the upper half.
#[test]
fn single_cpu_with_a_lower_half_kernel() {
    let arena = kernel_arena(64);
    arena.write(KERNEL_ROOT, KERNEL_ENTRY); // slot 0
    let base = 1 << 39;
    let size = (1 << 47) - PAGE_SIZE - base;
    let slots = KernelSlots::outside_user_range(base, size).unwrap();
    let config = SingleCpuConfig {
        format: Format::X86_64,
        ..SingleCpuConfig::new(KERNEL_ROOT, slots)
    };
    // SAFETY: the arena maps the bump's frames and the kernel root.
    let piece = unsafe {
        SingleCpu::new(
            Bump::new(FIRST_FREE, 64),
            RecordingCpu::default(),
            arena.base,
            config,
        )
    }
    .unwrap();
    let piece = Arc::new(piece);
    let process = Process::with_user_range(piece.clone(), Format::X86_64, base, size).unwrap();
    let aspace = process.aspace().clone();
    let root = aspace.root_table();
    for (slot, expected) in [
        (0, KERNEL_ENTRY),
        (1, 0),
        (255, 0),
        (256, KERNEL_ENTRY),
        (511, KERNEL_ENTRY),
    ] {
        assert_eq!(
            arena.read(PhysAddr(root.0 + slot * 8)),
            expected,
            "slot {slot}"
        );
    }
    let (mut vmo, mut va) = (0, 0);
    assert_eq!(zx_vmo_create(&process, PAGE_SIZE, 0, &mut vmo), ZX_OK);
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let root_vmar = process.root_vmar_handle();
    assert_eq!(
        zx_vmar_map(&process, root_vmar, rw, 0, vmo, 0, PAGE_SIZE, &mut va),
        ZX_OK
    );
    assert!(va >= base);
    aspace.page_fault(va, Access::Write).unwrap();
    assert_eq!(arena.read(root), KERNEL_ENTRY, "slot 0 is untouched");
    drop((aspace, process));
    assert_eq!(piece.frame_stats().allocated, 0);
}

#[test]
fn esr_decoding_routes_the_right_faults() {
    let esr = |ec: u64, iss: u64| (ec << 26) | (1 << 25) | iss;
    let cases = [
        // (ESR, access, class, lower EL, routed, local TLBI after resolving)
        (
            esr(0x24, 0b000100),
            Access::Read,
            FaultClass::Translation { level: 0 },
            true,
            true,
            false,
        ),
        (
            esr(0x24, (1 << 6) | 0b000111),
            Access::Write,
            FaultClass::Translation { level: 3 },
            true,
            true,
            false,
        ),
        (
            esr(0x25, (1 << 6) | 0b001101),
            Access::Write,
            FaultClass::Permission { level: 1 },
            false,
            true,
            true,
        ),
        (
            esr(0x25, 0b001111),
            Access::Read,
            FaultClass::Permission { level: 3 },
            false,
            true,
            true,
        ),
        (
            esr(0x24, 0b001011),
            Access::Read,
            FaultClass::AccessFlag { level: 3 },
            true,
            false,
            false,
        ),
        (
            esr(0x20, 0b000110),
            Access::Execute,
            FaultClass::Translation { level: 2 },
            true,
            true,
            false,
        ),
        (
            esr(0x21, 0b001111),
            Access::Execute,
            FaultClass::Permission { level: 3 },
            false,
            true,
            true,
        ),
        (
            esr(0x24, 0b100001),
            Access::Read,
            FaultClass::Other { status: 0b100001 },
            true,
            false,
            false,
        ),
    ];
    for (value, access, class, lower, routed, tlbi) in cases {
        let kind = aarch64_esr::decode_esr(value).unwrap();
        assert_eq!(kind.access, access, "{value:#x}");
        assert_eq!(kind.class, class, "{value:#x}");
        assert_eq!(kind.from_lower_el, lower, "{value:#x}");
        assert_eq!(kind.routes_to_page_fault(), routed, "{value:#x}");
        assert_eq!(kind.needs_local_invalidate(), tlbi, "{value:#x}");
    }
    // Not aborts: SVC, an undefined instruction, a breakpoint.
    for ec in [0x15, 0x00, 0x3c] {
        assert_eq!(aarch64_esr::decode_esr(esr(ec, 0b000111)), None);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use x86_64::structures::idt::PageFaultErrorCode;
    use x86_64::structures::paging::{FrameAllocator, PhysFrame, Size4KiB};
    use zx_vm::kit::x86::{self as kit_x86, AddrError, X86Frames};

    #[test]
    fn address_and_frame_conversions() {
        let pa = PhysAddr::from(x86_64::PhysAddr::new(0x1234_5678));
        assert_eq!(pa, PhysAddr(0x1234_5678));
        assert_eq!(
            x86_64::PhysAddr::try_from(PhysAddr(0xf_ffff_ffff_f000)),
            Ok(x86_64::PhysAddr::new(0xf_ffff_ffff_f000))
        );
        let wide = PhysAddr(1 << 52);
        assert_eq!(
            x86_64::PhysAddr::try_from(wide),
            Err(AddrError::TooWide(wide))
        );

        let frame = PhysFrame::<Size4KiB>::try_from(PhysAddr(0x5000)).unwrap();
        assert_eq!(frame.start_address().as_u64(), 0x5000);
        assert_eq!(PhysAddr::from(frame), PhysAddr(0x5000));
        let unaligned = PhysAddr(0x5008);
        assert_eq!(
            PhysFrame::<Size4KiB>::try_from(unaligned),
            Err(AddrError::Unaligned(unaligned))
        );
        assert_eq!(
            PhysFrame::<Size4KiB>::try_from(PhysAddr(!0xfff)),
            Err(AddrError::TooWide(PhysAddr(!0xfff)))
        );
    }

    #[test]
    fn page_fault_error_codes() {
        let cases = [
            (0b00000, Access::Read),    // not present, read, supervisor
            (0b00100, Access::Read),    // user read
            (0b00101, Access::Read),    // user read, protection violation
            (0b00010, Access::Write),   // write
            (0b00111, Access::Write),   // user write, protection violation
            (0b10000, Access::Execute), // instruction fetch
            (0b10101, Access::Execute), // user fetch from a no-execute page
            (0b10010, Access::Write),   // never from hardware: the write wins
        ];
        for (code, access) in cases {
            assert_eq!(kit_x86::decode_page_fault(code), access, "{code:#b}");
            assert_eq!(
                kit_x86::decode_page_fault_error_code(PageFaultErrorCode::from_bits_retain(code)),
                access
            );
        }
        let user_write = PageFaultErrorCode::USER_MODE | PageFaultErrorCode::CAUSED_BY_WRITE;
        assert_eq!(
            kit_x86::decode_page_fault_error_code(user_write),
            Access::Write
        );
        assert!(kit_x86::routes_to_page_fault(user_write.bits()));
        assert!(kit_x86::routes_to_page_fault(0b10101));
        for not_ours in [1 << 3, 1 << 5, 1 << 6, 1 << 15] {
            assert!(!kit_x86::routes_to_page_fault(not_ours | 0b100));
        }
    }

    /// A bootloader-style frame allocator of the `x86_64` crate: frames once each, no free.
    struct BootFrames {
        next: u64,
        end: u64,
    }

    // SAFETY: each frame of the arena range is handed out once.
    unsafe impl FrameAllocator<Size4KiB> for BootFrames {
        fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
            if self.next >= self.end {
                return None;
            }
            self.next += 1;
            PhysFrame::from_start_address(x86_64::PhysAddr::new((self.next - 1) * 4096)).ok()
        }
    }

    #[test]
    fn frame_allocator_adapters_both_ways() {
        let arena = Arena::new(8);
        let source = X86Frames(BootFrames { next: 1, end: 8 });
        // SAFETY: the arena maps every frame of the source.
        let frames = unsafe { FreeListFrames::new(source, arena.map()) };
        // The free list as an `x86_64` allocator, e.g. for `OffsetPageTable::map_to`.
        let mut allocator = &frames;
        let a = allocator.allocate_frame().unwrap();
        let b = allocator.allocate_frame().unwrap();
        assert_eq!(PhysAddr::from(a), PhysAddr(0x1000));
        assert_eq!(PhysAddr::from(b), PhysAddr(0x2000));
        // SAFETY: allocated above, unused.
        unsafe { frames.free(PhysAddr::from(a)) };
        assert_eq!(allocator.allocate_frame(), Some(a));
        assert_eq!(frames.with_source(|source| source.0.next), 3);
        let rest: Vec<_> = std::iter::from_fn(|| allocator.allocate_frame()).collect();
        assert_eq!(rest.len(), 5);
        assert_eq!(frames.stats().from_source, 7);
    }

    /// The bump of the x86_64 crate drives a whole `SingleCpu` too.
    #[test]
    fn single_cpu_over_an_x86_64_frame_allocator() {
        let arena = kernel_arena(64);
        let source = X86Frames(BootFrames {
            next: FIRST_FREE,
            end: 64,
        });
        // SAFETY: the arena maps the source's frames and the kernel root.
        let piece =
            unsafe { SingleCpu::new(source, RecordingCpu::default(), arena.base, config(0)) }
                .unwrap();
        let piece = Arc::new(piece);
        let process = Process::new(piece.clone(), Format::X86_64).unwrap();
        let (mut vmo, mut addr) = (0, 0);
        assert_eq!(zx_vmo_create(&process, PAGE_SIZE, 0, &mut vmo), ZX_OK);
        let root_vmar = process.root_vmar_handle();
        let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
        assert_eq!(
            zx_vmar_map(&process, root_vmar, rw, 0, vmo, 0, PAGE_SIZE, &mut addr),
            ZX_OK
        );
        process
            .aspace()
            .page_fault(addr, kit_x86::decode_page_fault(0b110))
            .unwrap();
        assert!(process.aspace().query(addr).is_some());
        drop(process);
        assert_eq!(piece.frame_stats().allocated, 0);
    }
}
