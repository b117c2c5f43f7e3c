//! Shared set-up for the integration tests: a simulated machine, processes, VMOs with a known
//! pattern, and mappings, all through the syscalls.
#![allow(dead_code)]

use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{SimConfig, SimMachine};
use zx_vm::syscall::*;
use zx_vm::{Platform, Process};

/// A machine with `cpus` CPUs and 8192 frames (32 MiB).
pub fn machine(cpus: usize) -> Arc<SimMachine> {
    SimMachine::new(SimConfig {
        frames: 8192,
        cpus,
        poison_freed: true,
        ..SimConfig::default()
    })
}

/// A process on `machine` with page tables in `format`.
pub fn process(machine: &Arc<SimMachine>, format: Format) -> Arc<Process> {
    let platform: Arc<dyn Platform> = machine.clone();
    Process::new(platform, format).expect("process")
}

/// The word at index `word` of page `page` of a patterned VMO: never zero.
pub fn pattern(page: u64, word: u64) -> u64 {
    0x5a00_0000_0000_0000 | (page << 16) | word
}

/// A VMO of `pages` pages, each filled with [`pattern`].
pub fn patterned_vmo(process: &Process, pages: u64) -> zx_handle_t {
    let mut vmo = 0;
    assert_eq!(
        zx_vmo_create(process, pages * PAGE_SIZE, 0, &mut vmo),
        ZX_OK
    );
    for page in 0..pages {
        let bytes: Vec<u8> = (0..PAGE_SIZE / 8)
            .flat_map(|word| pattern(page, word).to_le_bytes())
            .collect();
        assert_eq!(zx_vmo_write(process, vmo, &bytes, page * PAGE_SIZE), ZX_OK);
    }
    vmo
}

/// Maps `pages` pages of `vmo` from page `first` into `vmar`, read-write, anywhere.
pub fn map_rw(
    process: &Process,
    vmar: zx_handle_t,
    vmo: zx_handle_t,
    first: u64,
    pages: u64,
) -> u64 {
    let mut addr = 0;
    let status = zx_vmar_map(
        process,
        vmar,
        ZX_VM_PERM_READ | ZX_VM_PERM_WRITE,
        0,
        vmo,
        first * PAGE_SIZE,
        pages * PAGE_SIZE,
        &mut addr,
    );
    assert_eq!(status, ZX_OK);
    addr
}

/// A sub-VMAR of `size` bytes that can map read-write, anywhere in `parent`.
pub fn sub_vmar(process: &Process, parent: zx_handle_t, size: u64) -> (zx_handle_t, u64) {
    let (mut handle, mut addr) = (0, 0);
    let status = zx_vmar_allocate(
        process,
        parent,
        ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC,
        0,
        size,
        &mut handle,
        &mut addr,
    );
    assert_eq!(status, ZX_OK);
    (handle, addr)
}

/// The VMO's committed bytes.
pub fn committed(process: &Process, vmo: zx_handle_t) -> u64 {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(process, vmo, &mut info), ZX_OK);
    info.committed_bytes
}

/// The first word of each page of the VMO, read with zx_vmo_read.
pub fn first_words(process: &Process, vmo: zx_handle_t, pages: u64) -> Vec<u64> {
    (0..pages)
        .map(|page| {
            let mut word = [0u8; 8];
            assert_eq!(
                zx_vmo_read(process, vmo, &mut word, page * PAGE_SIZE),
                ZX_OK
            );
            u64::from_le_bytes(word)
        })
        .collect()
}

/// One VMO of `pages` pages mapped read-write in two processes on one machine, each running on
/// a CPU of its own (CPU 0 runs `a`, CPU 1 runs `b`): the set-up of the tests that check that
/// an operation reaches every address space.
pub struct TwoSpaces {
    pub a: Arc<Process>,
    pub b: Arc<Process>,
    /// The VMO's handle in `a`.
    pub vmo: zx_handle_t,
    pub in_a: u64,
    pub in_b: u64,
    pub cpu_a: zx_vm::sim::SimCpu,
    pub cpu_b: zx_vm::sim::SimCpu,
}

impl TwoSpaces {
    /// `make` creates the VMO in `a`, of `pages` pages.
    pub fn new(
        machine: &Arc<zx_vm::sim::SimMachine>,
        format: Format,
        pages: u64,
        make: impl Fn(&Process, u64) -> zx_handle_t,
    ) -> TwoSpaces {
        let a = process(machine, format);
        let b = process(machine, format);
        let vmo = make(&a, pages);
        let object = a.handle(vmo).unwrap();
        let vmo_b = b.add_handle(object.object, object.rights).unwrap();
        let in_a = map_rw(&a, a.root_vmar_handle(), vmo, 0, pages);
        let in_b = map_rw(&b, b.root_vmar_handle(), vmo_b, 0, pages);
        let (cpu_a, cpu_b) = (machine.cpu(0), machine.cpu(1));
        cpu_a.switch_to(Some(a.aspace()));
        cpu_b.switch_to(Some(b.aspace()));
        TwoSpaces {
            a,
            b,
            vmo,
            in_a,
            in_b,
            cpu_a,
            cpu_b,
        }
    }

    /// Both CPUs read [`pattern`] at the start of each of the first `pages` pages (and so cache
    /// their translations).
    pub fn expect_patterns(&self, pages: u64) {
        for page in 0..pages {
            let offset = page * PAGE_SIZE;
            assert_eq!(
                self.cpu_a.load(self.in_a + offset).unwrap(),
                pattern(page, 0)
            );
            assert_eq!(
                self.cpu_b.load(self.in_b + offset).unwrap(),
                pattern(page, 0)
            );
        }
    }
}

/// `zx_vmo_create_child`, as a result; a failed call must write no handle.
pub fn child(
    p: &Process,
    vmo: zx_handle_t,
    options: u32,
    offset: u64,
    size: u64,
) -> Result<zx_handle_t, zx_status_t> {
    let mut out = 0xdead;
    match zx_vmo_create_child(p, vmo, options, offset, size, &mut out) {
        ZX_OK => Ok(out),
        status => {
            assert_eq!(out, 0xdead, "a failed call writes no handle");
            Err(status)
        }
    }
}

/// `ZX_INFO_VMO` of `vmo`.
pub fn info(p: &Process, vmo: zx_handle_t) -> zx_info_vmo_t {
    let mut info = zx_info_vmo_t::default();
    assert_eq!(zx_object_get_info_vmo(p, vmo, &mut info), ZX_OK);
    info
}

/// Writes the word `value` at `offset` with zx_vmo_write.
pub fn write_word(p: &Process, vmo: zx_handle_t, offset: u64, value: u64) {
    assert_eq!(zx_vmo_write(p, vmo, &value.to_le_bytes(), offset), ZX_OK);
}

/// The word at `offset`, read with zx_vmo_read.
pub fn read_word(p: &Process, vmo: zx_handle_t, offset: u64) -> u64 {
    let mut word = [0u8; 8];
    assert_eq!(zx_vmo_read(p, vmo, &mut word, offset), ZX_OK);
    u64::from_le_bytes(word)
}
