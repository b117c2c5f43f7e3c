//! Just enough ACPI to count the CPUs: RSDP -> RSDT/XSDT -> MADT -> local APIC entries.

use super::phys_to_virt;
use alloc::vec::Vec;
use zx_vm::PhysAddr;

fn read<T: Copy>(pa: u64) -> T {
    // SAFETY: the firmware's tables are in RAM or ROM below 4 GiB, inside the direct map, and
    // nothing writes them; `read_unaligned` because ACPI packs its structures.
    unsafe { (phys_to_virt(PhysAddr(pa)) as *const T).read_unaligned() }
}

/// Finds the RSDP: where the boot information says, or in the BIOS area.
fn find_rsdp(hint: u64) -> Option<u64> {
    if hint != 0 && read::<[u8; 8]>(hint) == *b"RSD PTR " {
        return Some(hint);
    }
    (0xE_0000..0x10_0000)
        .step_by(16)
        .find(|&pa| read::<[u8; 8]>(pa) == *b"RSD PTR ")
}

/// The local APIC IDs of the enabled CPUs, in MADT order.
pub fn cpu_apic_ids(rsdp_hint: u64) -> Vec<u32> {
    let rsdp = find_rsdp(rsdp_hint).expect("no ACPI RSDP");
    let revision: u8 = read(rsdp + 15);
    let (root, entry_size) = if revision >= 2 && read::<u64>(rsdp + 24) != 0 {
        (read::<u64>(rsdp + 24), 8)
    } else {
        (u64::from(read::<u32>(rsdp + 16)), 4)
    };
    let length = u64::from(read::<u32>(root + 4));
    let madt = (root + 36..root + length)
        .step_by(entry_size)
        .map(|at| {
            if entry_size == 8 {
                read::<u64>(at)
            } else {
                u64::from(read::<u32>(at))
            }
        })
        .find(|&table| read::<[u8; 4]>(table) == *b"APIC")
        .expect("no MADT");
    let length = u64::from(read::<u32>(madt + 4));
    let mut ids = Vec::new();
    let mut at = madt + 44;
    while at + 2 <= madt + length {
        let (kind, len): (u8, u8) = (read(at), read(at + 1));
        if len < 2 {
            break;
        }
        // Type 0: processor local APIC; flags bit 0: enabled.
        if kind == 0 && read::<u32>(at + 4) & 1 != 0 {
            ids.push(u32::from(read::<u8>(at + 3)));
        }
        at += u64::from(len);
    }
    ids
}
