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
//! MAIR_EL1: attribute 0 = 0xff (normal write-back, what the crate's descriptors use), attribute 1
//! = 0x00 (Device-nGnRnE). TCR_EL1: 4 KiB granule and 48-bit VAs in both halves, inner-shareable
//! write-back walks, 8-bit ASIDs taken from TTBR0_EL1. CPACR_EL1.FPEN enables FP/SIMD at EL1
//! (the compiler uses the vector registers; the exception entry saves them).

use core::arch::global_asm;

global_asm!(
    r#"
    .equ NORMAL_BLOCK, 0x0040000000000701   // valid block, attr 0, inner shareable, AF, UXN
    .equ DEVICE_BLOCK, 0x0060000000000405   // valid block, attr 1, AF, PXN, UXN
    .equ MAIR_VALUE, 0x00ff
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
"#
);
