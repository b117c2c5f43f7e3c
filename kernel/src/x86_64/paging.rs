//! The kernel's own mappings on x86_64, and how they coexist with the crate's address spaces.
//!
//! DESIGN. The crate owns the lower half (user mappings below 1 << 47) of every address space's
//! PML4; the upper half (slots 256-511) is the kernel's, and the crate never touches it, not even
//! when it releases the table. The kernel keeps everything it needs under PML4 slot 511, mapped by
//! one PDPT of 1 GiB pages:
//!
//! - PDPT[0..4]: the direct map of physical 0..4 GiB at [`PHYS_OFFSET`] (RAM, ACPI tables, the
//!   local APIC; the top GiB, which holds no RAM but the APIC, is mapped uncached);
//! - PDPT[510]: the kernel window: physical 0..1 GiB at [`KERNEL_BASE`], where the kernel image is
//!   linked (the top 2 GiB, for the `kernel` code model).
//!
//! The kernel's own PML4 holds just that slot. `Platform::prepare_root`, which the crate calls once
//! for every new address space, copies the kernel's upper-half PML4 entries into the new root
//! ([`prepare_root`]), so every address space shares the one kernel PDPT and the kernel stays
//! mapped whichever root is loaded. Nothing changes the kernel's tables after boot.
//!
//! The kernel's PML4 is also what `Platform::load_kernel_root` loads when a CPU leaves user space
//! (`AddressSpace::deactivate`): it has no user mappings. It is always loaded with PCID 0 and
//! without the no-flush bit, so with PCIDs on it also drops what PCID 0 (the untagged address
//! spaces') cached on that CPU.
//!
//! PCIDS. Off unless the kernel command line says `pcid` (or `pcid=N` for N tags); then the boot
//! CPU checks CPUID (PCID: leaf 1 ECX bit 17; INVPCID: leaf 7.0 EBX bit 10, which the crate's
//! `native_tlb` uses for address spaces that are not loaded), and every CPU sets CR4.PCIDE once it
//! runs on the kernel's PML4, whose CR3 value has bits 11:0 clear, as setting PCIDE requires.
//! A CPU without them (QEMU's TCG offers neither, in any CPU model) cannot run the test: the boot
//! CPU says so and ends the run as skipped (`exit_skipped`, QEMU exit status 37).

use super::cpu::{self, cpuid, set_cr3, Table};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use zx_vm::PhysAddr;

/// Where the direct map of physical memory starts (PML4 slot 511).
pub const PHYS_OFFSET: u64 = 0xFFFF_FF80_0000_0000;
/// Where the kernel window starts: the kernel image is linked at `KERNEL_BASE + physical`.
pub const KERNEL_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// The PML4 slot of both.
const KERNEL_SLOT: usize = 511;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const GIB: u64 = 1 << 30;
/// The end of the RAM the frame allocator may take: the direct map's write-back part (the
/// fourth GiB is mapped uncached, for the local APIC).
pub const RAM_LIMIT: u64 = 3 * GIB;

static KERNEL_PML4: Table<[u64; 512]> = Table(UnsafeCell::new([0; 512]));
static KERNEL_PDPT: Table<[u64; 512]> = Table(UnsafeCell::new([0; 512]));

/// The physical address of a kernel static (linked in the kernel window).
pub fn kernel_virt_to_phys(va: u64) -> u64 {
    va - KERNEL_BASE
}

/// The physical address of the kernel's own PML4 (no user mappings).
pub fn kernel_root() -> u64 {
    kernel_virt_to_phys(KERNEL_PML4.0.get() as u64)
}

/// The root slots the kernel's own PML4 fills (slot 511), as the kit's `KernelSlots`.
pub fn kernel_slots() -> zx_vm::kit::single_cpu::KernelSlots {
    // SAFETY: the kernel PML4 is only written by `init`, at boot.
    let kernel = unsafe { &*KERNEL_PML4.0.get() };
    let mut slots = zx_vm::kit::single_cpu::KernelSlots::NONE;
    for (slot, &entry) in kernel.iter().enumerate() {
        if entry & PRESENT != 0 {
            slots.insert(slot).expect("a slot below 512");
        }
    }
    slots
}

/// Builds the kernel's tables and switches the boot CPU to them (dropping the identity map).
pub fn init() {
    // CPUID.80000001h:EDX bit 26: 1 GiB pages.
    let (_, _, _, edx) = cpuid(0x8000_0001, 0);
    assert!(
        edx & (1 << 26) != 0,
        "the CPU lacks 1 GiB pages (run QEMU with -cpu max)"
    );
    // SAFETY: single-threaded boot; no CPU uses these tables yet.
    let (pml4, pdpt) = unsafe { (&mut *KERNEL_PML4.0.get(), &mut *KERNEL_PDPT.0.get()) };
    for (gib, entry) in pdpt.iter_mut().take(4).enumerate() {
        let mut flags = PRESENT | WRITABLE | HUGE;
        if gib == 3 {
            flags |= CACHE_DISABLE | WRITE_THROUGH;
        }
        *entry = (gib as u64 * GIB) | flags;
    }
    pdpt[510] = PRESENT | WRITABLE | HUGE;
    pml4[KERNEL_SLOT] = kernel_virt_to_phys(pdpt.as_ptr() as u64) | PRESENT | WRITABLE;
    load_kernel_root();
}

/// Loads the kernel's own PML4 on the calling CPU.
pub fn load_kernel_root() {
    // SAFETY: the kernel PML4 maps the kernel image (where the running code, its statics and
    // every CPU's stack live) and the direct map; it lives for ever.
    unsafe { set_cr3(kernel_root()) };
}

/// `Platform::prepare_root`: copies the kernel's upper-half PML4 entries into the new (empty)
/// root table `root`.
pub fn prepare_root(root: PhysAddr) {
    // SAFETY: the kernel PML4 is only written by `init`, at boot.
    let kernel = unsafe { &*KERNEL_PML4.0.get() };
    for (slot, &entry) in kernel.iter().enumerate().skip(256) {
        if entry != 0 {
            root_slot(root, slot).store(entry, Ordering::Release);
        }
    }
}

/// Slot `slot` of the root table at `root`.
fn root_slot(root: PhysAddr, slot: usize) -> &'static AtomicU64 {
    let table = super::phys_to_virt(root) as *const AtomicU64;
    // SAFETY: `root` is a root table the crate allocated (a frame, in the direct map) and keeps
    // while the address space lives; the caller is inside its creation. The crate reads and writes
    // entries atomically and never touches the upper half.
    unsafe { &*table.add(slot) }
}

// ---- PCIDs --------------------------------------------------------------------------------------

/// CR4.PCIDE.
const CR4_PCIDE: u64 = 1 << 17;
/// The tags `pcid` without a number gives the crate: few, so that they are reused (a tag comes
/// back dirty from a dead address space and is flushed before its next owner runs) all through
/// the contract tests, while both address spaces of the decommit scenario still have one.
/// `pcid=1` leaves the second one untagged (PCID 0, flushed at every load) next to a tagged one.
pub const DEFAULT_PCID_TAGS: u16 = 2;

/// The PCIDs given to the crate; 0 while PCIDs are off.
static PCID_TAGS: AtomicU16 = AtomicU16::new(0);

/// What this CPU's CPUID offers: (PCID, INVPCID).
pub fn pcid_support() -> (bool, bool) {
    let (max_leaf, ..) = cpuid(0, 0);
    let (_, _, ecx, _) = cpuid(1, 0);
    let pcid = ecx & (1 << 17) != 0;
    let invpcid = max_leaf >= 7 && cpuid(7, 0).1 & (1 << 10) != 0;
    (pcid, invpcid)
}

/// Boot CPU, on the kernel's PML4, before the `Tlb` is made: turns PCIDs on with `tags` tags
/// (`tags` > 0). False, with nothing changed, if the CPU lacks PCID or INVPCID.
pub fn init_pcids(tags: u16) -> bool {
    let (pcid, invpcid) = pcid_support();
    if !(pcid && invpcid) {
        return false;
    }
    PCID_TAGS.store(tags, Ordering::SeqCst);
    enable_pcids_here();
    true
}

/// Sets CR4.PCIDE on the calling CPU if PCIDs are on. Called on the kernel's PML4.
pub fn enable_pcids_here() {
    if PCID_TAGS.load(Ordering::SeqCst) == 0 {
        return;
    }
    let (pcid, invpcid) = pcid_support();
    assert!(pcid && invpcid, "this CPU lacks PCID or INVPCID");
    // MOV to CR4 raises #GP if it sets PCIDE while CR3[11:0] is not 0 (SDM vol. 3A 4.10.1).
    let cr3 = cpu::cr3();
    assert_eq!(cr3 & 0xfff, 0, "CR3 {cr3:#x} has bits 11:0 set");
    // SAFETY: the CPU has PCIDs (CPUID above), runs in long mode (IA32_EFER.LMA = 1) with
    // CR3[11:0] = 0, so setting PCIDE is allowed; the current translations stay valid under
    // PCID 0, which the kernel's PML4 keeps using.
    unsafe { cpu::set_cr4(cpu::cr4() | CR4_PCIDE) };
}

/// The PCIDs to give the crate: 0 when PCIDs are off.
pub fn tags() -> u16 {
    PCID_TAGS.load(Ordering::SeqCst)
}

/// Whether the calling CPU has CR4.PCIDE set.
pub fn pcids_enabled_here() -> bool {
    cpu::cr4() & CR4_PCIDE != 0
}
