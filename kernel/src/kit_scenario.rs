//! Scenario 4: the crate's integration kit for one CPU (`zx_vm::kit::single_cpu`), on the boot CPU.
//!
//! A hobby kernel with one CPU would not write `KernelPlatform` at all: it would build a
//! `SingleCpu` out of a frame source, the direct-map offset and its root-table slots. This
//! scenario does exactly that, next to the kernel's own platform, while the other CPUs sit idle:
//!
//! - frames: a [`Reserved`] bump source over [`RESERVED`] frames taken from the kernel's
//!   allocator, under the kit's `FreeListFrames` (which keeps the frames the crate frees and hands
//!   them out again before it asks the bump);
//! - `NativeCpu` (CR3 and INVLPG; TTBR0_EL1 and TLBI), the kernel's direct map (`DirectMap` at
//!   `arch::PHYS_OFFSET`), and `SingleCpuConfig` with the kernel's own root and root slots (x86_64:
//!   the kernel PML4's slot 511, read from CR3 through the `x86_64` crate; aarch64: none, the
//!   kernel runs from TTBR1_EL1);
//! - a process whose user range is not the default: [`USER_BASE`] (1 TiB, root slot 2) to 2 TiB,
//!   where the other scenarios use the crate's default lower half from 16 MiB;
//! - `CpuPin` and `AddressSpace::activate`, a VMO mapped by `zx_vmar_map`, its pages touched
//!   through the MMU (the faults decoded by the kit, `kit::x86` / `kit::aarch64_esr`, and routed
//!   through `mm::page_fault` to this platform's address space), a decommit by
//!   `zx_vmar_op_range`, zeros read back in frames that came back from the free list, and
//!   `AddressSpace::deactivate`; then everything is dropped, every frame must be back on the free
//!   list, and the reserved frames go back to the kernel.
//!
//! The platform's `Tlb` is its own, for one CPU (CPU 0), untagged: its address spaces use ASID /
//! PCID 0 and are flushed at every load, so they share no tag with `KernelPlatform`'s.
//!
//! aarch64: the kit's `SingleCpu` answers the crate's default memory attributes (MAIR_EL1 index 0),
//! which is Device-nGnRnE in this kernel. The crate checks MAIR_EL1 when it makes an address
//! space and refuses that one (`ZX_ERR_BAD_STATE`; the kernel builds release, so no debug panic
//! first): the scenario shows it, then runs through [`WithAttributes`] (the kernel's one
//! forwarding platform, `crate::forward::Forward`), which forwards every call
//! to the `SingleCpu` and answers the kernel's index 1.

use crate::arch;
#[cfg(target_arch = "aarch64")]
use crate::forward::{Forward, Hooks};
use crate::frames::FRAMES;
use crate::mm;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::kit::frames::{FrameSource, FrameStats};
use zx_vm::kit::single_cpu::{NativeCpu, SingleCpu, SingleCpuConfig};
use zx_vm::platform::CpuPin;
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;
use zx_vm::{AddressSpace, PhysAddr, Platform, Process};

/// Frames reserved from the kernel's allocator for the bump source.
const RESERVED: u64 = 64;
/// The user range: 1 TiB (root slot 2) up to 2 TiB, clear of the kernel's slot 511 and of the
/// other scenarios' default range.
const USER_BASE: u64 = 1 << 40;
const USER_SIZE: u64 = 1 << 40;
/// The VMO's pages.
const PAGES: u64 = 16;
/// The decommitted pages: first, count.
const DECOMMIT: (u64, u64) = (4, 8);

/// Frames `[next, end)` of a physically contiguous range taken from the kernel's allocator, handed
/// out once each, lowest first; counts how often it was asked.
pub struct Reserved {
    next: u64,
    end: u64,
    calls: u64,
}

// SAFETY: the range was allocated from `FRAMES` for this source alone (no one else uses it until
// the scenario gives it back, after the platform is gone); each frame is handed out once, 4 KiB
// aligned, and lies in RAM that the direct map reaches.
unsafe impl FrameSource for Reserved {
    fn alloc(&mut self) -> Option<PhysAddr> {
        self.calls += 1;
        (self.next < self.end).then(|| {
            self.next += PAGE_SIZE;
            PhysAddr(self.next - PAGE_SIZE)
        })
    }
}

/// The kit's platform for one CPU, over the reserved frames and the kernel's direct map.
type Kit = SingleCpu<Reserved, NativeCpu>;

/// The platform the scenario's process is made on: the `SingleCpu` itself, or (aarch64) a wrapper
/// that answers the kernel's memory attributes.
trait ScenarioPlatform: Platform + 'static {
    fn kit(&self) -> &Kit;
}

#[cfg(target_arch = "x86_64")]
impl ScenarioPlatform for Kit {
    fn kit(&self) -> &Kit {
        self
    }
}

#[cfg(target_arch = "x86_64")]
fn wrap(kit: Kit) -> Kit {
    kit
}

#[cfg(target_arch = "x86_64")]
fn unwrap(platform: Kit) -> Kit {
    platform
}

/// aarch64: the kernel's memory attributes (MAIR_EL1 index 1), which the kernel programmed as
/// normal write-back memory (checked at boot and again by the crate).
#[cfg(target_arch = "aarch64")]
pub struct KernelAttributes;

#[cfg(target_arch = "aarch64")]
impl Hooks for KernelAttributes {
    fn memory_attributes(&self) -> Option<zx_vm::arch::MemoryAttributes> {
        Some(arch::MEMORY_ATTRIBUTES)
    }
}

/// aarch64: the `SingleCpu`, answering the kernel's memory attributes.
#[cfg(target_arch = "aarch64")]
pub type WithAttributes = Forward<Kit, KernelAttributes>;

#[cfg(target_arch = "aarch64")]
impl ScenarioPlatform for WithAttributes {
    fn kit(&self) -> &Kit {
        &self.inner
    }
}

#[cfg(target_arch = "aarch64")]
fn wrap(kit: Kit) -> WithAttributes {
    Forward {
        inner: kit,
        hooks: KernelAttributes,
    }
}

#[cfg(target_arch = "aarch64")]
fn unwrap(platform: WithAttributes) -> Kit {
    platform.inner
}

/// What a page holds: never 0.
fn pattern(page: u64) -> u64 {
    0x0c0f_fee0_0000_0000 | page
}

/// Collects failed checks, printing each.
struct Checks(bool);

impl Checks {
    fn check(&mut self, ok: bool, what: core::fmt::Arguments<'_>) {
        if !ok {
            println!("single-CPU kit: FAILED: {what}");
            self.0 = false;
        }
    }
}

/// The kernel's root table as the kit is given it: x86_64 reads CR3 through the `x86_64` crate and
/// converts its `PhysFrame` with the kit (`kit::x86`: `From<PhysFrame> for PhysAddr`).
#[cfg(target_arch = "x86_64")]
fn kernel_root() -> PhysAddr {
    let (frame, _) = x86_64::registers::control::Cr3::read();
    PhysAddr::from(frame)
}

#[cfg(target_arch = "aarch64")]
fn kernel_root() -> PhysAddr {
    arch::kernel_root()
}

#[cfg(target_arch = "x86_64")]
fn kernel_slots() -> zx_vm::kit::single_cpu::KernelSlots {
    arch::kernel_slots()
}

#[cfg(target_arch = "aarch64")]
fn kernel_slots() -> zx_vm::kit::single_cpu::KernelSlots {
    zx_vm::kit::single_cpu::KernelSlots::NONE
}

/// Whether the CPU now runs `root` (x86_64: CR3's frame, compared as `x86_64` crate frames through
/// the kit's `TryFrom<PhysAddr> for PhysFrame`; aarch64: TTBR0_EL1, ASID 0), and a description.
#[cfg(target_arch = "x86_64")]
fn runs(root: PhysAddr) -> (bool, alloc::string::String) {
    use x86_64::structures::paging::PhysFrame;
    let (frame, _) = x86_64::registers::control::Cr3::read();
    let wanted = PhysFrame::try_from(root);
    (
        wanted == Ok(frame),
        alloc::format!("CR3 {:#x}", frame.start_address().as_u64()),
    )
}

#[cfg(target_arch = "aarch64")]
fn runs(root: PhysAddr) -> (bool, alloc::string::String) {
    let (table, asid) = arch::ttbr0();
    (
        table == root && asid == 0,
        alloc::format!("TTBR0_EL1 {:#x}, ASID {asid}", table.0),
    )
}

/// Frames the platform keeps for good: aarch64's `NativeCpu` holds an empty TTBR0 table.
const KEPT: u64 = if cfg!(target_arch = "aarch64") { 1 } else { 0 };

/// Runs the scenario on CPU 0; true if every check passed.
pub fn run() -> bool {
    assert_eq!(
        arch::cpu_index(),
        0,
        "the single-CPU scenario runs on CPU 0"
    );
    assert!(
        mm::current().is_none(),
        "CPU 0 runs no address space of the kernel's platform"
    );
    let mut checks = Checks(true);
    let baseline = FRAMES.in_use();
    let first = FRAMES
        .alloc(RESERVED as usize)
        .expect("frames for the bump source");
    let source = Reserved {
        next: first.0,
        end: first.0 + RESERVED * PAGE_SIZE,
        calls: 0,
    };
    let root = kernel_root();
    #[cfg(target_arch = "x86_64")]
    checks.check(
        root.0 == arch::kernel_root().0,
        format_args!("CR3 {root:?} is not the kernel's PML4"),
    );
    let config = SingleCpuConfig::new(root, kernel_slots());
    // SAFETY: the direct map at `PHYS_OFFSET` maps all the RAM the kernel's allocator manages
    // (the reserved frames among it) and the kernel root, read/write, normal write-back, for
    // good; `Reserved` keeps `FrameSource`'s contract (above); `root` is the kernel's live root
    // table (x86_64: the PML4 in CR3, whose slot 511 maps the kernel; aarch64: TTBR1_EL1's, no
    // slots copied); the crate is entered for this platform on CPU 0 only (this function runs
    // there, and `mm` routes faults to it only there), and `NativeCpu` acts on the calling CPU.
    let kit = unsafe { SingleCpu::native(source, arch::PHYS_OFFSET, config) };
    let kit = match kit {
        Ok(kit) => kit,
        Err(error) => {
            println!("single-CPU kit: FAILED: SingleCpu::native: {error}");
            return false;
        }
    };
    println!(
        "single-CPU kit: SingleCpu<bump over {RESERVED} frames at {:#x}, NativeCpu, DirectMap at \
         {:#x}>, 1 CPU, untagged; kernel root {:#x}, kernel slots {:?}; user range \
         {USER_BASE:#x}..{:#x} (root slots {}..={})",
        first.0,
        arch::PHYS_OFFSET,
        kit.kernel_root().0,
        kit.kernel_slots(),
        USER_BASE + USER_SIZE,
        USER_BASE >> 39,
        (USER_BASE + USER_SIZE - 1) >> 39,
    );
    let kit = refuse_default_attributes(kit, &mut checks);

    let platform = Arc::new(wrap(kit));
    exercise(&platform, &mut checks);

    // Every reference to the platform is gone (process, address space, VMO, fault route).
    let Ok(platform) = Arc::try_unwrap(platform) else {
        println!("single-CPU kit: FAILED: the platform is still referenced; its frames are leaked");
        return false;
    };
    let kit = unwrap(platform);
    let stats = kit.frame_stats();
    let calls = kit.frames().with_source(|source| source.calls);
    println!(
        "single-CPU kit: dropped: {} allocated (kept: {KEPT}), {} on the free list, {} taken from \
         the bump in {calls} calls",
        stats.allocated, stats.free, stats.from_source
    );
    checks.check(
        stats.allocated == KEPT && stats.free + KEPT == stats.from_source && stats.lost == 0,
        format_args!("frames not all back on the free list: {stats:?}"),
    );
    drop(kit);
    // No CPU reaches a reserved frame any more: CPU 0 left the address space (its root and
    // tables are freed), and on aarch64 it now leaves the kit's empty table for the kernel's;
    // ASID 0, under which the address space ran, is dropped everywhere. No other CPU ever loaded
    // any of them.
    arch::load_kernel_root();
    arch::flush_asid_everywhere(0);
    for frame in 0..RESERVED {
        FRAMES.free(PhysAddr(first.0 + frame * PAGE_SIZE));
    }
    let leaked = FRAMES.in_use() - baseline;
    println!("single-CPU kit: {RESERVED} reserved frames returned to the kernel; {leaked} leaked");
    checks.check(leaked == 0, format_args!("{leaked} kernel frames leaked"));
    checks.0
}

/// aarch64: the `SingleCpu` answers the crate's default attributes (MAIR_EL1 index 0, Device
/// here): making an address space on it must fail with `ZX_ERR_BAD_STATE`.
#[cfg(target_arch = "aarch64")]
fn refuse_default_attributes(kit: Kit, checks: &mut Checks) -> Kit {
    if cfg!(debug_assertions) {
        // The crate (built with the same profile) panics on it in debug builds, by design.
        println!(
            "single-CPU kit: debug build: the refusal of MAIR index 0 is not tried (zx-vm \
             debug-panics on it; xtask builds release)"
        );
        return kit;
    }
    let raw = Arc::new(kit);
    let attrs = raw.memory_attributes();
    let result = Process::with_user_range(raw.clone(), Format::NATIVE, USER_BASE, USER_SIZE);
    let refused = matches!(result, Err(zx_vm::Status::BadState));
    println!(
        "single-CPU kit: the bare SingleCpu answers MAIR index {} (Device-nGnRnE here): \
         Process::with_user_range -> {}{} (release build: no debug panic)",
        attrs.mair_index,
        match &result {
            Ok(_) => "Ok",
            Err(zx_vm::Status::BadState) => "ZX_ERR_BAD_STATE",
            Err(_) => "another error",
        },
        if refused { ", as expected" } else { "" },
    );
    checks.check(
        refused,
        format_args!("an address space with a Device attribute was not refused"),
    );
    drop(result);
    let Ok(kit) = Arc::try_unwrap(raw) else {
        panic!("the refused address space kept the platform");
    };
    kit
}

#[cfg(target_arch = "x86_64")]
fn refuse_default_attributes(kit: Kit, _checks: &mut Checks) -> Kit {
    kit
}

/// The process, the VMO, the faults, the decommit.
fn exercise<P: ScenarioPlatform>(platform: &Arc<P>, checks: &mut Checks) {
    let kit = platform.kit();
    let stats_start = kit.frame_stats();
    let dyn_platform: Arc<dyn Platform> = platform.clone();
    let process = match Process::with_user_range(
        dyn_platform.clone(),
        Format::NATIVE,
        USER_BASE,
        USER_SIZE,
    ) {
        Ok(process) => process,
        Err(status) => {
            checks.check(false, format_args!("Process::with_user_range: {status:?}"));
            return;
        }
    };
    let aspace = process.aspace().clone();
    let tables = kit.frame_stats().from_source - stats_start.from_source;
    checks.check(
        aspace.user_range() == (USER_BASE, USER_SIZE),
        format_args!("user range {:x?}", aspace.user_range()),
    );
    #[cfg(target_arch = "x86_64")]
    {
        // `prepare_root` copied the kernel's slot 511 into the new root.
        let slot = |root: PhysAddr| {
            // SAFETY: both are root tables (4 KiB, in the direct map) that live while read.
            unsafe {
                (arch::phys_to_virt(root) as *const u64)
                    .add(511)
                    .read_volatile()
            }
        };
        checks.check(
            slot(aspace.root_table()) == slot(kit.kernel_root()),
            format_args!("slot 511 was not copied into the new root"),
        );
    }

    mm::set_single_cpu_platform(Some(dyn_platform.clone()));
    let faults = || mm::SINGLE_CPU_FAULTS.load(Ordering::Relaxed);
    let pin = CpuPin::new(&**aspace.platform());
    // SAFETY: the root maps the kernel (x86_64: slot 511, copied by `prepare_root`; aarch64: the
    // kernel runs from TTBR1_EL1); CPU 0 loads user roots only through `activate`/`deactivate`
    // (of this platform here, of `KernelPlatform`'s in the other scenarios, where it runs none
    // now); the pin was made on the address space's platform.
    unsafe { aspace.activate(&pin) };
    let (loaded, register) = runs(aspace.root_table());
    println!(
        "single-CPU kit: process {} activated on CPU 0: root {:#x}, {register}",
        aspace.koid(),
        aspace.root_table().0
    );
    checks.check(loaded, format_args!("the root is not loaded: {register}"));

    let (mut vmo, mut addr) = (0, 0);
    let len = PAGES * PAGE_SIZE;
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    assert_eq!(zx_vmo_create(&process, len, 0, &mut vmo), ZX_OK);
    assert_eq!(
        zx_vmar_map(
            &process,
            process.root_vmar_handle(),
            rw,
            0,
            vmo,
            0,
            len,
            &mut addr
        ),
        ZX_OK
    );
    checks.check(
        (USER_BASE..USER_BASE + USER_SIZE - len).contains(&addr),
        format_args!("mapped at {addr:#x}, outside the user range"),
    );

    // Nothing is mapped at the end of the range: the fault reaches the crate, which refuses it.
    let unmapped = USER_BASE + USER_SIZE - PAGE_SIZE;
    let refused = mm::load(unmapped);
    checks.check(
        refused == Err(FaultError::NotMapped),
        format_args!("a load from the unmapped {unmapped:#x}: {refused:x?}"),
    );

    // Touch every page through the MMU: a store faults each one in.
    let (stats0, faults0) = (kit.frame_stats(), faults());
    for page in 0..PAGES {
        mm::store(addr + page * PAGE_SIZE, pattern(page)).expect("store");
    }
    let bad = (0..PAGES)
        .filter(|&page| mm::load(addr + page * PAGE_SIZE) != Ok(pattern(page)))
        .count();
    let (stats1, faults1) = (kit.frame_stats(), faults());
    let taken = stats1.from_source - stats0.from_source;
    println!(
        "single-CPU kit: {PAGES}-page VMO mapped at {addr:#x}; stores faulted {} pages in through \
         the kit's address space; frames from the bump: {tables} (the root) at creation, {taken} \
         since ({} page tables for the range, {PAGES} pages); {bad} bad reads",
        faults1 - faults0,
        taken.saturating_sub(PAGES),
    );
    checks.check(
        faults1 - faults0 == PAGES && bad == 0,
        format_args!("{} faults, {bad} bad reads", faults1 - faults0),
    );
    #[cfg(target_arch = "aarch64")]
    {
        let attr = arch::attribute_of(addr);
        println!(
            "single-CPU kit: user page {addr:#x}: AT S1E1R attribute {}",
            arch::attribute_name(attr)
        );
        checks.check(
            attr == Some(0xff),
            format_args!("user pages are not normal write-back"),
        );
    }

    // Decommit, then read back: zeros in the range (new pages, from frames the free list gives
    // back), the old values elsewhere.
    let (first, count) = DECOMMIT;
    let calls = || kit.frames().with_source(|source| source.calls);
    let calls1 = calls();
    let status = zx_vmar_op_range(
        &process,
        process.root_vmar_handle(),
        ZX_VMAR_OP_DECOMMIT,
        addr + first * PAGE_SIZE,
        count * PAGE_SIZE,
        0,
        0,
    );
    let stats2 = kit.frame_stats();
    let faults2 = faults();
    let mut zeros = 0;
    let mut kept = 0;
    for page in 0..PAGES {
        let read = mm::load(addr + page * PAGE_SIZE);
        if (first..first + count).contains(&page) {
            zeros += u64::from(read == Ok(0));
        } else {
            kept += u64::from(read == Ok(pattern(page)));
        }
    }
    let (stats3, faults3, calls3) = (kit.frame_stats(), faults(), calls());
    println!(
        "single-CPU kit: decommit of pages {first}..{} (zx_vmar_op_range: {}): free list {} \
         -> {}; read back: {zeros} zeros in {} faults, {kept} of {} pages kept; free list -> {}, \
         frames from the bump {} -> {}, bump calls {calls1} -> {calls3}",
        first + count,
        if status == ZX_OK { "ZX_OK" } else { "FAILED" },
        stats1.free,
        stats2.free,
        faults3 - faults2,
        PAGES - count,
        stats3.free,
        stats2.from_source,
        stats3.from_source,
    );
    checks.check(status == ZX_OK, format_args!("decommit: {status}"));
    checks.check(
        stats2.free == stats1.free + count,
        format_args!("decommit freed {} frames", stats2.free - stats1.free),
    );
    checks.check(
        zeros == count && kept == PAGES - count && faults3 - faults2 == count,
        format_args!("{zeros} zeros, {kept} kept, {} faults", faults3 - faults2),
    );
    checks.check(
        stats3.from_source == stats2.from_source
            && calls3 == calls1
            && stats3.free == stats2.free - count,
        format_args!("the freed frames were not reused: {stats2:?} -> {stats3:?}"),
    );

    // SAFETY: as for `activate`; CPU 0 touches no user address of this platform afterwards.
    unsafe { AddressSpace::deactivate(&pin) };
    let (idle, register) = runs(kit.cpu().idle_root());
    println!("single-CPU kit: deactivated: {register} (the kit's idle root)");
    checks.check(
        idle,
        format_args!("the idle root is not loaded: {register}"),
    );
    mm::set_single_cpu_platform(None);
    drop(pin);
    let before: FrameStats = kit.frame_stats();
    drop((process, aspace));
    let after = kit.frame_stats();
    println!(
        "single-CPU kit: process dropped: {} frames back on the free list ({} allocated)",
        after.free - before.free,
        after.allocated
    );
}
