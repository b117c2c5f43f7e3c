//! Fuzz target: bytes decode into a sequence of syscalls, kernel-side calls (pins, allocation
//! failures) and simulated loads and stores, run against the crate on a simulated machine. After
//! every step the invariants must hold:
//!
//! - every present page-table entry belongs to a live mapping and to the committed VMO page behind
//!   it, with no more than the mapping's permissions (`AddressSpace::audit`);
//! - frames in use = pages committed to live VMOs + page-table pages: nothing leaked, nothing freed
//!   twice (the machine panics on a double free, or on freeing a frame a TLB still maps);
//! - no load ever returns the poison of a freed frame;
//! - a child reads, right after `zx_vmo_create_child`, as its parent did before the call (a
//!   snapshot as the range it covers, zero past the parent's end; a slice as its window; a
//!   reference as the whole VMO), and the call leaves the parent's bytes as they were;
//! - when everything is dropped, every frame is back (the machine checks on drop).
//!
//! While copy-on-write children live, a hidden page that only a snapshot child sees is counted by
//! no VMO's committed bytes, so the frame count is then only bounded below by the sum.
//!
//! Run: see README.md (a one-minute run into a scratch corpus, seeded from corpus/syscalls).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Weak};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{SimConfig, SimMachine, FREED_POISON};
use zx_vm::syscall::*;
use zx_vm::{KernelObject, Platform, Process, Vmo};

/// Reads the fuzzer's bytes as values; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (u64::from(self.u8()) << (8 * i)))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct World {
    machine: Arc<SimMachine>,
    processes: Vec<Arc<Process>>,
    /// (process, handle) pairs that were issued at some point (some closed since).
    handles: Vec<(usize, zx_handle_t)>,
    /// Addresses returned by map and allocate.
    addrs: Vec<u64>,
    /// Addresses of the 2 MiB-aligned mappings [`large_op`] made.
    large: Vec<u64>,
    vmos: Vec<Weak<Vmo>>,
}

impl World {
    fn process(&self, b: &mut Bytes) -> usize {
        usize::from(b.u8()) % self.processes.len()
    }

    /// A handle of process `p`: mostly one it was given, sometimes garbage.
    fn handle(&self, p: usize, b: &mut Bytes) -> zx_handle_t {
        let pick = b.u8();
        if pick >= 240 {
            return u32::from(b.u16()) | (u32::from(pick) << 16);
        }
        let own: Vec<_> = self.handles.iter().filter(|(q, _)| *q == p).collect();
        if own.is_empty() {
            return ZX_HANDLE_INVALID;
        }
        own[usize::from(pick) % own.len()].1
    }

    fn address(&self, b: &mut Bytes) -> u64 {
        let pick = b.u8();
        if pick >= 250 || self.addrs.is_empty() {
            return b.u64();
        }
        let base = self.addrs[usize::from(pick) % self.addrs.len()];
        let delta = i64::from(b.u8() as i8) * PAGE_SIZE as i64;
        base.wrapping_add_signed(delta) + u64::from(b.u8() % 4 == 0) * u64::from(b.u8())
    }

    fn size(&self, b: &mut Bytes) -> u64 {
        match b.u8() {
            250 => b.u64(),
            251 => 0,
            n => u64::from(n % 24) * PAGE_SIZE + u64::from(n >= 200) * u64::from(b.u8()),
        }
    }

    fn remember(&mut self, p: usize, handle: zx_handle_t) {
        self.handles.push((p, handle));
        if let Ok((vmo, _)) = self.processes[p].vmo(handle) {
            // Duplicates name the same VMO: count it once.
            if !self
                .vmos
                .iter()
                .any(|known| known.as_ptr() == Arc::as_ptr(&vmo))
            {
                self.vmos.push(Arc::downgrade(&vmo));
            }
        }
    }

    /// What a child made by `zx_vmo_create_child(handle, options, offset, size)` must read right
    /// after the call, from the bytes of the VMO `handle` names now: `None` when the handle names
    /// no VMO, or the child would be too large to compare.
    fn expected_child(
        &self,
        p: usize,
        handle: zx_handle_t,
        options: u32,
        offset: u64,
        size: u64,
    ) -> Option<Vec<u8>> {
        let (vmo, _) = self.processes[p].vmo(handle).ok()?;
        let parent_size = vmo.size();
        let (offset, size) = if options & ZX_VMO_CHILD_REFERENCE != 0 {
            (0, parent_size)
        } else {
            (offset, page_round_up(size)?)
        };
        if size > MAX_COMPARED {
            return None;
        }
        let mut bytes = vec![0u8; size as usize];
        // A snapshot reads zero past the parent's end; a slice cannot reach past it.
        let end = offset.saturating_add(size).min(parent_size);
        if offset < end {
            vmo.read(offset, &mut bytes[..(end - offset) as usize])
                .ok()?;
        }
        Some(bytes)
    }

    /// The bytes of the VMO that process `p`'s `handle` names (a child just made), if small
    /// enough to compare.
    fn contents(&self, p: usize, handle: zx_handle_t) -> Option<Vec<u8>> {
        let (vmo, _) = self.processes[p].vmo(handle).ok()?;
        if vmo.size() > MAX_COMPARED {
            return None;
        }
        let mut bytes = vec![0u8; vmo.size() as usize];
        vmo.read(0, &mut bytes).ok()?;
        Some(bytes)
    }

    fn check(&self) {
        for process in &self.processes {
            if let Err(error) = process.aspace().audit() {
                panic!("audit: {error:?}");
            }
        }
        let live: Vec<_> = self.vmos.iter().filter_map(Weak::upgrade).collect();
        let committed: u64 = live
            .iter()
            .map(|vmo| vmo.committed_bytes() / PAGE_SIZE)
            .sum();
        let tables: u64 = self
            .processes
            .iter()
            .map(|p| p.aspace().page_table_pages() as u64)
            .sum();
        if live.iter().any(|vmo| vmo.is_cow_clone()) {
            // Hidden pages that only a snapshot child sees are nobody's committed bytes.
            assert!(
                self.machine.frames_in_use() >= committed + tables,
                "frames in use < committed pages + page-table pages"
            );
        } else {
            assert_eq!(
                self.machine.frames_in_use(),
                committed + tables,
                "frames in use != committed pages + page-table pages"
            );
        }
    }
}

fn run(data: &[u8]) {
    let mut b = Bytes(data);
    let flags = b.u8();
    let format = if flags & 1 == 0 {
        Format::X86_64
    } else {
        Format::Aarch64
    };
    let machine = SimMachine::new(SimConfig {
        // Flag 0x80: room for a few 2 MiB runs (512 frames each) for the large-page ops.
        frames: if flags & 0x80 != 0 { 3072 } else { 384 },
        cpus: 2,
        poison_freed: true,
        tags: u16::from(flags >> 1 & 3),
        broadcast: flags & 8 != 0,
    });
    if flags & 16 != 0 {
        // Read faults map the shared zero page instead of committing.
        machine.enable_zero_page();
    }
    let platform: Arc<dyn Platform> = machine.clone();
    let mut world = World {
        machine: machine.clone(),
        processes: Vec::new(),
        handles: Vec::new(),
        addrs: Vec::new(),
        large: Vec::new(),
        vmos: Vec::new(),
    };
    for p in 0..2 {
        let process = Process::new(platform.clone(), format).expect("a process fits in 384 frames");
        world.handles.push((p, process.root_vmar_handle()));
        world.processes.push(process);
    }
    let cpus = [machine.cpu(0), machine.cpu(1)];
    let mut running: [Option<usize>; 2] = [None, None];

    for _ in 0..MAX_STEPS {
        if b.is_empty() {
            break;
        }
        let p = world.process(&mut b);
        let process = world.processes[p].clone();
        let op = b.u8();
        if op == LARGE_OP {
            large_op(&mut world, p, &cpus, &mut running, &mut b);
            world.check();
            continue;
        }
        if op >= CHILD_OPS {
            child_op(&mut world, p, op - CHILD_OPS, &mut b);
            world.check();
            continue;
        }
        match op % 16 {
            0 => {
                let mut handle = 0;
                let size = world.size(&mut b);
                // Mostly plain, some resizable, a few with a bit no VMO takes.
                let options = match b.u8() % 8 {
                    0 => 1,
                    1 | 2 => ZX_VMO_RESIZABLE,
                    _ => 0,
                };
                if zx_vmo_create(&process, size, options, &mut handle) == ZX_OK {
                    world.remember(p, handle);
                }
            }
            1 => {
                let vmar = world.handle(p, &mut b);
                let options = u32::from(b.u16()) & 0x3ff;
                let (offset, size) = (u64::from(b.u8()) * PAGE_SIZE, world.size(&mut b));
                let (mut child, mut addr) = (0, 0);
                if zx_vmar_allocate(&process, vmar, options, offset, size, &mut child, &mut addr)
                    == ZX_OK
                {
                    world.remember(p, child);
                    world.addrs.push(addr);
                }
            }
            2 | 3 => {
                let vmar = world.handle(p, &mut b);
                let vmo = world.handle(p, &mut b);
                let options = u32::from(b.u16()) & 0x1fff;
                let offset = u64::from(b.u8()) * PAGE_SIZE;
                let vmo_offset = u64::from(b.u8() % 16) * PAGE_SIZE;
                let len = world.size(&mut b);
                let mut addr = 0;
                if zx_vmar_map(
                    &process, vmar, options, offset, vmo, vmo_offset, len, &mut addr,
                ) == ZX_OK
                {
                    world.addrs.push(addr);
                }
            }
            4 => {
                let vmar = world.handle(p, &mut b);
                let (addr, len) = (world.address(&mut b), world.size(&mut b));
                zx_vmar_unmap(&process, vmar, addr, len);
            }
            5 => {
                let vmar = world.handle(p, &mut b);
                let perms = u32::from(b.u8() % 8);
                let (addr, len) = (world.address(&mut b), world.size(&mut b));
                zx_vmar_protect(&process, vmar, perms, addr, len);
            }
            6 => {
                let vmar = world.handle(p, &mut b);
                if b.u8() % 4 == 0 {
                    zx_vmar_destroy(&process, vmar);
                }
            }
            7 | 8 => {
                let vmar = world.handle(p, &mut b);
                let op = if b.u8() % 4 == 0 {
                    u32::from(b.u8())
                } else {
                    ZX_VMAR_OP_DECOMMIT
                };
                let (addr, size) = (world.address(&mut b), world.size(&mut b));
                let (buffer, buffer_size) = if b.u8() % 8 == 0 { (1, 0) } else { (0, 0) };
                zx_vmar_op_range(&process, vmar, op, addr, size, buffer, buffer_size);
            }
            9 => {
                let vmo = world.handle(p, &mut b);
                let offset = u64::from(b.u16()) * 8;
                let mut buffer = vec![0u8; usize::from(b.u8())];
                if b.u8() % 2 == 0 {
                    zx_vmo_read(&process, vmo, &mut buffer, offset);
                } else {
                    buffer.fill(b.u8() | 1);
                    zx_vmo_write(&process, vmo, &buffer, offset);
                }
            }
            10 => {
                let vmo = world.handle(p, &mut b);
                let op = u32::from(b.u8() % 16);
                let (offset, size) = (u64::from(b.u8() % 24) * PAGE_SIZE, world.size(&mut b));
                // ZERO takes byte ranges: sometimes start inside a page.
                let offset = offset + u64::from(b.u8() % 4 == 0) * u64::from(b.u16() % 4096);
                zx_vmo_op_range(&process, vmo, op, offset, size, 0, 0);
            }
            11 => {
                let handle = world.handle(p, &mut b);
                let rights = if b.u8() % 2 == 0 {
                    ZX_RIGHT_SAME_RIGHTS
                } else {
                    u32::from(b.u16()) << 2
                };
                let mut out = 0;
                let status = if b.u8() % 2 == 0 {
                    zx_handle_duplicate(&process, handle, rights, &mut out)
                } else {
                    zx_handle_replace(&process, handle, rights, &mut out)
                };
                if status == ZX_OK {
                    world.remember(p, out);
                }
            }
            12 => {
                let handle = world.handle(p, &mut b);
                if b.u8() % 4 == 0 {
                    // Grow or shrink, to any byte size, under mappings and pins.
                    let size = world.size(&mut b) + u64::from(b.u8());
                    zx_vmo_set_size(&process, handle, size);
                } else {
                    zx_handle_close(&process, handle);
                }
            }
            13 | 14 => {
                let c = usize::from(b.u8() % 2);
                if running[c] != Some(p) {
                    cpus[c].switch_to(Some(process.aspace()));
                    running[c] = Some(p);
                }
                let va = world.address(&mut b) & !7;
                if b.u8() % 2 == 0 {
                    if let Ok(value) = cpus[c].load(va) {
                        assert_ne!(value, FREED_POISON, "a load read a freed frame");
                    }
                } else {
                    let _ = cpus[c].store(va, u64::from(b.u8()) + 1);
                }
            }
            15 if b.u8() % 2 == 0 => {
                // A chain of nested VMARs, each as large as its parent, keeping only the
                // innermost's handle: depth a caller chooses, as deep as a user could make it.
                let mut vmar = world.handle(p, &mut b);
                let depth = usize::from(b.u8()) * 16 + 1;
                let size = world.size(&mut b);
                let options = ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC;
                for level in 0..depth {
                    let (mut child, mut addr) = (0, 0);
                    let specific = if level == 0 { 0 } else { ZX_VM_SPECIFIC };
                    if zx_vmar_allocate(
                        &process,
                        vmar,
                        options | specific,
                        0,
                        size,
                        &mut child,
                        &mut addr,
                    ) != ZX_OK
                    {
                        break;
                    }
                    if level > 0 {
                        zx_handle_close(&process, vmar);
                    }
                    if level == 0 {
                        world.addrs.push(addr);
                    }
                    vmar = child;
                }
                world.remember(p, vmar);
            }
            _ => match b.u8() % 4 {
                // Kernel-side: allocation failures from here on, or none.
                0 => machine.set_allocation_budget(Some(u64::from(b.u8() % 8))),
                1 => machine.set_allocation_budget(None),
                // Kernel-side: pin or unpin a VMO range.
                _ => {
                    let handle = world.handle(p, &mut b);
                    if let Ok(handle) = process.handle(handle) {
                        if let KernelObject::Vmo(vmo) = handle.object {
                            let (offset, len) = (
                                u64::from(b.u8() % 8) * PAGE_SIZE,
                                PAGE_SIZE * u64::from(b.u8() % 3),
                            );
                            let _ = if b.u8() % 2 == 0 {
                                vmo.pin(offset, len)
                            } else {
                                vmo.unpin(offset, len)
                            };
                        }
                    }
                }
            },
        }
        world.check();
    }
    machine.set_allocation_budget(None);
    for cpu in &cpus {
        cpu.switch_to(None);
    }
    // Dropping the world drops every object; the machine then checks that every frame came back.
}

/// Op bytes from here up are the children's ops ([`child_op`]); below, `op % 16` picks the
/// others (so the tracked seeds, written before children existed, decode as they did).
const CHILD_OPS: u8 = 224;

/// A child is compared with its parent's bytes up to this size.
const MAX_COMPARED: u64 = 64 * PAGE_SIZE;

/// The children's ops: `zx_vmo_create_child` with any options, offset and size on any handle
/// (so slices, references and snapshots of children, and of their children), closing a handle,
/// and handing a VMO to the other process (as a channel would), so that a tree's VMOs are
/// mapped in both address spaces. Every other op acts on children as on any VMO.
fn child_op(world: &mut World, p: usize, op: u8, b: &mut Bytes) {
    let process = world.processes[p].clone();
    match op % 4 {
        0 | 1 => {
            let handle = world.handle(p, b);
            // Mostly one kind with NO_WRITE or RESIZABLE or both; sometimes any bits.
            let options = match b.u8() {
                n @ 0..=219 => {
                    let kind = [
                        ZX_VMO_CHILD_SNAPSHOT,
                        ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
                        ZX_VMO_CHILD_SNAPSHOT_MODIFIED,
                        ZX_VMO_CHILD_SLICE,
                        ZX_VMO_CHILD_REFERENCE,
                    ][usize::from(n % 5)];
                    let extra = u32::from(n / 5 % 4);
                    kind | (extra & 1) * ZX_VMO_CHILD_NO_WRITE
                        | (extra >> 1) * ZX_VMO_CHILD_RESIZABLE
                }
                _ => u32::from(b.u16()),
            };
            let offset = match b.u8() {
                250 => b.u64(),
                n => u64::from(n % 24) * PAGE_SIZE + u64::from(n >= 200) * u64::from(b.u8()),
            };
            let size = world.size(b);
            // A reference takes no offset or size: mostly give it none.
            let (offset, size) = if options & ZX_VMO_CHILD_REFERENCE != 0 && b.u8() % 4 != 0 {
                (0, 0)
            } else {
                (offset, size)
            };
            let before = world.expected_child(p, handle, options, offset, size);
            let mut child = 0;
            let status = zx_vmo_create_child(&process, handle, options, offset, size, &mut child);
            if status == ZX_OK {
                world.remember(p, child);
                if let Some(before) = &before {
                    let after = world
                        .contents(p, child)
                        .expect("a child of a VMO read before");
                    assert!(
                        &after == before,
                        "a child (options {options:#x}, offset {offset:#x}) does not read as its \
                         parent did"
                    );
                }
            }
            // The call changed none of the parent's bytes.
            if let Some(before) = before {
                let now = world.expected_child(p, handle, options, offset, size);
                assert!(
                    now.as_ref() == Some(&before),
                    "zx_vmo_create_child (options {options:#x}, status {status}) changed its \
                     parent"
                );
            }
        }
        2 => {
            let handle = world.handle(p, b);
            zx_handle_close(&process, handle);
        }
        _ => {
            let handle = world.handle(p, b);
            if let Ok(handle) = process.handle(handle) {
                if let KernelObject::Vmo(_) = handle.object {
                    let q = 1 - p;
                    if let Ok(given) = world.processes[q].add_handle(handle.object, handle.rights) {
                        world.remember(q, given);
                    }
                }
            }
        }
    }
}

/// The op byte of the large-page ops ([`large_op`]); it was a child op (a transfer) before.
const LARGE_OP: u8 = 255;

const MIB2: u64 = 2 << 20;

/// Large pages: kernel-made large-page VMOs (`Vmo::create_large_pages`) and contiguous VMOs of
/// whole 2 MiB runs, mapped at 2 MiB-aligned addresses of the root VMAR (so that faults and
/// `ZX_VM_MAP_RANGE` map them with 2 MiB leaves), touched, and split: one page protected,
/// DECOMMITs of a page or a run (through the VMAR or the VMO), holes unmapped. Every other op
/// acts on them too (snapshots of them among the child ops).
fn large_op(
    world: &mut World,
    p: usize,
    cpus: &[zx_vm::sim::SimCpu; 2],
    running: &mut [Option<usize>; 2],
    b: &mut Bytes,
) {
    let process = world.processes[p].clone();
    let platform: Arc<dyn Platform> = world.machine.clone();
    let root = process.root_vmar_handle();
    // An address in one of the large mappings: a page near a run's start or end, or any.
    let large_addr = |world: &World, b: &mut Bytes| -> u64 {
        let base = match world.large.len() {
            0 => process.aspace().root_vmar().base() + MIB2,
            n => world.large[usize::from(b.u8()) % n],
        };
        let page = match b.u8() {
            n @ 0..=127 => u64::from(n % 4) + 512 * u64::from(n / 4 % 2),
            n @ 128..=191 => 511 - u64::from(n % 4) + 512 * u64::from(n / 4 % 2),
            _ => u64::from(b.u16() % 1024),
        };
        base + page * PAGE_SIZE
    };
    match b.u8() % 8 {
        0 | 1 => {
            let size = u64::from(1 + b.u8() % 2) * MIB2 + u64::from(b.u8() % 3) * PAGE_SIZE;
            let vmo = if b.u8() % 4 == 0 {
                Vmo::create_contiguous(platform, size)
            } else {
                Vmo::create_large_pages(platform, size)
            };
            if let Ok(vmo) = vmo {
                let rights = zx_vm::Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS);
                if let Ok(handle) = process.add_handle(KernelObject::Vmo(vmo), rights) {
                    world.remember(p, handle);
                }
            }
        }
        2 => {
            let vmo = world.handle(p, b);
            let base = process.aspace().root_vmar().base();
            let offset = (u64::from(b.u8() % 8) + 1) * MIB2 - (base % MIB2);
            let extra = if b.u8() % 4 == 0 { ZX_VM_MAP_RANGE } else { 0 };
            let options = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_SPECIFIC | extra;
            let vmo_offset = u64::from(b.u8() % 2) * MIB2;
            let len = u64::from(1 + b.u8() % 2) * MIB2 + u64::from(b.u8() % 2) * PAGE_SIZE;
            let mut addr = 0;
            let status = zx_vmar_map(
                &process, root, options, offset, vmo, vmo_offset, len, &mut addr,
            );
            if status == ZX_OK {
                world.addrs.push(addr);
                world.large.push(addr);
            }
        }
        3 => {
            let c = usize::from(b.u8() % 2);
            if running[c] != Some(p) {
                cpus[c].switch_to(Some(process.aspace()));
                running[c] = Some(p);
            }
            let va = large_addr(world, b) + u64::from(b.u8()) * 8;
            if b.u8() % 2 == 0 {
                if let Ok(value) = cpus[c].load(va) {
                    assert_ne!(value, FREED_POISON, "a load read a freed frame");
                }
            } else {
                let _ = cpus[c].store(va, u64::from(b.u8()) + 1);
            }
        }
        4 => {
            let va = large_addr(world, b);
            let perms = if b.u8() % 2 == 0 {
                ZX_VM_PERM_READ
            } else {
                ZX_VM_PERM_READ | ZX_VM_PERM_WRITE
            };
            zx_vmar_protect(&process, root, perms, va, PAGE_SIZE);
        }
        5 => {
            let va = large_addr(world, b);
            let len = if b.u8() % 2 == 0 { PAGE_SIZE } else { MIB2 };
            zx_vmar_op_range(&process, root, ZX_VMAR_OP_DECOMMIT, va, len, 0, 0);
        }
        6 => {
            let va = large_addr(world, b);
            let len = u64::from(1 + b.u8() % 3) * PAGE_SIZE;
            zx_vmar_unmap(&process, root, va, len);
        }
        _ => {
            let vmo = world.handle(p, b);
            let op =
                [ZX_VMO_OP_DECOMMIT, ZX_VMO_OP_COMMIT, ZX_VMO_OP_ZERO][usize::from(b.u8() % 3)];
            let offset = u64::from(b.u8() % 2) * MIB2 + u64::from(b.u8() % 4) * PAGE_SIZE;
            let size = if b.u8() % 2 == 0 { PAGE_SIZE } else { MIB2 };
            zx_vmo_op_range(&process, vmo, op, offset, size, 0, 0);
        }
    }
}

/// At most this many calls per input: enough for deep VMAR chains and long sequences.
const MAX_STEPS: usize = 1024;

/// A kernel's stack: every call runs on a thread this small, so that recursion a caller can
/// deepen (nested VMARs) overflows here as it would in a kernel, instead of hiding in the
/// fuzzer's 8 MiB.
const KERNEL_STACK: usize = 32 * 1024;

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    let worker = std::thread::Builder::new()
        .stack_size(KERNEL_STACK)
        .spawn(move || run(&data))
        .expect("a fuzz thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
});
