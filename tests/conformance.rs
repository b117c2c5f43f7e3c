//! A conformance suite ported from Zircon's core tests: `zircon/system/utest/core/vmar/vmar.cc`,
//! `core/vmo/vmo.cc` and `core/object-info/`, plus the rules of the kernel sources they exercise
//! (`zircon/kernel/lib/syscalls/{vmar,object,handle_ops}.cc`,
//! `zircon/kernel/object/vm_address_region_dispatcher.cc`, `zircon/kernel/vm/vm_address_region.cc`).
//!
//! Every test is named after the Zircon test (or kernel function) it comes from, says so in its doc
//! comment, and runs on both page-table formats. Where the Zircon test touches memory (through a
//! pointer, `zx_process_read_memory` or `probe_for_read/write`), the port does the same through a
//! simulated CPU walking the real page tables: a Zircon `ZX_ERR_NOT_FOUND` from
//! `zx_process_read_memory` is a `FaultError::NotMapped` here, a failed probe for write of a
//! read-only mapping a `FaultError::AccessDenied`.
//!
//! The cases that need something the crate does not provide (resizable VMOs, children, cache
//! policies, names, properties, `ZX_VM_ALIGN_*`, `ZX_VM_OFFSET_IS_UPPER_LIMIT`,
//! `ZX_VMAR_OP_COMMIT`/`MAP_RANGE`, threads, processes as objects) are left out; `docs/zircon.md`
//! lists the calls and where the crate follows older or newer Zircon.
//!
//! Statuses are Zircon's; where Zircon changed over time, the test says which version it follows.

mod common;

use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::object::KernelObject;
use zx_vm::sim::{SimConfig, SimCpu, SimMachine};
use zx_vm::syscall::*;
use zx_vm::vmar::FaultError;
use zx_vm::{Platform, Process, Vmo};

const P: u64 = PAGE_SIZE;

/// Zircon's values for what the get_info tests read, from `zircon/syscalls/object.h` and
/// `zircon/types.h`, kept apart from the crate's own constants (which `tests/abi_table.rs` checks).
mod zircon {
    /// `ZX_INFO_HANDLE_BASIC`: one `zx_info_handle_basic_t`.
    pub const ZX_INFO_HANDLE_BASIC: u32 = 2;
    /// `ZX_INFO_VMAR`: one `zx_info_vmar_t`.
    pub const ZX_INFO_VMAR: u32 = 7;
    /// `ZX_INFO_VMO_V1` (`__ZX_INFO_TOPIC(23u, 0)`), the topic that was `ZX_INFO_VMO` before topics
    /// carried versions: one `zx_info_vmo_t` in its V1 layout.
    pub const ZX_INFO_VMO_V1: u32 = 23;
    /// `ZX_OBJ_TYPE_VMO`.
    pub const ZX_OBJ_TYPE_VMO: u32 = 3;
    /// `ZX_OBJ_TYPE_VMAR`.
    pub const ZX_OBJ_TYPE_VMAR: u32 = 18;
    /// `ZX_INFO_VMO_TYPE_PAGED`.
    pub const ZX_INFO_VMO_TYPE_PAGED: u32 = 1 << 0;
    /// `ZX_INFO_VMO_VIA_HANDLE`: set when the record describes a VMO reached through a handle.
    pub const ZX_INFO_VMO_VIA_HANDLE: u32 = 1 << 3;
    /// `ZX_INFO_VMO_CONTIGUOUS`.
    pub const ZX_INFO_VMO_CONTIGUOUS: u32 = 1 << 6;
    /// `ZX_CACHE_POLICY_CACHED`.
    pub const ZX_CACHE_POLICY_CACHED: u32 = 0;

    /// `sizeof(zx_info_handle_basic_t)`: koid u64 @0, rights u32 @8, type u32 @12,
    /// related_koid u64 @16, reserved u32 @24, padding1 [u8; 4] @28.
    pub const HANDLE_BASIC_SIZE: usize = 32;
    /// `sizeof(zx_info_vmar_t)` on a 64-bit target: base uintptr_t @0, len size_t @8.
    pub const VMAR_SIZE: usize = 16;
    /// `sizeof(zx_info_vmo_v1_t)` on a 64-bit target: koid u64 @0, name char[32] @8,
    /// size_bytes u64 @40, parent_koid u64 @48, num_children size_t @56, num_mappings size_t @64,
    /// share_count size_t @72, flags u32 @80, padding1 [u8; 4] @84, committed_bytes u64 @88,
    /// handle_rights u32 @96, cache_policy u32 @100.
    pub const VMO_V1_SIZE: usize = 104;
}

/// `zx_object_get_info` into `buffer`: the status, `actual` and `avail` (both `usize::MAX` if the
/// call left them unwritten).
fn get_info(
    p: &Process,
    handle: zx_handle_t,
    topic: u32,
    buffer: &mut [u8],
) -> (zx_status_t, usize, usize) {
    let (mut actual, mut avail) = (usize::MAX, usize::MAX);
    let status = zx_object_get_info(p, handle, topic, buffer, &mut actual, &mut avail);
    (status, actual, avail)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

/// A simulated machine and a process on it, with CPU 0 running in the process's address space.
struct Env {
    format: Format,
    cpu: SimCpu,
    p: Arc<Process>,
    platform: Arc<dyn Platform>,
    root: zx_handle_t,
}

impl Drop for Env {
    fn drop(&mut self) {
        // The CPU holds the address space, which holds the machine.
        self.cpu.switch_to(None);
    }
}

impl Env {
    fn new(format: Format) -> Env {
        let machine = SimMachine::new(SimConfig {
            frames: 8192,
            cpus: 1,
            poison_freed: true,
            ..SimConfig::default()
        });
        let platform: Arc<dyn Platform> = machine.clone();
        let p = Process::new(platform.clone(), format).expect("Process::new");
        let root = p.root_vmar_handle();
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        Env {
            format,
            cpu,
            p,
            platform,
            root,
        }
    }

    /// The root VMAR's base (what `ZX_INFO_VMAR` reports for it).
    fn root_base(&self) -> u64 {
        self.p.aspace().user_range().0
    }

    fn vmo(&self, size: u64) -> zx_handle_t {
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&self.p, size, 0, &mut vmo), ZX_OK);
        vmo
    }

    /// A VMO handle with `ZX_RIGHT_EXECUTE` added, as `zx_vmo_replace_as_executable` gives.
    fn exec_vmo(&self, size: u64) -> zx_handle_t {
        let vmo = self.vmo(size);
        let object = self.p.remove_handle(vmo).expect("vmo").object;
        self.p
            .add_handle(
                object,
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS | ZX_RIGHT_EXECUTE),
            )
            .expect("add_handle")
    }

    fn alloc(
        &self,
        parent: zx_handle_t,
        options: zx_vm_option_t,
        offset: u64,
        size: u64,
    ) -> Result<(zx_handle_t, u64), zx_status_t> {
        let (mut child, mut addr) = (0, 0);
        match zx_vmar_allocate(
            &self.p, parent, options, offset, size, &mut child, &mut addr,
        ) {
            ZX_OK => Ok((child, addr)),
            status => Err(status),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn map(
        &self,
        vmar: zx_handle_t,
        options: zx_vm_option_t,
        vmar_offset: u64,
        vmo: zx_handle_t,
        vmo_offset: u64,
        len: u64,
    ) -> Result<u64, zx_status_t> {
        let mut addr = 0;
        match zx_vmar_map(
            &self.p,
            vmar,
            options,
            vmar_offset,
            vmo,
            vmo_offset,
            len,
            &mut addr,
        ) {
            ZX_OK => Ok(addr),
            status => Err(status),
        }
    }

    fn dup(&self, handle: zx_handle_t, rights: zx_rights_t) -> zx_handle_t {
        let mut out = 0;
        assert_eq!(
            zx_handle_duplicate(&self.p, handle, rights, &mut out),
            ZX_OK
        );
        out
    }

    fn rights(&self, handle: zx_handle_t) -> zx_rights_t {
        self.p.handle(handle).expect("handle").rights.bits()
    }

    fn load(&self, va: u64) -> Result<u64, FaultError> {
        self.cpu.load(va)
    }

    fn store(&self, va: u64, value: u64) -> Result<(), FaultError> {
        self.cpu.store(va, value)
    }

    /// vmar.cc's `check_pages_mapped`: page `i` of `base` can be loaded exactly when bit `i` of
    /// `bitmap` is set (a page that cannot is unmapped: `ZX_ERR_NOT_FOUND` from
    /// `zx_process_read_memory` in Zircon).
    fn check_pages_mapped(&self, base: u64, bitmap: u64, pages: u64) {
        for i in 0..pages {
            let va = base + i * P;
            match self.load(va) {
                Ok(_) => assert!(bitmap & (1 << i) != 0, "page {i} ({va:#x}) is mapped"),
                Err(FaultError::NotMapped) => {
                    assert!(bitmap & (1 << i) == 0, "page {i} ({va:#x}) is not mapped")
                }
                Err(e) => panic!("page {i} ({va:#x}): {e:?}"),
            }
        }
    }
}

/// Runs `test` on a fresh machine and process for each page-table format.
fn each_format(test: impl Fn(&Env)) {
    for format in Format::ALL {
        eprintln!("format: {}", format.name());
        let env = Env::new(format);
        test(&env);
        assert_eq!(env.format, format);
    }
}

const RW: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
const CAN_RW: zx_vm_option_t = ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE;
const RWX_MAP_PERM: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_PERM_EXECUTE;
const RWX_ALLOC_PERM: zx_vm_option_t =
    ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_EXECUTE;

// ---------------------------------------------------------------------------------------------
// vmar.cc
// ---------------------------------------------------------------------------------------------

/// vmar.cc `TEST(Vmar, DestroyTest)`: destroying needs `ZX_RIGHT_OP_CHILDREN`; a destroyed VMAR
/// refuses further allocations with `ZX_ERR_BAD_STATE`.
#[test]
fn vmar_destroy_test() {
    each_format(|env| {
        let (sub, _) = env.alloc(env.root, CAN_RW, 0, 1024 * P).unwrap();
        let dup = env.dup(sub, ZX_DEFAULT_VMAR_RIGHTS & !ZX_RIGHT_OP_CHILDREN);
        assert_eq!(zx_vmar_destroy(&env.p, dup), ZX_ERR_ACCESS_DENIED);
        assert_eq!(zx_handle_close(&env.p, dup), ZX_OK);
        assert_eq!(zx_vmar_destroy(&env.p, sub), ZX_OK);
        assert_eq!(env.alloc(sub, CAN_RW, 0, 10 * P), Err(ZX_ERR_BAD_STATE));
        assert_eq!(zx_handle_close(&env.p, sub), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, BasicAllocateTest)`.
#[test]
fn vmar_basic_allocate_test() {
    each_format(|env| {
        let (region1, addr1) = env.alloc(env.root, CAN_RW, 0, 10 * P).unwrap();
        let (region2, addr2) = env.alloc(region1, CAN_RW, 0, P).unwrap();
        assert!(addr2 >= addr1);
        assert!(addr2 + P <= addr1 + 10 * P);
        assert_eq!(zx_handle_close(&env.p, region1), ZX_OK);
        assert_eq!(zx_handle_close(&env.p, region2), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, MapInCompactTest)`: `ZX_VM_COMPACT` is accepted; mappings land inside.
#[test]
fn vmar_map_in_compact_test() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let (region, base) = env
            .alloc(env.root, CAN_RW | ZX_VM_COMPACT, 0, 10 * P)
            .unwrap();
        for _ in 0..2 {
            let addr = env.map(region, RW, 0, vmo, 0, P).unwrap();
            assert!(addr >= base && addr + P <= base + 10 * P);
        }
    });
}

/// vmar.cc `TEST(Vmar, AllocateOobTest)`: a specific allocation that does not fit is
/// `ZX_ERR_INVALID_ARGS`.
#[test]
fn vmar_allocate_oob_test() {
    each_format(|env| {
        let size = 10 * P;
        let (region1, _) = env
            .alloc(env.root, CAN_RW | ZX_VM_CAN_MAP_SPECIFIC, 0, size)
            .unwrap();
        assert_eq!(
            env.alloc(region1, CAN_RW | ZX_VM_SPECIFIC, size, P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.alloc(region1, CAN_RW | ZX_VM_SPECIFIC, size - P, 2 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
    });
}

/// vmar.cc `TEST(Vmar, AllocateUnsatisfiableTest)`: a child larger than its parent is
/// `ZX_ERR_INVALID_ARGS` (vm_address_region.cc `CreateSubVmarInner`: `size > size_ - offset`);
/// one that would fit but finds no room is `ZX_ERR_NO_RESOURCES`.
///
/// Divergence (1): the crate answered `ZX_ERR_NO_RESOURCES` for the child larger than its parent.
#[test]
fn vmar_allocate_unsatisfiable_test() {
    each_format(|env| {
        let size = 10 * P;
        let (region1, addr1) = env
            .alloc(env.root, CAN_RW | ZX_VM_CAN_MAP_SPECIFIC, 0, size)
            .unwrap();
        assert_eq!(
            env.alloc(region1, CAN_RW, 0, size + P),
            Err(ZX_ERR_INVALID_ARGS),
            "too large to fit in the region"
        );
        let (_, addr2) = env.alloc(region1, CAN_RW, 0, size).unwrap();
        assert_eq!(addr2, addr1);
        assert_eq!(
            env.alloc(region1, CAN_RW, 0, P),
            Err(ZX_ERR_NO_RESOURCES),
            "a page inside the full region"
        );
    });
}

/// vmar.cc `TEST(Vmar, DestroyedVmarTest)`: destroying a VMAR destroys its children, unmaps
/// their mappings (a load through them faults), keeps the handles valid, and every operation on
/// either VMAR is then `ZX_ERR_BAD_STATE`; the parent still works.
#[test]
fn vmar_destroyed_vmar_test() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let (r0, _) = env.alloc(env.root, CAN_RW, 0, 10 * P).unwrap();
        let m0 = env.map(r0, RW, 0, vmo, 0, P).unwrap();
        let (r1, _) = env.alloc(r0, CAN_RW, 0, P).unwrap();
        let m1 = env.map(r1, RW, 0, vmo, 0, P).unwrap();
        env.store(m0, 5).unwrap();
        assert_eq!(env.load(m1), Ok(5));

        assert_eq!(zx_vmar_destroy(&env.p, r0), ZX_OK);
        for (region, addr) in [(r0, m0), (r1, m1)] {
            assert!(env.p.handle(region).is_ok(), "the handle stays valid");
            assert_eq!(env.load(addr), Err(FaultError::NotMapped));
            assert_eq!(zx_vmar_destroy(&env.p, region), ZX_ERR_BAD_STATE);
            assert_eq!(env.alloc(region, CAN_RW, 0, P), Err(ZX_ERR_BAD_STATE));
            assert_eq!(zx_vmar_unmap(&env.p, region, addr, P), ZX_ERR_BAD_STATE);
            assert_eq!(
                zx_vmar_protect(&env.p, region, ZX_VM_PERM_READ, addr, P),
                ZX_ERR_BAD_STATE
            );
            assert_eq!(
                env.map(region, ZX_VM_PERM_READ, 0, vmo, 0, P),
                Err(ZX_ERR_BAD_STATE)
            );
        }
        assert!(env.alloc(env.root, CAN_RW, 0, P).is_ok());
    });
}

/// vmar.cc `TEST(Vmar, MapOverDestroyedTest)`: once a sub-VMAR is destroyed, its range can be
/// mapped again, and a load sees the new VMO, not the old one.
#[test]
fn vmar_map_over_destroyed_test() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let vmo2 = env.vmo(P);
        let (r0, base0) = env
            .alloc(env.root, CAN_RW | ZX_VM_CAN_MAP_SPECIFIC, 0, 10 * P)
            .unwrap();
        let (r1, _) = env.alloc(r0, CAN_RW, 0, P).unwrap();
        let addr = env.map(r1, RW, 0, vmo, 0, P).unwrap();
        assert_eq!(zx_vmo_write(&env.p, vmo, &[5], 0), ZX_OK);
        assert_eq!(env.load(addr), Ok(5));

        assert_eq!(zx_vmar_destroy(&env.p, r1), ZX_OK);
        assert_eq!(env.load(addr), Err(FaultError::NotMapped));

        let new_addr = env
            .map(r0, RW | ZX_VM_SPECIFIC, addr - base0, vmo2, 0, P)
            .unwrap();
        assert_eq!(new_addr, addr);
        assert_eq!(env.load(addr), Ok(0));
    });
}

/// vmar.cc `TEST(Vmar, OvermappingTest)`: a specific map or allocation over a mapping or a
/// sub-VMAR is `ZX_ERR_ALREADY_EXISTS` (newer Zircon; Zircon of 2017-2018 answered
/// `ZX_ERR_NO_MEMORY`).
#[test]
fn vmar_overmapping_test() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let vmo2 = env.vmo(4 * P);
        let (r0, base0) = env
            .alloc(env.root, CAN_RW | ZX_VM_CAN_MAP_SPECIFIC, 0, 10 * P)
            .unwrap();
        let m0 = env.map(r0, RW | ZX_VM_SPECIFIC, P, vmo, 0, 2 * P).unwrap();
        let off = m0 - base0;
        for len in [2 * P, P, 4 * P] {
            assert_eq!(
                env.map(r0, RW | ZX_VM_SPECIFIC, off, vmo2, 0, len),
                Err(ZX_ERR_ALREADY_EXISTS),
                "over a mapping, {len:#x} bytes"
            );
        }
        assert_eq!(
            env.alloc(r0, CAN_RW | ZX_VM_SPECIFIC, off, P),
            Err(ZX_ERR_ALREADY_EXISTS)
        );
        assert_eq!(zx_vmar_unmap(&env.p, r0, m0, 2 * P), ZX_OK);

        let (_, r1_addr) = env.alloc(r0, CAN_RW | ZX_VM_SPECIFIC, P, 2 * P).unwrap();
        let off = r1_addr - base0;
        for len in [2 * P, P, 4 * P] {
            assert_eq!(
                env.map(r0, RW | ZX_VM_SPECIFIC, off, vmo2, 0, len),
                Err(ZX_ERR_ALREADY_EXISTS),
                "over a region, {len:#x} bytes"
            );
        }
        assert_eq!(
            env.alloc(r0, CAN_RW | ZX_VM_SPECIFIC, off, P),
            Err(ZX_ERR_ALREADY_EXISTS)
        );
    });
}

/// vmar.cc `TEST(Vmar, InvalidArgsTest)`, the cases that apply (those for
/// `ZX_VM_OFFSET_IS_UPPER_LIMIT` keep only their `ZX_ERR_INVALID_ARGS` rejections; the bad
/// out-pointer cases of older versions cannot be expressed in Rust). The two cases the crate
/// answered differently are their own tests:
/// [`vmar_invalid_args_test_non_page_aligned_allocate_size`] and
/// [`vmar_invalid_args_test_map_size_rounds_up_to_zero`].
#[test]
fn vmar_invalid_args_test() {
    each_format(|env| {
        let p = &*env.p;
        let vmar = env.root;
        let vmo = env.vmo(4 * P);

        // Bad handles.
        assert_eq!(zx_vmar_destroy(p, vmo), ZX_ERR_WRONG_TYPE);
        assert_eq!(env.alloc(vmo, CAN_RW, 0, 10 * P), Err(ZX_ERR_WRONG_TYPE));
        assert_eq!(env.map(vmo, RW, 0, vmo, 0, 4 * P), Err(ZX_ERR_WRONG_TYPE));
        assert_eq!(env.map(vmar, RW, 0, vmar, 0, 4 * P), Err(ZX_ERR_WRONG_TYPE));
        assert_eq!(zx_vmar_unmap(p, vmo, 0, 0), ZX_ERR_WRONG_TYPE);
        assert_eq!(
            zx_vmar_protect(p, vmo, ZX_VM_PERM_READ, 0, 0),
            ZX_ERR_WRONG_TYPE
        );

        // A non-zero offset without ZX_VM_SPECIFIC.
        assert_eq!(env.alloc(vmar, CAN_RW, P, 10 * P), Err(ZX_ERR_INVALID_ARGS));
        assert_eq!(
            env.map(vmar, RW, P, vmo, 0, 4 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        // SPECIFIC (or SPECIFIC_OVERWRITE) with OFFSET_IS_UPPER_LIMIT.
        let upper = ZX_VM_OFFSET_IS_UPPER_LIMIT;
        assert_eq!(
            env.alloc(vmar, CAN_RW | ZX_VM_SPECIFIC | upper, P, 10 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.map(vmar, RW | ZX_VM_SPECIFIC | upper, P, vmo, 0, 4 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.alloc(vmar, CAN_RW | ZX_VM_SPECIFIC_OVERWRITE | upper, P, 10 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.map(
                vmar,
                RW | ZX_VM_SPECIFIC_OVERWRITE | upper,
                P,
                vmo,
                0,
                4 * P
            ),
            Err(ZX_ERR_INVALID_ARGS)
        );
        // Allocate with ZX_VM_PERM_READ.
        assert_eq!(
            env.alloc(vmar, ZX_VM_CAN_MAP_READ | ZX_VM_PERM_READ, P, 10 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        // MAP_RANGE with SPECIFIC_OVERWRITE.
        assert_eq!(
            env.map(
                vmar,
                ZX_VM_PERM_READ | ZX_VM_SPECIFIC_OVERWRITE | ZX_VM_MAP_RANGE,
                P,
                vmo,
                0,
                4 * P
            ),
            Err(ZX_ERR_INVALID_ARGS)
        );

        // Non-page-aligned arguments.
        assert_eq!(
            env.alloc(vmar, CAN_RW | ZX_VM_CAN_MAP_SPECIFIC, P - 1, P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        for map_range in [0, ZX_VM_MAP_RANGE] {
            let specific = RW | ZX_VM_SPECIFIC | map_range;
            assert_eq!(
                env.map(vmar, specific, P - 1, vmo, 0, 4 * P),
                Err(ZX_ERR_INVALID_ARGS),
                "specific, misaligned vmar offset"
            );
            assert_eq!(
                env.map(vmar, specific, P, vmo, P - 1, 3 * P),
                Err(ZX_ERR_INVALID_ARGS),
                "specific, misaligned vmo offset"
            );
            assert_eq!(
                env.map(vmar, RW | map_range, 0, vmo, P - 1, 3 * P),
                Err(ZX_ERR_INVALID_ARGS),
                "non-specific, misaligned vmo offset"
            );
        }
        let addr = env.map(vmar, RW, 0, vmo, 0, 4 * P).unwrap();
        assert_eq!(zx_vmar_unmap(p, vmar, addr + 1, P), ZX_ERR_INVALID_ARGS);
        assert_eq!(
            zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, addr + 1, P),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(zx_vmar_unmap(p, vmar, addr, 4 * P), ZX_OK);

        // An overflowing vmo_offset (newer Zircon: ZX_ERR_OUT_OF_RANGE; older: INVALID_ARGS).
        assert_eq!(
            env.map(vmar, RW, 0, vmo, 0u64.wrapping_sub(P), P),
            Err(ZX_ERR_OUT_OF_RANGE)
        );
        let addr = env
            .map(vmar, RW, 0, vmo, 0u64.wrapping_sub(2 * P), P)
            .unwrap();
        assert_eq!(zx_vmar_unmap(p, vmar, addr, P), ZX_OK);

        // size = 0.
        assert_eq!(env.alloc(vmar, CAN_RW, 0, 0), Err(ZX_ERR_INVALID_ARGS));
        assert_eq!(env.map(vmar, RW, 0, vmo, 0, 0), Err(ZX_ERR_INVALID_ARGS));
        let addr = env.map(vmar, RW, 0, vmo, 0, 4 * P).unwrap();
        assert_eq!(zx_vmar_unmap(p, vmar, addr, 0), ZX_ERR_INVALID_ARGS);
        assert_eq!(
            zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, addr, 0),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(zx_vmar_unmap(p, vmar, addr, 4 * P), ZX_OK);

        // A size that rounds up to 0 (the map cases: see the divergence test).
        let bad_size = u64::MAX - P + 2;
        assert_eq!(bad_size.wrapping_add(P - 1) & !(P - 1), 0);
        assert_eq!(
            env.alloc(vmar, CAN_RW, 0, bad_size),
            Err(ZX_ERR_INVALID_ARGS)
        );
        let addr = env
            .map(vmar, RW | ZX_VM_SPECIFIC, P, vmo, 0, 4 * P)
            .unwrap();
        for i in [-1i64, 0, 1] {
            let at = addr.wrapping_add_signed(i * P as i64);
            assert_eq!(
                zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, at, bad_size),
                ZX_ERR_INVALID_ARGS
            );
            assert_eq!(zx_vmar_unmap(p, vmar, at, bad_size), ZX_ERR_INVALID_ARGS);
        }
        assert_eq!(zx_vmar_unmap(p, vmar, addr, 4 * P), ZX_OK);

        // Options with invalid bits set.
        assert_eq!(
            env.alloc(vmar, ZX_VM_PERM_READ | CAN_RW, 0, 4 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.alloc(vmar, ZX_VM_CAN_MAP_READ | (1 << 31), 0, 4 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.map(vmar, RW | ZX_VM_CAN_MAP_EXECUTE, 0, vmo, 0, 4 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.map(vmar, RW | (1 << 31), 0, vmo, 0, 4 * P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        let addr = env.map(vmar, RW, 0, vmo, 0, 4 * P).unwrap();
        assert_eq!(
            zx_vmar_protect(p, vmar, ZX_VM_PERM_READ | ZX_VM_CAN_MAP_WRITE, addr, 4 * P),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(
            zx_vmar_protect(p, vmar, ZX_VM_PERM_READ | (1 << 31), addr, 4 * P),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(zx_vmar_unmap(p, vmar, addr, 4 * P), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, InvalidArgsTest)`, "Non-page-aligned arguments": `zx_vmar_allocate` of a
/// size that is not a whole number of pages is `ZX_ERR_INVALID_ARGS` (vm_address_region.cc
/// `CreateSubVmar`: `!IS_PAGE_ALIGNED(size)`), and nothing is allocated.
///
/// Divergence (3): the crate rounded the size up to a page.
#[test]
fn vmar_invalid_args_test_non_page_aligned_allocate_size() {
    each_format(|env| {
        let (region, base) = env
            .alloc(env.root, CAN_RW | ZX_VM_CAN_MAP_SPECIFIC, 0, 4 * P)
            .unwrap();
        assert_eq!(
            env.alloc(region, CAN_RW, 0, P - 1),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.alloc(region, CAN_RW, 0, P + 1),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(
            env.alloc(region, CAN_RW | ZX_VM_SPECIFIC, 0, P - 1),
            Err(ZX_ERR_INVALID_ARGS)
        );
        // Nothing was allocated: the whole region is still free.
        assert_eq!(env.alloc(region, CAN_RW, 0, 4 * P).map(|r| r.1), Ok(base));
    });
}

/// vmar.cc `TEST(Vmar, InvalidArgsTest)`, "size rounds up to 0": a `zx_vmar_map` length that
/// rounds up past `u64::MAX` is `ZX_ERR_OUT_OF_RANGE` (vm_address_region.cc `CreateVmMapping`:
/// "Make sure that rounding up the page size did not overflow"), with and without
/// `ZX_VM_MAP_RANGE`; a length of 0 stays `ZX_ERR_INVALID_ARGS`.
///
/// Divergence (4): the crate answered `ZX_ERR_INVALID_ARGS` for the length that wraps.
#[test]
fn vmar_invalid_args_test_map_size_rounds_up_to_zero() {
    each_format(|env| {
        let vmo = env.vmo(4 * P);
        let bad_size = u64::MAX - P + 2;
        assert_eq!(
            env.map(env.root, RW, 0, vmo, 0, bad_size),
            Err(ZX_ERR_OUT_OF_RANGE)
        );
        assert_eq!(
            env.map(
                env.root,
                ZX_VM_PERM_READ | ZX_VM_MAP_RANGE,
                0,
                vmo,
                0,
                bad_size
            ),
            Err(ZX_ERR_OUT_OF_RANGE)
        );
        assert_eq!(
            env.map(env.root, RW, 0, vmo, 0, u64::MAX),
            Err(ZX_ERR_OUT_OF_RANGE)
        );
        assert_eq!(
            env.map(env.root, RW, 0, vmo, 0, 0),
            Err(ZX_ERR_INVALID_ARGS)
        );
    });
}

/// vm_address_region.cc `CreateSubVmarInner` (`size > size_ - offset` is
/// `ZX_ERR_INVALID_ARGS`), as vmar.cc `TEST(Vmar, MapInUpperLimitTest)` checks it ("A size larger
/// than the parent region should fail"): a `zx_vmar_map` longer than the VMAR is
/// `ZX_ERR_INVALID_ARGS`, while one that fits but finds no room is `ZX_ERR_NO_RESOURCES`.
///
/// Divergence (2): the crate answered `ZX_ERR_NO_RESOURCES` for the map longer than the VMAR.
#[test]
fn vmar_map_in_upper_limit_test_larger_than_region() {
    each_format(|env| {
        let vmo = env.vmo(16 * P);
        let (region, _) = env.alloc(env.root, CAN_RW, 0, 10 * P).unwrap();
        assert_eq!(
            env.map(region, RW, 0, vmo, 0, 11 * P),
            Err(ZX_ERR_INVALID_ARGS),
            "longer than the VMAR"
        );
        env.map(region, RW, 0, vmo, 0, 6 * P).unwrap();
        assert_eq!(
            env.map(region, RW, 0, vmo, 0, 6 * P),
            Err(ZX_ERR_NO_RESOURCES),
            "fits the VMAR, but not the room left"
        );
    });
}

/// vmar.cc `TEST(Vmar, UnalignedLenTest)`: protect and unmap round their length up; after the
/// unmap, the last page faults.
#[test]
fn vmar_unaligned_len_test() {
    each_format(|env| {
        let vmo = env.vmo(4 * P);
        let addr = env
            .map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, 4 * P)
            .unwrap();
        assert_eq!(
            zx_vmar_protect(&env.p, env.root, RW, addr, 4 * P - 1),
            ZX_OK
        );
        assert_eq!(
            env.store(addr + 3 * P, 1),
            Ok(()),
            "the protect reached the last page"
        );
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, 4 * P - 1), ZX_OK);
        assert_eq!(env.load(addr + 3 * P), Err(FaultError::NotMapped));
    });
}

/// vmar.cc `TEST(Vmar, UnalignedLenMapTest)`: a map rounds its length up, with and without
/// `ZX_VM_MAP_RANGE`; the last page is reachable, and not after the unmap.
#[test]
fn vmar_unaligned_len_map_test() {
    each_format(|env| {
        let vmo = env.vmo(4 * P);
        for map_range in [0, ZX_VM_MAP_RANGE] {
            let addr = env
                .map(env.root, ZX_VM_PERM_READ | map_range, 0, vmo, 0, 4 * P - 1)
                .unwrap();
            assert_eq!(env.load(addr + 3 * P), Ok(0));
            assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, 4 * P - 1), ZX_OK);
            assert_eq!(env.load(addr + 3 * P), Err(FaultError::NotMapped));
        }
    });
}

/// vmar.cc `TEST(Vmar, RightsDropTest)`: a VMAR handle with fewer rights can map, protect and
/// allocate only within them.
#[test]
fn vmar_rights_drop_test() {
    each_format(|env| {
        let vmo = env.exec_vmo(P);
        let cases = [
            (ZX_RIGHT_READ, ZX_VM_PERM_READ),
            (ZX_RIGHT_READ | ZX_RIGHT_WRITE, RW),
            (
                ZX_RIGHT_READ | ZX_RIGHT_EXECUTE,
                ZX_VM_PERM_READ | ZX_VM_PERM_EXECUTE,
            ),
        ];
        for (right, perm) in cases {
            let h = env.dup(env.root, right);
            assert_eq!(
                env.map(h, RWX_MAP_PERM, 0, vmo, 0, P),
                Err(ZX_ERR_ACCESS_DENIED)
            );
            let addr = env.map(h, perm, 0, vmo, 0, P).unwrap();
            assert_eq!(
                zx_vmar_protect(&env.p, h, RWX_MAP_PERM, addr, P),
                ZX_ERR_ACCESS_DENIED
            );
            let store = env.store(addr, 1);
            if perm & ZX_VM_PERM_WRITE != 0 {
                assert_eq!(store, Ok(()));
            } else {
                assert_eq!(store, Err(FaultError::AccessDenied));
            }
            assert_eq!(zx_vmar_unmap(&env.p, h, addr, P), ZX_OK);
            assert_eq!(
                env.alloc(h, RWX_ALLOC_PERM, 0, 10 * P),
                Err(ZX_ERR_ACCESS_DENIED)
            );
            assert_eq!(zx_handle_close(&env.p, h), ZX_OK);
        }
    });
}

/// vmar.cc `TEST(Vmar, ProtectTest)`: protect cannot raise a mapping's permissions beyond those
/// the VMO handle it was mapped through allowed, even after that handle is closed.
#[test]
fn vmar_protect_test() {
    each_format(|env| {
        let vmo = env.exec_vmo(P);
        let cases = [
            (ZX_RIGHT_READ, ZX_VM_PERM_READ),
            (ZX_RIGHT_READ | ZX_RIGHT_WRITE, RW),
            (
                ZX_RIGHT_READ | ZX_RIGHT_EXECUTE,
                ZX_VM_PERM_READ | ZX_VM_PERM_EXECUTE,
            ),
        ];
        for (right, perm) in cases {
            let h = env.dup(vmo, right | ZX_RIGHT_MAP);
            assert_eq!(
                env.map(env.root, RWX_MAP_PERM, 0, h, 0, P),
                Err(ZX_ERR_ACCESS_DENIED)
            );
            let addr = env.map(env.root, perm, 0, h, 0, P).unwrap();
            assert_eq!(
                zx_vmar_protect(&env.p, env.root, RWX_MAP_PERM, addr, P),
                ZX_ERR_ACCESS_DENIED
            );
            assert_eq!(zx_handle_close(&env.p, h), ZX_OK);
            assert_eq!(
                zx_vmar_protect(&env.p, env.root, RWX_MAP_PERM, addr, P),
                ZX_ERR_ACCESS_DENIED
            );
            if perm & ZX_VM_PERM_WRITE == 0 {
                assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
            }
            assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, P), ZX_OK);
        }
    });
}

/// vmar.cc `TEST(Vmar, ProtectSubregionTest)`, the cases both older and newer Zircon agree on:
/// the parent VMAR can protect away the write permission of a mapping in a child VMAR, and the
/// child can give it back.
///
/// Newer Zircon also refuses the parent giving it back (`ZX_ERR_ACCESS_DENIED`: a protect through
/// a parent may only reduce a child mapping's permissions) and a parent handle without
/// `ZX_RIGHT_OP_CHILDREN` reaching into the child at all (`ZX_ERR_INVALID_ARGS`); the crate keeps
/// the older rule, see [`vmar_protect_subregion_test_older_rule`].
#[test]
fn vmar_protect_subregion_test() {
    each_format(|env| {
        let (vmar, addr) = env.alloc(env.root, CAN_RW, 0, P).unwrap();
        let (child, child_addr) = env.alloc(vmar, CAN_RW, 0, P).unwrap();
        let vmo = env.vmo(P);
        let map_addr = env.map(child, RW, 0, vmo, 0, P).unwrap();
        assert_eq!(addr, child_addr);
        assert_eq!(addr, map_addr);
        assert_eq!(env.store(addr, 1), Ok(()));

        assert_eq!(
            zx_vmar_protect(&env.p, vmar, ZX_VM_PERM_READ, addr, P),
            ZX_OK
        );
        assert_eq!(env.store(addr, 2), Err(FaultError::AccessDenied));
        assert_eq!(env.load(addr), Ok(1));

        assert_eq!(zx_vmar_protect(&env.p, child, RW, child_addr, P), ZX_OK);
        assert_eq!(env.store(addr, 3), Ok(()));
        assert_eq!(zx_vmar_destroy(&env.p, vmar), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, ProtectSubregionTest)` and `TEST(Vmar, UnmapOpChildren)`, with the older
/// rule this crate keeps on purpose (docs/zircon.md): protect and unmap through a VMAR handle reach
/// mappings and sub-VMARs in nested child VMARs whether or not the handle carries
/// `ZX_RIGHT_OP_CHILDREN`, and a protect through the parent may give back a permission the
/// mapping's handles allowed. Newer Zircon answers `ZX_ERR_INVALID_ARGS` without
/// `ZX_RIGHT_OP_CHILDREN` (vm_address_region.cc `Protect`, `UnmapInternalLocked`), and
/// `ZX_ERR_ACCESS_DENIED` for the parent raising a child mapping's permissions.
#[test]
fn vmar_protect_subregion_test_older_rule() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let (vmar, addr) = env.alloc(env.root, CAN_RW, 0, P).unwrap();
        let (child, _) = env.alloc(vmar, CAN_RW, 0, P).unwrap();
        assert_eq!(env.map(child, RW, 0, vmo, 0, P), Ok(addr));
        let dup = env.dup(vmar, env.rights(vmar) & !ZX_RIGHT_OP_CHILDREN);

        assert_eq!(
            zx_vmar_protect(&env.p, dup, ZX_VM_PERM_READ, addr, P),
            ZX_OK
        );
        assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
        assert_eq!(zx_vmar_protect(&env.p, vmar, RW, addr, P), ZX_OK);
        assert_eq!(env.store(addr, 1), Ok(()));

        assert_eq!(zx_vmar_unmap(&env.p, dup, addr, P), ZX_OK);
        assert_eq!(env.load(addr), Err(FaultError::NotMapped));
        assert_eq!(
            env.map(child, RW, 0, vmo, 0, P),
            Err(ZX_ERR_BAD_STATE),
            "the child VMAR wholly inside the range was destroyed"
        );
        assert_eq!(zx_vmar_destroy(&env.p, vmar), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, NestedRegionPermsTest)`: a sub-VMAR cannot get, nor map with, permissions
/// its parent lacks, and `ZX_VM_SPECIFIC`/`ZX_VM_SPECIFIC_OVERWRITE` need `ZX_VM_CAN_MAP_SPECIFIC`.
#[test]
fn vmar_nested_region_perms_test() {
    each_format(|env| {
        let vmo = env.exec_vmo(P);
        let cases = [
            (ZX_VM_CAN_MAP_READ, ZX_VM_PERM_READ),
            (ZX_VM_CAN_MAP_WRITE, ZX_VM_PERM_WRITE),
            (ZX_VM_CAN_MAP_EXECUTE, ZX_VM_PERM_EXECUTE),
        ];
        for (excluded_alloc, excluded_map) in cases {
            let (r0, _) = env
                .alloc(env.root, RWX_ALLOC_PERM ^ excluded_alloc, 0, 10 * P)
                .unwrap();
            assert_eq!(
                env.alloc(r0, RWX_ALLOC_PERM, 0, P),
                Err(ZX_ERR_ACCESS_DENIED)
            );
            assert_eq!(
                env.map(r0, RWX_MAP_PERM, 0, vmo, 0, P),
                Err(ZX_ERR_ACCESS_DENIED)
            );
            if excluded_map != ZX_VM_PERM_READ {
                let addr = env
                    .map(r0, RWX_MAP_PERM ^ excluded_map, 0, vmo, 0, P)
                    .unwrap();
                assert_eq!(zx_vmar_unmap(&env.p, r0, addr, P), ZX_OK);
            }
            let (r1, _) = env
                .alloc(r0, RWX_ALLOC_PERM ^ excluded_alloc, 0, P)
                .unwrap();
            assert_eq!(zx_vmar_destroy(&env.p, r1), ZX_OK);
            assert_eq!(zx_handle_close(&env.p, r1), ZX_OK);
            assert_eq!(zx_vmar_destroy(&env.p, r0), ZX_OK);
            assert_eq!(zx_handle_close(&env.p, r0), ZX_OK);
        }

        let (r0, _) = env.alloc(env.root, RWX_ALLOC_PERM, 0, 10 * P).unwrap();
        assert_eq!(
            env.map(r0, ZX_VM_SPECIFIC | ZX_VM_PERM_READ, P, vmo, 0, P),
            Err(ZX_ERR_ACCESS_DENIED)
        );
        assert_eq!(
            env.map(r0, ZX_VM_SPECIFIC_OVERWRITE | ZX_VM_PERM_READ, P, vmo, 0, P),
            Err(ZX_ERR_ACCESS_DENIED)
        );
        assert_eq!(zx_vmar_destroy(&env.p, r0), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, UnmapSplitTest)`: an unmap splits a mapping from the left, the right and
/// the middle; the range can then be mapped again.
#[test]
fn vmar_unmap_split_test() {
    each_format(|env| {
        let p = &*env.p;
        let vmar = env.root;
        let vmo = env.vmo(4 * P);
        let a: Vec<u64> = (0..3)
            .map(|_| env.map(vmar, RW, 0, vmo, 0, 4 * P).unwrap())
            .collect();

        assert_eq!(zx_vmar_unmap(p, vmar, a[0], 2 * P), ZX_OK);
        env.check_pages_mapped(a[0], 0b1100, 4);
        assert_eq!(zx_vmar_unmap(p, vmar, a[0] + 2 * P, 2 * P), ZX_OK);
        env.check_pages_mapped(a[0], 0b0000, 4);

        assert_eq!(zx_vmar_unmap(p, vmar, a[1] + 2 * P, 2 * P), ZX_OK);
        env.check_pages_mapped(a[1], 0b0011, 4);
        assert_eq!(zx_vmar_unmap(p, vmar, a[1], 2 * P), ZX_OK);
        env.check_pages_mapped(a[1], 0b0000, 4);

        assert_eq!(zx_vmar_unmap(p, vmar, a[2] + P, 2 * P), ZX_OK);
        env.check_pages_mapped(a[2], 0b1001, 4);
        assert_eq!(zx_vmar_unmap(p, vmar, a[2], P), ZX_OK);
        assert_eq!(zx_vmar_unmap(p, vmar, a[2] + 3 * P, P), ZX_OK);
        env.check_pages_mapped(a[2], 0b0000, 4);

        for addr in a {
            let again = env
                .map(
                    vmar,
                    RW | ZX_VM_SPECIFIC,
                    addr - env.root_base(),
                    vmo,
                    0,
                    4 * P,
                )
                .unwrap();
            assert_eq!(again, addr);
            env.check_pages_mapped(addr, 0b1111, 4);
            assert_eq!(zx_vmar_unmap(p, vmar, addr, 4 * P), ZX_OK);
        }
    });
}

/// vmar.cc `TEST(Vmar, UnmapMultipleTest)`: one unmap across several mappings, gaps and whole
/// sub-VMARs (destroying them); a range that cuts a sub-VMAR is `ZX_ERR_INVALID_ARGS` and changes
/// nothing.
#[test]
fn vmar_unmap_multiple_test() {
    each_format(|env| {
        let p = &*env.p;
        let vmar = env.root;
        let m = 4 * P;
        let vmo = env.vmo(m);
        let specific = RW | ZX_VM_SPECIFIC;
        let sub_opts = CAN_RW | ZX_VM_CAN_MAP_SPECIFIC | ZX_VM_SPECIFIC;

        // Two adjacent mappings.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        let a1 = env.map(vmar, specific, m, vmo, 0, m).unwrap();
        assert_eq!(a0 + m, a1);
        assert_eq!(zx_vmar_unmap(p, vmar, a0 + 2 * P, 3 * P), ZX_OK);
        env.check_pages_mapped(a0, 0b1110_0011, 8);
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 2 * P), ZX_OK);
        assert_eq!(zx_vmar_unmap(p, vmar, a1 + P, 3 * P), ZX_OK);
        env.check_pages_mapped(a0, 0, 8);

        // Two mappings with a gap.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        let a1 = env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        assert_eq!(a0 + 2 * m, a1);
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 2 * m + P), ZX_OK);
        env.check_pages_mapped(a0, 0b1110_0000_0000, 12);
        assert_eq!(zx_vmar_unmap(p, vmar, a1 + P, 3 * P), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);

        // Two mappings with a sub-VMAR between: the unmap destroys it.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        let a1 = env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (sub, _) = env.alloc(vmar, sub_opts, m, m).unwrap();
        let a2 = env.map(sub, specific, 0, vmo, 0, P).unwrap();
        assert_eq!(a0 + m, a2);
        env.check_pages_mapped(a0, 0b1111_0001_1111, 12);
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 2 * m + P), ZX_OK);
        env.check_pages_mapped(a0, 0b1110_0000_0000, 12);
        assert_eq!(env.map(sub, specific, P, vmo, 0, P), Err(ZX_ERR_BAD_STATE));
        assert_eq!(zx_vmar_unmap(p, vmar, a1 + P, 3 * P), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);
        assert_eq!(zx_handle_close(p, sub), ZX_OK);

        // Two mappings with a sub-VMAR after: a partial unmap of it fails, a full one works.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        env.map(vmar, specific, m, vmo, 0, m).unwrap();
        let (sub, _) = env.alloc(vmar, sub_opts, 2 * m, m).unwrap();
        let a2 = env.map(sub, specific, 0, vmo, 0, P).unwrap();
        assert_eq!(a0 + 2 * m, a2);
        env.check_pages_mapped(a0, 0b0001_1111_1111, 12);
        assert_eq!(
            zx_vmar_unmap(p, vmar, a0 + P, 3 * m - 2 * P),
            ZX_ERR_INVALID_ARGS
        );
        env.check_pages_mapped(a0, 0b0001_1111_1111, 12);
        assert_eq!(zx_vmar_unmap(p, vmar, a0 + P, 3 * m - P), ZX_OK);
        env.check_pages_mapped(a0, 0b0000_0000_0001, 12);
        assert_eq!(env.map(sub, specific, P, vmo, 0, P), Err(ZX_ERR_BAD_STATE));
        assert_eq!(zx_vmar_unmap(p, vmar, a0, P), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);
        assert_eq!(zx_handle_close(p, sub), ZX_OK);

        // Two mappings with a sub-VMAR before.
        let a0 = env.map(vmar, specific, m, vmo, 0, m).unwrap();
        let a1 = env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (sub, sub_addr) = env.alloc(vmar, sub_opts, 0, m).unwrap();
        env.map(sub, specific, m - P, vmo, 0, P).unwrap();
        assert_eq!(sub_addr + m, a0);
        assert_eq!(sub_addr + 2 * m, a1);
        env.check_pages_mapped(sub_addr, 0b1111_1111_1000, 12);
        assert_eq!(
            zx_vmar_unmap(p, vmar, sub_addr + P, 3 * m - P),
            ZX_ERR_INVALID_ARGS
        );
        env.check_pages_mapped(sub_addr, 0b1111_1111_1000, 12);
        assert_eq!(zx_vmar_unmap(p, vmar, sub_addr, 3 * m), ZX_OK);
        env.check_pages_mapped(sub_addr, 0, 12);
        assert_eq!(env.map(sub, specific, P, vmo, 0, P), Err(ZX_ERR_BAD_STATE));
        assert_eq!(zx_handle_close(p, sub), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, UnmapBaseNotMappedTest)`: an unmap may start or end in a gap.
#[test]
fn vmar_unmap_base_not_mapped_test() {
    each_format(|env| {
        let p = &*env.p;
        let m = 4 * P;
        let vmo = env.vmo(m);
        let addr = env
            .map(env.root, RW | ZX_VM_SPECIFIC, P, vmo, 0, m)
            .unwrap();
        assert_eq!(zx_vmar_unmap(p, env.root, addr - P, m + P), ZX_OK);
        env.check_pages_mapped(addr, 0, 4);

        env.map(env.root, RW | ZX_VM_SPECIFIC, 0, vmo, 0, m)
            .unwrap();
        for gap in [P, 2 * P] {
            let addr = env
                .map(env.root, RW | ZX_VM_SPECIFIC, m + gap, vmo, 0, m)
                .unwrap();
            assert_eq!(zx_vmar_unmap(p, env.root, addr - P, m + P), ZX_OK);
            env.check_pages_mapped(addr, 0, 4);
        }
    });
}

/// vmar.cc `TEST(Vmar, MapSpecificOverwriteTest)`: `ZX_VM_SPECIFIC_OVERWRITE` replaces mappings
/// (whole or in part; loads see the new VMO), but never a sub-VMAR (`ZX_ERR_INVALID_ARGS`).
#[test]
fn vmar_map_specific_overwrite_test() {
    each_format(|env| {
        let p = &*env.p;
        let vmar = env.root;
        let m = 4 * P;
        let vmo = env.vmo(2 * m);
        let vmo2 = env.vmo(2 * m);
        for i in 0..4 {
            assert_eq!(zx_vmo_write(p, vmo, &1u64.to_le_bytes(), i * P), ZX_OK);
            assert_eq!(zx_vmo_write(p, vmo2, &2u64.to_le_bytes(), i * P), ZX_OK);
        }

        let a0 = env.map(vmar, RW | ZX_VM_SPECIFIC, P, vmo, 0, m).unwrap();
        assert_eq!(
            env.map(vmar, RW | ZX_VM_SPECIFIC, P, vmo2, 0, m),
            Err(ZX_ERR_ALREADY_EXISTS)
        );
        let a1 = env
            .map(vmar, RW | ZX_VM_SPECIFIC_OVERWRITE, P, vmo2, 0, m)
            .unwrap();
        assert_eq!(a0, a1);
        for i in 0..4 {
            assert_eq!(env.load(a0 + i * P), Ok(2));
        }

        let mid = env
            .map(vmar, RW | ZX_VM_SPECIFIC_OVERWRITE, 2 * P, vmo, 0, 2 * P)
            .unwrap();
        assert_eq!(mid, a1 + P);
        for i in 0..4 {
            let expected = if i == 0 || i == 3 { 2 } else { 1 };
            assert_eq!(env.load(a1 + i * P), Ok(expected), "page {i}");
        }

        let (sub, sub_addr) = env.alloc(vmar, CAN_RW | ZX_VM_SPECIFIC, P + m, m).unwrap();
        assert_eq!(sub_addr, a1 + m);
        assert_eq!(
            env.map(vmar, RW | ZX_VM_SPECIFIC_OVERWRITE, P, vmo2, 0, 2 * m),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(zx_vmar_unmap(p, vmar, a1, 2 * m), ZX_OK);
        env.check_pages_mapped(a1, 0, 8);
        assert_eq!(zx_handle_close(p, sub), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, ProtectSplitTest)`: a protect splits a mapping from the left, the right and
/// the middle; the protected pages refuse stores, the others still take them.
#[test]
fn vmar_protect_split_test() {
    each_format(|env| {
        let p = &*env.p;
        let vmo = env.vmo(4 * P);
        for (start, pages, read_only) in [(0, 2, 0b0011), (2, 2, 0b1100), (1, 2, 0b0110)] {
            let addr = env.map(env.root, RW, 0, vmo, 0, 4 * P).unwrap();
            assert_eq!(
                zx_vmar_protect(p, env.root, ZX_VM_PERM_READ, addr + start * P, pages * P),
                ZX_OK
            );
            env.check_pages_mapped(addr, 0b1111, 4);
            for i in 0..4u64 {
                let store = env.store(addr + i * P, i);
                if read_only & (1 << i) != 0 {
                    assert_eq!(store, Err(FaultError::AccessDenied), "page {i}");
                } else {
                    assert_eq!(store, Ok(()), "page {i}");
                }
            }
            assert_eq!(zx_vmar_unmap(p, env.root, addr, 4 * P), ZX_OK);
            env.check_pages_mapped(addr, 0, 4);
        }
    });
}

/// vmar.cc `TEST(Vmar, ProtectMultipleTest)`: a protect across several mappings; one mapping that
/// may not get the permissions makes it `ZX_ERR_ACCESS_DENIED` and changes nothing; a gap or an
/// empty sub-VMAR in the range is `ZX_ERR_NOT_FOUND`; a sub-VMAR filled with mappings is protected
/// through.
#[test]
fn vmar_protect_multiple_test() {
    each_format(|env| {
        let p = &*env.p;
        let vmar = env.root;
        let m = 4 * P;
        let vmo = env.vmo(m);
        let vmo2 = env.dup(vmo, ZX_RIGHT_MAP | ZX_RIGHT_READ);
        let specific = RW | ZX_VM_SPECIFIC;
        let range = |a0: u64| (a0 + P, 3 * m - 2 * P);

        // Right of the first mapping, all of the second, left of the third.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        env.map(vmar, specific, m, vmo, 0, m).unwrap();
        env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (at, len) = range(a0);
        assert_eq!(zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, at, len), ZX_OK);
        env.check_pages_mapped(a0, 0b1111_1111_1111, 12);
        for i in 0..12u64 {
            let writable = i == 0 || i == 11;
            assert_eq!(env.store(a0 + i * P, i).is_ok(), writable, "page {i}");
        }
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 3 * m), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);

        // The middle mapping through a VMO handle without ZX_RIGHT_WRITE.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        env.map(vmar, ZX_VM_PERM_READ | ZX_VM_SPECIFIC, m, vmo2, 0, m)
            .unwrap();
        env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (at, len) = range(a0);
        assert_eq!(zx_vmar_protect(p, vmar, RW, at, len), ZX_ERR_ACCESS_DENIED);
        env.check_pages_mapped(a0, 0b1111_1111_1111, 12);
        assert_eq!(env.store(a0 + P, 1), Ok(()), "nothing changed");
        assert_eq!(env.store(a0 + m, 1), Err(FaultError::AccessDenied));
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 3 * m), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);

        // Across a gap.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (at, len) = range(a0);
        assert_eq!(
            zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, at, len),
            ZX_ERR_NOT_FOUND
        );
        env.check_pages_mapped(a0, 0b1111_0000_1111, 12);
        assert_eq!(env.store(a0 + P, 1), Ok(()), "nothing changed");
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 3 * m), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);

        // Across an empty sub-VMAR.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        let (sub, _) = env.alloc(vmar, CAN_RW | ZX_VM_SPECIFIC, m, m).unwrap();
        env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (at, len) = range(a0);
        assert_eq!(
            zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, at, len),
            ZX_ERR_NOT_FOUND
        );
        env.check_pages_mapped(a0, 0b1111_0000_1111, 12);
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 3 * m), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);
        assert_eq!(zx_handle_close(p, sub), ZX_OK);

        // Across a sub-VMAR filled with mappings.
        let a0 = env.map(vmar, specific, 0, vmo, 0, m).unwrap();
        let (sub, _) = env
            .alloc(vmar, CAN_RW | ZX_VM_SPECIFIC | ZX_VM_CAN_MAP_SPECIFIC, m, m)
            .unwrap();
        env.map(sub, specific, 0, vmo, 0, m).unwrap();
        env.map(vmar, specific, 2 * m, vmo, 0, m).unwrap();
        let (at, len) = range(a0);
        assert_eq!(zx_vmar_protect(p, vmar, ZX_VM_PERM_READ, at, len), ZX_OK);
        env.check_pages_mapped(a0, 0b1111_1111_1111, 12);
        assert_eq!(env.store(a0 + m + P, 1), Err(FaultError::AccessDenied));
        assert_eq!(zx_vmar_unmap(p, vmar, a0, 3 * m), ZX_OK);
        env.check_pages_mapped(a0, 0, 12);
        assert_eq!(zx_handle_close(p, sub), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, ProtectOverDemandPagedTest)`: protecting a demand-paged mapping read-only
/// makes every store fault, committed page or not; loads still see what was stored.
#[test]
fn vmar_protect_over_demand_paged_test() {
    each_format(|env| {
        let size = 100 * P;
        let vmo = env.vmo(size);
        let addr = env.map(env.root, RW, 0, vmo, 0, size).unwrap();
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        env.store(addr, 5).unwrap();
        env.store(addr + size / 2, 6).unwrap();
        env.store(addr + size - 8, 7).unwrap();

        assert_eq!(
            zx_vmar_protect(&env.p, env.root, ZX_VM_PERM_READ, addr, size),
            ZX_OK
        );
        for offset in [0, size / 4, size / 2, size - 8] {
            assert_eq!(
                env.store(addr + offset, 1),
                Err(FaultError::AccessDenied),
                "offset {offset:#x}"
            );
        }
        assert_eq!(env.load(addr + size / 2), Ok(6));
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, size), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, ProtectLargeUncomittedTest)`: protect of a large, mostly uncommitted
/// mapping from a start that is not aligned to a larger page-table level.
#[test]
fn vmar_protect_large_uncomitted_test() {
    each_format(|env| {
        let size = 1u64 << 30;
        let vmo = env.vmo(size);
        let addr = env.map(env.root, RW, 0, vmo, 0, size).unwrap();
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        env.store(addr, 5).unwrap();
        env.store(addr + size / 2, 6).unwrap();
        env.store(addr + size - 8, 7).unwrap();

        let base = addr.next_multiple_of(512 * P) + P;
        assert_eq!(
            zx_vmar_protect(&env.p, env.root, ZX_VM_PERM_READ, base, addr + size - base),
            ZX_OK
        );
        assert_eq!(env.store(addr, 1), Ok(()), "still writable");
        for offset in [size / 4, size / 2, size - 8] {
            assert_eq!(
                env.store(addr + offset, 1),
                Err(FaultError::AccessDenied),
                "offset {offset:#x}"
            );
        }
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, size), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, UnmapLargeUncommittedTest)`: unmap of a large, mostly uncommitted mapping
/// from a start that is not aligned to a larger page-table level.
#[test]
fn vmar_unmap_large_uncommitted_test() {
    each_format(|env| {
        let size = 1u64 << 30;
        let vmo = env.vmo(size);
        let addr = env.map(env.root, RW, 0, vmo, 0, size).unwrap();
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        env.store(addr, 5).unwrap();
        env.store(addr + size / 2, 6).unwrap();
        env.store(addr + size - 8, 7).unwrap();

        let base = addr.next_multiple_of(512 * P) + P;
        assert_eq!(
            zx_vmar_unmap(&env.p, env.root, base, addr + size - base),
            ZX_OK
        );
        assert_eq!(env.store(addr, 1), Ok(()), "still mapped");
        for offset in [size / 4, size / 2, size - 8] {
            assert_eq!(
                env.store(addr + offset, 1),
                Err(FaultError::NotMapped),
                "offset {offset:#x}"
            );
        }
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, size), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, RangeOpCommitVmoPages)`, its `ZX_VMAR_OP_DECOMMIT` cases: decommit of
/// part of a mapping and across adjacent mappings (loads then read 0, in every mapping of the
/// page), a range with an unmapped page is `ZX_ERR_BAD_STATE`, a read-only mapping decommits if
/// its handles could have made it writable, and is `ZX_ERR_ACCESS_DENIED` if they could not.
#[test]
fn vmar_range_op_commit_vmo_pages() {
    each_format(|env| {
        let p = &*env.p;
        let size = 5 * P;
        let vmo = env.vmo(size);
        let decommit =
            |vmar, addr, len| zx_vmar_op_range(p, vmar, ZX_VMAR_OP_DECOMMIT, addr, len, 0, 0);
        let (vmar, base) = env
            .alloc(env.root, ZX_VM_CAN_MAP_SPECIFIC | CAN_RW, 0, size)
            .unwrap();
        assert_eq!(
            env.map(vmar, ZX_VM_SPECIFIC | RW, 0, vmo, 0, 2 * P),
            Ok(base)
        );
        env.map(vmar, ZX_VM_SPECIFIC | RW, 2 * P, vmo, 3 * P, P)
            .unwrap();
        env.map(vmar, ZX_VM_SPECIFIC | ZX_VM_PERM_READ, 4 * P, vmo, P, P)
            .unwrap();

        // Part of a mapping.
        env.store(base, 5).unwrap();
        assert_eq!(decommit(vmar, base, P), ZX_OK);
        assert_eq!(env.load(base), Ok(0));
        env.store(base + P, 7).unwrap();
        assert_eq!(decommit(vmar, base + P, P), ZX_OK);
        assert_eq!(env.load(base + P), Ok(0));

        // Across two adjacent mappings; VMO page 1 is also behind the read-only mapping.
        env.store(base + P, 5).unwrap();
        env.store(base + 2 * P, 6).unwrap();
        assert_eq!(env.load(base + 4 * P), Ok(5));
        assert_eq!(decommit(vmar, base + P, 2 * P), ZX_OK);
        assert_eq!(env.load(base + P), Ok(0));
        assert_eq!(env.load(base + 2 * P), Ok(0));
        assert_eq!(env.load(base + 4 * P), Ok(0));

        // A range with an unmapped page.
        assert_eq!(decommit(vmar, base + P, 3 * P), ZX_ERR_BAD_STATE);
        // A read-only mapping whose handles could write.
        assert_eq!(decommit(vmar, base + 4 * P, P), ZX_OK);
        // A read-only mapping through a read-only VMO handle.
        let readonly = env.dup(vmo, ZX_RIGHT_MAP | ZX_RIGHT_READ);
        let ro_addr = env
            .map(env.root, ZX_VM_PERM_READ, 0, readonly, 0, P)
            .unwrap();
        assert_eq!(decommit(env.root, ro_addr, P), ZX_ERR_ACCESS_DENIED);
        assert_eq!(zx_vmar_unmap(p, env.root, ro_addr, P), ZX_OK);
        assert_eq!(zx_handle_close(p, readonly), ZX_OK);

        assert_eq!(zx_vmar_unmap(p, vmar, base, size), ZX_OK);
        assert_eq!(zx_vmar_destroy(p, vmar), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, RangeOpCommitVmoPages2)`: decommit of the second of two non-contiguous
/// mappings touches only it.
#[test]
fn vmar_range_op_commit_vmo_pages2() {
    each_format(|env| {
        let p = &*env.p;
        let vmo = env.vmo(10 * P);
        let (vmar, base) = env
            .alloc(env.root, ZX_VM_CAN_MAP_SPECIFIC | CAN_RW, 0, 10 * P)
            .unwrap();
        let a1 = env
            .map(vmar, ZX_VM_SPECIFIC | RW, 0, vmo, 0, 5 * P)
            .unwrap();
        assert_eq!(a1, base);
        let a2 = env
            .map(vmar, ZX_VM_SPECIFIC | RW, 6 * P, vmo, 5 * P, 4 * P)
            .unwrap();
        for i in 0..4 {
            env.store(a1 + i * P, 1).unwrap();
            env.store(a2 + i * P, 2).unwrap();
        }
        assert_eq!(
            zx_vmar_op_range(p, vmar, ZX_VMAR_OP_DECOMMIT, a2, 4 * P, 0, 0),
            ZX_OK
        );
        for i in 0..4 {
            assert_eq!(env.load(a1 + i * P), Ok(1));
            assert_eq!(env.load(a2 + i * P), Ok(0));
        }
        assert_eq!(zx_vmar_destroy(p, vmar), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, BadRangeOpNestedVmar)`, with the older rule this crate's seed
/// specification keeps on purpose (docs/contract.md check 8, docs/zircon.md): a decommit through
/// a VMAR reaches mappings in nested child VMARs. Newest Zircon answers `ZX_ERR_INVALID_ARGS`
/// (vm_address_region.cc `RangeOp`: commit, decommit and prefetch never act through a sub-VMAR).
#[test]
fn vmar_bad_range_op_nested_vmar_older_rule() {
    each_format(|env| {
        let (inter, _) = env
            .alloc(env.root, ZX_VM_CAN_MAP_SPECIFIC | CAN_RW, 0, 8 * P)
            .unwrap();
        let vmo = env.vmo(P);
        let addr = env.map(inter, ZX_VM_SPECIFIC | RW, P, vmo, 0, P).unwrap();
        env.store(addr, 9).unwrap();
        assert_eq!(
            zx_vmar_op_range(&env.p, env.root, ZX_VMAR_OP_DECOMMIT, addr, P, 0, 0),
            ZX_OK
        );
        assert_eq!(env.load(addr), Ok(0));
        assert_eq!(zx_vmar_destroy(&env.p, inter), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, PartialUnmapAndRead)` and `TEST(Vmar, PartialUnmapAndWrite)`: after
/// unmapping the second page of a mapping, the first still loads and stores, the second faults.
#[test]
fn vmar_partial_unmap_and_read_write() {
    each_format(|env| {
        let vmo = env.vmo(2 * P);
        let addr = env.map(env.root, RW, 0, vmo, 0, 2 * P).unwrap();
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        env.store(addr, 0).unwrap();
        env.store(addr + P, 0).unwrap();
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr + P, P), ZX_OK);

        assert_eq!(env.load(addr), Ok(0));
        assert_eq!(env.load(addr + P - 8), Ok(0));
        assert_eq!(env.store(addr + P - 8, 1), Ok(()));
        assert_eq!(env.load(addr + P), Err(FaultError::NotMapped));
        assert_eq!(env.store(addr + P, 1), Err(FaultError::NotMapped));
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, P), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, PartialUnmapWithVmarOffset)`: a mapping from a VMO offset is reachable up
/// to its last word and not one past it.
#[test]
fn vmar_partial_unmap_with_vmar_offset() {
    each_format(|env| {
        let vmo_size = 10 * P;
        let offset = 0x1000;
        let len = vmo_size - offset;
        let vmo = env.vmo(vmo_size);
        let addr = env.map(env.root, RW, 0, vmo, offset, len).unwrap();
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        for va in (addr..addr + len).step_by(P as usize) {
            env.store(va, 0).unwrap();
            assert_eq!(env.load(va), Ok(0));
        }
        assert_eq!(env.store(addr + len - 8, 1), Ok(()));
        assert_eq!(env.load(addr + len - 8), Ok(1));
        assert_eq!(env.store(addr + len, 1), Err(FaultError::NotMapped));
        assert_eq!(env.load(addr + len), Err(FaultError::NotMapped));
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, len), ZX_OK);
    });
}

/// vmar.cc `TEST(Vmar, MapReadIfXomUnsupported)`: this crate does not offer
/// `ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED` (execute-only mappings are always supported), and refuses
/// it in `zx_vmar_map` and `zx_vmar_protect` with `ZX_ERR_INVALID_ARGS` (docs/zircon.md).
#[test]
fn vmar_map_read_if_xom_unsupported_is_refused() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let xom = ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED;
        assert_eq!(
            env.map(env.root, xom, 0, vmo, 0, P),
            Err(ZX_ERR_INVALID_ARGS)
        );
        let addr = env.map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, P).unwrap();
        assert_eq!(
            zx_vmar_protect(&env.p, env.root, xom, addr, P),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(env.load(addr), Ok(0));
    });
}

// ---------------------------------------------------------------------------------------------
// vmo.cc
// ---------------------------------------------------------------------------------------------

/// vmo.cc `TEST(VmoTestCase, Create)`.
#[test]
fn vmo_test_case_create() {
    each_format(|env| {
        let vmos: Vec<zx_handle_t> = (0..16).map(|i| env.vmo(i * P)).collect();
        for vmo in vmos {
            assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        }
    });
}

/// vmo.cc `TEST(VmoTestCase, ReadWrite)`: a new VMO reads as zero; what is written is what a
/// mapping of it loads.
#[test]
fn vmo_test_case_read_write() {
    each_format(|env| {
        let len = 4 * P;
        let vmo = env.vmo(len);
        let mut buf = vec![0x55u8; len as usize];
        assert_eq!(zx_vmo_read(&env.p, vmo, &mut buf, 0), ZX_OK);
        assert!(buf.iter().all(|&b| b == 0));
        buf.fill(0x99);
        assert_eq!(zx_vmo_write(&env.p, vmo, &buf, 0), ZX_OK);
        let addr = env.map(env.root, RW, 0, vmo, 0, len).unwrap();
        for va in (addr..addr + len).step_by(8) {
            assert_eq!(env.load(va), Ok(0x9999_9999_9999_9999));
        }
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, len), ZX_OK);
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
    });
}

/// vmo.cc `TEST(VmoTestCase, ReadWriteRange)`: reads and writes past the end, and at an offset
/// whose end wraps, are `ZX_ERR_OUT_OF_RANGE`; zero bytes at the end are fine, one past it not.
/// (`ReadWriteBadLen` passes lengths near 2^64, which a Rust slice cannot have; the wrap case
/// here covers the same check.)
#[test]
fn vmo_test_case_read_write_range() {
    each_format(|env| {
        let p = &*env.p;
        let len = 4 * P;
        let vmo = env.vmo(len);
        let mut buf = vec![0u8; 2 * len as usize];
        assert_eq!(zx_vmo_read(p, vmo, &mut buf, 0), ZX_ERR_OUT_OF_RANGE);
        assert_eq!(zx_vmo_read(p, vmo, &mut [], len), ZX_OK);
        assert_eq!(zx_vmo_read(p, vmo, &mut [], len + 1), ZX_ERR_OUT_OF_RANGE);
        assert_eq!(zx_vmo_write(p, vmo, &buf, 0), ZX_ERR_OUT_OF_RANGE);
        assert_eq!(zx_vmo_write(p, vmo, &[], len), ZX_OK);
        assert_eq!(zx_vmo_write(p, vmo, &[], len + 1), ZX_ERR_OUT_OF_RANGE);
        let wrap = u64::MAX - len / 2;
        assert_eq!(
            zx_vmo_read(p, vmo, &mut buf[..len as usize], wrap),
            ZX_ERR_OUT_OF_RANGE
        );
        assert_eq!(
            zx_vmo_write(p, vmo, &buf[..len as usize], wrap),
            ZX_ERR_OUT_OF_RANGE
        );
    });
}

/// vmo.cc `TEST(VmoTestCase, Map)`: a specific map at an offset out of any range is
/// `ZX_ERR_INVALID_ARGS`.
#[test]
fn vmo_test_case_map() {
    each_format(|env| {
        let vmo = env.vmo(4 * P);
        let a = env.map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, P).unwrap();
        let b = env.map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, P).unwrap();
        assert_ne!(a, 0);
        assert_ne!(b, 0);
        assert_eq!(
            env.map(
                env.root,
                ZX_VM_PERM_READ | ZX_VM_SPECIFIC,
                u64::MAX,
                vmo,
                0,
                P
            ),
            Err(ZX_ERR_INVALID_ARGS)
        );
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        for addr in [a, b] {
            assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, P), ZX_OK);
        }
    });
}

/// vmo.cc `TEST(VmoTestCase, ReadOnlyMap)`: a store to a read-only mapping faults.
#[test]
fn vmo_test_case_read_only_map() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let addr = env.map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, P).unwrap();
        assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, P), ZX_OK);
    });
}

/// vmo.cc `TEST(VmoTestCase, NoPermMap)`: a mapping protected to no permissions faults on loads
/// and stores.
#[test]
fn vmo_test_case_no_perm_map() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let addr = env.map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, P).unwrap();
        assert_eq!(env.load(addr), Ok(0));
        assert_eq!(zx_vmar_protect(&env.p, env.root, 0, addr, P), ZX_OK);
        assert_eq!(env.load(addr), Err(FaultError::AccessDenied));
        assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, P), ZX_OK);
    });
}

/// vmo.cc `TEST(VmoTestCase, NoPermProtect)`: a mapping made with no permissions faults; protected
/// to read, it loads but still refuses stores.
#[test]
fn vmo_test_case_no_perm_protect() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let addr = env.map(env.root, 0, 0, vmo, 0, P).unwrap();
        assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
        assert_eq!(env.load(addr), Err(FaultError::AccessDenied));
        assert_eq!(
            zx_vmar_protect(&env.p, env.root, ZX_VM_PERM_READ, addr, P),
            ZX_OK
        );
        assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
        assert_eq!(env.load(addr), Ok(0));
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, P), ZX_OK);
    });
}

/// vmo.cc `TEST(VmoTestCase, NoResize)`: a VMO made without `ZX_VMO_RESIZABLE` refuses
/// `zx_vmo_set_size` with `ZX_ERR_UNAVAILABLE` (its handle has no `ZX_RIGHT_RESIZE`, and newer
/// Zircon answers UNAVAILABLE before looking for it), keeps its size, and maps with
/// `ZX_VM_REQUIRE_NON_RESIZABLE`.
#[test]
fn vmo_test_case_no_resize() {
    each_format(|env| {
        let len = 4 * P;
        let vmo = env.vmo(len);
        assert_eq!(zx_vmo_set_size(&env.p, vmo, len + P), ZX_ERR_UNAVAILABLE);
        let mut size = 0;
        assert_eq!(zx_vmo_get_size(&env.p, vmo, &mut size), ZX_OK);
        assert_eq!(size, len);
        let addr = env
            .map(env.root, RW | ZX_VM_REQUIRE_NON_RESIZABLE, 0, vmo, 0, len)
            .unwrap();
        assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, len), ZX_OK);
    });
}

/// vmo.cc `TEST(VmoTestCase, Resize)` and `ResizeAlign`: a resizable VMO takes sizes up and
/// down, each rounded up to a whole page, and `zx_vmo_get_size` reports them; a mapping with
/// `ZX_VM_REQUIRE_NON_RESIZABLE` is `ZX_ERR_NOT_SUPPORTED`.
#[test]
fn vmo_test_case_resize() {
    each_format(|env| {
        let len = 4 * P;
        let mut vmo = 0;
        assert_eq!(
            zx_vmo_create(&env.p, len, ZX_VMO_RESIZABLE, &mut vmo),
            ZX_OK
        );
        let size_now = || {
            let mut size = 0;
            assert_eq!(zx_vmo_get_size(&env.p, vmo, &mut size), ZX_OK);
            size
        };
        assert_eq!(size_now(), len);
        for (asked, got) in [
            (len + P, len + P),
            (len + 1, len + P),
            (len - 1, len),
            (P, P),
            (0, 0),
            (1, P),
            (10 * P - 1, 10 * P),
        ] {
            assert_eq!(zx_vmo_set_size(&env.p, vmo, asked), ZX_OK, "{asked:#x}");
            assert_eq!(size_now(), got, "{asked:#x}");
        }
        assert_eq!(
            env.map(env.root, RW | ZX_VM_REQUIRE_NON_RESIZABLE, 0, vmo, 0, len),
            Err(ZX_ERR_NOT_SUPPORTED)
        );
    });
}

/// vmo.cc `TEST(VmoTestCase, SizeAlign)`: the size is rounded up to whole pages.
#[test]
fn vmo_test_case_size_align() {
    each_format(|env| {
        for s in (0..4 * P).step_by(7).chain([P - 1, P, P + 1, 4 * P - 1]) {
            let mut vmo = 0;
            assert_eq!(zx_vmo_create(&env.p, s, 0, &mut vmo), ZX_OK);
            let mut size = 0x9999_9999;
            assert_eq!(zx_vmo_get_size(&env.p, vmo, &mut size), ZX_OK);
            assert_eq!(size, s.next_multiple_of(P), "size {s}");
            assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        }
    });
}

/// `(ZX_VM_PERM_* bits, expected status)` for each permission set vmo.cc's `Rights` tries.
type MapCases = [(zx_vm_option_t, zx_status_t); 6];

/// vmo.cc's `RightsTestMapHelper`: maps `len` bytes of `vmo` into the root VMAR with `perms`;
/// expects `expected`; on success checks what loads and stores do, and unmaps.
fn rights_test_map_helper(
    env: &Env,
    vmo: zx_handle_t,
    len: u64,
    perms: zx_vm_option_t,
    expected: zx_status_t,
) {
    let result = env.map(env.root, perms, 0, vmo, 0, len);
    match result {
        Ok(addr) => {
            assert_eq!(expected, ZX_OK, "perms {perms:#x}: mapped");
            let load = env.load(addr);
            if perms & ZX_VM_PERM_READ != 0 {
                assert!(load.is_ok(), "perms {perms:#x}: {load:?}");
            } else {
                assert_eq!(load, Err(FaultError::AccessDenied));
            }
            if perms & ZX_VM_PERM_WRITE == 0 {
                assert_eq!(env.store(addr, 1), Err(FaultError::AccessDenied));
            }
            assert_eq!(zx_vmar_unmap(&env.p, env.root, addr, len), ZX_OK);
        }
        Err(status) => assert_eq!(status, expected, "perms {perms:#x}"),
    }
}

/// vmo.cc `TEST(VmoTestCase, Rights)`: reads and writes need `ZX_RIGHT_READ`/`WRITE` (zero bytes
/// too); mapping needs `ZX_RIGHT_MAP` and a right for each permission; a write-only mapping is
/// `ZX_ERR_INVALID_ARGS`; a handle of the wrong type is `ZX_ERR_WRONG_TYPE` before any rights
/// check. The write-only rows through handles without `ZX_RIGHT_WRITE` are
/// [`vmo_test_case_rights_write_only_mapping`]. (The child-VMO and property parts do not apply.)
#[test]
fn vmo_test_case_rights() {
    each_format(|env| {
        let p = &*env.p;
        let len = 4 * P;
        let vmo = env.vmo(len);
        let expected = ZX_RIGHT_DUPLICATE
            | ZX_RIGHT_TRANSFER
            | ZX_RIGHT_WAIT
            | ZX_RIGHT_READ
            | ZX_RIGHT_WRITE
            | ZX_RIGHT_MAP
            | ZX_RIGHT_GET_PROPERTY
            | ZX_RIGHT_SET_PROPERTY;
        assert_eq!(env.rights(vmo) & expected, expected);

        let mut buf = [0u8; 0];
        assert_eq!(zx_vmo_read(p, vmo, &mut buf, 0), ZX_OK);
        assert_eq!(zx_vmo_write(p, vmo, &buf, 0), ZX_OK);
        for (rights, read, write) in [
            (ZX_RIGHT_READ, ZX_OK, ZX_ERR_ACCESS_DENIED),
            (ZX_RIGHT_WRITE, ZX_ERR_ACCESS_DENIED, ZX_OK),
            (0, ZX_ERR_ACCESS_DENIED, ZX_ERR_ACCESS_DENIED),
        ] {
            let h = env.dup(vmo, rights);
            assert_eq!(zx_vmo_read(p, h, &mut buf, 0), read, "rights {rights:#x}");
            assert_eq!(zx_vmo_write(p, h, &buf, 0), write, "rights {rights:#x}");
            assert_eq!(zx_handle_close(p, h), ZX_OK);
        }

        let vmo = env.exec_vmo(len);
        let r = ZX_VM_PERM_READ;
        let w = ZX_VM_PERM_WRITE;
        let x = ZX_VM_PERM_EXECUTE;
        let denied = ZX_ERR_ACCESS_DENIED;
        let invalid = ZX_ERR_INVALID_ARGS;
        // (handle rights or None for the full handle, [(perms, expected)]).
        let dup = ZX_RIGHT_DUPLICATE;
        let map = ZX_RIGHT_MAP;
        let table: [(Option<zx_rights_t>, MapCases); 5] = [
            (
                None,
                [
                    (0, ZX_OK),
                    (r, ZX_OK),
                    (w, invalid),
                    (r | w, ZX_OK),
                    (r | w | x, ZX_OK),
                    (r | x, ZX_OK),
                ],
            ),
            (
                Some(ZX_RIGHT_READ | ZX_RIGHT_WRITE | ZX_RIGHT_EXECUTE | dup),
                [
                    (0, denied),
                    (r, denied),
                    (w, denied),
                    (r | w, denied),
                    (r | w | x, denied),
                    (r | x, denied),
                ],
            ),
            (
                Some(ZX_RIGHT_WRITE | map | dup),
                [
                    (0, ZX_OK),
                    (r, denied),
                    (w, invalid),
                    (r | w, denied),
                    (r | w | x, denied),
                    (r | x, denied),
                ],
            ),
            (
                Some(ZX_RIGHT_READ | ZX_RIGHT_WRITE | map | dup),
                [
                    (0, ZX_OK),
                    (r, ZX_OK),
                    (w, invalid),
                    (r | w, ZX_OK),
                    (r | w | x, denied),
                    (r | x, denied),
                ],
            ),
            (
                Some(ZX_RIGHT_READ | ZX_RIGHT_WRITE | ZX_RIGHT_EXECUTE | map | dup),
                [
                    (0, ZX_OK),
                    (r, ZX_OK),
                    (w, invalid),
                    (r | w, ZX_OK),
                    (r | w | x, ZX_OK),
                    (r | x, ZX_OK),
                ],
            ),
        ];
        for (rights, cases) in table {
            let h = rights.map_or(vmo, |rights| env.dup(vmo, rights));
            for (perms, expected) in cases {
                rights_test_map_helper(env, h, len, perms, expected);
            }
        }
        // The rows of READ|MAP and READ|EXECUTE|MAP handles without the write-only case.
        for rights in [
            ZX_RIGHT_READ | map | dup,
            ZX_RIGHT_READ | ZX_RIGHT_EXECUTE | map | dup,
        ] {
            let h = env.dup(vmo, rights);
            let can_x = rights & ZX_RIGHT_EXECUTE != 0;
            rights_test_map_helper(env, h, len, 0, ZX_OK);
            rights_test_map_helper(env, h, len, r, ZX_OK);
            rights_test_map_helper(env, h, len, r | w, denied);
            rights_test_map_helper(env, h, len, r | w | x, denied);
            rights_test_map_helper(env, h, len, r | x, if can_x { ZX_OK } else { denied });
        }

        // A handle of the wrong type, with no rights at all.
        let wrong = env.dup(env.root, 0);
        assert_eq!(zx_vmo_read(p, wrong, &mut buf, 0), ZX_ERR_WRONG_TYPE);
    });
}

/// vmo.cc `TEST(VmoTestCase, Rights)`, the write-only rows: `ZX_VM_PERM_WRITE` without
/// `ZX_VM_PERM_READ` is `ZX_ERR_INVALID_ARGS` even through a VMO handle (or a VMAR handle)
/// without `ZX_RIGHT_WRITE`: syscalls/vmar.cc `vmar_map_common` checks the protection
/// (`is_valid_mapping_protection`) right after `ZX_RIGHT_MAP` and before the handles' rights. A
/// handle without `ZX_RIGHT_MAP` is still `ZX_ERR_ACCESS_DENIED` first.
///
/// Divergence (5): the crate checked the rights first and answered `ZX_ERR_ACCESS_DENIED`.
#[test]
fn vmo_test_case_rights_write_only_mapping() {
    each_format(|env| {
        let len = 4 * P;
        let vmo = env.exec_vmo(len);
        let w = ZX_VM_PERM_WRITE;
        for rights in [
            ZX_RIGHT_READ | ZX_RIGHT_MAP | ZX_RIGHT_DUPLICATE,
            ZX_RIGHT_READ | ZX_RIGHT_EXECUTE | ZX_RIGHT_MAP | ZX_RIGHT_DUPLICATE,
            ZX_RIGHT_MAP,
        ] {
            let h = env.dup(vmo, rights);
            assert_eq!(
                env.map(env.root, w, 0, h, 0, len),
                Err(ZX_ERR_INVALID_ARGS),
                "VMO handle rights {rights:#x}"
            );
        }
        let no_map = env.dup(vmo, ZX_RIGHT_READ | ZX_RIGHT_DUPLICATE);
        assert_eq!(
            env.map(env.root, w, 0, no_map, 0, len),
            Err(ZX_ERR_ACCESS_DENIED),
            "ZX_RIGHT_MAP is checked first"
        );
        let read_only_vmar = env.dup(env.root, ZX_RIGHT_READ);
        assert_eq!(
            env.map(read_only_vmar, w, 0, vmo, 0, len),
            Err(ZX_ERR_INVALID_ARGS),
            "through a VMAR handle without ZX_RIGHT_WRITE"
        );
    });
}

/// vmo.cc `TEST(VmoTestCase, Commit)`: commit and decommit of a VMO; decommitting a page that a
/// mapping does not show leaves it alone, decommitting one it shows makes its loads read 0, in
/// every mapping; a mapping past the end of the VMO is allowed.
#[test]
fn vmo_test_case_commit() {
    each_format(|env| {
        let p = &*env.p;
        let size = 16384;
        let vmo = env.vmo(size);
        assert_eq!(
            zx_vmo_op_range(p, vmo, ZX_VMO_OP_COMMIT, 0, size, 0, 0),
            ZX_OK
        );
        assert_eq!(
            zx_vmo_op_range(p, vmo, ZX_VMO_OP_DECOMMIT, 0, size, 0, 0),
            ZX_OK
        );
        assert_eq!(common::committed(p, vmo), 0);
        assert_eq!(
            zx_vmo_op_range(p, vmo, ZX_VMO_OP_COMMIT, 0, size, 0, 0),
            ZX_OK
        );
        assert_eq!(common::committed(p, vmo), size);

        let ptr = env.map(env.root, RW, 0, vmo, 0, size).unwrap();
        let ptr2 = env.map(env.root, RW, 0, vmo, P, size).unwrap();
        let ptr3 = env.map(env.root, RW, 0, vmo, size * 2, size).unwrap();
        env.store(ptr + P, 99).unwrap();
        assert_eq!(env.load(ptr + P), Ok(99));
        assert_eq!(env.load(ptr2), Ok(99));

        assert_eq!(
            zx_vmo_op_range(p, vmo, ZX_VMO_OP_DECOMMIT, 0, P, 0, 0),
            ZX_OK
        );
        assert_eq!(env.load(ptr + P), Ok(99));
        assert_eq!(env.load(ptr2), Ok(99));
        assert_eq!(
            zx_vmo_op_range(p, vmo, ZX_VMO_OP_DECOMMIT, P, P, 0, 0),
            ZX_OK
        );
        assert_eq!(env.load(ptr + P), Ok(0));
        assert_eq!(env.load(ptr2), Ok(0));
        assert_eq!(env.load(ptr3), Err(FaultError::OutOfRange));

        for addr in [ptr, ptr2, ptr3] {
            assert_eq!(zx_vmar_unmap(p, env.root, addr, size), ZX_OK);
        }
        assert_eq!(zx_handle_close(p, vmo), ZX_OK);
    });
}

/// vmo.cc `TEST(VmoTestCase, ZeroPage)`: several mappings of one VMO stay coherent through read
/// faults, write faults, `zx_vmo_write` and commit.
#[test]
fn vmo_test_case_zero_page() {
    each_format(|env| {
        let p = &*env.p;
        let size = 4 * P;
        let vmo = env.vmo(size);
        let ptr: Vec<u64> = (0..3)
            .map(|_| env.map(env.root, RW, 0, vmo, 0, size).unwrap())
            .collect();
        assert_eq!(env.load(ptr[0]), Ok(0));
        env.store(ptr[1], 99).unwrap();
        assert_eq!(env.load(ptr[1]), Ok(99));
        assert_eq!(env.load(ptr[2]), Ok(99));
        assert_eq!(env.load(ptr[0]), Ok(99));

        assert_eq!(env.load(ptr[0] + P), Ok(0));
        assert_eq!(zx_vmo_write(p, vmo, &100u64.to_le_bytes(), P), ZX_OK);
        assert_eq!(env.load(ptr[0] + P), Ok(100));

        assert_eq!(env.load(ptr[0] + 2 * P), Ok(0));
        assert_eq!(
            zx_vmo_op_range(p, vmo, ZX_VMO_OP_COMMIT, 2 * P, P, 0, 0),
            ZX_OK
        );
        assert_eq!(zx_vmo_write(p, vmo, &100u64.to_le_bytes(), 2 * P), ZX_OK);
        assert_eq!(env.load(ptr[0] + 2 * P), Ok(100));

        for addr in ptr {
            assert_eq!(zx_vmar_unmap(p, env.root, addr, size), ZX_OK);
        }
        assert_eq!(zx_handle_close(p, vmo), ZX_OK);
    });
}

// ---------------------------------------------------------------------------------------------
// Handles: kernel/lib/syscalls/handle_ops.cc (core/handle-dup tests only check bad out-pointers)
// ---------------------------------------------------------------------------------------------

/// handle_ops.cc `handle_dup_replace`: duplicate needs `ZX_RIGHT_DUPLICATE`
/// (`ZX_ERR_ACCESS_DENIED`), replace does not; the new rights must be a subset, or
/// `ZX_ERR_INVALID_ARGS` (newer Zircon then removes the handle a replace was given; Zircon of 2018
/// kept it); `ZX_RIGHT_SAME_RIGHTS` keeps them. handle_close: `ZX_HANDLE_INVALID` is fine, a
/// closed handle is `ZX_ERR_BAD_HANDLE`. A mapping outlives the handles it was made through.
#[test]
fn handle_dup_replace() {
    each_format(|env| {
        let p = &*env.p;
        let vmo = env.vmo(P);
        let all = env.rights(vmo);
        let mut out = 0;

        assert_eq!(
            zx_handle_duplicate(p, vmo, ZX_RIGHT_SAME_RIGHTS, &mut out),
            ZX_OK
        );
        assert_ne!(out, vmo);
        assert_eq!(env.rights(out), all);
        assert_eq!(zx_handle_close(p, out), ZX_OK);

        let no_dup = env.dup(vmo, all & !ZX_RIGHT_DUPLICATE);
        let mut out = 0;
        assert_eq!(
            zx_handle_duplicate(p, no_dup, ZX_RIGHT_SAME_RIGHTS, &mut out),
            ZX_ERR_ACCESS_DENIED
        );
        assert_eq!(
            zx_handle_duplicate(p, vmo, all | ZX_RIGHT_EXECUTE, &mut out),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(out, 0);

        // Replace needs no ZX_RIGHT_DUPLICATE and invalidates the old value.
        let mut replaced = 0;
        assert_eq!(
            zx_handle_replace(p, no_dup, ZX_RIGHT_SAME_RIGHTS, &mut replaced),
            ZX_OK
        );
        assert_eq!(env.rights(replaced), all & !ZX_RIGHT_DUPLICATE);
        assert_eq!(zx_handle_close(p, no_dup), ZX_ERR_BAD_HANDLE);
        let mut fewer = 0;
        assert_eq!(
            zx_handle_replace(p, replaced, ZX_RIGHT_READ | ZX_RIGHT_MAP, &mut fewer),
            ZX_OK
        );
        assert_eq!(env.rights(fewer), ZX_RIGHT_READ | ZX_RIGHT_MAP);
        // A bad replace removes the handle all the same.
        let mut bad = 0;
        assert_eq!(
            zx_handle_replace(p, fewer, ZX_RIGHT_READ | ZX_RIGHT_WRITE, &mut bad),
            ZX_ERR_INVALID_ARGS
        );
        assert_eq!(bad, 0);
        assert_eq!(zx_handle_close(p, fewer), ZX_ERR_BAD_HANDLE);

        // A mapping made through a handle keeps working after the handle is gone.
        let h = env.dup(vmo, ZX_RIGHT_SAME_RIGHTS);
        let addr = env.map(env.root, RW, 0, h, 0, P).unwrap();
        assert_eq!(zx_handle_close(p, h), ZX_OK);
        assert_eq!(zx_handle_close(p, vmo), ZX_OK);
        assert_eq!(env.store(addr, 3), Ok(()));
        assert_eq!(env.load(addr), Ok(3));

        assert_eq!(zx_handle_close(p, ZX_HANDLE_INVALID), ZX_OK);
        assert_eq!(zx_handle_close(p, vmo), ZX_ERR_BAD_HANDLE);
        let mut out = 0;
        assert_eq!(
            zx_handle_duplicate(p, vmo, ZX_RIGHT_SAME_RIGHTS, &mut out),
            ZX_ERR_BAD_HANDLE
        );
        assert_eq!(
            zx_handle_replace(p, ZX_HANDLE_INVALID, ZX_RIGHT_SAME_RIGHTS, &mut out),
            ZX_ERR_BAD_HANDLE
        );
    });
}

// ---------------------------------------------------------------------------------------------
// zx_object_get_info: core/object-info/*, kernel/lib/syscalls/object.cc
// ---------------------------------------------------------------------------------------------

/// vmar-object-info-test.cc `TEST(VmarGetInfoTest, InfoHandleBasicOnSelfSuceeds)`, on a VMAR and
/// a VMO handle, with the record's fields (object.cc `ZX_INFO_HANDLE_BASIC`): koid, the handle's
/// rights, the object type (`ZX_OBJ_TYPE_VMAR` 18, `ZX_OBJ_TYPE_VMO` 3), related koid 0,
/// reserved 0; one record, actual = avail = 1.
#[test]
fn vmar_get_info_test_info_handle_basic_on_self_succeeds() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let (sub, _) = env.alloc(env.root, CAN_RW, 0, 4 * P).unwrap();
        for (handle, ty) in [
            (env.root, zircon::ZX_OBJ_TYPE_VMAR),
            (sub, zircon::ZX_OBJ_TYPE_VMAR),
            (vmo, zircon::ZX_OBJ_TYPE_VMO),
        ] {
            let mut buf = [0xaau8; zircon::HANDLE_BASIC_SIZE];
            let (status, actual, avail) =
                get_info(&env.p, handle, zircon::ZX_INFO_HANDLE_BASIC, &mut buf);
            assert_eq!(status, ZX_OK);
            assert_eq!((actual, avail), (1, 1));
            let object = env.p.handle(handle).unwrap().object;
            assert_eq!(u64_at(&buf, 0), object.koid(), "koid");
            assert_eq!(u32_at(&buf, 8), env.rights(handle), "rights");
            assert_eq!(u32_at(&buf, 12), ty, "type");
            assert_eq!(u64_at(&buf, 16), 0, "related_koid");
            assert_eq!(u32_at(&buf, 24), 0, "reserved");
        }
    });
}

/// vmar-object-info-test.cc `TEST(VmarGetInfoTest, InfoVmarOnSelfSucceeds)` and vmar.cc
/// `TEST(Vmar, ObjectInfoTest)`: `ZX_INFO_VMAR` gives the VMAR's base and length.
#[test]
fn vmar_object_info_test() {
    each_format(|env| {
        let (region, region_addr) = env.alloc(env.root, CAN_RW, 0, 10 * P).unwrap();
        let (base, len) = env.p.aspace().user_range();
        for (handle, base, len) in [(env.root, base, len), (region, region_addr, 10 * P)] {
            let mut buf = [0xaau8; zircon::VMAR_SIZE];
            let (status, actual, avail) = get_info(&env.p, handle, zircon::ZX_INFO_VMAR, &mut buf);
            assert_eq!(status, ZX_OK);
            assert_eq!((actual, avail), (1, 1));
            assert_eq!(u64_at(&buf, 0), base, "base");
            assert_eq!(u64_at(&buf, 8), len, "len");
        }
    });
}

/// vmar-object-info-test.cc `InfoHandleBasicInvalidHandleFails`, `InfoVmarInvalidHandleFails`
/// (helper.h `CheckInvalidHandleFails`): `ZX_ERR_BAD_HANDLE` for a closed handle and for
/// `ZX_HANDLE_INVALID`, on every topic.
#[test]
fn vmar_get_info_test_invalid_handle_fails() {
    each_format(|env| {
        let vmo = env.vmo(P);
        assert_eq!(zx_handle_close(&env.p, vmo), ZX_OK);
        for topic in [
            zircon::ZX_INFO_HANDLE_BASIC,
            zircon::ZX_INFO_VMAR,
            zircon::ZX_INFO_VMO_V1,
        ] {
            for handle in [vmo, ZX_HANDLE_INVALID] {
                let mut buf = [0u8; 128];
                let (status, _, _) = get_info(&env.p, handle, topic, &mut buf);
                assert_eq!(
                    status, ZX_ERR_BAD_HANDLE,
                    "topic {topic}, handle {handle:#x}"
                );
            }
        }
    });
}

/// vmar-object-info-test.cc `InfoHandleBasicZeroSizedBufferFails`, `InfoVmarZeroSizedBufferFails`
/// (helper.h `CheckZeroSizeBufferFails`) and object.cc `single_record_result`: a buffer too small
/// for the one record is `ZX_ERR_BUFFER_TOO_SMALL` with actual = 0 and avail = 1, and nothing is
/// written to it; a larger buffer gets exactly one record, its other bytes untouched.
#[test]
fn vmar_get_info_test_zero_sized_buffer_fails() {
    each_format(|env| {
        let vmo = env.vmo(P);
        for (handle, topic, size) in [
            (
                env.root,
                zircon::ZX_INFO_HANDLE_BASIC,
                zircon::HANDLE_BASIC_SIZE,
            ),
            (vmo, zircon::ZX_INFO_HANDLE_BASIC, zircon::HANDLE_BASIC_SIZE),
            (env.root, zircon::ZX_INFO_VMAR, zircon::VMAR_SIZE),
            (vmo, zircon::ZX_INFO_VMO_V1, zircon::VMO_V1_SIZE),
        ] {
            for len in [0, 1, size - 1] {
                let mut buf = vec![0xaau8; len];
                let (status, actual, avail) = get_info(&env.p, handle, topic, &mut buf);
                assert_eq!(
                    status, ZX_ERR_BUFFER_TOO_SMALL,
                    "topic {topic}, {len} bytes"
                );
                assert_eq!((actual, avail), (0, 1), "topic {topic}, {len} bytes");
                assert!(buf.iter().all(|&b| b == 0xaa), "nothing written");
            }
            let mut buf = vec![0xaau8; size + 24];
            let (status, actual, avail) = get_info(&env.p, handle, topic, &mut buf);
            assert_eq!(status, ZX_OK, "topic {topic}");
            assert_eq!((actual, avail), (1, 1));
            assert!(buf[size..].iter().all(|&b| b == 0xaa), "one record only");
        }
    });
}

/// vmar-object-info-test.cc `InfoVmarJobHandleIsBadHandle` and friends (helper.h
/// `CheckWrongHandleTypeFails`) with object.cc's statuses: a topic for another object type is
/// `ZX_ERR_WRONG_TYPE`, and the type is checked before the rights (handle_table
/// `GetDispatcherWithRights`: "Wrong type takes precedence over access denied").
#[test]
fn vmar_get_info_test_wrong_handle_type_fails() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let mut buf = [0u8; 128];
        assert_eq!(
            get_info(&env.p, vmo, zircon::ZX_INFO_VMAR, &mut buf).0,
            ZX_ERR_WRONG_TYPE
        );
        assert_eq!(
            get_info(&env.p, env.root, zircon::ZX_INFO_VMO_V1, &mut buf).0,
            ZX_ERR_WRONG_TYPE
        );
        let vmo_no_rights = env.dup(vmo, 0);
        assert_eq!(
            get_info(&env.p, vmo_no_rights, zircon::ZX_INFO_VMAR, &mut buf).0,
            ZX_ERR_WRONG_TYPE
        );
    });
}

/// object.cc `sys_object_get_info`: a topic the kernel does not know is `ZX_ERR_NOT_SUPPORTED`
/// (the `default:` of the switch on the topic, which runs before any handle is looked up, so even
/// for `ZX_HANDLE_INVALID`). `ZX_INFO_NONE` (0) is such a topic.
#[test]
fn object_get_info_unknown_topic_is_not_supported() {
    each_format(|env| {
        let vmo = env.vmo(P);
        for topic in [0, 5, 6, 0xffff, u32::MAX] {
            let mut buf = [0u8; 128];
            for handle in [vmo, env.root, ZX_HANDLE_INVALID] {
                assert_eq!(
                    get_info(&env.p, handle, topic, &mut buf).0,
                    ZX_ERR_NOT_SUPPORTED,
                    "topic {topic:#x}, handle {handle:#x}"
                );
            }
        }
    });
}

/// object.cc `sys_object_get_info`'s rights, as helper.h `CheckMissingRightsFail` tests them
/// (`VmarMapsGetInfoTest.InfoVmarMapsRequiresInspectRights`): `ZX_INFO_VMAR` needs
/// `ZX_RIGHT_INSPECT` (`GetDispatcherWithRights(.., ZX_RIGHT_INSPECT, ..)`);
/// `ZX_INFO_HANDLE_BASIC` and `ZX_INFO_VMO` need no right (`GetDispatcherAndRights`), and report
/// the handle's rights.
#[test]
fn object_get_info_rights() {
    each_format(|env| {
        let vmo = env.vmo(P);
        let vmar_rights = env.rights(env.root);
        let vmar = env.dup(env.root, vmar_rights & !ZX_RIGHT_INSPECT);
        let mut buf = [0u8; 128];
        assert_eq!(
            get_info(&env.p, vmar, zircon::ZX_INFO_VMAR, &mut buf).0,
            ZX_ERR_ACCESS_DENIED
        );
        assert_eq!(
            get_info(&env.p, vmar, zircon::ZX_INFO_HANDLE_BASIC, &mut buf).0,
            ZX_OK
        );
        let bare = env.dup(vmo, 0);
        let (status, actual, avail) =
            get_info(&env.p, bare, zircon::ZX_INFO_HANDLE_BASIC, &mut buf);
        assert_eq!((status, actual, avail), (ZX_OK, 1, 1));
        assert_eq!(u32_at(&buf, 8), 0, "the handle's rights");
        let (status, actual, avail) = get_info(&env.p, bare, zircon::ZX_INFO_VMO_V1, &mut buf);
        assert_eq!((status, actual, avail), (ZX_OK, 1, 1));
        assert_eq!(u64_at(&buf, 40), P, "size_bytes");
    });
}

/// vmo.cc `TEST(VmoTestCase, Info)`, for the fields this crate keeps, in the V1 layout:
/// `ZX_INFO_VMO` (topic 23) on a VMO handle gives its koid, size, committed bytes and mapping
/// count, no name, parent or children, and `ZX_CACHE_POLICY_CACHED`.
#[test]
fn vmo_test_case_info() {
    each_format(|env| {
        let p = &*env.p;
        let len = 4 * P;
        let vmo = env.vmo(len);
        assert_eq!(zx_vmo_write(p, vmo, &[1], P), ZX_OK);
        let addr = env.map(env.root, RW, 0, vmo, 0, len).unwrap();
        env.map(env.root, ZX_VM_PERM_READ, 0, vmo, 0, P).unwrap();
        env.store(addr + 2 * P, 1).unwrap();

        let mut buf = [0xaau8; zircon::VMO_V1_SIZE];
        let (status, actual, avail) = get_info(p, vmo, zircon::ZX_INFO_VMO_V1, &mut buf);
        assert_eq!(status, ZX_OK);
        assert_eq!((actual, avail), (1, 1));
        assert_eq!(
            u64_at(&buf, 0),
            p.handle(vmo).unwrap().object.koid(),
            "koid"
        );
        assert!(buf[8..40].iter().all(|&b| b == 0), "name");
        assert_eq!(u64_at(&buf, 40), len, "size_bytes");
        assert_eq!(u64_at(&buf, 48), 0, "parent_koid");
        assert_eq!(u64_at(&buf, 56), 0, "num_children");
        assert_eq!(u64_at(&buf, 64), 2, "num_mappings");
        assert_eq!(u64_at(&buf, 88), 2 * P, "committed_bytes");
        assert_eq!(
            u32_at(&buf, 100),
            zircon::ZX_CACHE_POLICY_CACHED,
            "cache_policy"
        );
        assert_eq!(
            u32_at(&buf, 80) & zircon::ZX_INFO_VMO_TYPE_PAGED,
            zircon::ZX_INFO_VMO_TYPE_PAGED,
            "flags"
        );

        // The typed convenience agrees.
        let mut info = zx_info_vmo_t::default();
        assert_eq!(zx_object_get_info_vmo(p, vmo, &mut info), ZX_OK);
        assert_eq!(info.size_bytes, len);
        assert_eq!(info.committed_bytes, 2 * P);
    });
}

/// vmo.cc `TEST(VmoTestCase, Info)`, the flags and rights: through a handle, `flags` is exactly
/// `ZX_INFO_VMO_TYPE_PAGED | ZX_INFO_VMO_VIA_HANDLE`, and `handle_rights` is the handle's rights
/// (what `ZX_INFO_HANDLE_BASIC` reports); a contiguous VMO is paged too, with
/// `ZX_INFO_VMO_CONTIGUOUS` (1 << 6) added (object.cc passes the handle's rights to `GetVmoInfo`).
#[test]
fn vmo_test_case_info_flags_and_handle_rights() {
    each_format(|env| {
        let p = &*env.p;
        let vmo = env.vmo(4 * P);
        let narrow = env.dup(vmo, ZX_RIGHT_READ | ZX_RIGHT_MAP | ZX_RIGHT_INSPECT);
        let contiguous = Vmo::create_contiguous(env.platform.clone(), 12 * P).unwrap();
        let contiguous = p
            .add_handle(
                KernelObject::Vmo(contiguous),
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
            )
            .unwrap();
        let paged = zircon::ZX_INFO_VMO_TYPE_PAGED | zircon::ZX_INFO_VMO_VIA_HANDLE;
        for (handle, flags) in [
            (vmo, paged),
            (narrow, paged),
            (contiguous, paged | zircon::ZX_INFO_VMO_CONTIGUOUS),
        ] {
            let mut basic = [0u8; zircon::HANDLE_BASIC_SIZE];
            assert_eq!(
                get_info(p, handle, zircon::ZX_INFO_HANDLE_BASIC, &mut basic).0,
                ZX_OK
            );
            let mut buf = [0u8; zircon::VMO_V1_SIZE];
            assert_eq!(
                get_info(p, handle, zircon::ZX_INFO_VMO_V1, &mut buf).0,
                ZX_OK
            );
            assert_eq!(u32_at(&buf, 80), flags, "flags");
            assert_eq!(u32_at(&buf, 96), u32_at(&basic, 8), "handle_rights");
            assert_eq!(u32_at(&buf, 96), env.rights(handle));
        }
    });
}

/// `zx_info_vmo_t` in Zircon's V1 layout (`zx_info_vmo_v1_t`, object.h): 104 bytes on a 64-bit
/// target, `#[repr(C)]`, which the typed `zx_object_get_info_vmo` fills.
#[test]
fn zx_info_vmo_t_has_zircons_v1_layout() {
    assert_eq!(std::mem::size_of::<zx_info_vmo_t>(), zircon::VMO_V1_SIZE);
    assert_eq!(std::mem::align_of::<zx_info_vmo_t>(), 8);
}
