//! Just enough of the flattened device tree to find RAM and the CPUs.

use super::phys_to_virt;
use alloc::vec::Vec;
use zx_vm::PhysAddr;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// What the kernel needs from the device tree.
pub struct Machine {
    /// The first RAM range: base and size.
    pub ram: (u64, u64),
    /// The CPUs' MPIDR affinity values, in tree order.
    pub cpus: Vec<u64>,
}

fn be32(pa: u64) -> u32 {
    // SAFETY: the DTB is in RAM (QEMU put it at the base of RAM, below the kernel, and the frame
    // allocator never hands that out), mapped by the direct map; nothing writes it.
    u32::from_be(unsafe { (phys_to_virt(PhysAddr(pa)) as *const u32).read_unaligned() })
}

fn be_value(pa: u64, len: u32) -> u64 {
    (0..len / 4).fold(0, |value, i| {
        (value << 32) | u64::from(be32(pa + 4 * u64::from(i)))
    })
}

fn string(pa: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = pa;
    loop {
        // SAFETY: as in `be32`.
        let byte = unsafe { *phys_to_virt(PhysAddr(at)) };
        if byte == 0 {
            return out;
        }
        out.push(byte);
        at += 1;
    }
}

/// Parses the DTB at physical address `dtb`.
pub fn parse(dtb: u64) -> Machine {
    assert_eq!(be32(dtb), MAGIC, "no device tree at {dtb:#x}");
    let structs = dtb + u64::from(be32(dtb + 8));
    let strings = dtb + u64::from(be32(dtb + 12));
    let mut machine = Machine {
        ram: (0, 0),
        cpus: Vec::new(),
    };
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut at = structs;
    loop {
        let token = be32(at);
        at += 4;
        match token {
            BEGIN_NODE => {
                let name = string(at);
                at += (name.len() as u64 + 1).next_multiple_of(4);
                path.push(name);
            }
            END_NODE => {
                path.pop();
            }
            PROP => {
                let len = be32(at);
                let name = string(strings + u64::from(be32(at + 4)));
                let value = at + 8;
                at = value + u64::from(len).next_multiple_of(4);
                if name != b"reg" {
                    continue;
                }
                let names: Vec<&[u8]> = path.iter().map(|n| n.as_slice()).collect();
                match names.as_slice() {
                    [_, memory] if memory.starts_with(b"memory") && machine.ram.1 == 0 => {
                        let half = len / 2;
                        machine.ram = (
                            be_value(value, half),
                            be_value(value + u64::from(half), half),
                        );
                    }
                    [_, b"cpus", cpu] if cpu.starts_with(b"cpu@") => {
                        machine.cpus.push(be_value(value, len));
                    }
                    _ => {}
                }
            }
            NOP => {}
            END => break,
            other => panic!("bad device-tree token {other:#x}"),
        }
    }
    machine
}
