//! x86_64: PVH boot, COM1, the local APIC, 4-level paging with the kernel in the upper half.
//!
//! PRIVILEGE. The scenarios run in ring 0 and touch the crate's user mappings (U/S set) directly:
//! CR4.SMAP stays off, so supervisor accesses to user pages are allowed; CR0.WP is on, so a
//! supervisor store to a read-only user page faults like a user store would.
//!
//! TAGS. By default the kernel runs without PCIDs (`Tlb::new(cpus, 0, ..)`): every activation
//! reloads CR3 and drops the address space's translations, and a shootdown interrupts only the
//! CPUs where the address space is active. With `pcid` on the kernel command line (`cargo xtask
//! qemu x86_64 --pcid`, QEMU `-append pcid`) every CPU sets CR4.PCIDE and the crate gets PCIDs
//! (`Tlb::new(cpus, tags, ..)`, see `paging`): an activation keeps the tag's translations (CR3
//! bit 63) unless the crate knows them stale, address spaces that are not loaded are invalidated
//! by INVPCID, and CPUs that ran an address space earlier are marked stale rather than
//! interrupted.

mod acpi;
mod apic;
pub mod boot;
mod cpu;
mod interrupts;
mod paging;

use crate::frames::FRAMES;
use crate::mm;
use crate::platform::KernelPlatform;
use crate::smp::{self, PERCPU};
use alloc::vec;
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use zx_vm::platform::TlbInvalidate;
use zx_vm::vmar::FaultError;
use zx_vm::PhysAddr;

pub use paging::PHYS_OFFSET;

/// The architecture's name, for messages.
pub const NAME: &str = "x86_64";

/// The memory attributes of the crate's user pages: the crate's default (x86_64 ignores them:
/// user pages use PAT entry 0, write-back).
pub const MEMORY_ATTRIBUTES: zx_vm::arch::MemoryAttributes = zx_vm::arch::MemoryAttributes::DEFAULT;

/// A line about the TLB tags, for the kernel's banner.
pub fn tags_summary() -> alloc::string::String {
    let (pcid, invpcid) = paging::pcid_support();
    let yes = |b: bool| if b { "yes" } else { "no" };
    match paging::tags() {
        0 => alloc::format!(
            "PCIDs off (untagged: every switch reloads CR3); CPUID offers PCID {}, INVPCID {}",
            yes(pcid),
            yes(invpcid)
        ),
        tags => alloc::format!(
            "PCIDs on (CR4.PCIDE {}, INVPCID): {tags} tags of {}",
            if paging::pcids_enabled_here() {
                "set"
            } else {
                "NOT set"
            },
            zx_vm::arch::Format::X86_64.max_tags()
        ),
    }
}

/// The kernel's address for physical address `pa` (the direct map).
pub fn phys_to_virt(pa: PhysAddr) -> *mut u8 {
    (PHYS_OFFSET + pa.0) as *mut u8
}

// ---- serial (COM1) and exit -----------------------------------------------------------------

const COM1: u16 = 0x3F8;

fn serial_init() {
    for (offset, value) in [
        (1, 0x00),
        (3, 0x80),
        (0, 0x01),
        (1, 0x00),
        (3, 0x03),
        (2, 0xC7),
        (4, 0x03),
    ] {
        // SAFETY: COM1's registers: interrupts off, 115200 baud, 8N1, FIFOs on.
        unsafe { cpu::outb(COM1 + offset, value) };
    }
}

/// Remaps the legacy 8259 PICs past the exception vectors (0x20..0x30) and masks every line: the
/// kernel uses the local APIC only. Unremapped, the PIT's IRQ 0 would arrive as vector 8 (#DF).
fn disable_legacy_pic() {
    for (port, value) in [
        (0x20, 0x11),
        (0xA0, 0x11), // ICW1: initialise, expect ICW4
        (0x21, 0x20),
        (0xA1, 0x28), // ICW2: vector bases
        (0x21, 0x04),
        (0xA1, 0x02), // ICW3: cascade on IRQ 2
        (0x21, 0x01),
        (0xA1, 0x01), // ICW4: 8086 mode
        (0x21, 0xFF),
        (0xA1, 0xFF), // mask every line
    ] {
        // SAFETY: the 8259 PIC's command and data ports, programmed in the documented order.
        unsafe { cpu::outb(port, value) };
    }
}

/// Writes one byte to COM1.
pub fn serial_write_byte(byte: u8) {
    // SAFETY: reading COM1's line status register has no side effect.
    while unsafe { cpu::inb(COM1 + 5) } & 0x20 == 0 {
        core::hint::spin_loop();
    }
    // SAFETY: the transmit register is empty; writing it sends the byte.
    unsafe { cpu::outb(COM1, byte) };
}

/// Ends the QEMU run through `isa-debug-exit` (iobase 0xf4): exit status 33 for success, 35 for
/// failure (and 37 for a skipped run, [`exit_skipped`]).
pub fn exit(success: bool) -> ! {
    // SAFETY: the isa-debug-exit device turns the write into QEMU's exit; on a machine without it
    // port 0xf4 is unused.
    unsafe { cpu::outb(0xF4, if success { 0x10 } else { 0x11 }) };
    loop {
        interrupts_disable();
        // SAFETY: HLT with interrupts disabled stops this CPU for good, which is the intent.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Ends the QEMU run as skipped: exit status 37 (a run that had nothing to test).
pub fn exit_skipped() -> ! {
    // SAFETY: as in `exit`.
    unsafe { cpu::outb(0xF4, 0x12) };
    exit(false)
}

// ---- per-CPU register and interrupts ----------------------------------------------------------

/// The calling CPU's index (`gs:0`, the `index` field of its `PerCpu`).
pub fn cpu_index() -> usize {
    let index: usize;
    // SAFETY: GS base points at this CPU's `PerCpu` (set before anything calls this), whose first
    // field is the index.
    unsafe { asm!("mov {}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index
}

fn set_percpu(index: usize) {
    // SAFETY: IA32_GS_BASE exists; the kernel never uses GS for anything else.
    unsafe { cpu::wrmsr(cpu::IA32_GS_BASE, &PERCPU[index] as *const _ as u64) };
}

/// Disables interrupts; returns whether they were enabled.
pub fn interrupts_disable() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS and clearing IF only affects this CPU's interrupt delivery.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Re-enables interrupts if `enabled`.
pub fn interrupts_restore(enabled: bool) {
    if enabled {
        // SAFETY: the interrupt handlers are installed before interrupts are first enabled.
        unsafe { asm!("sti", options(nomem, nostack)) };
    }
}

/// Enables interrupts and sleeps until one arrives. STI's one-instruction shadow makes the pair
/// atomic: an interrupt already pending is taken after HLT begins, and ends it.
pub fn enable_interrupts_and_wait() {
    // SAFETY: as in `interrupts_restore`.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
}

/// The kernel's IPIs.
#[derive(Clone, Copy, Debug)]
pub enum Ipi {
    /// Run the crate's shootdown handler.
    Shootdown,
    /// Wake up to look for a job.
    Wake,
}

/// Sends `ipi` to CPU `cpu`.
pub fn send_ipi(cpu: usize, ipi: Ipi) {
    let vector = match ipi {
        Ipi::Shootdown => interrupts::SHOOTDOWN_VECTOR,
        Ipi::Wake => interrupts::WAKE_VECTOR,
    };
    apic::send_ipi(PERCPU[cpu].hw_id.load(Ordering::Relaxed) as u32, vector);
}

// ---- TLB and address spaces -------------------------------------------------------------------

/// `Platform::invalidate_local`: the calling CPU only (x86_64 has no broadcast invalidation).
pub fn invalidate(request: &TlbInvalidate<'_>, _ipi_mode: bool) {
    zx_vm::arch::native_tlb::invalidate_local(request);
}

/// Drops the calling CPU's translation of `va` (INVLPG), whatever the address space.
pub fn invalidate_page_local(va: u64, _asid: u16) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// `Platform::prepare_root`: puts the kernel's mappings into a new root table.
pub fn prepare_root(root: PhysAddr) {
    paging::prepare_root(root);
}

/// The kernel's own root table (no user mappings).
pub fn kernel_root() -> PhysAddr {
    PhysAddr(paging::kernel_root())
}

/// The kernel's root slots: those its own PML4 fills (slot 511).
pub fn kernel_slots() -> zx_vm::kit::single_cpu::KernelSlots {
    paging::kernel_slots()
}

/// Loads the kernel's own root table (no user mappings).
pub fn load_kernel_root() {
    paging::load_kernel_root();
}

/// Makes page-table stores visible to every CPU's table walker (x86_64: ordinary stores are).
pub fn publish_table_stores() {
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// Drops every CPU's translations under `asid` (x86_64 without PCIDs: the CR3 reloads did).
pub fn flush_asid_everywhere(_asid: u16) {}

/// Loads `root` (a table the kernel built itself, prepared with [`prepare_root`]) on this CPU.
///
/// # Safety
/// `root` maps the kernel and stays alive until [`load_kernel_root`].
pub unsafe fn load_root_raw(root: PhysAddr, _asid: u16) {
    // SAFETY: forwarded from the caller.
    unsafe { cpu::set_cr3(root.0) };
}

/// Loads the user word at `va`; a fault the crate cannot resolve resumes at label 3 with the
/// error code in RDX (see `interrupts::page_fault`).
pub fn probe_read(va: u64) -> Result<u64, FaultError> {
    let value: u64;
    let error: u64;
    // SAFETY: the load reads user memory through the current address space. If it faults, the
    // handler resolves the fault through the crate (the load is retried), or moves RIP to the
    // fixup label, recorded in this CPU's `PerCpu::fixup` (gs:8) beforehand, with RDX set; the
    // fixup is cleared on both paths. Labels 2/3 avoid the binary-looking 0/1.
    unsafe {
        asm!(
            "lea {tmp}, [rip + 3f]",
            "mov gs:[8], {tmp}",
            "xor edx, edx",
            "2: mov {value}, qword ptr [{va}]",
            "3: mov qword ptr gs:[8], 0",
            va = in(reg) va,
            value = out(reg) value,
            tmp = out(reg) _,
            out("rdx") error,
            options(nostack),
        )
    };
    mm::fault_error_from_code(error).map(|()| value)
}

/// Stores `value` to the user word at `va`, as [`probe_read`].
pub fn probe_write(va: u64, value: u64) -> Result<(), FaultError> {
    let error: u64;
    // SAFETY: as in `probe_read`, for a store.
    unsafe {
        asm!(
            "lea {tmp}, [rip + 3f]",
            "mov gs:[8], {tmp}",
            "xor edx, edx",
            "2: mov qword ptr [{va}], {value}",
            "3: mov qword ptr gs:[8], 0",
            va = in(reg) va,
            value = in(reg) value,
            tmp = out(reg) _,
            out("rdx") error,
            options(nostack),
        )
    };
    mm::fault_error_from_code(error)
}

// ---- boot ---------------------------------------------------------------------------------------

unsafe extern "C" {
    /// The end of the kernel image (linker script).
    static __kernel_end: u8;
}

/// The index of the secondary CPU being started (they start one at a time).
static STARTING: AtomicUsize = AtomicUsize::new(0);

/// The boot CPU's Rust entry, called by `boot.rs` in long mode on the boot page tables.
#[unsafe(no_mangle)]
extern "C" fn x86_64_boot_main(
    start_info: u64,
    boot_pml4: u64,
    trampoline: u64,
    trampoline_len: u64,
) -> ! {
    serial_init();
    disable_legacy_pic();
    cpu::load_gdt();
    cpu::init_idt(interrupts::stubs());
    cpu::load_idt();
    set_percpu(0);
    paging::init();
    let pcid_tags = pcid_tags_requested(&command_line(start_info));
    if pcid_tags != 0 && !paging::init_pcids(pcid_tags) {
        // Nothing to test: say so, and end the run as skipped rather than passed or failed.
        let (pcid, invpcid) = paging::pcid_support();
        println!(
            "PCIDs were asked for, but this CPU offers PCID: {pcid}, INVPCID: {invpcid} (QEMU's \
             TCG offers neither in any CPU model)\nRESULT: SKIP"
        );
        exit_skipped();
    }
    check_translation_regime(pcid_tags);

    // Memory: the hvm_start_info's memory map (version 1), RAM above the kernel image.
    let info = |offset: u64| -> u64 {
        // SAFETY: QEMU's PVH loader put the hvm_start_info in low RAM, inside the direct map.
        unsafe { (phys_to_virt(PhysAddr(start_info + offset)) as *const u64).read_unaligned() }
    };
    assert_eq!(info(0) as u32, 0x336e_c578, "not booted through PVH");
    let version = (info(0) >> 32) as u32;
    assert!(version >= 1, "the PVH start info has no memory map");
    let kernel_end = paging::kernel_virt_to_phys(&raw const __kernel_end as u64);
    FRAMES.init(0);
    let (memmap, entries) = (info(40), info(48) as u32);
    for i in 0..u64::from(entries) {
        let entry = memmap + 24 * i;
        let (start, size, kind) = (
            info_at(entry),
            info_at(entry + 8),
            info_at(entry + 16) as u32,
        );
        if kind == 1 {
            // Only RAM the direct map maps write-back: below 3 GiB (see `paging`).
            FRAMES.add_region(start.max(kernel_end), (start + size).min(paging::RAM_LIMIT));
        }
    }

    // CPUs: the MADT lists them; the boot CPU becomes index 0.
    apic::init_this_cpu();
    let me = apic::id();
    let mut ids = acpi::cpu_apic_ids(info(32));
    ids.retain(|&id| id != me);
    ids.insert(0, me);
    ids.truncate(zx_vm::platform::MAX_CPUS);
    for (index, &id) in ids.iter().enumerate() {
        PERCPU[index].hw_id.store(id as usize, Ordering::Relaxed);
    }
    let tags = paging::tags();
    if let Err(error) = KernelPlatform::init(ids.len(), tags) {
        panic!(
            "zx-vm refused the TLB configuration ({} CPUs, {tags} PCIDs): {error}",
            ids.len()
        );
    }
    interrupts_restore(true);
    PERCPU[0].online.store(true, Ordering::Release);
    start_secondaries(boot_pml4, trampoline, trampoline_len);
    crate::kmain()
}

/// Checks, before the first address space, that the boot CPU's paging set-up is what the crate's
/// entries need (`zx_vm::arch::regime::check_translation_regime`: CR0.WP, EFER.NXE, and CR4.PCIDE
/// when `tags` PCIDs are asked for), and stops the boot, failed, on a problem. QEMU would pass
/// with some of these wrong (its TCG has no PCIDs to mis-tag); hardware would not. The secondary
/// CPUs take the same CR0/EFER values from the trampoline and set CR4.PCIDE in `paging`.
fn check_translation_regime(tags: u16) {
    use zx_vm::arch::regime;
    let (cr0, cr4) = (cpu::cr0(), cpu::cr4());
    // SAFETY: IA32_EFER exists on every x86_64 CPU (long mode runs on it); reading it has no
    // side effect.
    let efer = unsafe { cpu::rdmsr(cpu::IA32_EFER) };
    match regime::check_translation_regime(tags) {
        Ok(()) => println!(
            "translation regime: OK (check_translation_regime({tags}): CR0 {cr0:#x} WP, EFER \
             {efer:#x} NXE, CR4 {cr4:#x}{})",
            if tags > 0 {
                " PCIDE"
            } else {
                ", PCIDE not needed"
            }
        ),
        Err(problems) => {
            println!(
                "translation regime: {problems} (CR0 {cr0:#x}, CR4 {cr4:#x}, EFER {efer:#x})\n\
                 RESULT: FAIL"
            );
            exit(false);
        }
    }
}

/// The kernel command line (QEMU `-append`): the hvm_start_info's `cmdline_paddr` (offset 24), a
/// NUL-terminated string; empty when there is none.
fn command_line(start_info: u64) -> alloc::string::String {
    let address = info_at(start_info + 24);
    let mut line = alloc::string::String::new();
    if address == 0 {
        return line;
    }
    for offset in 0..4096 {
        // SAFETY: QEMU's PVH loader put the command line in low RAM, inside the direct map;
        // reading stops at its NUL.
        let byte = unsafe { phys_to_virt(PhysAddr(address + offset)).read_volatile() };
        if byte == 0 {
            break;
        }
        line.push(char::from(byte));
    }
    line
}

/// The PCIDs the command line asks for: `pcid` (the default count) or `pcid=N`; 0 without.
fn pcid_tags_requested(command_line: &str) -> u16 {
    let mut tags = 0;
    for word in command_line.split_ascii_whitespace() {
        if word == "pcid" {
            tags = paging::DEFAULT_PCID_TAGS;
        } else if let Some(count) = word.strip_prefix("pcid=") {
            tags = count.parse().unwrap_or_else(|_| {
                panic!("bad kernel argument `{word}`: expected pcid=N, N in 0..=65535")
            });
        }
    }
    tags
}

fn info_at(pa: u64) -> u64 {
    // SAFETY: as for the start info: the memory map is in low RAM, inside the direct map.
    unsafe { (phys_to_virt(PhysAddr(pa)) as *const u64).read_unaligned() }
}

/// Starts every secondary CPU through the trampoline, one at a time.
fn start_secondaries(boot_pml4: u64, trampoline: u64, trampoline_len: u64) {
    let dst = phys_to_virt(PhysAddr(boot::TRAMPOLINE_PHYS));
    // SAFETY: the trampoline is in the kernel image (boot section) and page 8 is free low RAM
    // that the frame allocator does not manage (it starts above the kernel image); both are in
    // the direct map, and they do not overlap.
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(PhysAddr(trampoline)),
            dst,
            trampoline_len as usize,
        )
    };
    let var = |offset: usize, value: u64| {
        // SAFETY: the trampoline's variables, at their fixed offsets in the copy; no CPU runs the
        // trampoline while the boot CPU writes them (the previous one is past it: it is online).
        unsafe { (dst.add(offset) as *mut u64).write_volatile(value) };
    };
    for (index, cpu) in PERCPU.iter().enumerate().take(smp::cpu_count()).skip(1) {
        let stack = vec![0u8; 64 << 10].leak();
        var(boot::TRAMPOLINE_CR3, boot_pml4);
        var(boot::TRAMPOLINE_STACK, stack.as_ptr_range().end as u64);
        var(boot::TRAMPOLINE_ENTRY, x86_64_ap_entry as *const () as u64);
        STARTING.store(index, Ordering::SeqCst);
        apic::start_cpu(
            cpu.hw_id.load(Ordering::Relaxed) as u32,
            (boot::TRAMPOLINE_PHYS >> 12) as u8,
        );
        let mut spins = 0u64;
        while !cpu.online.load(Ordering::Acquire) {
            spins += 1;
            assert!(spins < 2_000_000_000, "CPU {index} did not come online");
            core::hint::spin_loop();
        }
    }
}

/// A secondary CPU's Rust entry, from the trampoline, in long mode on the boot page tables.
extern "C" fn x86_64_ap_entry() -> ! {
    let index = STARTING.load(Ordering::SeqCst);
    cpu::load_gdt();
    cpu::load_idt();
    set_percpu(index);
    paging::load_kernel_root();
    paging::enable_pcids_here();
    apic::init_this_cpu();
    interrupts_restore(true);
    smp::worker_loop()
}
