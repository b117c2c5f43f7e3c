//! The seams between the crate and a kernel: nothing a caller controls overflows a kernel stack,
//! activation cannot free tables a CPU still uses, configurations get errors rather than panics,
//! and a kernel that keeps slots of its own in the lower half keeps them intact.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::{check_prepared_root, Format, PteFormat, RootProblem, X86_64};
use zx_vm::object::ROOT_VMAR_RIGHTS;
use zx_vm::platform::{CpuPin, CpuSet, TlbInvalidate};
use zx_vm::sim::{SimConfig, SimMachine, KERNEL_SLOT};
use zx_vm::syscall::*;
use zx_vm::tlb::{Tlb, TlbConfigError};
use zx_vm::vmar::{AspaceError, USER_ASPACE_BASE, USER_ASPACE_SIZE};
use zx_vm::vmo::PAGE_LIST_PHYS_LIMIT;
use zx_vm::{AddressSpace, KernelObject, PhysAddr, Platform, Process, VmOptions};

const DEPTH: usize = 100_000;

/// Runs `f` on a thread with a kernel-sized stack.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(32 * 1024)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no stack overflow, no panic");
}

/// Nests `DEPTH` VMARs below `process`'s root, each as large as its parent, keeping only a
/// handle to the outermost; returns that handle, its base, and the innermost VMAR.
fn nest(process: &Process) -> (zx_handle_t, u64, Arc<zx_vm::Vmar>) {
    let (root, _) = process.vmar(process.root_vmar_handle()).unwrap();
    let can_map = VmOptions::CAN_MAP_READ | VmOptions::CAN_MAP_WRITE | VmOptions::CAN_MAP_SPECIFIC;
    let top = root.allocate(can_map, 0, 64 * PAGE_SIZE).unwrap();
    let handle = process
        .add_handle(KernelObject::Vmar(top.clone()), ROOT_VMAR_RIGHTS)
        .unwrap();
    let base = top.base();
    let mut vmar = top;
    for _ in 1..DEPTH {
        // Each level as large as its parent; the parent's handle goes, the chain stays.
        vmar = vmar
            .allocate(can_map | VmOptions::SPECIFIC, 0, 64 * PAGE_SIZE)
            .unwrap();
    }
    (handle, base, vmar)
}

fn deep_nesting(format: Format) {
    let machine = machine(1);
    let process = process(&machine, format);
    let vmo = patterned_vmo(&process, 16);
    let (vmo_obj, _) = process.vmo(vmo).unwrap();
    let root = process.root_vmar_handle();

    // Decommit and protect through the root look through all 100,000 levels.
    let cpu = machine.cpu(0);
    {
        let (_top, base, inner) = nest(&process);
        let addr = inner
            .map(
                VmOptions::PERM_READ | VmOptions::PERM_WRITE | VmOptions::SPECIFIC,
                0,
                &vmo_obj,
                0,
                16 * PAGE_SIZE,
                VmOptions::CAN_MAP_PERMS,
            )
            .unwrap();
        assert_eq!(addr, base);
        cpu.switch_to(Some(process.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        let status = zx_vmar_op_range(
            &process,
            root,
            ZX_VMAR_OP_DECOMMIT,
            addr,
            4 * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
        assert_eq!(cpu.load(addr).unwrap(), 0);
        assert_eq!(committed(&process, vmo), 12 * PAGE_SIZE + PAGE_SIZE);
        assert_eq!(
            zx_vmar_protect(&process, root, ZX_VM_PERM_READ, addr, PAGE_SIZE),
            ZX_OK
        );
        // Unmapping the whole chain through the root destroys 100,000 VMARs.
        assert_eq!(zx_vmar_unmap(&process, root, base, 64 * PAGE_SIZE), ZX_OK);
        assert!(inner.is_destroyed());
        assert_eq!(cpu.load(addr), Err(zx_vm::vmar::FaultError::NotMapped));
    }

    // zx_vmar_destroy of the outermost destroys the chain below it.
    {
        let (top, _, inner) = nest(&process);
        assert_eq!(zx_vmar_destroy(&process, top), ZX_OK);
        assert!(inner.is_destroyed());
    }

    // A process that dies with a chain in it takes the chain down.
    let (_top, _, inner) = nest(&process);
    cpu.switch_to(None);
    drop(process);
    assert!(inner.is_destroyed());
    drop(inner);
    drop(vmo_obj);
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn nested_vmars_on_a_32k_stack_x86_64() {
    on_small_stack(|| deep_nesting(Format::X86_64));
}

#[test]
fn nested_vmars_on_a_32k_stack_aarch64() {
    on_small_stack(|| deep_nesting(Format::Aarch64));
}

/// A context switch races a shootdown: while CPU 0 switches from P to Q, CPU 1 decommits a page
/// that CPU 0's TLB caches through P (untagged: the switch flushes it, but only once it loads Q).
/// With the order join -> load -> leave, CPU 0 is still in P's active set while it runs P's
/// tables, so the shootdown reaches it before the frame is freed. (With the old order, leave ->
/// load, the shootdown skipped CPU 0 and the simulation refused the free: checked by hand.)
#[test]
fn a_switch_racing_a_shootdown_never_loses_the_flush() {
    for format in Format::ALL {
        let machine = SimMachine::new(SimConfig {
            frames: 4096,
            cpus: 2,
            tags: 0,
            ..SimConfig::default()
        });
        let p = process(&machine, format);
        let q = process(&machine, format);
        let vmo = patterned_vmo(&p, 4);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 4);
        let cpu0 = machine.cpu(0);
        cpu0.switch_to(Some(p.aspace()));
        assert_eq!(cpu0.load(addr).unwrap(), pattern(0, 0));
        assert!(cpu0.tlb_entry(addr).is_some());

        let fired = Arc::new(AtomicBool::new(false));
        let hook = {
            let (machine2, p2, fired) = (machine.clone(), p.clone(), fired.clone());
            move |cpu: usize| {
                if cpu == 0 && !fired.swap(true, Ordering::SeqCst) {
                    let status = machine2.run_as(1, || {
                        zx_vmar_op_range(
                            &p2,
                            p2.root_vmar_handle(),
                            ZX_VMAR_OP_DECOMMIT,
                            addr,
                            PAGE_SIZE,
                            0,
                            0,
                        )
                    });
                    assert_eq!(status, ZX_OK);
                }
            }
        };
        // The hook holds the machine: it must go before the machine can.
        machine.set_load_root_hook(Some(Box::new(hook)));
        cpu0.switch_to(Some(q.aspace()));
        machine.set_load_root_hook(None);
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(machine.ipis_received(0), 1, "the shootdown reached CPU 0");
        cpu0.switch_to(Some(p.aspace()));
        assert_eq!(cpu0.load(addr).unwrap(), 0);
        cpu0.switch_to(None);
    }
}

/// An address space that a CPU runs stays alive, tables and all, when every other reference
/// goes; it is torn down when the CPU leaves it.
#[test]
fn a_loaded_address_space_outlives_its_process() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 2);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        let root = p.aspace().root_table();
        drop(p);
        // The process destroyed its mappings, but the CPU still runs its root table.
        assert_eq!(machine.loaded_root(0), Some(root));
        assert!(cpu.current().is_some());
        assert!(cpu.load(addr).is_err());
        cpu.switch_to(None);
        assert_eq!(machine.loaded_root(0), None);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

/// The simulation itself refuses to free a root table that a CPU has loaded.
#[test]
#[should_panic(expected = "still has it loaded as its root")]
fn the_simulation_refuses_to_free_a_loaded_root() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    machine.cpu(0).switch_to(Some(p.aspace()));
    // SAFETY: deliberately wrong, to see the simulation refuse it (it panics before freeing).
    unsafe { machine.free_frames(&[p.aspace().root_table()]) };
}

#[test]
fn bad_tlb_configurations_are_errors() {
    assert_eq!(
        Tlb::new(0, 0, Format::X86_64).err(),
        Some(TlbConfigError::CpuCount { cpus: 0 })
    );
    assert_eq!(
        Tlb::new(65, 0, Format::X86_64).err(),
        Some(TlbConfigError::CpuCount { cpus: 65 })
    );
    assert_eq!(
        Tlb::new(4, 4096, Format::X86_64).err(),
        Some(TlbConfigError::TooManyTags {
            tags: 4096,
            max: 4095
        })
    );
    // The errors say what is wrong, in words a kernel can log.
    let words = |e: TlbConfigError| e.to_string();
    assert_eq!(
        words(TlbConfigError::CpuCount { cpus: 65 }),
        "65 CPUs: the crate handles 1 to 64"
    );
    assert_eq!(
        words(TlbConfigError::TooManyTags {
            tags: 4096,
            max: 4095
        }),
        "4096 tags: this page-table format has at most 4095"
    );
    let tlb = Tlb::new(64, 4095, Format::X86_64).unwrap();
    assert_eq!(tlb.cpu_count(), 64);
    // Every 16-bit ASID.
    let tlb = Tlb::new(4, u16::MAX, Format::Aarch64).unwrap();
    for expected in 1..=u16::MAX {
        assert_eq!(tlb.asids().alloc().0, expected);
    }
    assert_eq!(tlb.asids().alloc().0, 0, "then untagged");
    assert_eq!(tlb.asids().in_use(), 65535);
    assert!(SimMachine::try_new(SimConfig {
        cpus: 0,
        ..SimConfig::default()
    })
    .is_err());
}

/// Address spaces on a machine with 65,535 ASIDs get tags from the top of the range too.
#[test]
fn sixteen_bit_asids_work() {
    let machine = SimMachine::new(SimConfig {
        frames: 1024,
        tags: u16::MAX,
        ..SimConfig::default()
    });
    for _ in 0..(u16::MAX - 2) {
        machine.tlb().asids().alloc();
    }
    let a = process(&machine, Format::Aarch64);
    let b = process(&machine, Format::Aarch64);
    let c = process(&machine, Format::Aarch64);
    assert_eq!(
        (a.aspace().asid(), b.aspace().asid(), c.aspace().asid()),
        (65534, 65535, 0)
    );
    let vmo = patterned_vmo(&b, 1);
    let addr = map_rw(&b, b.root_vmar_handle(), vmo, 0, 1);
    let cpu = machine.cpu(0);
    cpu.switch_to(Some(b.aspace()));
    assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
    cpu.switch_to(None);
}

#[test]
fn bad_user_ranges_are_invalid_args() {
    let machine = machine(1);
    let platform: Arc<dyn Platform> = machine.clone();
    for (base, size) in [
        (0x1000_0000, 0),
        (0x1000_0001, PAGE_SIZE),
        (0x1000_0000, 123),
        (1 << 47, PAGE_SIZE),
        ((1 << 47) - PAGE_SIZE, 2 * PAGE_SIZE),
        (u64::MAX - PAGE_SIZE + 1, PAGE_SIZE),
    ] {
        let result = AddressSpace::with_user_range(platform.clone(), Format::X86_64, base, size);
        assert_eq!(
            result.err(),
            Some(zx_vm::Status::InvalidArgs),
            "{base:#x}+{size:#x}"
        );
    }
}

/// A platform that is a simulated machine but for what the test changes: a kernel that keeps a
/// lower-half root slot of its own, and frames handed out from above 16 TiB.
struct Kernelish {
    machine: Arc<SimMachine>,
    /// The kernel's table in root slot 0 (and the simulation's in 511), if any.
    low_slot_table: Option<PhysAddr>,
    /// Hand out frames this far above the machine's.
    high_offset: AtomicBool,
    /// No kernel entries at all.
    empty_kernel: bool,
}

const HIGH: u64 = PAGE_LIST_PHYS_LIMIT;

impl Kernelish {
    fn real(&self, pa: PhysAddr) -> PhysAddr {
        if pa.0 >= HIGH {
            PhysAddr(pa.0 - HIGH)
        } else {
            pa
        }
    }
}

// SAFETY: forwards to the simulated machine, translating the high frames back to its own.
unsafe impl Platform for Kernelish {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        let pa = self.machine.alloc_frame()?;
        Some(if self.high_offset.load(Ordering::SeqCst) {
            PhysAddr(pa.0 + HIGH)
        } else {
            pa
        })
    }
    unsafe fn free_frames(&self, frames: &[PhysAddr]) {
        let real: Vec<PhysAddr> = frames.iter().map(|&pa| self.real(pa)).collect();
        // SAFETY: forwarded from the caller.
        unsafe { self.machine.free_frames(&real) }
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
        self.machine.phys_to_virt(self.real(pa))
    }
    fn current_cpu(&self) -> usize {
        self.machine.current_cpu()
    }
    fn tlb(&self) -> &Tlb {
        self.machine.tlb()
    }
    fn send_ipi(&self, targets: CpuSet) {
        self.machine.send_ipi(targets)
    }
    fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
        self.machine.invalidate_local(request)
    }
    unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
        // SAFETY: forwarded from the caller.
        unsafe { self.machine.load_root(self.real(root), asid, flush) }
    }
    unsafe fn load_kernel_root(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.machine.load_kernel_root() }
    }
    fn prepare_root(&self, root: PhysAddr) {
        if self.empty_kernel {
            return;
        }
        self.machine.prepare_root(self.real(root));
        if let Some(table) = self.low_slot_table {
            // SAFETY: the root is a fresh table of the machine's memory; slot 0 is 8 bytes in.
            unsafe {
                (self.phys_to_virt(root) as *mut u64).write_volatile(X86_64::table_entry(table))
            };
        }
    }
}

fn kernelish(machine: &Arc<SimMachine>, low_slot_table: Option<PhysAddr>) -> Arc<Kernelish> {
    Arc::new(Kernelish {
        machine: machine.clone(),
        low_slot_table,
        high_offset: AtomicBool::new(false),
        empty_kernel: false,
    })
}

/// A lower-half kernel keeps root slot 0 (the first 512 GiB) and gives the crate a user range
/// above it: the crate maps, decommits and tears down without touching the kernel's tables.
#[test]
fn a_kernel_owned_lower_half_slot_survives() {
    for format in Format::ALL {
        let machine = machine(1);
        // The kernel's own table, with an entry the crate must leave alone.
        let kernel_table = machine.alloc_frame().unwrap();
        let words = machine.phys_to_virt(kernel_table) as *mut u64;
        let marker = 0x0000_0000_0020_0083; // a 2 MiB identity block, as a kernel has
                                            // SAFETY: a frame the test owns, 4096 bytes.
        unsafe {
            for i in 0..512 {
                words.add(i).write(if i == 0 { marker } else { 0 });
            }
        }
        let platform = kernelish(&machine, Some(kernel_table));
        let dyn_platform: Arc<dyn Platform> = platform.clone();
        let base = 1 << 39; // slot 1
        let aspace =
            AddressSpace::with_user_range(dyn_platform.clone(), format, base, 1 << 40).unwrap();
        assert_eq!(aspace.user_range(), (base, 1 << 40));
        let root_vmar = aspace.root_vmar();
        assert_eq!(root_vmar.base(), base);
        let vmo = zx_vm::Vmo::create(dyn_platform.clone(), 8 * PAGE_SIZE).unwrap();
        vmo.write(0, &[7; 8]).unwrap();
        let rw = VmOptions::PERM_READ | VmOptions::PERM_WRITE;
        let addr = root_vmar
            .map(rw, 0, &vmo, 0, 8 * PAGE_SIZE, VmOptions::CAN_MAP_PERMS)
            .unwrap();
        assert!(addr >= base);
        let pin = CpuPin::new(&*dyn_platform);
        // SAFETY: the simulated CPU runs no code through its tables.
        unsafe { aspace.activate(&pin) };
        drop(pin);
        for page in 0..8 {
            aspace
                .page_fault(addr + page * PAGE_SIZE, zx_vm::vmar::Access::Write)
                .unwrap();
        }
        root_vmar.decommit(addr, 4 * PAGE_SIZE).unwrap();
        root_vmar.unmap(addr, 8 * PAGE_SIZE).unwrap();
        let root = aspace.root_table();
        // SAFETY: the root is alive (the CPU runs it); slot 0 is its first word.
        let slot0 = unsafe { (dyn_platform.phys_to_virt(root) as *const u64).read() };
        assert_eq!(slot0, X86_64::table_entry(kernel_table), "slot 0 untouched");
        let pin = CpuPin::new(&*dyn_platform);
        // SAFETY: as above.
        unsafe { AddressSpace::deactivate(&pin) };
        drop(pin);
        drop(root_vmar);
        drop(vmo);
        drop(aspace);
        // The kernel's table is still allocated and still holds its entry.
        // SAFETY: as above, the test's frame.
        assert_eq!(unsafe { words.read() }, marker);
        assert_eq!(machine.frames_in_use(), 1, "only the kernel's table");
        // SAFETY: the test's frame, referenced by no live table now.
        unsafe { machine.free_frames(&[kernel_table]) };
    }
}

/// An address space whose root `prepare_root` filled in one of the user range's slots is
/// refused when it is made: the crate checks the slots that its own table owns.
#[test]
fn an_address_space_refuses_a_kernel_entry_in_its_user_slots() {
    let machine = machine(1);
    let kernel_table = machine.alloc_frame().unwrap();
    let platform = kernelish(&machine, Some(kernel_table));
    let made = AddressSpace::create(
        platform.clone(),
        Format::X86_64,
        USER_ASPACE_BASE,
        USER_ASPACE_SIZE,
    );
    assert!(
        matches!(
            made.err(),
            Some(AspaceError::Root(RootProblem::KernelInUserRange {
                slot: 0,
                ..
            }))
        ),
        "slot 0 holds a kernel table"
    );
    // SAFETY: the test's frame, referenced by no live table now.
    unsafe { machine.free_frames(&[kernel_table]) };
}

/// A user range that shares a root slot with the kernel is refused, with the problem in words;
/// so is an x86_64 root without any kernel entry.
#[test]
fn a_root_that_prepare_root_got_wrong_is_named() {
    let machine = machine(1);
    let kernel_table = machine.alloc_frame().unwrap();
    let platform = kernelish(&machine, Some(kernel_table));
    let root = {
        let table = zx_vm::arch::new_page_table(&*platform, Format::X86_64).unwrap();
        let root = table.root();
        platform.prepare_root(root);
        let problem = check_prepared_root(&*platform, Format::X86_64, root, (0, 255));
        assert_eq!(
            problem,
            Err(RootProblem::KernelInUserRange {
                slot: 0,
                user_slots: (0, 255)
            })
        );
        assert!(problem.unwrap_err().to_string().contains("root slot 0"));
        assert_eq!(
            check_prepared_root(&*platform, Format::X86_64, root, (1, 255)),
            Ok(())
        );
        let mut pending = zx_vm::tlb::PendingFlush::new();
        let mut table = table;
        // Its slot 0 is the kernel's: only the root page goes.
        table.abandon(&mut pending);
        assert_eq!(pending.freed_tables(), &[root]);
        // SAFETY: never loaded.
        unsafe { platform.free_frames(pending.freed_tables()) };
        root
    };
    let _ = root;
    let empty = Arc::new(Kernelish {
        machine: machine.clone(),
        low_slot_table: None,
        high_offset: AtomicBool::new(false),
        empty_kernel: true,
    });
    let table = zx_vm::arch::new_page_table(&*empty, Format::X86_64).unwrap();
    let problem = check_prepared_root(&*empty, Format::X86_64, table.root(), (0, 255));
    assert_eq!(problem, Err(RootProblem::KernelHalfEmpty));
    assert!(problem.unwrap_err().to_string().contains("prepare_root"));
    // aarch64 kernels run from TTBR1: an empty root is right for them.
    assert_eq!(
        check_prepared_root(&*empty, Format::Aarch64, table.root(), (0, 255)),
        Ok(())
    );
    let mut pending = zx_vm::tlb::PendingFlush::new();
    let mut table = table;
    table.release(&*empty, &mut pending);
    // SAFETY: never loaded.
    unsafe { empty.free_frames(pending.freed_tables()) };
    // SAFETY: the test's frame.
    unsafe { machine.free_frames(&[kernel_table]) };
    assert_eq!(machine.frames_in_use(), 0);
}

/// Making an address space on such a root fails with BAD_STATE; `AddressSpace::create` says why,
/// in words, and nothing is left allocated.
#[test]
fn an_address_space_on_a_bad_root_is_refused() {
    let machine = machine(1);
    let empty = Arc::new(Kernelish {
        machine: machine.clone(),
        low_slot_table: None,
        high_offset: AtomicBool::new(false),
        empty_kernel: true,
    });
    let result = AddressSpace::new(empty.clone(), Format::X86_64);
    assert_eq!(result.err(), Some(zx_vm::Status::BadState));
    let error = AddressSpace::create(empty, Format::X86_64, 1 << 30, 1 << 30).err();
    assert_eq!(error, Some(AspaceError::Root(RootProblem::KernelHalfEmpty)));
    assert!(error.unwrap().to_string().contains("prepare_root"));
    assert_eq!(machine.frames_in_use(), 0);
}

/// Frames above 16 TiB: page tables take them; a paged VMO cannot hold them and answers
/// ZX_ERR_NO_MEMORY, with nothing changed and nothing leaked.
#[test]
fn frames_above_16_tib() {
    for format in Format::ALL {
        let machine = machine(1);
        let platform = kernelish(&machine, None);
        platform.high_offset.store(true, Ordering::SeqCst);
        let dyn_platform: Arc<dyn Platform> = platform.clone();
        let process = Process::new(dyn_platform, format).expect("page tables above 16 TiB");
        assert!(process.aspace().root_table().0 >= HIGH);
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&process, 4 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
        assert_eq!(zx_vmo_write(&process, vmo, &[1; 8], 0), ZX_ERR_NO_MEMORY);
        assert_eq!(committed(&process, vmo), 0);
        let addr = map_rw(&process, process.root_vmar_handle(), vmo, 0, 4);
        assert_eq!(
            process
                .aspace()
                .page_fault(addr, zx_vm::vmar::Access::Write),
            Err(zx_vm::vmar::FaultError::NoMemory)
        );
        platform.high_offset.store(false, Ordering::SeqCst);
        assert_eq!(zx_vmo_write(&process, vmo, &[1; 8], 0), ZX_OK);
        drop(process);
        assert_eq!(machine.frames_in_use(), 0);
    }
}

/// A `Platform` whose `current_cpu` breaks its promise is caught where the crate pins the CPU,
/// with a message, rather than indexing out of bounds somewhere deeper.
#[test]
#[should_panic(expected = "current_cpu")]
fn a_platform_whose_cpu_index_is_out_of_range_is_named() {
    struct Broken(Arc<SimMachine>);
    // SAFETY: deliberately broken in one way (current_cpu), to see the crate name it.
    unsafe impl Platform for Broken {
        fn alloc_frame(&self) -> Option<PhysAddr> {
            self.0.alloc_frame()
        }
        unsafe fn free_frames(&self, frames: &[PhysAddr]) {
            // SAFETY: forwarded.
            unsafe { self.0.free_frames(frames) }
        }
        fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8 {
            self.0.phys_to_virt(pa)
        }
        fn current_cpu(&self) -> usize {
            7
        }
        fn tlb(&self) -> &Tlb {
            self.0.tlb()
        }
        fn invalidate_local(&self, request: &TlbInvalidate<'_>) {
            self.0.invalidate_local(request)
        }
        unsafe fn load_root(&self, root: PhysAddr, asid: u16, flush: bool) {
            // SAFETY: forwarded.
            unsafe { self.0.load_root(root, asid, flush) }
        }
        unsafe fn load_kernel_root(&self) {}
    }
    let broken = Broken(machine(2));
    let _pin = CpuPin::new(&broken);
}

#[test]
fn the_simulated_kernel_sits_in_its_slot() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let root = p.aspace().root_table();
    let entry = machine.read_phys(PhysAddr(root.0 + 8 * KERNEL_SLOT as u64));
    assert!(X86_64::is_valid(entry));
}

/// A CPU that caches a narrower translation than the page table now holds faults on it (as
/// aarch64 does: the entry stays in its TLB); the crate's fault path invalidates it, so the
/// access then succeeds instead of faulting forever.
#[test]
fn the_fault_path_drops_the_narrower_entry_it_upgrades() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let vmo = patterned_vmo(&p, 1);
        let addr = map_rw(&p, p.root_vmar_handle(), vmo, 0, 1);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        // Make the entry read-only behind the crate's back, and let the CPU cache it so.
        let (frame, _) = p.aspace().query(addr).unwrap_or_else(|| {
            cpu.load(addr).unwrap();
            p.aspace().query(addr).unwrap()
        });
        let ro = zx_vm::arch::MmuFlags::READ | zx_vm::arch::MmuFlags::USER;
        p.aspace()
            .with_page_table_unsynchronized(|table, platform| {
                let mut pending = zx_vm::tlb::PendingFlush::new();
                table.protect(platform, addr, addr + PAGE_SIZE, ro, &mut pending);
            });
        cpu.invalidate_page(addr);
        assert_eq!(cpu.load(addr).unwrap(), pattern(0, 0));
        assert_eq!(cpu.tlb_entry(addr).unwrap().flags, ro);
        // The table is writable again (as after another CPU's fault), the TLB still says not.
        let rw = ro | zx_vm::arch::MmuFlags::WRITE;
        p.aspace()
            .with_page_table_unsynchronized(|table, platform| {
                table.map(platform, addr, frame, rw).unwrap();
            });
        assert_eq!(cpu.tlb_entry(addr).unwrap().flags, ro);
        cpu.store(addr, 42)
            .expect("the fault path invalidated the stale entry");
        assert_eq!(cpu.load(addr).unwrap(), 42);
        cpu.switch_to(None);
    }
}
