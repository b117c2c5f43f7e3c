//! x86_64 boot code: the PVH entry (QEMU `-kernel kernel.elf`), the 32- to 64-bit transition, and
//! the real-mode trampoline that secondary CPUs start in.
//!
//! QEMU finds the 32-bit entry through the ELF note `XEN_ELFNOTE_PHYS32_ENTRY` and enters it in
//! protected mode with paging off, `%ebx` pointing at the `hvm_start_info`. The boot code, its page
//! tables and its GDT live in the `.boot*` sections, linked at their physical addresses (1 MiB);
//! everything else is linked in the top 2 GiB (`KERNEL_BASE + physical`, see `linker-x86_64.ld`).
//!
//! Boot page tables (2 MiB pages, no 1 GiB-page support needed yet):
//! - PML4[0]   -> PDPT_LO[0]   -> PD: identity map of 0..1 GiB, for the switch to long mode and
//!   for the secondary CPUs' trampoline;
//! - PML4[511] -> PDPT_HI[510] -> the same PD: the kernel window at `KERNEL_BASE`.
//!
//! `boot_main` (Rust) then switches to the kernel's final tables, which have no identity map
//! (see `paging.rs`); the boot tables stay for the secondary CPUs' start.

use core::arch::global_asm;

// The PVH note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), the 32-bit entry's physical
// address. QEMU reads the descriptor as a 64-bit value after the name, aligned to the note
// segment's alignment (4), hence `.quad` and `.balign 4`.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4
"#,
    options(att_syntax)
);

global_asm!(
    r#"
    .section .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi                      # the hvm_start_info (physical), kept for boot_main
    mov $boot_stack_top, %esp

    # Zero the boot page tables (4 pages).
    mov $boot_pml4, %edi
    mov $(4 * 4096 / 4), %ecx
    xor %eax, %eax
    rep stosl

    # PML4[0] -> PDPT_LO, PML4[511] -> PDPT_HI (present, writable).
    mov $boot_pdpt_lo, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pdpt_hi, %eax
    or $3, %eax
    mov %eax, boot_pml4 + 511 * 8
    # PDPT_LO[0] and PDPT_HI[510] -> PD.
    mov $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt_lo
    mov %eax, boot_pdpt_hi + 510 * 8
    # PD[i] = i * 2 MiB, present, writable, 2 MiB page.
    mov $boot_pd, %edi
    mov $0x83, %eax
    mov $512, %ecx
2:
    mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 2b

    # CR4.PAE; CR3; EFER.LME and EFER.NXE (the crate's user entries use the NX bit);
    # CR0.PG | CR0.WP (supervisor writes honour read-only pages) | CR0.PE.
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $boot_long_mode

    .code64
boot_long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    movabs $bsp_stack_top, %rsp
    mov %esi, %edi                      # arg 0: hvm_start_info
    mov $boot_pml4, %esi                # arg 1: the boot PML4 (physical)
    mov $ap_trampoline, %edx            # arg 2: the trampoline (physical)
    mov $(ap_trampoline_end - ap_trampoline), %ecx  # arg 3: its length
    movabs $x86_64_boot_main, %rax
    call *%rax
    ud2

    # The secondary CPUs' trampoline, copied to TRAMPOLINE_PHYS (0x8000) and started there by
    # INIT-SIPI-SIPI in real mode. Addresses inside it are computed for that location. The boot
    # CPU fills in the three variables at offsets 8, 16 and 24 before each start.
    .code16
    .balign 16
ap_trampoline:
    jmp 3f
    .org ap_trampoline + 8
ap_tramp_cr3:   .quad 0                 # +8: the boot PML4 (physical, below 4 GiB)
ap_tramp_stack: .quad 0                 # +16: the CPU's stack top (kernel virtual)
ap_tramp_entry: .quad 0                 # +24: the Rust entry (kernel virtual)
3:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (0x8000 + ap_tramp_gdt_ptr - ap_trampoline)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(0x8000 + 4f - ap_trampoline)
    .code32
4:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov (0x8000 + ap_tramp_cr3 - ap_trampoline), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    ljmp $0x18, $(0x8000 + 5f - ap_trampoline)
    .code64
5:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov (0x8000 + ap_tramp_stack - ap_trampoline), %rsp
    mov (0x8000 + ap_tramp_entry - ap_trampoline), %rax
    sub $8, %rsp                        # as if called: the ABI's alignment at function entry
    jmp *%rax
    .balign 8
ap_tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF            # 0x08: 32-bit code
    .quad 0x00CF92000000FFFF            # 0x10: data
    .quad 0x00AF9A000000FFFF            # 0x18: 64-bit code
ap_tramp_gdt_ptr:
    .word 4 * 8 - 1
    .long 0x8000 + ap_tramp_gdt - ap_trampoline
ap_trampoline_end:

    .section .boot.data, "aw"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF            # 0x08: 64-bit code
    .quad 0x00CF92000000FFFF            # 0x10: data
boot_gdt_ptr:
    .word 3 * 8 - 1
    .long boot_gdt

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:    .skip 4096
boot_pdpt_lo: .skip 4096
boot_pdpt_hi: .skip 4096
boot_pd:      .skip 4096
boot_stack:   .skip 4096
boot_stack_top:

    .section .bss.bsp_stack, "aw", @nobits
    .balign 16
bsp_stack:    .skip 65536
bsp_stack_top:
"#,
    options(att_syntax)
);

/// Where the trampoline is copied: page 8, in conventional memory, free on a PC.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;
/// The offsets of the trampoline's variables.
pub const TRAMPOLINE_CR3: usize = 8;
pub const TRAMPOLINE_STACK: usize = 16;
pub const TRAMPOLINE_ENTRY: usize = 24;
