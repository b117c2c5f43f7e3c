//! Contract tests for `zx_vmar_op_range`: one test per status code and per step of "Order of
//! checks" in `docs/contract.md`, each run on both page-table formats.
//!
//! Every test is a plain `fn step_NN_...(format)`; `per_format!` at the bottom of the file turns each
//! into two tests, `step_NN_...::x86_64` and `step_NN_...::aarch64` (and `formats_covered` checks
//! that those two are all of `Format::ALL`).
//!
//! Failing calls go through [`Env::expect_fail`], which pins the exact status and also the rule
//! "every check runs before anything changes": no frame allocated or freed and no TLB invalidation
//! during the call, and the watched VMOs (info, contents), translations and CPU-visible contents of
//! the watched mappings unchanged. Most tests end with a positive control (the same call with the
//! one bad argument fixed succeeds), so a failure cannot come from a broken fixture.

use std::sync::Arc;

use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
use zx_vm::sim::{SimConfig, SimCpu, SimMachine};
use zx_vm::syscall::*;
use zx_vm::{KernelObject, PhysAddr, Platform, Process, Vmo};

// =================================================================================================
// Shared setup
// =================================================================================================

const PAGE: u64 = PAGE_SIZE;
const RW: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
const RO: zx_vm_option_t = ZX_VM_PERM_READ;
/// `ZX_VM_CAN_MAP_*` of a sub-VMAR that may hold writable mappings at chosen offsets.
const CAN_MAP_RW: zx_vm_option_t =
    ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC;
/// `ZX_VM_CAN_MAP_*` of a sub-VMAR that may only hold read-only mappings.
const CAN_MAP_RO: zx_vm_option_t = ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_SPECIFIC;
/// The size of the sub-VMAR each test lays its mappings out in.
const ARENA_PAGES: u64 = 64;
/// Device memory for physical VMOs: past the simulated RAM (8192 frames = 32 MiB), so it is no frame
/// the allocator hands out. It is mapped, but never touched.
const DEVICE_PHYS: PhysAddr = PhysAddr(0x1000_0000);
/// The defined `ZX_VMO_OP_*` codes other than DECOMMIT.
const UNSUPPORTED_OPS: [u32; 12] = [1, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14];
/// Codes that are no `ZX_VMO_OP_*`.
const UNDEFINED_OPS: [u32; 6] = [0, 5, 15, 16, 0x8000_0000, u32::MAX];
/// Handle values this crate never issues in these tests (slot 1000 and beyond, or malformed).
const NEVER_ISSUED: [zx_handle_t; 4] = [0x0fa3, 0x7fff_fff3, 0x1234_5678, u32::MAX - 4];
/// The highest page-aligned address (`u64::MAX` rounded down to a page).
const TOP_PAGE: u64 = !(PAGE - 1);

/// `n` pages in bytes.
fn pg(n: u64) -> u64 {
    n * PAGE
}

/// The word a witness stores at `va`: distinct per address, never 0 and never the poison.
fn pattern(va: u64) -> u64 {
    va ^ 0x5eed_0000_0000_0000
}

/// One `zx_vmar_op_range` call.
#[derive(Clone, Copy, Debug)]
struct Call {
    handle: zx_handle_t,
    op: u32,
    addr: u64,
    size: u64,
    buffer: u64,
    buffer_size: usize,
}

impl Call {
    /// `ZX_VMAR_OP_DECOMMIT` of `[addr, addr + size)` with an empty buffer.
    fn decommit(handle: zx_handle_t, addr: u64, size: u64) -> Call {
        Call {
            handle,
            op: ZX_VMAR_OP_DECOMMIT,
            addr,
            size,
            buffer: 0,
            buffer_size: 0,
        }
    }

    fn handle(self, handle: zx_handle_t) -> Call {
        Call { handle, ..self }
    }

    fn op(self, op: u32) -> Call {
        Call { op, ..self }
    }

    fn at(self, addr: u64, size: u64) -> Call {
        Call { addr, size, ..self }
    }

    fn buffer(self, buffer: u64, buffer_size: usize) -> Call {
        Call {
            buffer,
            buffer_size,
            ..self
        }
    }
}

/// A writable mapping of a paged VMO whose every page is committed, mapped in the page table and
/// cached in the CPU's TLB (the CPU stored `pattern(va)` at the first and last word of each page).
struct Witness {
    vmo: zx_handle_t,
    base: u64,
    pages: u64,
}

impl Witness {
    fn page(&self, i: u64) -> u64 {
        self.base + pg(i)
    }

    fn len(&self) -> u64 {
        pg(self.pages)
    }

    fn end(&self) -> u64 {
        self.base + self.len()
    }
}

/// What a failed call must leave as it was.
struct Snapshot {
    infos: Vec<zx_info_vmo_t>,
    contents: Vec<Option<Vec<u8>>>,
    translations: Vec<Option<(PhysAddr, MmuFlags)>>,
}

/// A simulated machine (8192 frames) and one process on it, with CPU 0 running in its address
/// space.
struct Env {
    format: Format,
    machine: Arc<SimMachine>,
    platform: Arc<dyn Platform>,
    process: Arc<Process>,
    root: zx_handle_t,
    cpu: SimCpu,
}

impl Drop for Env {
    fn drop(&mut self) {
        // The CPU holds the address space, which holds the machine: break the cycle.
        self.cpu.switch_to(None);
    }
}

impl Env {
    fn new(format: Format) -> Env {
        Self::with_cpus(format, 1)
    }

    fn with_cpus(format: Format, cpus: usize) -> Env {
        let machine = SimMachine::new(SimConfig {
            frames: 8192,
            cpus,
            poison_freed: true,
            ..SimConfig::default()
        });
        let platform: Arc<dyn Platform> = machine.clone();
        let process = Process::new(platform.clone(), format).expect("Process::new");
        let root = process.root_vmar_handle();
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(process.aspace()));
        Env {
            format,
            machine,
            platform,
            process,
            root,
            cpu,
        }
    }

    // ---- syscalls that must succeed -------------------------------------------------------------

    fn run(&self, c: Call) -> zx_status_t {
        zx_vmar_op_range(
            &self.process,
            c.handle,
            c.op,
            c.addr,
            c.size,
            c.buffer,
            c.buffer_size,
        )
    }

    /// A paged VMO of `pages` pages, nothing committed.
    #[track_caller]
    fn vmo(&self, pages: u64) -> zx_handle_t {
        let mut handle = ZX_HANDLE_INVALID;
        let status = zx_vmo_create(&self.process, pg(pages), 0, &mut handle);
        assert_eq!(status, ZX_OK, "{:?}: zx_vmo_create", self.format);
        handle
    }

    /// A paged VMO whose page `i` is committed and filled with byte `i + 1`.
    #[track_caller]
    fn vmo_with_data(&self, pages: u64) -> zx_handle_t {
        let vmo = self.vmo(pages);
        for i in 0..pages {
            self.write(vmo, pg(i), &[i as u8 + 1; PAGE as usize]);
        }
        assert_eq!(self.committed(vmo), pg(pages), "{:?}", self.format);
        vmo
    }

    /// A handle (default VMO rights) to a VMO the kernel made.
    #[track_caller]
    fn kernel_vmo(&self, vmo: Arc<Vmo>) -> zx_handle_t {
        self.process
            .add_handle(
                KernelObject::Vmo(vmo),
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
            )
            .expect("add_handle")
    }

    /// A contiguous VMO of `pages` pages, filled with 0xc5.
    #[track_caller]
    fn contiguous(&self, pages: u64) -> zx_handle_t {
        let vmo = Vmo::create_contiguous(self.platform.clone(), pg(pages)).expect("contiguous");
        let handle = self.kernel_vmo(vmo);
        self.write(handle, 0, &vec![0xc5; pg(pages) as usize]);
        handle
    }

    /// A physical VMO over `pages` pages of device memory.
    #[track_caller]
    fn physical(&self, pages: u64) -> zx_handle_t {
        let vmo =
            Vmo::create_physical(self.platform.clone(), DEVICE_PHYS, pg(pages)).expect("physical");
        self.kernel_vmo(vmo)
    }

    /// The VMO object behind `handle` (for pin and unpin).
    fn vmo_object(&self, handle: zx_handle_t) -> Arc<Vmo> {
        self.process.vmo(handle).expect("a VMO handle").0
    }

    #[track_caller]
    fn write(&self, vmo: zx_handle_t, offset: u64, data: &[u8]) {
        let status = zx_vmo_write(&self.process, vmo, data, offset);
        assert_eq!(status, ZX_OK, "{:?}: zx_vmo_write", self.format);
    }

    #[track_caller]
    fn read(&self, vmo: zx_handle_t, offset: u64, len: u64) -> Vec<u8> {
        let mut data = vec![0; len as usize];
        let status = zx_vmo_read(&self.process, vmo, &mut data, offset);
        assert_eq!(status, ZX_OK, "{:?}: zx_vmo_read", self.format);
        data
    }

    #[track_caller]
    fn info(&self, vmo: zx_handle_t) -> zx_info_vmo_t {
        let mut info = zx_info_vmo_t::default();
        let status = zx_object_get_info_vmo(&self.process, vmo, &mut info);
        assert_eq!(status, ZX_OK, "{:?}: zx_object_get_info_vmo", self.format);
        info
    }

    #[track_caller]
    fn committed(&self, vmo: zx_handle_t) -> u64 {
        self.info(vmo).committed_bytes
    }

    /// Maps `len` bytes of `vmo` from `vmo_offset` at `offset` in `vmar` (`ZX_VM_SPECIFIC`).
    #[track_caller]
    fn map_at(
        &self,
        vmar: zx_handle_t,
        offset: u64,
        perms: zx_vm_option_t,
        vmo: zx_handle_t,
        vmo_offset: u64,
        len: u64,
    ) -> u64 {
        let mut addr = 0;
        let options = perms | ZX_VM_SPECIFIC;
        let status = zx_vmar_map(
            &self.process,
            vmar,
            options,
            offset,
            vmo,
            vmo_offset,
            len,
            &mut addr,
        );
        assert_eq!(status, ZX_OK, "{:?}: zx_vmar_map", self.format);
        addr
    }

    /// A sub-VMAR of `parent` of `pages` pages, at `offset` if given.
    #[track_caller]
    fn allocate(
        &self,
        parent: zx_handle_t,
        offset: Option<u64>,
        pages: u64,
        can_map: zx_vm_option_t,
    ) -> (zx_handle_t, u64) {
        let (mut handle, mut addr) = (ZX_HANDLE_INVALID, 0);
        let options = can_map | offset.map_or(0, |_| ZX_VM_SPECIFIC);
        let status = zx_vmar_allocate(
            &self.process,
            parent,
            options,
            offset.unwrap_or(0),
            pg(pages),
            &mut handle,
            &mut addr,
        );
        assert_eq!(status, ZX_OK, "{:?}: zx_vmar_allocate", self.format);
        (handle, addr)
    }

    /// A sub-VMAR of the root that may map read-write at chosen offsets: each test's layout lives
    /// in one, so that addresses are known.
    #[track_caller]
    fn arena(&self) -> (zx_handle_t, u64) {
        self.allocate(self.root, None, ARENA_PAGES, CAN_MAP_RW)
    }

    #[track_caller]
    fn destroy(&self, vmar: zx_handle_t) {
        let status = zx_vmar_destroy(&self.process, vmar);
        assert_eq!(status, ZX_OK, "{:?}: zx_vmar_destroy", self.format);
    }

    #[track_caller]
    fn close(&self, handle: zx_handle_t) {
        let status = zx_handle_close(&self.process, handle);
        assert_eq!(status, ZX_OK, "{:?}: zx_handle_close", self.format);
    }

    fn rights(&self, handle: zx_handle_t) -> Rights {
        self.process.handle(handle).expect("a live handle").rights
    }

    #[track_caller]
    fn dup(&self, handle: zx_handle_t, rights: zx_rights_t) -> zx_handle_t {
        let mut out = ZX_HANDLE_INVALID;
        let status = zx_handle_duplicate(&self.process, handle, rights, &mut out);
        assert_eq!(status, ZX_OK, "{:?}: zx_handle_duplicate", self.format);
        out
    }

    /// A duplicate of `handle` with all its rights but `ZX_RIGHT_WRITE`.
    #[track_caller]
    fn dup_without_write(&self, handle: zx_handle_t) -> zx_handle_t {
        let rights = self.rights(handle) - Rights::WRITE;
        let dup = self.dup(handle, rights.bits());
        assert!(!self.rights(dup).contains(Rights::WRITE));
        dup
    }

    /// `handle` replaced by a handle with all its rights but `ZX_RIGHT_WRITE`.
    #[track_caller]
    fn replace_without_write(&self, handle: zx_handle_t) -> zx_handle_t {
        let rights = self.rights(handle) - Rights::WRITE;
        let mut out = ZX_HANDLE_INVALID;
        let status = zx_handle_replace(&self.process, handle, rights.bits(), &mut out);
        assert_eq!(status, ZX_OK, "{:?}: zx_handle_replace", self.format);
        assert!(!self.rights(out).contains(Rights::WRITE));
        out
    }

    /// A [`Witness`] of `pages` pages at `offset` in `vmar`.
    #[track_caller]
    fn witness(&self, vmar: zx_handle_t, offset: u64, pages: u64) -> Witness {
        let vmo = self.vmo(pages);
        let base = self.map_at(vmar, offset, RW, vmo, 0, pg(pages));
        let w = Witness { vmo, base, pages };
        for i in 0..pages {
            for va in [w.page(i), w.page(i) + PAGE - 8] {
                self.cpu.store(va, pattern(va)).expect("store to a witness");
            }
        }
        assert_eq!(self.committed(vmo), pg(pages), "{:?}", self.format);
        w
    }

    // ---- observations ---------------------------------------------------------------------------

    /// The first and last word of the page at `va`, loaded by the CPU.
    #[track_caller]
    fn load_page(&self, va: u64) -> [u64; 2] {
        [va, va + PAGE - 8].map(|va| {
            self.cpu
                .load(va)
                .unwrap_or_else(|e| panic!("{:?}: load at {va:#x}: {e:?}", self.format))
        })
    }

    /// The witness page at `va` still holds its pattern.
    #[track_caller]
    fn expect_intact(&self, va: u64) {
        let want = [va, va + PAGE - 8].map(pattern);
        assert_eq!(self.load_page(va), want, "{:?}: page {va:#x}", self.format);
    }

    /// Every page of `w` still holds its pattern.
    #[track_caller]
    fn expect_witness_intact(&self, w: &Witness) {
        for i in 0..w.pages {
            self.expect_intact(w.page(i));
        }
    }

    /// The page at `va` reads zero (it was decommitted; the load faults in a fresh page).
    #[track_caller]
    fn expect_zero(&self, va: u64) {
        assert_eq!(
            self.load_page(va),
            [0, 0],
            "{:?}: page {va:#x}",
            self.format
        );
    }

    fn snapshot(&self, vmos: &[zx_handle_t], vas: &[u64]) -> Snapshot {
        let infos: Vec<zx_info_vmo_t> = vmos.iter().map(|&vmo| self.info(vmo)).collect();
        let contents = vmos
            .iter()
            .zip(&infos)
            .map(|(&vmo, info)| {
                // Physical VMOs cannot be read; for them the info is all there is to compare.
                let mut data = vec![0; info.size_bytes as usize];
                let status = zx_vmo_read(&self.process, vmo, &mut data, 0);
                (status == ZX_OK).then_some(data)
            })
            .collect();
        let translations = vas
            .iter()
            .map(|&va| self.process.aspace().query(va))
            .collect();
        Snapshot {
            infos,
            contents,
            translations,
        }
    }

    // ---- expectations ---------------------------------------------------------------------------

    /// `call` succeeds.
    #[track_caller]
    fn expect_ok(&self, call: Call) {
        let status = self.run(call);
        assert_eq!(
            status,
            ZX_OK,
            "{:?}: {call:x?} returned {}",
            self.format,
            status_name(status)
        );
    }

    /// `call` fails with exactly `expected`, and changes nothing: no frame allocated or freed, no
    /// TLB invalidation requested, and the VMOs of `witnesses` and `vmos` (committed bytes, mapping
    /// count, contents), the translations of `witnesses` and what the CPU reads through them are
    /// as they were.
    #[track_caller]
    fn expect_fail(
        &self,
        call: Call,
        expected: zx_status_t,
        witnesses: &[&Witness],
        vmos: &[zx_handle_t],
    ) {
        let f = self.format;
        assert_ne!(expected, ZX_OK);
        let watched: Vec<zx_handle_t> = witnesses
            .iter()
            .map(|w| w.vmo)
            .chain(vmos.iter().copied())
            .collect();
        let vas: Vec<u64> = witnesses
            .iter()
            .flat_map(|w| (0..w.pages).map(|i| w.page(i)))
            .collect();
        let before = self.snapshot(&watched, &vas);
        let counters = self.machine.counters();
        let status = self.run(call);
        let delta = self.machine.counters().since(&counters);
        assert_eq!(
            status,
            expected,
            "{f:?}: {call:x?} returned {}; the contract says {}",
            status_name(status),
            status_name(expected)
        );
        assert_eq!(
            (delta.frames_allocated, delta.frames_freed),
            (0, 0),
            "{f:?}: {call:x?} failed, yet allocated or freed frames"
        );
        assert_eq!(
            (
                delta.shootdowns,
                delta.page_invalidations,
                delta.full_invalidations
            ),
            (0, 0, 0),
            "{f:?}: {call:x?} failed, yet invalidated TLB entries"
        );
        let after = self.snapshot(&watched, &vas);
        assert_eq!(
            after.infos, before.infos,
            "{f:?}: {call:x?} failed, yet a VMO's info changed"
        );
        for (i, (a, b)) in after.contents.iter().zip(&before.contents).enumerate() {
            assert!(
                a == b,
                "{f:?}: {call:x?} failed, yet the contents of watched VMO #{i} changed"
            );
        }
        assert_eq!(
            after.translations, before.translations,
            "{f:?}: {call:x?} failed, yet a translation changed"
        );
        for w in witnesses {
            self.expect_witness_intact(w);
        }
    }
}

/// The fixture of steps 1 to 7: in an arena, a fully mapped 6-page range made of a committed
/// witness (4 pages) and an uncommitted writable mapping (2 pages). Decommitting it through the
/// arena handle succeeds ([`Fixture::expect_control_ok`]), so each failing call fails for the one
/// argument under test.
struct Fixture {
    env: Env,
    arena: zx_handle_t,
    w: Witness,
    spare: zx_handle_t,
}

impl Fixture {
    fn new(format: Format) -> Fixture {
        let env = Env::new(format);
        let (arena, _) = env.arena();
        let w = env.witness(arena, 0, 4);
        let spare = env.vmo(2);
        env.map_at(arena, pg(4), RW, spare, 0, pg(2));
        Fixture {
            env,
            arena,
            w,
            spare,
        }
    }

    /// The good call: decommit the whole fixture range through the arena handle.
    fn call(&self) -> Call {
        Call::decommit(self.arena, self.w.base, pg(6))
    }

    #[track_caller]
    fn expect_fail(&self, call: Call, expected: zx_status_t) {
        self.env
            .expect_fail(call, expected, &[&self.w], &[self.spare]);
    }

    /// Positive control (call it last): the good call succeeds and decommits the witness.
    #[track_caller]
    fn expect_control_ok(&self) {
        let env = &self.env;
        env.expect_ok(self.call());
        assert_eq!(env.committed(self.w.vmo), 0, "{:?}", env.format);
        assert_eq!(env.committed(self.spare), 0, "{:?}", env.format);
        env.expect_zero(self.w.page(0));
    }
}

// =================================================================================================
// Step 1: the handle names a VMAR of this process.
// =================================================================================================

/// Not in the handle table: never issued, ZX_HANDLE_INVALID, u32::MAX, closed, replaced, and the
/// closed only handle of a live sub-VMAR: `ZX_ERR_BAD_HANDLE`.
fn step_01_bad_handle(format: Format) {
    let fx = Fixture::new(format);
    let env = &fx.env;
    let mut bad = vec![ZX_HANDLE_INVALID, u32::MAX];
    bad.extend(NEVER_ISSUED);
    // A duplicate of the arena handle, closed.
    let closed = env.dup(fx.arena, ZX_RIGHT_SAME_RIGHTS);
    env.close(closed);
    bad.push(closed);
    // The old value of a replaced handle.
    let old = env.dup(fx.arena, ZX_RIGHT_SAME_RIGHTS);
    let mut replacement = ZX_HANDLE_INVALID;
    let status = zx_handle_replace(&env.process, old, ZX_RIGHT_SAME_RIGHTS, &mut replacement);
    assert_eq!(status, ZX_OK);
    bad.push(old);
    // The only handle to a sub-VMAR that lives on (its mapping is in the fixture range's arena).
    let (sub, _) = env.allocate(fx.arena, Some(pg(8)), 2, CAN_MAP_RW);
    env.close(sub);
    bad.push(sub);
    for handle in bad {
        assert!(
            env.process.handle(handle).is_err(),
            "precondition: {handle:#x} is not issued"
        );
        fx.expect_fail(fx.call().handle(handle), ZX_ERR_BAD_HANDLE);
    }
    // Control, through the replacement.
    env.expect_ok(fx.call().handle(replacement));
    assert_eq!(env.committed(fx.w.vmo), 0, "{format:?}");
}

/// A handle to something other than a VMAR (VMOs, whatever their rights or kind):
/// `ZX_ERR_WRONG_TYPE`.
fn step_01_wrong_type(format: Format) {
    let fx = Fixture::new(format);
    let env = &fx.env;
    let no_rights = env.dup(fx.w.vmo, ZX_RIGHT_NONE);
    let contiguous = env.contiguous(1);
    for handle in [fx.w.vmo, fx.spare, no_rights, contiguous] {
        fx.expect_fail(fx.call().handle(handle), ZX_ERR_WRONG_TYPE);
    }
    fx.expect_control_ok();
}

// =================================================================================================
// Step 2: the buffer is empty.
// =================================================================================================

/// `buffer != 0` or `buffer_size != 0`: `ZX_ERR_INVALID_ARGS`.
fn step_02_buffer_not_empty(format: Format) {
    let fx = Fixture::new(format);
    let cases = [
        (1, 0),
        (0x1000, 0),
        (fx.w.base, 0),
        (u64::MAX, 0),
        (0, 1),
        (0, 4096),
        (0, usize::MAX),
        (fx.w.base, 8),
    ];
    for (buffer, size) in cases {
        fx.expect_fail(fx.call().buffer(buffer, size), ZX_ERR_INVALID_ARGS);
    }
    fx.expect_control_ok();
}

/// Step 1 before step 2: a bad handle with a bad buffer is `ZX_ERR_BAD_HANDLE`, a VMO handle with
/// a bad buffer `ZX_ERR_WRONG_TYPE`.
fn step_02_order_handle_before_buffer(format: Format) {
    let fx = Fixture::new(format);
    for (buffer, size) in [(0x1000, 0), (0, 8), (0x1000, 8)] {
        for handle in [ZX_HANDLE_INVALID, u32::MAX, NEVER_ISSUED[0]] {
            let call = fx.call().handle(handle).buffer(buffer, size);
            fx.expect_fail(call, ZX_ERR_BAD_HANDLE);
        }
        let call = fx.call().handle(fx.w.vmo).buffer(buffer, size);
        fx.expect_fail(call, ZX_ERR_WRONG_TYPE);
    }
    fx.expect_control_ok();
}

// =================================================================================================
// Step 3: the op is defined, and is DECOMMIT.
// =================================================================================================

/// `op` 0, 5, 15, 16 and up: `ZX_ERR_INVALID_ARGS`.
fn step_03_undefined_op(format: Format) {
    let fx = Fixture::new(format);
    for op in UNDEFINED_OPS {
        fx.expect_fail(fx.call().op(op), ZX_ERR_INVALID_ARGS);
    }
    fx.expect_control_ok();
}

/// Each defined op other than DECOMMIT (1, 3, 4, 6-14): `ZX_ERR_NOT_SUPPORTED`, and nothing
/// happens (COMMIT, say, commits nothing of the uncommitted mapping).
fn step_03_defined_op_not_supported(format: Format) {
    let fx = Fixture::new(format);
    for op in UNSUPPORTED_OPS {
        fx.expect_fail(fx.call().op(op), ZX_ERR_NOT_SUPPORTED);
    }
    assert_eq!(fx.env.committed(fx.spare), 0, "{format:?}");
    fx.expect_control_ok();
}

/// Step 2 before step 3: a bad buffer beats both a bad and an unsupported op
/// (`ZX_ERR_INVALID_ARGS`, never `ZX_ERR_NOT_SUPPORTED`).
fn step_03_order_buffer_before_op(format: Format) {
    let fx = Fixture::new(format);
    for (buffer, size) in [(0x1000, 0), (0, 8)] {
        for op in UNSUPPORTED_OPS.into_iter().chain(UNDEFINED_OPS) {
            let call = fx.call().op(op).buffer(buffer, size);
            fx.expect_fail(call, ZX_ERR_INVALID_ARGS);
        }
    }
    fx.expect_control_ok();
}

/// Step 1 before step 3: a bad handle or a VMO handle with a bad op.
fn step_03_order_handle_before_op(format: Format) {
    let fx = Fixture::new(format);
    for op in [0, 1, 3, 5, 14, u32::MAX] {
        fx.expect_fail(
            fx.call().handle(ZX_HANDLE_INVALID).op(op),
            ZX_ERR_BAD_HANDLE,
        );
        fx.expect_fail(fx.call().handle(NEVER_ISSUED[1]).op(op), ZX_ERR_BAD_HANDLE);
        fx.expect_fail(fx.call().handle(fx.w.vmo).op(op), ZX_ERR_WRONG_TYPE);
    }
    fx.expect_control_ok();
}

// =================================================================================================
// Step 4: the handle has ZX_RIGHT_WRITE.
// =================================================================================================

/// A VMAR handle without `ZX_RIGHT_WRITE` (duplicated or replaced without it, or with no rights at
/// all): `ZX_ERR_ACCESS_DENIED`.
fn step_04_handle_without_write(format: Format) {
    let fx = Fixture::new(format);
    let env = &fx.env;
    let dup = env.dup_without_write(fx.arena);
    let other = env.dup(fx.arena, ZX_RIGHT_SAME_RIGHTS);
    let replaced = env.replace_without_write(other);
    let root_dup = env.dup_without_write(env.root);
    let no_rights = env.dup(fx.arena, ZX_RIGHT_NONE);
    // Only WRITE missing: everything else the arena handle has.
    assert_eq!(env.rights(dup) | Rights::WRITE, env.rights(fx.arena));
    for handle in [dup, replaced, root_dup, no_rights] {
        fx.expect_fail(fx.call().handle(handle), ZX_ERR_ACCESS_DENIED);
    }
    fx.expect_control_ok();
}

/// Step 3 before step 4: on a handle without write, a bad op is still `ZX_ERR_INVALID_ARGS` or
/// `ZX_ERR_NOT_SUPPORTED`, and a bad buffer `ZX_ERR_INVALID_ARGS`.
fn step_04_order_op_before_rights(format: Format) {
    let fx = Fixture::new(format);
    let ro = fx.env.dup_without_write(fx.arena);
    let call = fx.call().handle(ro);
    for op in UNSUPPORTED_OPS {
        fx.expect_fail(call.op(op), ZX_ERR_NOT_SUPPORTED);
    }
    for op in UNDEFINED_OPS {
        fx.expect_fail(call.op(op), ZX_ERR_INVALID_ARGS);
    }
    fx.expect_fail(call.buffer(0x1000, 0), ZX_ERR_INVALID_ARGS);
    fx.expect_fail(call.buffer(0, 8), ZX_ERR_INVALID_ARGS);
    fx.expect_control_ok();
}

/// Step 4 before steps 5 to 8: on a handle without write, an unaligned address, a zero or
/// overflowing size, a range outside the VMAR or an unmapped range are all `ZX_ERR_ACCESS_DENIED`.
fn step_04_order_rights_before_range_checks(format: Format) {
    let fx = Fixture::new(format);
    let ro = fx.env.dup_without_write(fx.arena);
    let base = fx.w.base;
    let cases = [
        (base + 1, PAGE),
        (base + 0x800, pg(2)),
        (base + PAGE - 1, PAGE),
        (base, 0),
        (base, u64::MAX),
        (base, u64::MAX - 100),
        (0, PAGE),
        (TOP_PAGE, PAGE),
        (base + pg(ARENA_PAGES), PAGE),
        (base + pg(32), pg(2)),
    ];
    for (addr, size) in cases {
        let call = fx.call().handle(ro).at(addr, size);
        fx.expect_fail(call, ZX_ERR_ACCESS_DENIED);
    }
    fx.expect_control_ok();
}

// =================================================================================================
// Step 5: size rounding, zero size, alignment.
// =================================================================================================

/// A size that overflows when rounded up to a page: `ZX_ERR_OUT_OF_RANGE`.
fn step_05_size_rounding_overflows(format: Format) {
    let fx = Fixture::new(format);
    for size in [u64::MAX, u64::MAX - 100, u64::MAX - (PAGE - 2)] {
        fx.expect_fail(fx.call().at(fx.w.base, size), ZX_ERR_OUT_OF_RANGE);
    }
    fx.expect_control_ok();
}

/// Size 0: `ZX_ERR_INVALID_ARGS`, wherever the address is.
fn step_05_zero_size(format: Format) {
    let fx = Fixture::new(format);
    for addr in [fx.w.base, fx.w.page(1), fx.w.base + pg(32), 0, TOP_PAGE] {
        fx.expect_fail(fx.call().at(addr, 0), ZX_ERR_INVALID_ARGS);
    }
    fx.expect_control_ok();
}

/// An address that is not page aligned: `ZX_ERR_INVALID_ARGS`.
fn step_05_unaligned_address(format: Format) {
    let fx = Fixture::new(format);
    let base = fx.w.base;
    for addr in [
        base + 1,
        base + 8,
        base + 0x800,
        base + PAGE - 1,
        base + PAGE + 1,
    ] {
        for size in [1, PAGE, pg(2)] {
            fx.expect_fail(fx.call().at(addr, size), ZX_ERR_INVALID_ARGS);
        }
    }
    fx.expect_control_ok();
}

/// A size that is not a page multiple is rounded up: 1 decommits one page, 4097 two, 4095 one;
/// the pages around stay.
fn step_05_size_rounded_up(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 4);
    let next = env.witness(arena, pg(4), 1);
    // Size 1 at page 0: page 0 only.
    env.expect_ok(Call::decommit(arena, w.page(0), 1));
    assert_eq!(env.committed(w.vmo), pg(3), "{format:?}");
    // Size 4097 at page 1: pages 1 and 2.
    env.expect_ok(Call::decommit(arena, w.page(1), PAGE + 1));
    assert_eq!(env.committed(w.vmo), pg(1), "{format:?}");
    assert_eq!(
        env.read(w.vmo, pg(2), PAGE),
        vec![0; PAGE as usize],
        "{format:?}"
    );
    assert_ne!(
        env.read(w.vmo, pg(3), PAGE),
        vec![0; PAGE as usize],
        "{format:?}"
    );
    // Size 4095 at page 3: page 3.
    env.expect_ok(Call::decommit(arena, w.page(3), PAGE - 1));
    assert_eq!(env.committed(w.vmo), 0, "{format:?}");
    assert_eq!(env.committed(next.vmo), PAGE, "{format:?}");
    for i in 0..4 {
        env.expect_zero(w.page(i));
    }
    env.expect_witness_intact(&next);
}

/// Step 4 before step 5: a zero or overflowing size on a handle without write is
/// `ZX_ERR_ACCESS_DENIED`.
fn step_05_order_rights_before_size(format: Format) {
    let fx = Fixture::new(format);
    let ro = fx.env.dup_without_write(fx.arena);
    for size in [0, u64::MAX, u64::MAX - 100] {
        let call = fx.call().handle(ro).at(fx.w.base, size);
        fx.expect_fail(call, ZX_ERR_ACCESS_DENIED);
    }
    fx.expect_control_ok();
}

/// Within step 5, as the contract lists it: the size is rounded first, so an overflowing size with
/// an unaligned address is `ZX_ERR_OUT_OF_RANGE`.
fn step_05_order_rounding_before_alignment(format: Format) {
    let fx = Fixture::new(format);
    for size in [u64::MAX, u64::MAX - 100] {
        let call = fx.call().at(fx.w.base + 1, size);
        fx.expect_fail(call, ZX_ERR_OUT_OF_RANGE);
    }
    fx.expect_control_ok();
}

/// Step 5 before steps 7 and 8: a zero size or an unaligned address outside the VMAR, or over
/// unmapped pages, is `ZX_ERR_INVALID_ARGS`.
fn step_05_order_before_range_and_mapping(format: Format) {
    let fx = Fixture::new(format);
    let unmapped = fx.w.base + pg(32);
    let cases = [
        (0, 0),
        (1, PAGE),
        (TOP_PAGE, 0),
        (TOP_PAGE + 1, PAGE),
        (fx.w.base - PAGE + 1, pg(2)),
        (unmapped, 0),
        (unmapped + 1, PAGE),
    ];
    for (addr, size) in cases {
        fx.expect_fail(fx.call().at(addr, size), ZX_ERR_INVALID_ARGS);
    }
    fx.expect_control_ok();
}

// =================================================================================================
// Step 6: the VMAR is alive.
// =================================================================================================

/// A destroyed sub-VMAR, through its still-open handle, is `ZX_ERR_BAD_STATE`: over its old range
/// (empty, or mapped again by its parent), and for a child destroyed with its parent.
fn step_06_destroyed_vmar(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let (sub, base) = env.allocate(arena, Some(pg(4)), 4, CAN_MAP_RW);
    let gone = env.witness(sub, 0, 4);
    env.destroy(sub);
    assert_eq!(env.committed(gone.vmo), pg(4), "{format:?}");
    let other = env.witness(arena, 0, 2);
    for (addr, size) in [(base, pg(4)), (base, PAGE), (base + pg(3), PAGE)] {
        env.expect_fail(
            Call::decommit(sub, addr, size),
            ZX_ERR_BAD_STATE,
            &[&other],
            &[gone.vmo],
        );
    }
    // The parent maps the old range again: the dead VMAR still reaches nothing.
    let again = env.witness(arena, pg(4), 4);
    assert_eq!(again.base, base);
    env.expect_fail(
        Call::decommit(sub, base, pg(4)),
        ZX_ERR_BAD_STATE,
        &[&again],
        &[],
    );
    // A child of a destroyed VMAR is destroyed with it.
    let (parent, _) = env.allocate(arena, Some(pg(16)), 8, CAN_MAP_RW);
    let (child, child_base) = env.allocate(parent, Some(pg(2)), 2, CAN_MAP_RW);
    let inside = env.witness(child, 0, 2);
    env.destroy(parent);
    env.expect_fail(
        Call::decommit(child, child_base, pg(2)),
        ZX_ERR_BAD_STATE,
        &[&again],
        &[inside.vmo],
    );
    // Control: the parent decommits the new mapping.
    env.expect_ok(Call::decommit(arena, base, pg(4)));
    assert_eq!(env.committed(again.vmo), 0, "{format:?}");
}

/// Steps 1 to 5 before step 6: on a destroyed VMAR, a bad buffer, op, right, size or alignment
/// decides the status.
fn step_06_order_argument_checks_before_destroyed(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let (sub, base) = env.allocate(arena, Some(pg(4)), 4, CAN_MAP_RW);
    let ro = env.dup_without_write(sub);
    let other = env.witness(arena, 0, 2);
    env.destroy(sub);
    let call = Call::decommit(sub, base, pg(2));
    let cases = [
        (call.buffer(0x1000, 0), ZX_ERR_INVALID_ARGS),
        (call.op(0), ZX_ERR_INVALID_ARGS),
        (call.op(ZX_VMO_OP_COMMIT), ZX_ERR_NOT_SUPPORTED),
        (call.handle(ro), ZX_ERR_ACCESS_DENIED),
        (call.at(base, u64::MAX), ZX_ERR_OUT_OF_RANGE),
        (call.at(base, 0), ZX_ERR_INVALID_ARGS),
        (call.at(base + 1, PAGE), ZX_ERR_INVALID_ARGS),
        (call.at(base + 0x800, pg(2)), ZX_ERR_INVALID_ARGS),
        (call, ZX_ERR_BAD_STATE),
    ];
    for (call, status) in cases {
        env.expect_fail(call, status, &[&other], &[]);
    }
}

// =================================================================================================
// Step 7: the range lies wholly inside the VMAR.
// =================================================================================================

/// A range starting below the VMAR, ending past it, enclosing it, or whose end overflows u64:
/// `ZX_ERR_OUT_OF_RANGE`, though the pages around the sub-VMAR are mapped in its parent.
fn step_07_out_of_range(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let below = env.witness(arena, 0, 2);
    let (inner, ib) = env.allocate(arena, Some(pg(2)), 4, CAN_MAP_RW);
    let inside = env.witness(inner, 0, 4);
    let above = env.witness(arena, pg(6), 2);
    let watched = [&below, &inside, &above];
    let cases = [
        (ib - PAGE, pg(2)),
        (ib - PAGE, PAGE),
        (ib - pg(2), pg(8)),
        (ib + pg(3), pg(2)),
        (ib, pg(5)),
        (ib + pg(4), PAGE),
        (0, PAGE),
        (TOP_PAGE, PAGE),
        (TOP_PAGE, pg(2)),
        (ib, TOP_PAGE),
        (ib + PAGE, u64::MAX - (PAGE - 1)),
    ];
    for (addr, size) in cases {
        let call = Call::decommit(inner, addr, size);
        env.expect_fail(call, ZX_ERR_OUT_OF_RANGE, &watched, &[]);
    }
    // The root VMAR has bounds too.
    let root_vmar = env.process.vmar(env.root).expect("root").0;
    let (root_base, root_end) = (root_vmar.base(), root_vmar.base() + root_vmar.size());
    let cases = [
        (0, PAGE),
        (root_base - PAGE, pg(2)),
        (root_end - PAGE, pg(2)),
        (root_end, PAGE),
        (1 << 47, PAGE),
        (TOP_PAGE, PAGE),
    ];
    for (addr, size) in cases {
        let call = Call::decommit(env.root, addr, size);
        env.expect_fail(call, ZX_ERR_OUT_OF_RANGE, &watched, &[]);
    }
    // Control: the sub-VMAR's own range decommits, and only it.
    env.expect_ok(Call::decommit(inner, ib, pg(4)));
    assert_eq!(env.committed(inside.vmo), 0, "{format:?}");
    env.expect_witness_intact(&below);
    env.expect_witness_intact(&above);
}

/// Step 6 before step 7: a destroyed VMAR with a range outside it is `ZX_ERR_BAD_STATE`.
fn step_07_order_destroyed_before_out_of_range(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let (sub, base) = env.allocate(arena, Some(pg(4)), 4, CAN_MAP_RW);
    let other = env.witness(arena, 0, 4);
    env.destroy(sub);
    let cases = [
        (base - PAGE, pg(2)),
        (base, pg(100)),
        (0, PAGE),
        (TOP_PAGE, PAGE),
        (base, TOP_PAGE),
    ];
    for (addr, size) in cases {
        let call = Call::decommit(sub, addr, size);
        env.expect_fail(call, ZX_ERR_BAD_STATE, &[&other], &[]);
    }
}

// =================================================================================================
// Step 8: every page of the range is mapped, looking through nested VMARs.
// =================================================================================================

/// A range with no mapping at all: `ZX_ERR_BAD_STATE`.
fn step_08_fully_unmapped(format: Format) {
    let env = Env::new(format);
    let (arena, base) = env.arena();
    let w = env.witness(arena, 0, 2);
    for (addr, size) in [(base + pg(8), PAGE), (base + pg(8), pg(4)), (w.end(), PAGE)] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[]);
    }
    // The whole root VMAR is mostly unmapped.
    let root_vmar = env.process.vmar(env.root).expect("root").0;
    let call = Call::decommit(env.root, root_vmar.base(), root_vmar.size());
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[]);
}

/// A gap between two mappings: `ZX_ERR_BAD_STATE`, and the mapping before the gap keeps its pages.
fn step_08_gap_between_mappings(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let first = env.witness(arena, 0, 2);
    let second = env.witness(arena, pg(3), 1);
    let call = Call::decommit(arena, first.base, pg(4));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&first, &second], &[]);
    // Control: each mapping alone decommits.
    env.expect_ok(Call::decommit(arena, first.base, pg(2)));
    env.expect_ok(Call::decommit(arena, second.base, pg(1)));
    assert_eq!(env.committed(first.vmo) + env.committed(second.vmo), 0);
}

/// A range that runs past the end of the last mapping, or starts before the first:
/// `ZX_ERR_BAD_STATE`.
fn step_08_range_past_mapping(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, pg(1), 2);
    let cases = [
        (w.base, pg(3)),
        (w.page(1), pg(2)),
        (w.base - PAGE, pg(2)),
        (w.base - PAGE, pg(4)),
    ];
    for (addr, size) in cases {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[]);
    }
    env.expect_ok(Call::decommit(arena, w.base, w.len()));
    assert_eq!(env.committed(w.vmo), 0, "{format:?}");
}

/// A sub-VMAR in the range with an unmapped hole (made by zx_vmar_unmap), or empty, or followed
/// by a gap in its parent: `ZX_ERR_BAD_STATE`.
fn step_08_hole_in_sub_vmar(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    // [0, 1): w; [1, 4): sub-VMAR holding a 3-page mapping whose middle page is unmapped.
    let w = env.witness(arena, 0, 1);
    let (sub, _) = env.allocate(arena, Some(pg(1)), 3, CAN_MAP_RW);
    let holed = env.witness(sub, 0, 3);
    let status = zx_vmar_unmap(&env.process, sub, holed.page(1), PAGE);
    assert_eq!(status, ZX_OK, "{format:?}");
    let call = Call::decommit(arena, w.base, pg(4));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[holed.vmo]);
    // Through the sub-VMAR's own handle too.
    let call = Call::decommit(sub, holed.base, pg(3));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[holed.vmo]);
    // [4, 6): an empty sub-VMAR.
    let (empty, empty_base) = env.allocate(arena, Some(pg(4)), 2, CAN_MAP_RW);
    let call = Call::decommit(arena, holed.page(2), pg(3));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[holed.vmo]);
    let call = Call::decommit(empty, empty_base, pg(2));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[]);
    // [8, 10): a fully mapped sub-VMAR, then a gap at 10 in the parent.
    let (full, _) = env.allocate(arena, Some(pg(8)), 2, CAN_MAP_RW);
    let in_full = env.witness(full, 0, 2);
    let call = Call::decommit(arena, in_full.base, pg(3));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w, &in_full], &[]);
    // Control: the mapped pages on either side of the hole decommit.
    env.expect_ok(Call::decommit(arena, w.base, pg(2)));
    env.expect_ok(Call::decommit(sub, holed.page(2), PAGE));
    assert_eq!(
        env.committed(holed.vmo),
        PAGE,
        "{format:?}: the unmapped page stays"
    );
}

/// Nested sub-VMARs, fully mapped: the range is covered, and the call succeeds through the
/// arena, a sub-VMAR, or the root, decommitting every mapping in it and nothing outside.
fn step_08_nested_fully_mapped(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    // [0,1) a | [1,5) s1: [1,2) b, [2,4) s2: c, [4,5) d | [5,6) e | [6,7) outside.
    let a = env.witness(arena, 0, 1);
    let (s1, s1_base) = env.allocate(arena, Some(pg(1)), 4, CAN_MAP_RW);
    let b = env.witness(s1, 0, 1);
    let (s2, _) = env.allocate(s1, Some(pg(1)), 2, CAN_MAP_RW);
    let c = env.witness(s2, 0, 2);
    let d = env.witness(s1, pg(3), 1);
    let e = env.witness(arena, pg(5), 1);
    let outside = env.witness(arena, pg(6), 1);
    // Through s1: b, c and d.
    env.expect_ok(Call::decommit(s1, s1_base, pg(4)));
    for w in [&b, &c, &d] {
        assert_eq!(env.committed(w.vmo), 0, "{format:?}");
    }
    for w in [&a, &e, &outside] {
        assert_eq!(env.committed(w.vmo), PAGE, "{format:?}");
    }
    // Through the root, then the arena: a to e (after the CPU faulted b to d in again).
    for i in 0..2 {
        let handle = if i == 0 { env.root } else { arena };
        for w in [&b, &c, &d] {
            for p in 0..w.pages {
                env.expect_zero(w.page(p));
            }
        }
        env.expect_ok(Call::decommit(handle, a.base, pg(6)));
        for w in [&a, &b, &c, &d, &e] {
            assert_eq!(env.committed(w.vmo), 0, "{format:?}");
        }
        env.expect_witness_intact(&outside);
    }
    env.expect_zero(a.base);
    env.expect_zero(e.base);
}

/// Step 7 before step 8: a range with gaps that also leaves the VMAR is `ZX_ERR_OUT_OF_RANGE`.
fn step_08_order_out_of_range_before_gap(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 1);
    let (sub, sub_base) = env.allocate(arena, Some(pg(1)), 4, CAN_MAP_RW);
    let inside = env.witness(sub, pg(1), 1);
    let cases = [
        (sub_base - PAGE, pg(2)),
        (sub_base, pg(5)),
        (sub_base + pg(3), pg(2)),
        (sub_base + pg(8), PAGE),
    ];
    for (addr, size) in cases {
        let call = Call::decommit(sub, addr, size);
        env.expect_fail(call, ZX_ERR_OUT_OF_RANGE, &[&w, &inside], &[]);
    }
    // In range, the same gaps are BAD_STATE.
    let call = Call::decommit(sub, sub_base, pg(4));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w, &inside], &[]);
}

// =================================================================================================
// Step 9: every affected mapping could be writable.
// =================================================================================================

/// A read-only mapping made through a VMO handle without `ZX_RIGHT_WRITE`:
/// `ZX_ERR_ACCESS_DENIED`, also after a writable mapping that would otherwise decommit.
fn step_09_vmo_handle_lacked_write(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 2);
    let data = env.vmo_with_data(2);
    let ro_vmo = env.dup_without_write(data);
    let ro = env.map_at(arena, pg(2), RO, ro_vmo, 0, pg(2));
    for (addr, size) in [(w.base, pg(4)), (ro, pg(2)), (ro + PAGE, PAGE)] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&w], &[data]);
    }
    // Through the root handle as well.
    let call = Call::decommit(env.root, w.base, pg(4));
    env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&w], &[data]);
    // Control: the writable mapping alone decommits.
    env.expect_ok(Call::decommit(arena, w.base, pg(2)));
    assert_eq!(env.committed(w.vmo), 0, "{format:?}");
    assert_eq!(env.committed(data), pg(2), "{format:?}");
}

/// A read-only mapping made in a sub-VMAR allocated with only `ZX_VM_CAN_MAP_READ` (whose handle
/// lacks `ZX_RIGHT_WRITE`), decommitted through the parent's writable handle: `ZX_ERR_ACCESS_DENIED`.
fn step_09_vmar_lacked_write_allocated_read_only(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 2);
    let (ro_vmar, ro_base) = env.allocate(arena, Some(pg(2)), 2, CAN_MAP_RO);
    assert!(!env.rights(ro_vmar).contains(Rights::WRITE));
    let data = env.vmo_with_data(2);
    env.map_at(ro_vmar, 0, RO, data, 0, pg(2));
    for (handle, addr, size) in [
        (arena, w.base, pg(4)),
        (arena, ro_base, pg(2)),
        (env.root, w.base, pg(4)),
    ] {
        let call = Call::decommit(handle, addr, size);
        env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&w], &[data]);
    }
    env.expect_ok(Call::decommit(arena, w.base, pg(2)));
}

/// A read-only mapping made through a duplicate of the root (or arena) VMAR handle without
/// `ZX_RIGHT_WRITE`, decommitted through the writable handle: `ZX_ERR_ACCESS_DENIED`.
fn step_09_vmar_handle_lacked_write(format: Format) {
    let env = Env::new(format);
    // In the root: a witness, then a mapping made through the read-only duplicate.
    let root_base = env.process.vmar(env.root).expect("root").0.base();
    let offset = 0x1000_0000;
    let w = env.witness(env.root, offset, 2);
    assert_eq!(w.base, root_base + offset);
    let root_ro = env.dup_without_write(env.root);
    let data = env.vmo_with_data(2);
    env.map_at(root_ro, offset + pg(2), RO, data, 0, pg(2));
    let call = Call::decommit(env.root, w.base, pg(4));
    env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&w], &[data]);
    // In the arena, through a duplicate of the arena handle.
    let (arena, _) = env.arena();
    let w2 = env.witness(arena, 0, 1);
    let arena_ro = env.dup_without_write(arena);
    let data2 = env.vmo_with_data(1);
    env.map_at(arena_ro, PAGE, RO, data2, 0, PAGE);
    let call = Call::decommit(arena, w2.base, pg(2));
    env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&w, &w2], &[data, data2]);
    env.expect_ok(Call::decommit(env.root, w.base, pg(2)));
    env.expect_ok(Call::decommit(arena, w2.base, PAGE));
}

/// A mapping made read-only by choice (`ZX_VM_PERM_READ` through writable handles) decommits.
fn step_09_read_only_by_choice_ok(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 2);
    let data = env.vmo_with_data(2);
    let ro = env.map_at(arena, pg(2), RO, data, 0, pg(2));
    assert_eq!(env.load_page(ro)[0], 0x0101_0101_0101_0101, "{format:?}");
    env.expect_ok(Call::decommit(arena, w.base, pg(4)));
    assert_eq!(env.committed(w.vmo), 0, "{format:?}");
    assert_eq!(env.committed(data), 0, "{format:?}");
    assert_eq!(
        env.read(data, 0, pg(2)),
        vec![0; pg(2) as usize],
        "{format:?}"
    );
    env.expect_zero(ro);
    env.expect_zero(ro + PAGE);
    env.expect_zero(w.base);
}

/// A writable mapping made read-only with zx_vmar_protect decommits.
fn step_09_protected_read_only_ok(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 3);
    let status = zx_vmar_protect(&env.process, arena, RO, w.base, pg(2));
    assert_eq!(status, ZX_OK, "{format:?}");
    assert!(env.cpu.store(w.base, 1).is_err(), "{format:?}: protected");
    env.expect_intact(w.base);
    env.expect_ok(Call::decommit(arena, w.base, pg(3)));
    assert_eq!(env.committed(w.vmo), 0, "{format:?}");
    for i in 0..3 {
        env.expect_zero(w.page(i));
    }
}

/// Step 8 before step 9: a range with a non-writable mapping and a gap is `ZX_ERR_BAD_STATE`,
/// whichever comes first.
fn step_09_order_gap_before_not_writable(format: Format) {
    let env = Env::new(format);
    let (arena, base) = env.arena();
    // [0,1) w | [1,2) read-only (VMO handle without write) | [2,3) gap | [3,4) read-only.
    let w = env.witness(arena, 0, 1);
    let data = env.vmo_with_data(2);
    let ro_vmo = env.dup_without_write(data);
    env.map_at(arena, PAGE, RO, ro_vmo, 0, PAGE);
    env.map_at(arena, pg(3), RO, ro_vmo, PAGE, PAGE);
    for (addr, size) in [(base, pg(3)), (base + PAGE, pg(2)), (base + pg(2), pg(2))] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w], &[data]);
    }
    // Without the gap, the read-only mapping decides.
    let call = Call::decommit(arena, base, pg(2));
    env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&w], &[data]);
}

// =================================================================================================
// Step 10: every VMO supports decommit; no affected page is pinned.
// =================================================================================================

/// A mapped contiguous VMO: `ZX_ERR_NOT_SUPPORTED`, alone or after a writable paged mapping.
fn step_10_contiguous_not_supported(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 2);
    let contiguous = env.contiguous(2);
    let c = env.map_at(arena, pg(2), RW, contiguous, 0, pg(2));
    assert_eq!(env.load_page(c), [0xc5c5_c5c5_c5c5_c5c5; 2], "{format:?}");
    for (addr, size) in [(w.base, pg(4)), (c, pg(2)), (c + PAGE, PAGE)] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_NOT_SUPPORTED, &[&w], &[contiguous]);
    }
    assert_eq!(env.committed(contiguous), pg(2), "{format:?}");
}

/// A mapped physical VMO: `ZX_ERR_NOT_SUPPORTED`, alone or after a writable paged mapping.
fn step_10_physical_not_supported(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 2);
    let physical = env.physical(2);
    let p = env.map_at(arena, pg(2), RW, physical, 0, pg(2));
    for (addr, size) in [(w.base, pg(4)), (p, pg(2)), (p + PAGE, PAGE)] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_NOT_SUPPORTED, &[&w], &[physical]);
    }
}

/// A pinned page in the range, in another VMO or in the first mapping's own: `ZX_ERR_BAD_STATE`,
/// and none of the other pages goes.
fn step_10_pinned_page_in_range(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 2);
    let v = env.witness(arena, pg(2), 3);
    env.vmo_object(v.vmo).pin(PAGE, PAGE).expect("pin");
    for (addr, size) in [(w.base, pg(5)), (v.base, pg(3)), (v.page(1), PAGE)] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w, &v], &[]);
    }
    // The last page of the first mapping's own VMO pinned.
    let own = env.witness(arena, pg(8), 4);
    env.vmo_object(own.vmo).pin(pg(3), PAGE).expect("pin");
    let call = Call::decommit(arena, own.base, pg(4));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&own], &[]);
}

/// Pinned pages outside the range (in the same mapping, or in a part of the VMO that the
/// mapping does not map) do not stop the decommit, and stay.
fn step_10_pinned_page_outside_range_ok(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let v = env.witness(arena, 0, 3);
    env.vmo_object(v.vmo).pin(pg(2), PAGE).expect("pin");
    env.expect_ok(Call::decommit(arena, v.base, pg(2)));
    assert_eq!(env.committed(v.vmo), PAGE, "{format:?}");
    env.expect_intact(v.page(2));
    env.expect_zero(v.page(0));
    // A 4-page VMO mapped by its first 2 pages, with page 3 pinned.
    let data = env.vmo_with_data(4);
    env.vmo_object(data).pin(pg(3), PAGE).expect("pin");
    let m = env.map_at(arena, pg(8), RW, data, 0, pg(2));
    env.expect_ok(Call::decommit(arena, m, pg(2)));
    assert_eq!(env.committed(data), pg(2), "{format:?}");
    assert_eq!(
        env.read(data, pg(3), PAGE),
        vec![4; PAGE as usize],
        "{format:?}"
    );
}

/// After unpin (as many times as pinned) the range decommits.
fn step_10_unpinned_ok(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let v = env.witness(arena, 0, 2);
    let vmo = env.vmo_object(v.vmo);
    vmo.pin(PAGE, PAGE).expect("pin");
    vmo.pin(PAGE, PAGE).expect("pin");
    let call = Call::decommit(arena, v.base, pg(2));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&v], &[]);
    vmo.unpin(PAGE, PAGE).expect("unpin");
    env.expect_fail(call, ZX_ERR_BAD_STATE, &[&v], &[]);
    vmo.unpin(PAGE, PAGE).expect("unpin");
    env.expect_ok(call);
    assert_eq!(env.committed(v.vmo), 0, "{format:?}");
    env.expect_zero(v.page(1));
}

/// Step 9 before step 10: a non-writable mapping with a contiguous, physical or pinned one is
/// `ZX_ERR_ACCESS_DENIED`, whichever comes first.
fn step_10_order_not_writable_before_not_supported(format: Format) {
    let env = Env::new(format);
    let (arena, base) = env.arena();
    // [0,2) contiguous | [2,3) read-only paged (VMO handle without write) | [3,5) physical.
    let contiguous = env.contiguous(2);
    env.map_at(arena, 0, RW, contiguous, 0, pg(2));
    let data = env.vmo_with_data(1);
    let ro_vmo = env.dup_without_write(data);
    env.map_at(arena, pg(2), RO, ro_vmo, 0, PAGE);
    let physical = env.physical(2);
    env.map_at(arena, pg(3), RW, physical, 0, pg(2));
    for (addr, size) in [(base, pg(3)), (base + pg(2), pg(3)), (base, pg(5))] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(
            call,
            ZX_ERR_ACCESS_DENIED,
            &[],
            &[contiguous, data, physical],
        );
    }
    // A contiguous VMO mapped through a handle without write, alone.
    let ro_contiguous = env.dup_without_write(contiguous);
    let c = env.map_at(arena, pg(8), RO, ro_contiguous, 0, pg(2));
    let call = Call::decommit(arena, c, pg(2));
    env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[], &[contiguous]);
    // A pinned paged mapping, then a read-only one.
    let pinned = env.witness(arena, pg(12), 1);
    env.vmo_object(pinned.vmo).pin(0, PAGE).expect("pin");
    env.map_at(arena, pg(13), RO, ro_vmo, 0, PAGE);
    let call = Call::decommit(arena, pinned.base, pg(2));
    env.expect_fail(call, ZX_ERR_ACCESS_DENIED, &[&pinned], &[data]);
}

/// Within step 10, NOT_SUPPORTED before pinned: a paged mapping with a pinned page and a
/// contiguous (or physical) mapping in one range is `ZX_ERR_NOT_SUPPORTED`, in either order.
fn step_10_order_not_supported_before_pinned(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    // [0,1) w | [1,3) pinned paged | [3,5) contiguous | [5,7) pinned paged | [7,8) physical.
    let w = env.witness(arena, 0, 1);
    let first = env.witness(arena, PAGE, 2);
    env.vmo_object(first.vmo).pin(0, PAGE).expect("pin");
    let contiguous = env.contiguous(2);
    let c = env.map_at(arena, pg(3), RW, contiguous, 0, pg(2));
    let second = env.witness(arena, pg(5), 2);
    env.vmo_object(second.vmo).pin(PAGE, PAGE).expect("pin");
    let physical = env.physical(1);
    let p = env.map_at(arena, pg(7), RW, physical, 0, PAGE);
    let watched = [&w, &first, &second];
    let cases = [
        (w.base, pg(5)),
        (first.base, pg(4)),
        (c, pg(4)),
        (w.base, pg(8)),
        (second.base, pg(3)),
        (p, PAGE),
    ];
    for (addr, size) in cases {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(
            call,
            ZX_ERR_NOT_SUPPORTED,
            &watched,
            &[contiguous, physical],
        );
    }
    // Without the unsupported VMOs, the pins decide.
    let call = Call::decommit(arena, w.base, pg(3));
    env.expect_fail(call, ZX_ERR_BAD_STATE, &watched, &[]);
}

/// Step 8 before step 10: a contiguous or pinned mapping followed by a gap is `ZX_ERR_BAD_STATE`.
fn step_10_order_gap_before_not_supported(format: Format) {
    let env = Env::new(format);
    let (arena, _) = env.arena();
    let w = env.witness(arena, 0, 1);
    let contiguous = env.contiguous(1);
    env.map_at(arena, PAGE, RW, contiguous, 0, PAGE);
    // [2,3) gap; [3,4) pinned; [4,5) gap.
    let pinned = env.witness(arena, pg(3), 1);
    env.vmo_object(pinned.vmo).pin(0, PAGE).expect("pin");
    for (addr, size) in [(w.base, pg(3)), (w.base, pg(5)), (pinned.base, pg(2))] {
        let call = Call::decommit(arena, addr, size);
        env.expect_fail(call, ZX_ERR_BAD_STATE, &[&w, &pinned], &[contiguous]);
    }
}

// =================================================================================================
// Step 11: "every check runs before anything changes".
// =================================================================================================

/// What ends the range in a `step_11` case, and the status it must give.
#[derive(Clone, Copy, Debug)]
enum Tail {
    /// An unmapped page.
    Gap,
    /// A sub-VMAR with a hole.
    SubVmarHole,
    /// A mapping made through a VMO handle without write.
    VmoLackedWrite,
    /// A mapping in a sub-VMAR that cannot map writable.
    VmarLackedWrite,
    /// A contiguous VMO.
    Contiguous,
    /// A physical VMO.
    Physical,
    /// A paged VMO with a pinned page.
    PinnedOther,
    /// A pinned page in the second witness itself (no tail mapping).
    PinnedWitness,
}

impl Tail {
    const ALL: [Tail; 8] = [
        Tail::Gap,
        Tail::SubVmarHole,
        Tail::VmoLackedWrite,
        Tail::VmarLackedWrite,
        Tail::Contiguous,
        Tail::Physical,
        Tail::PinnedOther,
        Tail::PinnedWitness,
    ];

    fn status(self) -> zx_status_t {
        match self {
            Tail::Gap | Tail::SubVmarHole | Tail::PinnedOther | Tail::PinnedWitness => {
                ZX_ERR_BAD_STATE
            }
            Tail::VmoLackedWrite | Tail::VmarLackedWrite => ZX_ERR_ACCESS_DENIED,
            Tail::Contiguous | Tail::Physical => ZX_ERR_NOT_SUPPORTED,
        }
    }

    /// Lays the tail out at `offset` in `arena`; returns its length and the VMOs to watch.
    fn build(
        self,
        env: &Env,
        arena: zx_handle_t,
        offset: u64,
        w2: &Witness,
    ) -> (u64, Vec<zx_handle_t>) {
        match self {
            Tail::Gap => (PAGE, vec![]),
            Tail::SubVmarHole => {
                let (sub, _) = env.allocate(arena, Some(offset), 3, CAN_MAP_RW);
                let data = env.vmo_with_data(2);
                env.map_at(sub, 0, RW, data, 0, PAGE);
                env.map_at(sub, pg(2), RW, data, PAGE, PAGE);
                (pg(3), vec![data])
            }
            Tail::VmoLackedWrite => {
                let data = env.vmo_with_data(1);
                let ro = env.dup_without_write(data);
                env.map_at(arena, offset, RO, ro, 0, PAGE);
                (PAGE, vec![data])
            }
            Tail::VmarLackedWrite => {
                let (sub, _) = env.allocate(arena, Some(offset), 1, CAN_MAP_RO);
                let data = env.vmo_with_data(1);
                env.map_at(sub, 0, RO, data, 0, PAGE);
                (PAGE, vec![data])
            }
            Tail::Contiguous => {
                let contiguous = env.contiguous(1);
                env.map_at(arena, offset, RW, contiguous, 0, PAGE);
                (PAGE, vec![contiguous])
            }
            Tail::Physical => {
                let physical = env.physical(1);
                env.map_at(arena, offset, RW, physical, 0, PAGE);
                (PAGE, vec![physical])
            }
            Tail::PinnedOther => {
                let data = env.vmo_with_data(1);
                env.vmo_object(data).pin(0, PAGE).expect("pin");
                env.map_at(arena, offset, RW, data, 0, PAGE);
                (PAGE, vec![data])
            }
            Tail::PinnedWitness => {
                env.vmo_object(w2.vmo).pin(pg(1), PAGE).expect("pin");
                (0, vec![])
            }
        }
    }
}

/// For each failing case of steps 8 to 10, behind two writable, committed, paged mappings (the
/// second one's VMO also mapped, and cached in a TLB, in a second process on a second CPU): the
/// call fails with its status and changes nothing, neither in this address space nor in the
/// other: no frame freed, no invalidation, same committed bytes, contents and translations.
fn step_11_failed_call_changes_nothing(format: Format) {
    for tail in Tail::ALL {
        let env = Env::with_cpus(format, 2);
        let (arena, _) = env.arena();
        let w1 = env.witness(arena, 0, 2);
        let w2 = env.witness(arena, pg(2), 2);
        // w2's VMO, mapped in another process with its committed pages (ZX_VM_MAP_RANGE).
        let other = Process::new(env.platform.clone(), format).expect("Process::new");
        let shared = other
            .add_handle(
                KernelObject::Vmo(env.vmo_object(w2.vmo)),
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
            )
            .expect("add_handle");
        let mut va2 = 0;
        let status = zx_vmar_map(
            &other,
            other.root_vmar_handle(),
            RW | ZX_VM_MAP_RANGE,
            0,
            shared,
            0,
            w2.len(),
            &mut va2,
        );
        assert_eq!(status, ZX_OK, "{format:?}");
        let cpu1 = env.machine.cpu(1);
        cpu1.switch_to(Some(other.aspace()));
        let other_view = |i: u64| cpu1.load(va2 + pg(i)).expect("load in the other process");
        for i in 0..2 {
            assert_eq!(other_view(i), pattern(w2.page(i)), "{format:?} {tail:?}");
        }
        let other_translations =
            || -> Vec<_> { (0..2).map(|i| other.aspace().query(va2 + pg(i))).collect() };
        let before = other_translations();

        let (tail_len, vmos) = tail.build(&env, arena, pg(4), &w2);
        let call = Call::decommit(arena, w1.base, pg(4) + tail_len);
        env.expect_fail(call, tail.status(), &[&w1, &w2], &vmos);

        let after = other_translations();
        assert_eq!(
            after, before,
            "{format:?} {tail:?}: the other process's translations"
        );
        for i in 0..2 {
            assert_eq!(other_view(i), pattern(w2.page(i)), "{format:?} {tail:?}");
        }
        assert_eq!(env.info(w2.vmo).num_mappings, 2, "{format:?} {tail:?}");
        cpu1.switch_to(None);
    }
}

// =================================================================================================
// One test per format for each of the above.
// =================================================================================================

/// For each `fn name(format)` above, a module `name` with the tests `x86_64` and `aarch64`.
macro_rules! per_format {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn x86_64() {
                    super::$name(zx_vm::arch::Format::X86_64);
                }

                #[test]
                fn aarch64() {
                    super::$name(zx_vm::arch::Format::Aarch64);
                }
            }
        )*
    };
}

/// `per_format!` covers every format there is.
#[test]
fn formats_covered() {
    assert_eq!(Format::ALL, [Format::X86_64, Format::Aarch64]);
}

per_format! {
    step_01_bad_handle,
    step_01_wrong_type,
    step_02_buffer_not_empty,
    step_02_order_handle_before_buffer,
    step_03_undefined_op,
    step_03_defined_op_not_supported,
    step_03_order_buffer_before_op,
    step_03_order_handle_before_op,
    step_04_handle_without_write,
    step_04_order_op_before_rights,
    step_04_order_rights_before_range_checks,
    step_05_size_rounding_overflows,
    step_05_zero_size,
    step_05_unaligned_address,
    step_05_size_rounded_up,
    step_05_order_rights_before_size,
    step_05_order_rounding_before_alignment,
    step_05_order_before_range_and_mapping,
    step_06_destroyed_vmar,
    step_06_order_argument_checks_before_destroyed,
    step_07_out_of_range,
    step_07_order_destroyed_before_out_of_range,
    step_08_fully_unmapped,
    step_08_gap_between_mappings,
    step_08_range_past_mapping,
    step_08_hole_in_sub_vmar,
    step_08_nested_fully_mapped,
    step_08_order_out_of_range_before_gap,
    step_09_vmo_handle_lacked_write,
    step_09_vmar_lacked_write_allocated_read_only,
    step_09_vmar_handle_lacked_write,
    step_09_read_only_by_choice_ok,
    step_09_protected_read_only_ok,
    step_09_order_gap_before_not_writable,
    step_10_contiguous_not_supported,
    step_10_physical_not_supported,
    step_10_pinned_page_in_range,
    step_10_pinned_page_outside_range_ok,
    step_10_unpinned_ok,
    step_10_order_not_writable_before_not_supported,
    step_10_order_not_supported_before_pinned,
    step_10_order_gap_before_not_supported,
    step_11_failed_call_changes_nothing,
}
