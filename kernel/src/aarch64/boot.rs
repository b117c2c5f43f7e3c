//! aarch64 boot code: the entry from QEMU (`-M virt -kernel kernel.elf`, EL1, MMU off), the
//! secondary CPUs' entry (from PSCI `CPU_ON`), and the switch to the kernel's virtual addresses.
//!
//! The boot code and its tables live in the `.boot*` sections, linked at their physical addresses
//! (0x4020_0000, above the device tree, which QEMU puts at the base of RAM); everything else is linked at `PHYS_OFFSET + physical`, in the upper half, where
//! TTBR1_EL1 maps all of RAM and the devices. Boot tables (1 GiB blocks):
//! - TTBR0_EL1 (identity, only while turning the MMU on): L0[0] -> L1[1] = RAM 1..2 GiB;
//! - TTBR1_EL1 (the kernel's, for ever): L0[0] -> L1[0] = devices 0..1 GiB (Device-nGnRnE),
//!   L1[1..4] = RAM 1..4 GiB (normal write-back).
//!
//! MAIR_EL1 ([`MAIR_VALUE`]): attribute 0 ([`ATTR_DEVICE`]) = 0x00, Device-nGnRnE, for the
//! devices; attribute 1 ([`ATTR_NORMAL`]) = 0xff, normal write-back, for RAM: the kernel's own
//! blocks and the crate's user pages, whose index the kernel gives the crate through
//! `Platform::memory_attributes` (so the crate's default, index 0, would be Device memory here,
//! and the crate refuses it on bare metal). The descriptors below take their AttrIndx from the
//! same constants. TCR_EL1: 4 KiB granule and 48-bit VAs in both halves, inner-shareable
//! write-back walks, 8-bit ASIDs taken from TTBR0_EL1. CPACR_EL1.FPEN enables FP/SIMD at EL1
//! (the compiler uses the vector registers; the exception entry saves them).

use core::arch::global_asm;

/// MAIR_EL1 attribute index of the devices: Device-nGnRnE (0x00).
pub const ATTR_DEVICE: u64 = 0;
/// MAIR_EL1 attribute index of RAM: normal write-back, inner and outer, read/write-allocate
/// (0xff). What `Platform::memory_attributes` names for the crate's user pages.
pub const ATTR_NORMAL: u64 = 1;
/// MAIR_EL1.
pub const MAIR_VALUE: u64 = (0x00 << (8 * ATTR_DEVICE)) | (0xff << (8 * ATTR_NORMAL));

/// Block descriptor bits: valid (bit 0, bit 1 clear: a block), AttrIndx (bits 4:2), SH (9:8),
/// AF (10), PXN (53), UXN (54).
const VALID_BLOCK: u64 = 1;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
/// RAM: normal write-back, inner shareable, never executable at EL0.
const NORMAL_BLOCK: u64 = VALID_BLOCK | (ATTR_NORMAL << 2) | INNER_SHAREABLE | ACCESS_FLAG | UXN;
/// Devices: Device-nGnRnE, never executable.
const DEVICE_BLOCK: u64 = VALID_BLOCK | (ATTR_DEVICE << 2) | ACCESS_FLAG | PXN | UXN;

global_asm!(
    r#"
    .equ NORMAL_BLOCK, {normal_block}
    .equ DEVICE_BLOCK, {device_block}
    .equ MAIR_VALUE, {mair}
    .equ TCR_VALUE, 0x2B5103510              // T0SZ=T1SZ=16, 4K/4K, WB inner shareable walks, IPS 40 bits

    .section .boot.text, "ax"
    .global _start
_start:
    // The boot CPU only: the others stay off until PSCI CPU_ON.
    // Zero the boot tables (4 pages).
    ldr x0, =boot_l0_lo
    mov x1, #(4 * 4096 / 8)
2:  str xzr, [x0], #8
    subs x1, x1, #1
    b.ne 2b
    // TTBR0: identity for RAM 1..2 GiB.
    ldr x0, =boot_l0_lo
    ldr x1, =boot_l1_lo
    orr x2, x1, #3
    str x2, [x0]
    ldr x3, =(NORMAL_BLOCK | 0x40000000)
    str x3, [x1, #8]
    // TTBR1: devices, then RAM.
    ldr x0, =boot_l0_hi
    ldr x1, =boot_l1_hi
    orr x2, x1, #3
    str x2, [x0]
    ldr x3, =DEVICE_BLOCK
    str x3, [x1]
    ldr x3, =(NORMAL_BLOCK | 0x40000000)
    str x3, [x1, #8]
    ldr x3, =(NORMAL_BLOCK | 0x80000000)
    str x3, [x1, #16]
    ldr x3, =(NORMAL_BLOCK | 0xC0000000)
    str x3, [x1, #24]
    bl enable_mmu
    ldr x0, =bsp_stack_top
    mov sp, x0
    mov x0, #0x40000000                   // the DTB, at the base of RAM
    ldr x1, =_secondary_start             // physical: the secondary CPUs' PSCI entry
    ldr x2, =aarch64_boot_main
    blr x2
3:  wfe
    b 3b

    // PSCI CPU_ON entry, MMU off; x0 = the context id = the CPU's index.
    .global _secondary_start
_secondary_start:
    mov x19, x0
    bl enable_mmu
    ldr x1, =AP_STACK_TOPS
    ldr x2, [x1, x19, lsl #3]
    mov sp, x2
    mov x0, x19
    ldr x2, =aarch64_ap_main
    blr x2
4:  wfe
    b 4b

    // Programs the translation registers and turns the MMU on; returns to the (identity-mapped)
    // caller. Clobbers x0.
enable_mmu:
    mov x0, #(3 << 20)
    msr cpacr_el1, x0                     // FPEN: no trap of FP/SIMD at EL1
    ldr x0, =MAIR_VALUE
    msr mair_el1, x0
    ldr x0, =TCR_VALUE
    msr tcr_el1, x0
    ldr x0, =boot_l0_lo
    msr ttbr0_el1, x0
    ldr x0, =boot_l0_hi
    msr ttbr1_el1, x0
    isb
    tlbi vmalle1
    dsb nsh
    isb
    mrs x0, sctlr_el1
    orr x0, x0, #(1 << 0)                 // M: MMU on
    orr x0, x0, #(1 << 2)                 // C: data caches
    orr x0, x0, #(1 << 12)                // I: instruction caches
    bic x0, x0, #(1 << 1)                 // A: no alignment checks
    orr x0, x0, #(1 << 23)                // SPAN: exceptions leave PSTATE.PAN alone (it stays 0)
    msr sctlr_el1, x0
    isb
    ret
    .ltorg

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_l0_lo: .skip 4096
boot_l1_lo: .skip 4096
boot_l0_hi: .skip 4096
boot_l1_hi: .skip 4096

    .section .bss.bsp_stack, "aw", @nobits
    .balign 16
bsp_stack:  .skip 65536
bsp_stack_top:
"#,
    normal_block = const NORMAL_BLOCK,
    device_block = const DEVICE_BLOCK,
    mair = const MAIR_VALUE,
);
