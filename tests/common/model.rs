//! A reference model of the crate's syscalls, and a harness that runs every call on both the crate
//! (on a simulated machine) and the model, and compares them.
//!
//! Used by `tests/model.rs` (random sequences, proptest) and `tests/exhaustion.rs` (a fixed
//! sequence rerun with the frame allocator failing at every point), through
//! `#[path = "common/model.rs"] mod model;`.
//!
//! # The model
//!
//! [`Model`] is plain code with data structures of its own: a handle map with rights per process,
//! a `BTreeMap` of page contents per VMO, and a sorted list of children (sub-VMARs and mapping
//! pieces) per VMAR. It knows nothing of page tables, TLBs or frames. Its statuses follow
//! `docs/contract.md` (for `zx_vmar_op_range`, check by check) and, for the neighbouring calls,
//! Zircon's semantics as the crate documents them (rights rules; first-fit placement, so that
//! addresses agree; where Zircon leaves a choice, the crate's documented one). Where the model and
//! the crate disagreed and Zircon sided with the model, the crate was fixed; the minimal cases are
//! in `tests/regressions.rs`.
//!
//! # The harness
//!
//! [`World`] holds a [`SimMachine`], processes, CPUs and a [`Model`]. [`World::step`] resolves one
//! [`Op`] against the current state (handles and addresses are picked by index), runs it on both,
//! and compares the status and every output (handles' existence, addresses, bytes read, values
//! loaded, fault kinds). After every step it checks that the crate's state still matches the model
//! ([`World::check`]): handle tables (values, rights, objects), VMO liveness, committed bytes and
//! mapping counts, VMAR liveness, `AddressSpace::audit()`, no empty page-table page, and frame
//! accounting (frames in use = committed pages of live VMOs + page-table pages). Every few steps,
//! and at the end, it compares VMO contents byte for byte ([`World::deep_check`]).
//!
//! In exhaustion mode (`World::exhaustion`), a call may fail with `ZX_ERR_NO_MEMORY` where the
//! model says `ZX_OK`; the model then forgets the call (it is restored from a copy taken before),
//! and the checks that follow prove the crate changed nothing either.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::sim::{CounterSnapshot, SimConfig, SimCpu, SimMachine};
use zx_vm::syscall::*;
use zx_vm::vmar::{FaultError, USER_ASPACE_BASE, USER_ASPACE_SIZE};
use zx_vm::{KernelObject, PhysAddr, Platform, Process, Rights, Vmar, Vmo};

// =================================================================================================
// Constants and small helpers
// =================================================================================================

/// The page size, as an integer of each type the model uses.
pub const PAGE: u64 = PAGE_SIZE;
const PAGE_BYTES: usize = PAGE_SIZE as usize;

/// Every right Zircon defines (`ZX_RIGHT_DUPLICATE` up to `ZX_RIGHT_MANAGE_VMO`): a rights value
/// with any other bit set is invalid.
const ALL_RIGHTS: zx_rights_t = (1 << 25) - 1;
/// Every `ZX_VM_*` option bit Zircon defines up to `ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED`; the crate
/// rejects any other bit (alignment flags included) with `ZX_ERR_INVALID_ARGS`.
const ALL_VM_OPTIONS: zx_vm_option_t = (1 << 15) - 1;
const PERMS: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_PERM_EXECUTE;
const CAN_MAP_RWX: zx_vm_option_t =
    ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_EXECUTE;
/// The largest VMO (the crate's documented `MAX_VMO_SIZE`: the user address space).
const MAX_VMO_SIZE: u64 = 1 << 47;
/// Zircon refuses to destroy an address space's root VMAR (`ZX_ERR_NOT_SUPPORTED`). The crate
/// once destroyed it (pinned by `destroying_the_root_vmar_is_not_supported` in
/// `tests/regressions.rs`); fixed, so the model refuses it too.
const ROOT_VMAR_DESTROY_ALLOWED: bool = false;
/// The rights of a process's first handle to its root VMAR: the default VMAR rights plus read,
/// write and execute, since the root VMAR can map all three.
pub const ROOT_VMAR_RIGHTS: zx_rights_t =
    ZX_DEFAULT_VMAR_RIGHTS | ZX_RIGHT_READ | ZX_RIGHT_WRITE | ZX_RIGHT_EXECUTE;

fn round_up(value: u64) -> Option<u64> {
    value.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

fn aligned(value: u64) -> bool {
    value % PAGE == 0
}

/// The handle rights that `ZX_VM_PERM_*` bits need (`PERM_READ` needs `ZX_RIGHT_READ`, ...).
fn rights_for_perms(perms: zx_vm_option_t) -> zx_rights_t {
    let mut rights = 0;
    if perms & ZX_VM_PERM_READ != 0 {
        rights |= ZX_RIGHT_READ;
    }
    if perms & ZX_VM_PERM_WRITE != 0 {
        rights |= ZX_RIGHT_WRITE;
    }
    if perms & ZX_VM_PERM_EXECUTE != 0 {
        rights |= ZX_RIGHT_EXECUTE;
    }
    rights
}

/// The `ZX_VM_PERM_*` bits that handle rights allow.
fn perms_for_rights(rights: zx_rights_t) -> zx_vm_option_t {
    let mut perms = 0;
    if rights & ZX_RIGHT_READ != 0 {
        perms |= ZX_VM_PERM_READ;
    }
    if rights & ZX_RIGHT_WRITE != 0 {
        perms |= ZX_VM_PERM_WRITE;
    }
    if rights & ZX_RIGHT_EXECUTE != 0 {
        perms |= ZX_VM_PERM_EXECUTE;
    }
    perms
}

/// `ZX_VM_CAN_MAP_{READ,WRITE,EXECUTE}` as the `ZX_VM_PERM_*` bits they allow.
fn perms_for_can_map(can_map: zx_vm_option_t) -> zx_vm_option_t {
    let mut perms = 0;
    if can_map & ZX_VM_CAN_MAP_READ != 0 {
        perms |= ZX_VM_PERM_READ;
    }
    if can_map & ZX_VM_CAN_MAP_WRITE != 0 {
        perms |= ZX_VM_PERM_WRITE;
    }
    if can_map & ZX_VM_CAN_MAP_EXECUTE != 0 {
        perms |= ZX_VM_PERM_EXECUTE;
    }
    perms
}

/// Zircon's rule for a mapping's permissions: write needs read.
fn valid_perms(perms: zx_vm_option_t) -> bool {
    perms & ZX_VM_PERM_WRITE == 0 || perms & ZX_VM_PERM_READ != 0
}

/// `Err(ZX_ERR_ACCESS_DENIED)` unless `rights` holds all of `needed`.
fn need(rights: zx_rights_t, needed: zx_rights_t) -> R {
    if rights & needed == needed {
        Ok(())
    } else {
        Err(ZX_ERR_ACCESS_DENIED)
    }
}

/// A model result: a value or a raw status.
pub type R<T = ()> = Result<T, zx_status_t>;

/// One page of VMO contents, shared between model copies until written (copies are taken on
/// every step in exhaustion mode, so they must be cheap).
pub type Page = Arc<[u8; PAGE_BYTES]>;

fn zero_page() -> Page {
    Arc::new([0; PAGE_BYTES])
}

// =================================================================================================
// The model
// =================================================================================================

/// What a handle names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Obj {
    /// A model VMO, by index in [`Model::vmos`].
    Vmo(usize),
    /// A model VMAR, by index in [`Model::vmars`].
    Vmar(usize),
}

/// A handle: an object and rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MHandle {
    pub obj: Obj,
    pub rights: zx_rights_t,
}

/// A process: its handle table (by value) and its address space's root VMAR.
#[derive(Clone, Debug)]
pub struct MProcess {
    pub handles: BTreeMap<zx_handle_t, MHandle>,
    pub limit: usize,
    pub root: usize,
}

/// What backs a VMO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MKind {
    /// Zero pages committed on demand; decommit gives them back.
    Paged,
    /// Every page present from creation (and counted as committed); no decommit.
    Contiguous,
    /// A fixed physical range: every page present, none counted as committed; `zx_vmo_read` and
    /// `zx_vmo_write` are not supported; no decommit.
    Physical,
}

/// A VMO: its size in pages, the contents of its committed pages, and its pins.
#[derive(Clone, Debug)]
pub struct MVmo {
    pub kind: MKind,
    pub pages: u64,
    pub data: BTreeMap<u64, Page>,
    pub pins: BTreeMap<u64, u32>,
}

/// A piece of a mapping (unmap and protect split mappings into pieces, as Zircon does; each piece
/// counts as one mapping of its VMO).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MMapping {
    pub base: u64,
    pub len: u64,
    pub vmo: usize,
    pub vmo_offset: u64,
    /// The current `ZX_VM_PERM_*` bits.
    pub perms: zx_vm_option_t,
    /// The `ZX_VM_PERM_*` bits the mapping may ever have: those both handles had the rights for,
    /// and its VMAR could map, when it was made.
    pub max_perms: zx_vm_option_t,
}

/// A child of a VMAR.
#[derive(Clone, Debug)]
pub enum MChild {
    Vmar(usize),
    Map(MMapping),
}

/// A VMAR.
#[derive(Clone, Debug)]
pub struct MVmar {
    /// The process whose address space holds it.
    pub aspace: usize,
    pub base: u64,
    pub size: u64,
    /// `ZX_VM_CAN_MAP_{READ,WRITE,EXECUTE,SPECIFIC}`.
    pub flags: zx_vm_option_t,
    pub parent: Option<usize>,
    /// Sorted by base; never overlapping.
    pub children: Vec<MChild>,
    pub alive: bool,
}

impl MVmar {
    fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// Why a simulated access faults, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MFault {
    NotMapped,
    AccessDenied,
    OutOfRange,
}

/// `zx_info_vmo_t`, reduced to what the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MInfo {
    pub size_bytes: u64,
    pub committed_bytes: u64,
    pub num_mappings: u64,
}

/// The reference model.
#[derive(Clone, Debug)]
pub struct Model {
    pub procs: Vec<MProcess>,
    pub vmos: Vec<MVmo>,
    pub vmars: Vec<MVmar>,
    /// The process whose address space each CPU runs, if any.
    pub cpus: Vec<Option<usize>>,
}

impl Model {
    /// A model with `cpus` CPUs and no process.
    pub fn new(cpus: usize) -> Model {
        Model {
            procs: Vec::new(),
            vmos: Vec::new(),
            vmars: Vec::new(),
            cpus: vec![None; cpus],
        }
    }

    /// Adds a process whose root VMAR handle is `root_handle`; returns its index.
    pub fn add_process(&mut self, limit: usize, root_handle: zx_handle_t) -> usize {
        let p = self.procs.len();
        let root = self.vmars.len();
        self.vmars.push(MVmar {
            aspace: p,
            base: USER_ASPACE_BASE,
            size: USER_ASPACE_SIZE,
            flags: CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC,
            parent: None,
            children: Vec::new(),
            alive: true,
        });
        let mut handles = BTreeMap::new();
        handles.insert(
            root_handle,
            MHandle {
                obj: Obj::Vmar(root),
                rights: ROOT_VMAR_RIGHTS,
            },
        );
        self.procs.push(MProcess {
            handles,
            limit,
            root,
        });
        p
    }

    // ---- handles ---------------------------------------------------------------------------------

    fn handle(&self, p: usize, h: zx_handle_t) -> R<MHandle> {
        self.procs[p]
            .handles
            .get(&h)
            .copied()
            .ok_or(ZX_ERR_BAD_HANDLE)
    }

    fn vmo_handle(&self, p: usize, h: zx_handle_t) -> R<(usize, zx_rights_t)> {
        match self.handle(p, h)? {
            MHandle {
                obj: Obj::Vmo(id),
                rights,
            } => Ok((id, rights)),
            _ => Err(ZX_ERR_WRONG_TYPE),
        }
    }

    fn vmar_handle(&self, p: usize, h: zx_handle_t) -> R<(usize, zx_rights_t)> {
        match self.handle(p, h)? {
            MHandle {
                obj: Obj::Vmar(id),
                rights,
            } => Ok((id, rights)),
            _ => Err(ZX_ERR_WRONG_TYPE),
        }
    }

    fn has_room(&self, p: usize) -> R {
        if self.procs[p].handles.len() >= self.procs[p].limit {
            Err(ZX_ERR_NO_RESOURCES)
        } else {
            Ok(())
        }
    }

    /// Adds a handle under the value the crate issued (the model does not choose values; the
    /// harness checks that the value is new).
    fn add_handle(&mut self, p: usize, obj: Obj, rights: zx_rights_t, value: zx_handle_t) -> R {
        self.has_room(p)?;
        self.procs[p].handles.insert(value, MHandle { obj, rights });
        Ok(())
    }

    /// The rights a duplicate or replacement asks for: `ZX_RIGHT_SAME_RIGHTS`, or a subset.
    fn derived_rights(old: zx_rights_t, rights: zx_rights_t) -> R<zx_rights_t> {
        if rights == ZX_RIGHT_SAME_RIGHTS {
            return Ok(old);
        }
        // Unknown bits are never a subset of what a handle holds.
        if rights & !ALL_RIGHTS != 0 || rights & !old != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        Ok(rights)
    }

    /// `zx_handle_duplicate`: needs `ZX_RIGHT_DUPLICATE`; rights only shrink.
    pub fn duplicate(&mut self, p: usize, h: zx_handle_t, rights: u32, new: zx_handle_t) -> R {
        let old = self.handle(p, h)?;
        need(old.rights, ZX_RIGHT_DUPLICATE)?;
        let rights = Self::derived_rights(old.rights, rights)?;
        self.add_handle(p, old.obj, rights, new)
    }

    /// `zx_handle_replace`: needs no right; rights only shrink. The old handle goes even when
    /// the call fails (Zircon: "*handle* is always invalidated").
    pub fn replace(&mut self, p: usize, h: zx_handle_t, rights: u32, new: zx_handle_t) -> R {
        let old = self.handle(p, h)?;
        self.procs[p].handles.remove(&h);
        let rights = Self::derived_rights(old.rights, rights)?;
        // The old handle's slot is free now, so there is always room.
        self.add_handle(p, old.obj, rights, new)
    }

    /// `zx_handle_close`: `ZX_HANDLE_INVALID` is fine.
    pub fn close(&mut self, p: usize, h: zx_handle_t) -> R {
        if h == ZX_HANDLE_INVALID {
            return Ok(());
        }
        self.procs[p]
            .handles
            .remove(&h)
            .map(drop)
            .ok_or(ZX_ERR_BAD_HANDLE)
    }

    /// Moves handle `h` of process `from` to process `to` (what a channel write and read would
    /// do; a kernel-side operation of the harness). Needs `ZX_RIGHT_TRANSFER`; if `to` is full,
    /// `ZX_ERR_NO_RESOURCES` and the handle stays.
    pub fn transfer(&mut self, from: usize, h: zx_handle_t, to: usize, new: zx_handle_t) -> R {
        let handle = self.handle(from, h)?;
        need(handle.rights, ZX_RIGHT_TRANSFER)?;
        self.add_handle(to, handle.obj, handle.rights, new)?;
        self.procs[from].handles.remove(&h);
        Ok(())
    }

    // ---- VMOs ------------------------------------------------------------------------------------

    fn new_vmo(&mut self, kind: MKind, pages: u64) -> usize {
        let data = match kind {
            MKind::Paged => BTreeMap::new(),
            MKind::Contiguous | MKind::Physical => (0..pages).map(|i| (i, zero_page())).collect(),
        };
        self.vmos.push(MVmo {
            kind,
            pages,
            data,
            pins: BTreeMap::new(),
        });
        self.vmos.len() - 1
    }

    /// `zx_vmo_create`: a paged VMO, size rounded up to pages (0 allowed).
    pub fn vmo_create(&mut self, p: usize, size: u64, options: u32, new: zx_handle_t) -> R {
        if options & !(ZX_VMO_RESIZABLE | ZX_VMO_DISCARDABLE) != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if options != 0 {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size > MAX_VMO_SIZE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        // A VMO whose handle cannot be added is dropped again: nothing changes.
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Paged, size / PAGE);
        self.add_handle(p, Obj::Vmo(id), ZX_DEFAULT_VMO_RIGHTS, new)
    }

    /// A contiguous VMO made by the kernel and handed to `p` with the default VMO rights.
    pub fn vmo_create_contiguous(&mut self, p: usize, size: u64, new: zx_handle_t) -> R {
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size == 0 || size > MAX_VMO_SIZE {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Contiguous, size / PAGE);
        self.add_handle(p, Obj::Vmo(id), ZX_DEFAULT_VMO_RIGHTS, new)
    }

    /// A physical VMO (over frames the harness owns, zeroed) handed to `p` with the default VMO
    /// rights.
    pub fn vmo_create_physical(&mut self, p: usize, pages: u64, new: zx_handle_t) -> R {
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Physical, pages);
        self.add_handle(p, Obj::Vmo(id), ZX_DEFAULT_VMO_RIGHTS, new)
    }

    /// `[offset, offset + len)` as pages `[first, last)`: `ZX_ERR_OUT_OF_RANGE` unless inside the
    /// VMO; an empty range is no page.
    fn page_range(&self, vmo: usize, offset: u64, len: u64) -> R<(u64, u64)> {
        let end = offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if end > self.vmos[vmo].pages * PAGE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        if len == 0 {
            return Ok((offset / PAGE, offset / PAGE));
        }
        Ok((offset / PAGE, end.div_ceil(PAGE)))
    }

    fn read_bytes(&self, vmo: usize, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let (index, from) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE_BYTES - from).min(len - done);
            if let Some(page) = self.vmos[vmo].data.get(&index) {
                out[done..done + n].copy_from_slice(&page[from..from + n]);
            }
            done += n;
        }
        out
    }

    fn commit_page(&mut self, vmo: usize, index: u64) -> &mut [u8; PAGE_BYTES] {
        Arc::make_mut(self.vmos[vmo].data.entry(index).or_insert_with(zero_page))
    }

    fn write_bytes(&mut self, vmo: usize, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, to) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE_BYTES - to).min(data.len() - done);
            self.commit_page(vmo, index)[to..to + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Commits pages `[first, last)` (nothing to do unless paged).
    fn commit_range(&mut self, vmo: usize, first: u64, last: u64) {
        if self.vmos[vmo].kind == MKind::Paged {
            for index in first..last {
                self.commit_page(vmo, index);
            }
        }
    }

    fn any_pinned(&self, vmo: usize, first: u64, last: u64) -> bool {
        first < last && self.vmos[vmo].pins.range(first..last).next().is_some()
    }

    /// Takes pages `[first, last)` (clamped to the VMO) out of a paged VMO.
    fn decommit_pages(&mut self, vmo: usize, first: u64, last: u64) {
        let last = last.min(self.vmos[vmo].pages);
        if first < last {
            let doomed: Vec<u64> = self.vmos[vmo]
                .data
                .range(first..last)
                .map(|(&i, _)| i)
                .collect();
            for index in doomed {
                self.vmos[vmo].data.remove(&index);
            }
        }
    }

    /// `zx_vmo_read`: needs `ZX_RIGHT_READ`; uncommitted pages read as zero (and stay so).
    pub fn vmo_read(&self, p: usize, h: zx_handle_t, offset: u64, len: usize) -> R<Vec<u8>> {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_READ)?;
        if self.vmos[vmo].kind == MKind::Physical {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        self.page_range(vmo, offset, len as u64)?;
        Ok(self.read_bytes(vmo, offset, len))
    }

    /// `zx_vmo_write`: needs `ZX_RIGHT_WRITE`; commits the pages it touches.
    pub fn vmo_write(&mut self, p: usize, h: zx_handle_t, offset: u64, data: &[u8]) -> R {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_WRITE)?;
        if self.vmos[vmo].kind == MKind::Physical {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        self.page_range(vmo, offset, data.len() as u64)?;
        self.write_bytes(vmo, offset, data);
        Ok(())
    }

    /// `zx_vmo_op_range`: COMMIT (rounds out to pages) and DECOMMIT (page aligned), both needing
    /// `ZX_RIGHT_WRITE`; other defined ops are not supported, undefined ones invalid.
    #[allow(clippy::too_many_arguments)]
    pub fn vmo_op_range(
        &mut self,
        p: usize,
        h: zx_handle_t,
        op: u32,
        offset: u64,
        size: u64,
        buffer: u64,
        buffer_size: usize,
    ) -> R {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        if buffer != 0 || buffer_size != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        match op {
            ZX_VMO_OP_COMMIT => {
                need(rights, ZX_RIGHT_WRITE)?;
                let (first, last) = self.page_range(vmo, offset, size)?;
                self.commit_range(vmo, first, last);
                Ok(())
            }
            ZX_VMO_OP_DECOMMIT => {
                need(rights, ZX_RIGHT_WRITE)?;
                if !aligned(offset) || !aligned(size) {
                    return Err(ZX_ERR_INVALID_ARGS);
                }
                let (first, last) = self.page_range(vmo, offset, size)?;
                if self.vmos[vmo].kind != MKind::Paged {
                    return Err(ZX_ERR_NOT_SUPPORTED);
                }
                if self.any_pinned(vmo, first, last) {
                    return Err(ZX_ERR_BAD_STATE);
                }
                self.decommit_pages(vmo, first, last);
                Ok(())
            }
            1..=4 | 6..=14 => Err(ZX_ERR_NOT_SUPPORTED),
            _ => Err(ZX_ERR_INVALID_ARGS),
        }
    }

    /// `zx_vmo_get_size`: needs no right.
    pub fn vmo_get_size(&self, p: usize, h: zx_handle_t) -> R<u64> {
        let (vmo, _) = self.vmo_handle(p, h)?;
        Ok(self.vmos[vmo].pages * PAGE)
    }

    /// `zx_object_get_info(ZX_INFO_VMO)`: needs no right (Zircon).
    pub fn vmo_info(&self, p: usize, h: zx_handle_t) -> R<MInfo> {
        let (vmo, _) = self.vmo_handle(p, h)?;
        Ok(self.info(vmo))
    }

    /// A VMO's size, committed bytes and mapping count.
    pub fn info(&self, vmo: usize) -> MInfo {
        let v = &self.vmos[vmo];
        MInfo {
            size_bytes: v.pages * PAGE,
            committed_bytes: self.committed_pages(vmo) * PAGE,
            num_mappings: self.mapping_counts().get(&vmo).copied().unwrap_or(0),
        }
    }

    /// Pages a VMO reports as committed.
    pub fn committed_pages(&self, vmo: usize) -> u64 {
        let v = &self.vmos[vmo];
        match v.kind {
            MKind::Paged => v.data.len() as u64,
            MKind::Contiguous => v.pages,
            MKind::Physical => 0,
        }
    }

    /// Kernel-side `Vmo::pin` (page-aligned, non-empty): commits the pages and pins them.
    pub fn pin(&mut self, p: usize, h: zx_handle_t, offset: u64, len: u64) -> R {
        let (vmo, _) = self.vmo_handle(p, h)?;
        if !aligned(offset) || !aligned(len) || len == 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let (first, last) = self.page_range(vmo, offset, len)?;
        self.commit_range(vmo, first, last);
        for index in first..last {
            *self.vmos[vmo].pins.entry(index).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Kernel-side `Vmo::unpin`: every page must be pinned (`ZX_ERR_BAD_STATE`).
    pub fn unpin(&mut self, p: usize, h: zx_handle_t, offset: u64, len: u64) -> R {
        let (vmo, _) = self.vmo_handle(p, h)?;
        if !aligned(offset) || !aligned(len) || len == 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let (first, last) = self.page_range(vmo, offset, len)?;
        if (first..last).any(|i| !self.vmos[vmo].pins.contains_key(&i)) {
            return Err(ZX_ERR_BAD_STATE);
        }
        for index in first..last {
            let count = self.vmos[vmo].pins.get_mut(&index).expect("checked");
            *count -= 1;
            if *count == 0 {
                self.vmos[vmo].pins.remove(&index);
            }
        }
        Ok(())
    }

    // ---- VMAR structure --------------------------------------------------------------------------

    fn span(&self, child: &MChild) -> (u64, u64) {
        match child {
            MChild::Vmar(id) => (self.vmars[*id].base, self.vmars[*id].end()),
            MChild::Map(m) => (m.base, m.base + m.len),
        }
    }

    fn insert_child(&mut self, vmar: usize, child: MChild) {
        let base = self.span(&child).0;
        let at = self.vmars[vmar]
            .children
            .iter()
            .position(|c| self.span(c).0 > base)
            .unwrap_or(self.vmars[vmar].children.len());
        self.vmars[vmar].children.insert(at, child);
    }

    fn overlaps(&self, vmar: usize, start: u64, end: u64) -> bool {
        self.vmars[vmar].children.iter().any(|c| {
            let (b, e) = self.span(c);
            b < end && e > start
        })
    }

    /// First fit: the lowest address in the VMAR where `size` bytes are free.
    fn find_gap(&self, vmar: usize, size: u64) -> Option<u64> {
        let v = &self.vmars[vmar];
        let mut candidate = v.base;
        for child in &v.children {
            let (b, e) = self.span(child);
            if b >= candidate && b - candidate >= size {
                return Some(candidate);
            }
            candidate = candidate.max(e);
        }
        (v.end() - candidate >= size).then_some(candidate)
    }

    /// `[base + offset, base + offset + size)` if it lies inside the VMAR (no overflow).
    fn sub_range(&self, vmar: usize, offset: u64, size: u64) -> Option<(u64, u64)> {
        let v = &self.vmars[vmar];
        let start = v.base.checked_add(offset)?;
        let end = start.checked_add(size)?;
        (end <= v.end() && start < end).then_some((start, end))
    }

    /// Splits the mapping piece of `vmar` that strictly contains `va` into two at `va`.
    fn split(&mut self, vmar: usize, va: u64) {
        let children = &mut self.vmars[vmar].children;
        let found = children
            .iter()
            .position(|c| matches!(c, MChild::Map(m) if m.base < va && va < m.base + m.len));
        if let Some(i) = found {
            let MChild::Map(lower) = &mut children[i] else {
                unreachable!()
            };
            let delta = va - lower.base;
            let upper = MMapping {
                base: va,
                len: lower.len - delta,
                vmo_offset: lower.vmo_offset + delta,
                ..lower.clone()
            };
            lower.len = delta;
            children.insert(i + 1, MChild::Map(upper));
        }
    }

    /// Marks VMAR `id` and everything below it destroyed; their mappings go.
    fn destroy_subtree(&mut self, id: usize) {
        self.vmars[id].alive = false;
        for child in std::mem::take(&mut self.vmars[id].children) {
            if let MChild::Vmar(child) = child {
                self.destroy_subtree(child);
            }
        }
    }

    /// Removes everything in `[start, end)` of `vmar` (inside it): mapping pieces, split at the
    /// ends, and whole sub-VMARs. A sub-VMAR partly inside is `ZX_ERR_INVALID_ARGS`, and so is
    /// any sub-VMAR when `may_destroy_vmars` is false; both are checked before anything changes.
    fn unmap_range(&mut self, vmar: usize, start: u64, end: u64, may_destroy_vmars: bool) -> R {
        for child in &self.vmars[vmar].children {
            let (b, e) = self.span(child);
            let touched = b < end && e > start;
            if touched
                && matches!(child, MChild::Vmar(_))
                && (b < start || e > end || !may_destroy_vmars)
            {
                return Err(ZX_ERR_INVALID_ARGS);
            }
        }
        self.split(vmar, start);
        self.split(vmar, end);
        let children = std::mem::take(&mut self.vmars[vmar].children);
        let mut kept = Vec::new();
        for child in children {
            let (b, e) = self.span(&child);
            if b < end && e > start {
                if let MChild::Vmar(id) = child {
                    self.destroy_subtree(id);
                }
            } else {
                kept.push(child);
            }
        }
        self.vmars[vmar].children = kept;
        Ok(())
    }

    /// The mapping pieces covering `[start, end)` of `vmar`, looking through nested sub-VMARs,
    /// as `(vmar holding the piece, part of the range it covers)`; `None` if any page of the range
    /// is not covered by a mapping.
    fn covering(&self, vmar: usize, start: u64, end: u64) -> Option<Vec<(usize, u64, u64)>> {
        let mut out = Vec::new();
        self.covering_into(vmar, start, end, &mut out)
            .then_some(out)
    }

    fn covering_into(
        &self,
        vmar: usize,
        start: u64,
        end: u64,
        out: &mut Vec<(usize, u64, u64)>,
    ) -> bool {
        let mut next = start;
        for child in &self.vmars[vmar].children {
            let (b, e) = self.span(child);
            if e <= start || b >= end {
                continue;
            }
            if b > next {
                return false;
            }
            let (lo, hi) = (start.max(b), end.min(e));
            match child {
                MChild::Vmar(id) => {
                    if !self.covering_into(*id, lo, hi, out) {
                        return false;
                    }
                }
                MChild::Map(_) => out.push((vmar, lo, hi)),
            }
            next = hi;
        }
        next >= end
    }

    /// The mapping piece of `vmar` (not looking into sub-VMARs) that contains `va`.
    fn piece_at(&self, vmar: usize, va: u64) -> &MMapping {
        self.vmars[vmar]
            .children
            .iter()
            .find_map(|c| match c {
                MChild::Map(m) if m.base <= va && va < m.base + m.len => Some(m),
                _ => None,
            })
            .expect("a covering piece")
    }

    /// How many mapping pieces of each VMO exist in live VMARs.
    pub fn mapping_counts(&self) -> BTreeMap<usize, u64> {
        let mut counts = BTreeMap::new();
        for vmar in self.vmars.iter().filter(|v| v.alive) {
            for child in &vmar.children {
                if let MChild::Map(m) = child {
                    *counts.entry(m.vmo).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// The VMOs that still exist: named by a handle or mapped.
    pub fn live_vmos(&self) -> BTreeSet<usize> {
        let mut live: BTreeSet<usize> = self.mapping_counts().into_keys().collect();
        for proc in &self.procs {
            for handle in proc.handles.values() {
                if let Obj::Vmo(id) = handle.obj {
                    live.insert(id);
                }
            }
        }
        live
    }

    // ---- VMAR syscalls ---------------------------------------------------------------------------

    /// `zx_vmar_allocate`. Each `ZX_VM_CAN_MAP_*` asked for needs its right on the parent handle
    /// and its flag on the parent VMAR; the new handle gets the default VMAR rights plus those
    /// rights. Placement is first fit unless `ZX_VM_SPECIFIC`.
    pub fn vmar_allocate(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: zx_vm_option_t,
        offset: u64,
        size: u64,
        new: zx_handle_t,
    ) -> R<u64> {
        let (parent, rights) = self.vmar_handle(p, h)?;
        if options & !ALL_VM_OPTIONS != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let granted = rights_for_perms(perms_for_can_map(options));
        need(rights, granted)?;
        let allowed = CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC | ZX_VM_SPECIFIC | ZX_VM_COMPACT;
        if options & !allowed != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // Zircon: the size is not rounded up (InvalidArgsTest).
        if size == 0 || !aligned(size) || !aligned(offset) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if !self.vmars[parent].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let flags = options & (CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC);
        // Only read, write and execute are inherited rights; CAN_MAP_SPECIFIC is the child's own.
        if flags & CAN_MAP_RWX & !self.vmars[parent].flags != 0 {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        let base = if options & ZX_VM_SPECIFIC != 0 {
            if self.vmars[parent].flags & ZX_VM_CAN_MAP_SPECIFIC == 0 {
                return Err(ZX_ERR_ACCESS_DENIED);
            }
            let (start, end) = self
                .sub_range(parent, offset, size)
                .ok_or(ZX_ERR_INVALID_ARGS)?;
            if self.overlaps(parent, start, end) {
                return Err(ZX_ERR_ALREADY_EXISTS);
            }
            start
        } else {
            if offset != 0 {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            // Zircon: larger than the parent is INVALID_ARGS (AllocateUnsatisfiableTest).
            if size > self.vmars[parent].size {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            self.find_gap(parent, size).ok_or(ZX_ERR_NO_RESOURCES)?
        };
        // A child no handle could name is taken back: nothing changes.
        self.has_room(p)?;
        let id = self.vmars.len();
        self.vmars.push(MVmar {
            aspace: self.vmars[parent].aspace,
            base,
            size,
            flags,
            parent: Some(parent),
            children: Vec::new(),
            alive: true,
        });
        self.insert_child(parent, MChild::Vmar(id));
        self.add_handle(p, Obj::Vmar(id), ZX_DEFAULT_VMAR_RIGHTS | granted, new)?;
        Ok(base)
    }

    /// `zx_vmar_map`. The VMO handle needs `ZX_RIGHT_MAP`; each `ZX_VM_PERM_*` needs its right on
    /// both handles and its `ZX_VM_CAN_MAP_*` on the VMAR. The mapping may later be given any
    /// permission both handles had the rights for and the VMAR could map.
    #[allow(clippy::too_many_arguments)]
    pub fn vmar_map(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: zx_vm_option_t,
        vmar_offset: u64,
        vmo_h: zx_handle_t,
        vmo_offset: u64,
        len: u64,
    ) -> R<u64> {
        let (vmar, vmar_rights) = self.vmar_handle(p, h)?;
        let (vmo, vmo_rights) = self.vmo_handle(p, vmo_h)?;
        need(vmo_rights, ZX_RIGHT_MAP)?;
        // Zircon: write without read is refused right after the MAP right.
        if options & !ALL_VM_OPTIONS != 0 || !valid_perms(options & PERMS) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if options & (CAN_MAP_RWX | ZX_VM_CAN_MAP_SPECIFIC) != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let both = vmar_rights & vmo_rights;
        let perms = options & PERMS;
        need(both, rights_for_perms(perms))?;
        let allowed = PERMS
            | ZX_VM_SPECIFIC
            | ZX_VM_SPECIFIC_OVERWRITE
            | ZX_VM_MAP_RANGE
            | ZX_VM_ALLOW_FAULTS
            | ZX_VM_REQUIRE_NON_RESIZABLE;
        if options & !allowed != 0 || !valid_perms(perms) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // Zircon: an overwrite cannot also map the range at once.
        let overwrite = options & ZX_VM_SPECIFIC_OVERWRITE != 0;
        if overwrite && options & ZX_VM_MAP_RANGE != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if len == 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // Zircon: a length that rounds up past 2^64 is OUT_OF_RANGE (InvalidArgsTest).
        let len = round_up(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if !aligned(vmar_offset) || !aligned(vmo_offset) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        vmo_offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        let v = &self.vmars[vmar];
        if !v.alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let vmar_perms = perms_for_can_map(v.flags);
        if perms & !vmar_perms != 0 {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        let max_perms = perms_for_rights(both) & vmar_perms;
        let base = if options & (ZX_VM_SPECIFIC | ZX_VM_SPECIFIC_OVERWRITE) != 0 {
            if v.flags & ZX_VM_CAN_MAP_SPECIFIC == 0 {
                return Err(ZX_ERR_ACCESS_DENIED);
            }
            let (start, end) = self
                .sub_range(vmar, vmar_offset, len)
                .ok_or(ZX_ERR_INVALID_ARGS)?;
            if self.overlaps(vmar, start, end) {
                if !overwrite {
                    return Err(ZX_ERR_ALREADY_EXISTS);
                }
                // An overwrite replaces mappings, never sub-VMARs (Zircon: INVALID_ARGS for any
                // sub-VMAR in the range).
                self.unmap_range(vmar, start, end, false)?;
            }
            start
        } else {
            if vmar_offset != 0 {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            // Zircon: longer than the VMAR is INVALID_ARGS, before any search.
            if len > self.vmars[vmar].size {
                return Err(ZX_ERR_INVALID_ARGS);
            }
            self.find_gap(vmar, len).ok_or(ZX_ERR_NO_RESOURCES)?
        };
        // ZX_VM_MAP_RANGE only prefaults translations: nothing the model can see.
        self.insert_child(
            vmar,
            MChild::Map(MMapping {
                base,
                len,
                vmo,
                vmo_offset,
                perms,
                max_perms,
            }),
        );
        Ok(base)
    }

    /// `zx_vmar_unmap`: needs no right. Removes the mappings in the range (splitting those that
    /// straddle its ends) and destroys sub-VMARs wholly inside it; a sub-VMAR partly inside is
    /// `ZX_ERR_INVALID_ARGS`.
    pub fn vmar_unmap(&mut self, p: usize, h: zx_handle_t, addr: u64, len: u64) -> R {
        let (vmar, _) = self.vmar_handle(p, h)?;
        let len = round_up(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        if len == 0 || !aligned(addr) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if !self.vmars[vmar].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let end = addr.checked_add(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        let v = &self.vmars[vmar];
        if addr < v.base || end > v.end() {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        self.unmap_range(vmar, addr, end, true)
    }

    /// `zx_vmar_protect`: each `ZX_VM_PERM_*` needs its right on the handle; the range must be
    /// wholly mapped (looking through sub-VMARs: `ZX_ERR_NOT_FOUND`), and each mapping must be
    /// allowed the permissions (`ZX_ERR_ACCESS_DENIED`).
    pub fn vmar_protect(
        &mut self,
        p: usize,
        h: zx_handle_t,
        options: zx_vm_option_t,
        addr: u64,
        len: u64,
    ) -> R {
        let (vmar, rights) = self.vmar_handle(p, h)?;
        if options & !ALL_VM_OPTIONS != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        need(rights, rights_for_perms(options & PERMS))?;
        if options & !PERMS != 0 || !valid_perms(options) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let len = round_up(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        if len == 0 || !aligned(addr) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if !self.vmars[vmar].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        let end = addr.checked_add(len).ok_or(ZX_ERR_INVALID_ARGS)?;
        let v = &self.vmars[vmar];
        if addr < v.base || end > v.end() {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        let covered = self.covering(vmar, addr, end).ok_or(ZX_ERR_NOT_FOUND)?;
        if covered
            .iter()
            .any(|&(v, lo, _)| options & !self.piece_at(v, lo).max_perms != 0)
        {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        for &(v, lo, hi) in &covered {
            self.split(v, lo);
            self.split(v, hi);
            for child in &mut self.vmars[v].children {
                if let MChild::Map(m) = child {
                    if m.base >= lo && m.base < hi {
                        m.perms = options;
                    }
                }
            }
        }
        Ok(())
    }

    /// `zx_vmar_destroy`: needs `ZX_RIGHT_OP_CHILDREN`.
    pub fn vmar_destroy(&mut self, p: usize, h: zx_handle_t) -> R {
        let (vmar, rights) = self.vmar_handle(p, h)?;
        need(rights, ZX_RIGHT_OP_CHILDREN)?;
        if self.vmars[vmar].parent.is_none() && !ROOT_VMAR_DESTROY_ALLOWED {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        if !self.vmars[vmar].alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        if let Some(parent) = self.vmars[vmar].parent {
            self.vmars[parent]
                .children
                .retain(|c| !matches!(c, MChild::Vmar(id) if *id == vmar));
        }
        self.destroy_subtree(vmar);
        Ok(())
    }

    /// `zx_vmar_op_range`, checks in the order of docs/contract.md ("Order of checks"), each before
    /// anything changes; then DECOMMIT of the VMO pages behind every mapping piece in the range.
    #[allow(clippy::too_many_arguments)]
    pub fn vmar_op_range(
        &mut self,
        p: usize,
        h: zx_handle_t,
        op: u32,
        addr: u64,
        size: u64,
        buffer: u64,
        buffer_size: usize,
    ) -> R {
        // 1. A handle, to a VMAR.
        let (vmar, rights) = self.vmar_handle(p, h)?;
        // 2. An empty buffer.
        if buffer != 0 || buffer_size != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // 3. A defined op (1-4, 6-14), and DECOMMIT.
        if !matches!(op, 1..=4 | 6..=14) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if op != ZX_VMAR_OP_DECOMMIT {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        // 4. The handle may write.
        need(rights, ZX_RIGHT_WRITE)?;
        // 5. Size rounded up (overflow: OUT_OF_RANGE); not zero; address aligned.
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size == 0 || !aligned(addr) {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        // 6. A live VMAR.
        let v = &self.vmars[vmar];
        if !v.alive {
            return Err(ZX_ERR_BAD_STATE);
        }
        // 7. Wholly inside the VMAR, overflow included.
        let end = addr.checked_add(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if addr < v.base || end > v.end() {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        // 8. Every page covered by a mapping, through nested VMARs.
        let covered = self.covering(vmar, addr, end).ok_or(ZX_ERR_BAD_STATE)?;
        // Each piece with the VMO pages behind its part of the range.
        let pieces: Vec<(MMapping, u64, u64)> = covered
            .iter()
            .map(|&(v, lo, hi)| {
                let m = self.piece_at(v, lo).clone();
                let first = (lo - m.base + m.vmo_offset) / PAGE;
                let last = (hi - m.base + m.vmo_offset) / PAGE;
                (m, first, last)
            })
            .collect();
        // 9. Every mapping could be writable: made from handles that both had WRITE (a mapping
        //    made read-only by choice, or by protect, still qualifies).
        if pieces
            .iter()
            .any(|(m, _, _)| m.max_perms & ZX_VM_PERM_WRITE == 0)
        {
            return Err(ZX_ERR_ACCESS_DENIED);
        }
        // 10. Every VMO supports decommit; then no affected page is pinned.
        if pieces
            .iter()
            .any(|(m, _, _)| self.vmos[m.vmo].kind != MKind::Paged)
        {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        if pieces
            .iter()
            .any(|(m, first, last)| self.any_pinned(m.vmo, *first, *last))
        {
            return Err(ZX_ERR_BAD_STATE);
        }
        // The effect: the pages leave their VMOs (every mapping of them reads zero next).
        for (m, first, last) in pieces {
            self.decommit_pages(m.vmo, first, last);
        }
        Ok(())
    }

    // ---- CPUs ------------------------------------------------------------------------------------

    /// The regions of process `p`'s address space, as `(base, size)`: every mapping piece, then
    /// every sub-VMAR, each in address order (looking through sub-VMARs).
    pub fn regions(&self, p: usize) -> Vec<(u64, u64)> {
        let (mut pieces, mut vmars) = (Vec::new(), Vec::new());
        let mut stack = vec![self.procs[p].root];
        while let Some(vmar) = stack.pop() {
            for child in &self.vmars[vmar].children {
                match child {
                    MChild::Map(m) => pieces.push((m.base, m.len)),
                    MChild::Vmar(id) => {
                        vmars.push((self.vmars[*id].base, self.vmars[*id].size));
                        stack.push(*id);
                    }
                }
            }
        }
        pieces.sort_unstable();
        vmars.sort_unstable();
        pieces.extend(vmars);
        pieces
    }

    /// The mapping piece that translates `va` in process `p`'s address space, looking through
    /// sub-VMARs.
    fn mapping_at(&self, p: usize, va: u64) -> Result<&MMapping, MFault> {
        let mut vmar = self.procs[p].root;
        if !self.vmars[vmar].alive {
            return Err(MFault::NotMapped);
        }
        loop {
            let child = self.vmars[vmar]
                .children
                .iter()
                .find(|c| {
                    let (b, e) = self.span(c);
                    b <= va && va < e
                })
                .ok_or(MFault::NotMapped)?;
            match child {
                MChild::Vmar(id) => vmar = *id,
                MChild::Map(m) => return Ok(m),
            }
        }
    }

    /// A load (`store == None`) or store of the 8-byte word at `va` by `cpu`, as the MMU and the
    /// page-fault path would do it: a load of an uncommitted page commits a zero page.
    pub fn access(&mut self, cpu: usize, va: u64, store: Option<u64>) -> Result<u64, MFault> {
        let p = self.cpus[cpu].ok_or(MFault::NotMapped)?;
        let mapping = self.mapping_at(p, va)?.clone();
        // Every access needs read permission (no translation is made without it); a store needs
        // write too.
        let needed = ZX_VM_PERM_READ | if store.is_some() { ZX_VM_PERM_WRITE } else { 0 };
        if mapping.perms & needed != needed {
            return Err(MFault::AccessDenied);
        }
        let index = (mapping.vmo_offset + (va - mapping.base)) / PAGE;
        if index >= self.vmos[mapping.vmo].pages {
            return Err(MFault::OutOfRange);
        }
        let at = (va % PAGE) as usize;
        let word = &mut self.commit_page(mapping.vmo, index)[at..at + 8];
        match store {
            Some(value) => {
                word.copy_from_slice(&value.to_le_bytes());
                Ok(0)
            }
            None => Ok(u64::from_le_bytes(word.try_into().expect("8 bytes"))),
        }
    }

    /// The VMO page that an access at `va` by `cpu` reaches, if it reaches one.
    pub fn fault_target(&self, cpu: usize, va: u64) -> Option<(usize, u64)> {
        let m = self.mapping_at(self.cpus[cpu]?, va).ok()?;
        let index = (m.vmo_offset + (va - m.base)) / PAGE;
        (index < self.vmos[m.vmo].pages).then_some((m.vmo, index))
    }
}

// =================================================================================================
// Operations
// =================================================================================================

/// A handle argument, resolved against the model's state when the op runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H {
    /// The i-th (mod count) live VMO handle of the process, in value order.
    Vmo(u8),
    /// The i-th live VMAR handle (index 0 is usually the root's).
    Vmar(u8),
    /// The i-th live handle of either kind.
    Any(u8),
    /// The i-th most recently issued VMO handle of the process that is still live.
    RecentVmo(u8),
    /// The i-th most recently issued VMAR handle of the process that is still live.
    RecentVmar(u8),
    /// The i-th value ever issued to the process (perhaps closed since).
    Stale(u8),
    /// `ZX_HANDLE_INVALID`.
    Invalid,
    /// A value never issued.
    Garbage(u8),
}

/// A VMO offset or VMAR-relative offset: whole pages, or any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Off {
    Pages(u8),
    Raw(u64),
}

/// A length: whole pages, or any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    Pages(u8),
    Raw(u64),
}

/// A user address, resolved when the op runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// Near an address returned by an earlier map or allocate (or a root VMAR's base).
    Known { idx: u8, pages: i8, bytes: u16 },
    /// In (or just past) one of the regions of the address space: the mapping pieces, then the
    /// sub-VMARs, each in address order; `page` is taken mod the region's pages + 1.
    In { idx: u8, page: u8, bytes: u16 },
    /// `pages` from the `back`-th most recent address a CPU accessed in the address space (so
    /// that accesses, protections, decommits and unmaps meet), keeping its offset in the page
    /// or not.
    Touched {
        back: u8,
        pages: i8,
        keep_offset: bool,
    },
    /// Any value.
    Raw(u64),
}

/// The rights a duplicate or replace asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RightsArg {
    /// `ZX_RIGHT_SAME_RIGHTS`.
    Same,
    /// The handle's rights minus those picked by the mask from [`DROPPABLE`].
    Drop(u8),
    /// The handle's rights plus one more right (rights may not grow).
    Grow(u8),
    /// Any value.
    Raw(u32),
}

/// The rights [`RightsArg::Drop`] picks from.
pub const DROPPABLE: [zx_rights_t; 8] = [
    ZX_RIGHT_READ,
    ZX_RIGHT_WRITE,
    ZX_RIGHT_EXECUTE,
    ZX_RIGHT_MAP,
    ZX_RIGHT_DUPLICATE,
    ZX_RIGHT_TRANSFER,
    ZX_RIGHT_INSPECT,
    ZX_RIGHT_OP_CHILDREN,
];

/// One step of a sequence. `p` picks a process (mod their count); `cpu` a CPU (mod their count),
/// or, from 128 up, the CPU that made the previous access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    VmoCreate {
        p: u8,
        size: Len,
        options: u32,
    },
    VmoRead {
        p: u8,
        h: H,
        offset: Off,
        len: u16,
    },
    VmoWrite {
        p: u8,
        h: H,
        offset: Off,
        len: u16,
        seed: u8,
    },
    VmoOpRange {
        p: u8,
        h: H,
        op: u32,
        offset: Off,
        size: Len,
        buffer: u64,
    },
    VmoGetSize {
        p: u8,
        h: H,
    },
    VmoInfo {
        p: u8,
        h: H,
    },
    VmarAllocate {
        p: u8,
        h: H,
        options: u32,
        offset: Off,
        size: Len,
    },
    VmarMap {
        p: u8,
        vmar: H,
        vmo: H,
        options: u32,
        vmar_offset: Off,
        vmo_offset: Off,
        len: Len,
    },
    VmarUnmap {
        p: u8,
        h: H,
        addr: Addr,
        len: Len,
    },
    VmarProtect {
        p: u8,
        h: H,
        options: u32,
        addr: Addr,
        len: Len,
    },
    VmarDestroy {
        p: u8,
        h: H,
    },
    VmarOpRange {
        p: u8,
        h: H,
        op: u32,
        addr: Addr,
        len: Len,
        buffer: u64,
        buffer_size: usize,
    },
    Duplicate {
        p: u8,
        h: H,
        rights: RightsArg,
    },
    Replace {
        p: u8,
        h: H,
        rights: RightsArg,
    },
    Close {
        p: u8,
        h: H,
    },
    /// Moves a handle to the next process (kernel side, as a channel would).
    Transfer {
        p: u8,
        h: H,
    },
    Load {
        cpu: u8,
        addr: Addr,
    },
    Store {
        cpu: u8,
        addr: Addr,
        value: u64,
    },
    /// Switches a CPU to a process's address space, or to none.
    Switch {
        cpu: u8,
        to: Option<u8>,
    },
    /// Kernel-side `Vmo::pin` / `Vmo::unpin`.
    Pin {
        p: u8,
        h: H,
        offset: Off,
        len: Len,
    },
    Unpin {
        p: u8,
        h: H,
        offset: Off,
        len: Len,
    },
    /// A kernel-made contiguous VMO handed to the process.
    Contiguous {
        p: u8,
        pages: u8,
    },
    /// A kernel-made physical VMO (over frames the harness owns) handed to the process.
    Physical {
        p: u8,
        pages: u8,
    },
    /// Compare every VMO's contents now.
    Check,
}

/// A start for random sequences, so that they begin with something to work on: process 0 has
/// two VMOs with data, both mapped (one read-write with `ZX_VM_MAP_RANGE`, one read-only) and a
/// sub-VMAR holding a second mapping of the first; process 1 maps the first VMO too (its handle
/// was duplicated and transferred) and has a small VMO of its own, mapped.
pub fn prelude() -> Vec<Op> {
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let map = |p, vmo, options, vmar_offset, first, pages| Op::VmarMap {
        p,
        vmar: H::Vmar(if vmar_offset > 0 { 1 } else { 0 }),
        vmo: H::Vmo(vmo),
        options,
        vmar_offset: Off::Pages(vmar_offset),
        vmo_offset: Off::Pages(first),
        len: Len::Pages(pages),
    };
    vec![
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(8),
            options: 0,
        },
        Op::VmoCreate {
            p: 0,
            size: Len::Pages(4),
            options: 0,
        },
        Op::VmoWrite {
            p: 0,
            h: H::Vmo(0),
            offset: Off::Pages(1),
            len: 3 * PAGE as u16,
            seed: 1,
        },
        Op::VmoWrite {
            p: 0,
            h: H::Vmo(1),
            offset: Off::Raw(100),
            len: 5000,
            seed: 2,
        },
        map(0, 0, rw | ZX_VM_MAP_RANGE, 0, 0, 8),
        map(0, 1, ZX_VM_PERM_READ, 0, 0, 4),
        Op::VmarAllocate {
            p: 0,
            h: H::Vmar(0),
            options: ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_SPECIFIC,
            offset: Off::Pages(0),
            size: Len::Pages(24),
        },
        map(0, 0, rw | ZX_VM_SPECIFIC, 4, 2, 4),
        Op::Duplicate {
            p: 0,
            h: H::Vmo(0),
            rights: RightsArg::Same,
        },
        Op::Transfer { p: 0, h: H::Vmo(2) },
        Op::VmoCreate {
            p: 1,
            size: Len::Pages(2),
            options: 0,
        },
        map(1, 0, rw, 0, 0, 8),
        map(1, 1, rw, 0, 0, 2),
    ]
}

/// The bytes a `VmoWrite` with `seed` writes.
pub fn write_data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (usize::from(seed) * 131 + i * 7 + 1) as u8)
        .collect()
}

/// Handle values this crate never issues in these tests (slot 1000 and beyond, or malformed).
const GARBAGE: [zx_handle_t; 5] = [0x0fa3, 0x7fff_fff3, 0x1234_5678, u32::MAX - 4, 1];

/// Outcome counts (`"op: status"`), collected while [`collect_stats`] is on: to show that the
/// random sequences reach the outcomes that matter.
static STATS: std::sync::Mutex<Option<BTreeMap<String, u64>>> = std::sync::Mutex::new(None);

/// Starts (`true`) or stops collecting outcome counts; stopping returns them.
pub fn collect_stats(on: bool) -> BTreeMap<String, u64> {
    let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let old = stats.take().unwrap_or_default();
    if on {
        *stats = Some(BTreeMap::new());
    }
    old
}

fn record(op: &str, outcome: &str) {
    let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stats) = stats.as_mut() {
        *stats.entry(format!("{op}: {outcome}")).or_insert(0) += 1;
    }
}

/// The name of an op's variant.
fn op_name(op: &Op) -> &'static str {
    match op {
        Op::VmoCreate { .. } => "zx_vmo_create",
        Op::VmoRead { .. } => "zx_vmo_read",
        Op::VmoWrite { .. } => "zx_vmo_write",
        Op::VmoOpRange { .. } => "zx_vmo_op_range",
        Op::VmoGetSize { .. } => "zx_vmo_get_size",
        Op::VmoInfo { .. } => "zx_object_get_info_vmo",
        Op::VmarAllocate { .. } => "zx_vmar_allocate",
        Op::VmarMap { .. } => "zx_vmar_map",
        Op::VmarUnmap { .. } => "zx_vmar_unmap",
        Op::VmarProtect { .. } => "zx_vmar_protect",
        Op::VmarDestroy { .. } => "zx_vmar_destroy",
        Op::VmarOpRange { .. } => "zx_vmar_op_range",
        Op::Duplicate { .. } => "zx_handle_duplicate",
        Op::Replace { .. } => "zx_handle_replace",
        Op::Close { .. } => "zx_handle_close",
        Op::Transfer { .. } => "transfer",
        Op::Load { .. } => "load",
        Op::Store { .. } => "store",
        Op::Switch { .. } => "switch",
        Op::Pin { .. } => "pin",
        Op::Unpin { .. } => "unpin",
        Op::Contiguous { .. } => "contiguous",
        Op::Physical { .. } => "physical",
        Op::Check => "check",
    }
}

// =================================================================================================
// The harness
// =================================================================================================

/// How to build a [`World`].
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub format: Format,
    pub cpus: usize,
    pub tags: u16,
    pub broadcast: bool,
    pub frames: usize,
    /// One process per entry, with this handle limit.
    pub handle_limits: Vec<usize>,
}

impl WorldConfig {
    /// Two processes (the second with a small handle table) and three CPUs.
    pub fn standard(format: Format, tags: u16, broadcast: bool) -> WorldConfig {
        WorldConfig {
            format,
            cpus: 3,
            tags,
            broadcast,
            frames: 4096,
            handle_limits: vec![1 << 16, 6],
        }
    }
}

/// The crate on a simulated machine, the model, and what links them.
pub struct World {
    pub machine: Arc<SimMachine>,
    pub procs: Vec<Arc<Process>>,
    pub cpus: Vec<SimCpu>,
    pub model: Model,
    /// The crate object behind each model VMO (weak: the crate decides when it dies).
    vmo_objs: Vec<Weak<Vmo>>,
    /// The crate object behind each model VMAR.
    vmar_objs: Vec<Arc<Vmar>>,
    /// Every handle value issued to each process.
    issued: Vec<Vec<zx_handle_t>>,
    /// Addresses returned by map and allocate, and the root VMARs' base.
    addrs: Vec<u64>,
    /// Addresses accessed, per address space.
    touched: Vec<Vec<u64>>,
    /// The CPU that made the last access.
    last_cpu: usize,
    /// The machine's counters before the op being run.
    counters_before: CounterSnapshot,
    /// Frames the harness allocated to back physical VMOs: (first, count).
    phys: Vec<(PhysAddr, u64)>,
    /// Each physical model VMO's first frame.
    phys_base: BTreeMap<usize, PhysAddr>,
    /// Accept `ZX_ERR_NO_MEMORY` (and `FaultError::NoMemory`) where the model says success.
    pub exhaustion: bool,
    /// Calls that failed for lack of memory.
    pub no_memory: u64,
    /// Things worth reporting that are not failures.
    pub notes: Vec<String>,
    /// Compare contents every this many steps (0: only on `Op::Check` and at the end).
    pub deep_every: usize,
    steps: usize,
    /// The op being run, for outcome counts.
    current: &'static str,
    /// The crate's status for the last syscall-like op (loads, stores and switches leave it).
    pub last_status: Option<zx_status_t>,
    /// The outcome of the last load or store: `Some(None)` if it succeeded.
    pub last_fault: Option<Option<FaultError>>,
}

impl World {
    pub fn new(config: &WorldConfig) -> World {
        let machine = SimMachine::new(SimConfig {
            frames: config.frames,
            cpus: config.cpus,
            poison_freed: true,
            tags: config.tags,
            broadcast: config.broadcast,
        });
        let platform: Arc<dyn Platform> = machine.clone();
        let mut model = Model::new(config.cpus);
        let mut procs = Vec::new();
        let mut vmar_objs = Vec::new();
        let mut issued = Vec::new();
        for &limit in &config.handle_limits {
            let process = Process::with_handle_limit(platform.clone(), config.format, limit)
                .expect("Process::with_handle_limit");
            let root = process.root_vmar_handle();
            model.add_process(limit, root);
            vmar_objs.push(process.vmar(root).expect("root VMAR").0);
            issued.push(vec![root]);
            procs.push(process);
        }
        let cpus: Vec<SimCpu> = (0..config.cpus).map(|i| machine.cpu(i)).collect();
        for (i, cpu) in cpus.iter().enumerate() {
            let p = i % procs.len();
            cpu.switch_to(Some(procs[p].aspace()));
            model.cpus[i] = Some(p);
        }
        World {
            machine,
            procs,
            cpus,
            model,
            vmo_objs: Vec::new(),
            vmar_objs,
            issued,
            addrs: vec![USER_ASPACE_BASE],
            touched: vec![Vec::new(); config.handle_limits.len()],
            last_cpu: 0,
            counters_before: CounterSnapshot::default(),
            phys: Vec::new(),
            phys_base: BTreeMap::new(),
            exhaustion: false,
            no_memory: 0,
            notes: Vec::new(),
            deep_every: 8,
            steps: 0,
            current: "",
            last_status: None,
            last_fault: None,
        }
    }

    // ---- resolving arguments ---------------------------------------------------------------------

    fn proc(&self, p: u8) -> usize {
        usize::from(p) % self.procs.len()
    }

    fn cpu(&self, cpu: u8) -> usize {
        if cpu >= 128 {
            self.last_cpu
        } else {
            usize::from(cpu) % self.cpus.len()
        }
    }

    fn live_handles(&self, p: usize, pick: impl Fn(&Obj) -> bool) -> Vec<zx_handle_t> {
        self.model.procs[p]
            .handles
            .iter()
            .filter(|(_, h)| pick(&h.obj))
            .map(|(&v, _)| v)
            .collect()
    }

    fn pick(list: &[zx_handle_t], i: u8) -> zx_handle_t {
        if list.is_empty() {
            ZX_HANDLE_INVALID
        } else {
            list[usize::from(i) % list.len()]
        }
    }

    /// The handle value `h` names in process `p` now.
    pub fn handle(&self, p: usize, h: H) -> zx_handle_t {
        match h {
            H::Vmo(i) => Self::pick(&self.live_handles(p, |o| matches!(o, Obj::Vmo(_))), i),
            H::Vmar(i) => Self::pick(&self.live_handles(p, |o| matches!(o, Obj::Vmar(_))), i),
            H::Any(i) => Self::pick(&self.live_handles(p, |_| true), i),
            H::RecentVmo(i) | H::RecentVmar(i) => {
                let vmo = matches!(h, H::RecentVmo(_));
                self.issued[p]
                    .iter()
                    .rev()
                    .filter(|v| {
                        self.model.procs[p]
                            .handles
                            .get(v)
                            .is_some_and(|mh| matches!(mh.obj, Obj::Vmo(_)) == vmo)
                    })
                    .nth(usize::from(i))
                    .copied()
                    .unwrap_or(ZX_HANDLE_INVALID)
            }
            H::Stale(i) => Self::pick(&self.issued[p], i),
            H::Invalid => ZX_HANDLE_INVALID,
            H::Garbage(i) => GARBAGE[usize::from(i) % GARBAGE.len()],
        }
    }

    fn off(o: Off) -> u64 {
        match o {
            Off::Pages(n) => u64::from(n) * PAGE,
            Off::Raw(v) => v,
        }
    }

    fn len(l: Len) -> u64 {
        match l {
            Len::Pages(n) => u64::from(n) * PAGE,
            Len::Raw(v) => v,
        }
    }

    /// The address `a` names now, in process `p`'s address space.
    pub fn addr(&self, p: usize, a: Addr) -> u64 {
        match a {
            Addr::Touched {
                back,
                pages,
                keep_offset,
            } => {
                let touched = &self.touched[p];
                let Some(&va) = touched
                    .iter()
                    .rev()
                    .nth(usize::from(back) % touched.len().max(1))
                else {
                    return USER_ASPACE_BASE;
                };
                let va = if keep_offset { va } else { va & !(PAGE - 1) };
                va.wrapping_add_signed(i64::from(pages) * PAGE as i64)
            }
            Addr::In { idx, page, bytes } => {
                let regions = self.model.regions(p);
                if regions.is_empty() {
                    return USER_ASPACE_BASE + u64::from(bytes);
                }
                let (base, size) = regions[usize::from(idx) % regions.len()];
                base + (u64::from(page) % (size / PAGE + 1)) * PAGE + u64::from(bytes)
            }
            Addr::Known { idx, pages, bytes } => self.addrs[usize::from(idx) % self.addrs.len()]
                .wrapping_add_signed(i64::from(pages) * PAGE as i64)
                .wrapping_add(u64::from(bytes)),
            Addr::Raw(v) => v,
        }
    }

    fn rights_arg(&self, p: usize, handle: zx_handle_t, r: RightsArg) -> u32 {
        let current = self.model.procs[p]
            .handles
            .get(&handle)
            .map_or(0, |h| h.rights);
        match r {
            RightsArg::Same => ZX_RIGHT_SAME_RIGHTS,
            RightsArg::Drop(mask) => DROPPABLE
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .fold(current, |rights, (_, r)| rights & !r),
            RightsArg::Grow(i) => current | DROPPABLE[usize::from(i) % DROPPABLE.len()],
            RightsArg::Raw(v) => v,
        }
    }

    // ---- comparing -------------------------------------------------------------------------------

    /// Compares the crate's status with the model's. In exhaustion mode, `ZX_ERR_NO_MEMORY` where
    /// the model succeeded undoes the model's step (`saved`). Returns whether both succeeded.
    fn settle(
        &mut self,
        what: &dyn Fn() -> String,
        saved: Option<Model>,
        got: zx_status_t,
        want: zx_status_t,
    ) -> Result<bool, String> {
        record(self.current, status_name(got));
        self.last_status = Some(got);
        // A call that fails changes nothing, down to the machine: no frame allocated or freed,
        // no invalidation, no IPI. (Out of memory, a call may have taken frames and given them
        // back; the kernel-side creations here take theirs before they can fail; and a failed
        // replace still closes its handle, which may free the last reference to a VMO.)
        let exempt = matches!(
            self.current,
            "contiguous" | "physical" | "zx_handle_replace"
        );
        if got != ZX_OK && !self.exhaustion && !exempt {
            let now = self.machine.counters();
            if now != self.counters_before {
                return Err(format!(
                    "{}: failed with {}, but the machine changed: {:?}",
                    what(),
                    status_name(got),
                    now.since(&self.counters_before)
                ));
            }
        }
        if got == want {
            return Ok(got == ZX_OK);
        }
        // Only calls that take frames may run out of them (zx_vmar_op_range, unmap, protect and
        // the handle calls never allocate a frame, and their contracts have no NO_MEMORY).
        let allocates = matches!(
            self.current,
            "zx_vmo_write" | "zx_vmo_op_range" | "zx_vmar_map" | "pin" | "contiguous"
        );
        if self.exhaustion && allocates && got == ZX_ERR_NO_MEMORY && want == ZX_OK {
            self.model = saved.expect("a copy is kept in exhaustion mode");
            self.no_memory += 1;
            return Ok(false);
        }
        Err(format!(
            "{}: crate returned {} ({got}), model {} ({want})",
            what(),
            status_name(got),
            status_name(want)
        ))
    }

    fn saved(&self) -> Option<Model> {
        self.exhaustion.then(|| self.model.clone())
    }

    /// A handle value the crate just issued to `p` must be new (and not `ZX_HANDLE_INVALID`).
    fn check_new_handle(&self, p: usize, value: zx_handle_t, what: &dyn Fn() -> String) -> R2 {
        if value == ZX_HANDLE_INVALID || self.model.procs[p].handles.contains_key(&value) {
            return Err(format!(
                "{}: issued handle {value:#x}, which is invalid or already live",
                what()
            ));
        }
        Ok(())
    }

    fn issue(&mut self, p: usize, value: zx_handle_t) {
        self.issued[p].push(value);
    }

    fn register_vmo(&mut self, p: usize, value: zx_handle_t) {
        let vmo = self.procs[p].vmo(value).expect("a new VMO handle").0;
        self.vmo_objs.push(Arc::downgrade(&vmo));
        assert_eq!(self.vmo_objs.len(), self.model.vmos.len());
    }

    fn register_vmar(&mut self, p: usize, value: zx_handle_t) {
        let vmar = self.procs[p].vmar(value).expect("a new VMAR handle").0;
        self.vmar_objs.push(vmar);
        assert_eq!(self.vmar_objs.len(), self.model.vmars.len());
    }

    // ---- running ---------------------------------------------------------------------------------

    /// Runs `op` on the crate and the model, compares, and checks the state after.
    pub fn step(&mut self, op: &Op) -> R2 {
        self.step_unchecked(op)?;
        self.steps += 1;
        self.check().map_err(|e| format!("after {op:?}: {e}"))?;
        if matches!(op, Op::Check) || (self.deep_every != 0 && (self.steps % self.deep_every == 0))
        {
            self.deep_check()
                .map_err(|e| format!("after {op:?}: {e}"))?;
        }
        Ok(())
    }

    /// Runs every op of `ops` with [`World::step`], then [`World::finish`].
    pub fn run(mut self, ops: &[Op]) -> R2 {
        for (i, op) in ops.iter().enumerate() {
            self.step(op).map_err(|e| format!("step {i}: {e}"))?;
        }
        self.finish()
    }

    /// Runs `op` and compares its results, without the state check.
    pub fn step_unchecked(&mut self, op: &Op) -> R2 {
        self.current = op_name(op);
        self.counters_before = self.machine.counters();
        self.last_status = None;
        self.last_fault = None;
        match *op {
            Op::VmoCreate { p, size, options } => {
                let p = self.proc(p);
                let size = Self::len(size);
                let what = || format!("zx_vmo_create(p{p}, size {size:#x}, options {options:#x})");
                let saved = self.saved();
                let mut out = ZX_HANDLE_INVALID;
                let got = zx_vmo_create(&self.procs[p], size, options, &mut out);
                if got == ZX_OK {
                    self.check_new_handle(p, out, &what)?;
                }
                let want = status(self.model.vmo_create(p, size, options, out));
                if self.settle(&what, saved, got, want)? {
                    self.issue(p, out);
                    self.register_vmo(p, out);
                }
            }
            Op::VmoRead { p, h, offset, len } => {
                let p = self.proc(p);
                let (h, offset) = (self.handle(p, h), Self::off(offset));
                let what = || format!("zx_vmo_read(p{p}, {h:#x}, offset {offset:#x}, len {len})");
                let mut buf = vec![0xa5; usize::from(len)];
                let got = zx_vmo_read(&self.procs[p], h, &mut buf, offset);
                let want = self.model.vmo_read(p, h, offset, usize::from(len));
                if self.settle(
                    &what,
                    None,
                    got,
                    status(want.as_ref().map(drop).map_err(|&e| e)),
                )? {
                    let want = want.expect("ok");
                    if buf != want {
                        return Err(format!("{}: {}", what(), diff_bytes(&buf, &want, offset)));
                    }
                }
            }
            Op::VmoWrite {
                p,
                h,
                offset,
                len,
                seed,
            } => {
                let p = self.proc(p);
                let (h, offset) = (self.handle(p, h), Self::off(offset));
                let data = write_data(seed, usize::from(len));
                let what = || format!("zx_vmo_write(p{p}, {h:#x}, offset {offset:#x}, len {len})");
                let saved = self.saved();
                let got = zx_vmo_write(&self.procs[p], h, &data, offset);
                let want = status(self.model.vmo_write(p, h, offset, &data));
                self.settle(&what, saved, got, want)?;
            }
            Op::VmoOpRange {
                p,
                h,
                op,
                offset,
                size,
                buffer,
            } => {
                let p = self.proc(p);
                let (h, offset, size) = (self.handle(p, h), Self::off(offset), Self::len(size));
                let what = || {
                    format!(
                        "zx_vmo_op_range(p{p}, {h:#x}, op {op}, offset {offset:#x}, size {size:#x}, buffer {buffer:#x})"
                    )
                };
                let saved = self.saved();
                let got = zx_vmo_op_range(&self.procs[p], h, op, offset, size, buffer, 0);
                let want = status(self.model.vmo_op_range(p, h, op, offset, size, buffer, 0));
                self.settle(&what, saved, got, want)?;
            }
            Op::VmoGetSize { p, h } => {
                let p = self.proc(p);
                let h = self.handle(p, h);
                let what = || format!("zx_vmo_get_size(p{p}, {h:#x})");
                let mut size = 0;
                let got = zx_vmo_get_size(&self.procs[p], h, &mut size);
                let want = self.model.vmo_get_size(p, h);
                if self.settle(&what, None, got, status(want.map(drop)))? && Ok(size) != want {
                    return Err(format!("{}: size {size:#x}, model {want:?}", what()));
                }
            }
            Op::VmoInfo { p, h } => {
                let p = self.proc(p);
                let h = self.handle(p, h);
                let what = || format!("zx_object_get_info_vmo(p{p}, {h:#x})");
                let mut info = zx_info_vmo_t::default();
                let got = zx_object_get_info_vmo(&self.procs[p], h, &mut info);
                let want = self.model.vmo_info(p, h);
                if self.settle(&what, None, got, status(want.map(drop)))? {
                    let got = MInfo {
                        size_bytes: info.size_bytes,
                        committed_bytes: info.committed_bytes,
                        num_mappings: info.num_mappings,
                    };
                    if Ok(got) != want {
                        return Err(format!("{}: {got:?}, model {want:?}", what()));
                    }
                }
            }
            Op::VmarAllocate {
                p,
                h,
                options,
                offset,
                size,
            } => {
                let p = self.proc(p);
                let (h, offset, size) = (self.handle(p, h), Self::off(offset), Self::len(size));
                let what = || {
                    format!(
                        "zx_vmar_allocate(p{p}, {h:#x}, options {options:#x}, offset {offset:#x}, size {size:#x})"
                    )
                };
                let saved = self.saved();
                let (mut child, mut addr) = (ZX_HANDLE_INVALID, 0);
                let got = zx_vmar_allocate(
                    &self.procs[p],
                    h,
                    options,
                    offset,
                    size,
                    &mut child,
                    &mut addr,
                );
                if got == ZX_OK {
                    self.check_new_handle(p, child, &what)?;
                }
                let want = self.model.vmar_allocate(p, h, options, offset, size, child);
                if self.settle(&what, saved, got, status(want.map(drop)))? {
                    if Ok(addr) != want {
                        return Err(format!("{}: address {addr:#x}, model {want:x?}", what()));
                    }
                    self.issue(p, child);
                    self.register_vmar(p, child);
                    self.addrs.push(addr);
                }
            }
            Op::VmarMap {
                p,
                vmar,
                vmo,
                options,
                vmar_offset,
                vmo_offset,
                len,
            } => {
                let p = self.proc(p);
                let (vmar, vmo) = (self.handle(p, vmar), self.handle(p, vmo));
                let (vmar_offset, vmo_offset) = (Self::off(vmar_offset), Self::off(vmo_offset));
                let len = Self::len(len);
                let what = || {
                    format!(
                        "zx_vmar_map(p{p}, {vmar:#x}, options {options:#x}, vmar_offset {vmar_offset:#x}, vmo {vmo:#x}, vmo_offset {vmo_offset:#x}, len {len:#x})"
                    )
                };
                let saved = self.saved();
                let mut addr = 0;
                let got = zx_vmar_map(
                    &self.procs[p],
                    vmar,
                    options,
                    vmar_offset,
                    vmo,
                    vmo_offset,
                    len,
                    &mut addr,
                );
                let want = self
                    .model
                    .vmar_map(p, vmar, options, vmar_offset, vmo, vmo_offset, len);
                if self.settle(&what, saved, got, status(want.map(drop)))? {
                    if Ok(addr) != want {
                        return Err(format!("{}: address {addr:#x}, model {want:x?}", what()));
                    }
                    self.addrs.push(addr);
                }
            }
            Op::VmarUnmap { p, h, addr, len } => {
                let p = self.proc(p);
                let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
                let what = || format!("zx_vmar_unmap(p{p}, {h:#x}, {addr:#x}, len {len:#x})");
                let got = zx_vmar_unmap(&self.procs[p], h, addr, len);
                let want = status(self.model.vmar_unmap(p, h, addr, len));
                self.settle(&what, None, got, want)?;
            }
            Op::VmarProtect {
                p,
                h,
                options,
                addr,
                len,
            } => {
                let p = self.proc(p);
                let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
                let what = || {
                    format!("zx_vmar_protect(p{p}, {h:#x}, options {options:#x}, {addr:#x}, len {len:#x})")
                };
                let got = zx_vmar_protect(&self.procs[p], h, options, addr, len);
                let want = status(self.model.vmar_protect(p, h, options, addr, len));
                self.settle(&what, None, got, want)?;
            }
            Op::VmarDestroy { p, h } => {
                let p = self.proc(p);
                let h = self.handle(p, h);
                let what = || format!("zx_vmar_destroy(p{p}, {h:#x})");
                let got = zx_vmar_destroy(&self.procs[p], h);
                let want = status(self.model.vmar_destroy(p, h));
                self.settle(&what, None, got, want)?;
            }
            Op::VmarOpRange {
                p,
                h,
                op,
                addr,
                len,
                buffer,
                buffer_size,
            } => {
                let p = self.proc(p);
                let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
                let what = || {
                    format!(
                        "zx_vmar_op_range(p{p}, {h:#x}, op {op}, {addr:#x}, size {len:#x}, buffer {buffer:#x}, {buffer_size})"
                    )
                };
                let got = zx_vmar_op_range(&self.procs[p], h, op, addr, len, buffer, buffer_size);
                let want =
                    status(
                        self.model
                            .vmar_op_range(p, h, op, addr, len, buffer, buffer_size),
                    );
                self.settle(&what, None, got, want)?;
            }
            Op::Duplicate { p, h, rights } => {
                let p = self.proc(p);
                let h = self.handle(p, h);
                let rights = self.rights_arg(p, h, rights);
                let what = || format!("zx_handle_duplicate(p{p}, {h:#x}, rights {rights:#x})");
                let saved = self.saved();
                let mut out = ZX_HANDLE_INVALID;
                let got = zx_handle_duplicate(&self.procs[p], h, rights, &mut out);
                if got == ZX_OK {
                    self.check_new_handle(p, out, &what)?;
                }
                let want = status(self.model.duplicate(p, h, rights, out));
                if self.settle(&what, saved, got, want)? {
                    self.issue(p, out);
                }
            }
            Op::Replace { p, h, rights } => {
                let p = self.proc(p);
                let h = self.handle(p, h);
                let rights = self.rights_arg(p, h, rights);
                let what = || format!("zx_handle_replace(p{p}, {h:#x}, rights {rights:#x})");
                let mut out = ZX_HANDLE_INVALID;
                let got = zx_handle_replace(&self.procs[p], h, rights, &mut out);
                if got == ZX_OK {
                    self.check_new_handle(p, out, &what)?;
                }
                let want = status(self.model.replace(p, h, rights, out));
                if self.settle(&what, None, got, want)? {
                    self.issue(p, out);
                }
            }
            Op::Close { p, h } => {
                let p = self.proc(p);
                let h = self.handle(p, h);
                let what = || format!("zx_handle_close(p{p}, {h:#x})");
                let got = zx_handle_close(&self.procs[p], h);
                let want = status(self.model.close(p, h));
                self.settle(&what, None, got, want)?;
            }
            Op::Transfer { p, h } => {
                let from = self.proc(p);
                let to = (from + 1) % self.procs.len();
                let h = self.handle(from, h);
                let what = || format!("transfer(p{from} {h:#x} -> p{to})");
                // What a channel would do: needs TRANSFER; the handle moves only if it fits.
                let mut out = ZX_HANDLE_INVALID;
                let got = match self.procs[from].handle(h) {
                    Err(status) => status.into_raw(),
                    Ok(handle) if !handle.rights.contains(Rights::TRANSFER) => ZX_ERR_ACCESS_DENIED,
                    Ok(handle) => match self.procs[to].add_handle(handle.object, handle.rights) {
                        Err(status) => status.into_raw(),
                        Ok(value) => {
                            out = value;
                            self.procs[from]
                                .remove_handle(h)
                                .expect("the handle was just looked up");
                            ZX_OK
                        }
                    },
                };
                if got == ZX_OK {
                    self.check_new_handle(to, out, &what)?;
                }
                let want = status(self.model.transfer(from, h, to, out));
                if self.settle(&what, None, got, want)? {
                    self.issue(to, out);
                }
            }
            Op::Load { cpu, addr } => {
                let c = self.cpu(cpu);
                let va = self.addr(self.model.cpus[c].unwrap_or(0), addr) & !7;
                self.access(c, va, None)?;
            }
            Op::Store { cpu, addr, value } => {
                let c = self.cpu(cpu);
                let va = self.addr(self.model.cpus[c].unwrap_or(0), addr) & !7;
                self.access(c, va, Some(value))?;
            }
            Op::Switch { cpu, to } => {
                let c = self.cpu(cpu);
                let to = to.map(|p| self.proc(p));
                self.cpus[c].switch_to(to.map(|p| self.procs[p].aspace()));
                self.model.cpus[c] = to;
            }
            Op::Pin { p, h, offset, len } | Op::Unpin { p, h, offset, len } => {
                let pin = matches!(op, Op::Pin { .. });
                let p = self.proc(p);
                let (h, offset, len) = (self.handle(p, h), Self::off(offset), Self::len(len));
                let what = || {
                    let name = if pin { "pin" } else { "unpin" };
                    format!("Vmo::{name}(p{p} {h:#x}, offset {offset:#x}, len {len:#x})")
                };
                let saved = self.saved();
                let got = match self.procs[p].vmo(h) {
                    Err(status) => status.into_raw(),
                    Ok((vmo, _)) if pin => to_status(vmo.pin(offset, len)),
                    Ok((vmo, _)) => to_status(vmo.unpin(offset, len)),
                };
                let want = status(if pin {
                    self.model.pin(p, h, offset, len)
                } else {
                    self.model.unpin(p, h, offset, len)
                });
                self.settle(&what, saved, got, want)?;
            }
            Op::Contiguous { p, pages } => {
                let p = self.proc(p);
                let size = u64::from(pages) * PAGE;
                let what = || format!("Vmo::create_contiguous(p{p}, size {size:#x})");
                let saved = self.saved();
                let platform: Arc<dyn Platform> = self.machine.clone();
                let mut out = ZX_HANDLE_INVALID;
                let got = match Vmo::create_contiguous(platform, size) {
                    Err(status) => status.into_raw(),
                    Ok(vmo) => match self.procs[p].add_handle(
                        KernelObject::Vmo(vmo),
                        Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
                    ) {
                        Err(status) => status.into_raw(),
                        Ok(value) => {
                            out = value;
                            ZX_OK
                        }
                    },
                };
                if got == ZX_OK {
                    self.check_new_handle(p, out, &what)?;
                }
                let want = status(self.model.vmo_create_contiguous(p, size, out));
                if self.settle(&what, saved, got, want)? {
                    self.issue(p, out);
                    self.register_vmo(p, out);
                }
            }
            Op::Physical { p, pages } => {
                let p = self.proc(p);
                let pages = u64::from(pages.max(1));
                let what = || format!("Vmo::create_physical(p{p}, {pages} pages)");
                // Device memory stand-in: frames the harness takes from the allocator and zeroes,
                // so that the allocator never hands them out while the VMO exists.
                let Some(base) = self.machine.alloc_contiguous(pages as usize) else {
                    return Ok(());
                };
                for i in 0..pages {
                    // SAFETY: the frame was just allocated for the harness and nothing else uses
                    // it; `phys_to_virt` gives PAGE_SIZE writable bytes (the Platform contract).
                    unsafe {
                        std::ptr::write_bytes(
                            self.machine.phys_to_virt(PhysAddr(base.0 + i * PAGE)),
                            0,
                            PAGE_BYTES,
                        )
                    };
                }
                self.phys.push((base, pages));
                let platform: Arc<dyn Platform> = self.machine.clone();
                let vmo = Vmo::create_physical(platform, base, pages * PAGE)
                    .map_err(|e| format!("{}: {e:?}", what()))?;
                let mut out = ZX_HANDLE_INVALID;
                let got = match self.procs[p].add_handle(
                    KernelObject::Vmo(vmo),
                    Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
                ) {
                    Err(status) => status.into_raw(),
                    Ok(value) => {
                        out = value;
                        ZX_OK
                    }
                };
                if got == ZX_OK {
                    self.check_new_handle(p, out, &what)?;
                }
                let want = status(self.model.vmo_create_physical(p, pages, out));
                if self.settle(&what, None, got, want)? {
                    self.phys_base.insert(self.model.vmos.len() - 1, base);
                    self.issue(p, out);
                    self.register_vmo(p, out);
                }
            }
            Op::Check => {}
        }
        Ok(())
    }

    /// A load or store on CPU `c`, compared with the model: the value, or the fault.
    fn access(&mut self, c: usize, va: u64, store: Option<u64>) -> R2 {
        self.last_cpu = c;
        if let Some(p) = self.model.cpus[c] {
            let touched = &mut self.touched[p];
            if touched.len() >= 16 {
                touched.remove(0);
            }
            touched.push(va);
        }
        let what = || match store {
            None => format!("cpu{c}.load({va:#x})"),
            Some(v) => format!("cpu{c}.store({va:#x}, {v:#x})"),
        };
        let saved = self.saved();
        let got = match store {
            None => self.cpus[c].load(va),
            Some(value) => self.cpus[c].store(va, value).map(|()| 0),
        };
        let want = self.model.access(c, va, store);
        match &got {
            Ok(_) => record(self.current, "Ok"),
            Err(e) => record(self.current, &format!("{e:?}")),
        }
        self.last_fault = Some(got.err());
        let same = match (&got, &want) {
            (Ok(a), Ok(b)) => a == b,
            (Err(FaultError::NotMapped), Err(MFault::NotMapped))
            | (Err(FaultError::AccessDenied), Err(MFault::AccessDenied))
            | (Err(FaultError::OutOfRange), Err(MFault::OutOfRange)) => true,
            (Err(FaultError::NoMemory), Ok(_)) if self.exhaustion => {
                // The fault ran out of memory: for the page (nothing changed), or for a page
                // table after committing the page (which then stays committed, zero-filled, as
                // in Zircon). Follow whichever happened.
                self.model = saved.expect("a copy is kept in exhaustion mode");
                self.no_memory += 1;
                if let Some((vmo, index)) = self.model.fault_target(c, va) {
                    let committed = self.vmo_objs[vmo]
                        .upgrade()
                        .map_or(0, |v| v.committed_bytes());
                    if committed == (self.model.committed_pages(vmo) + 1) * PAGE
                        && self.model.vmos[vmo].kind == MKind::Paged
                    {
                        self.model.commit_page(vmo, index);
                        self.notes.push(format!(
                            "{}: NoMemory after committing VMO page {index}",
                            what()
                        ));
                    }
                }
                true
            }
            _ => false,
        };
        if !same {
            return Err(format!("{}: crate {got:x?}, model {want:x?}", what()));
        }
        Ok(())
    }

    // ---- checking --------------------------------------------------------------------------------

    /// The crate's state matches the model's, and the crate's own invariants hold.
    pub fn check(&self) -> R2 {
        let live_vmos = self.model.live_vmos();
        let counts = self.model.mapping_counts();
        // Handle tables: the same values, rights and objects.
        for (p, proc) in self.procs.iter().enumerate() {
            let model = &self.model.procs[p];
            if proc.handle_count() != model.handles.len() {
                return Err(format!(
                    "p{p}: {} handles, model {}",
                    proc.handle_count(),
                    model.handles.len()
                ));
            }
            for (&value, mh) in &model.handles {
                let handle = proc
                    .handle(value)
                    .map_err(|e| format!("p{p}: handle {value:#x} missing: {e:?}"))?;
                if handle.rights.bits() != mh.rights {
                    return Err(format!(
                        "p{p}: handle {value:#x} rights {:#x}, model {:#x}",
                        handle.rights.bits(),
                        mh.rights
                    ));
                }
                let same = match (&handle.object, mh.obj) {
                    (KernelObject::Vmo(vmo), Obj::Vmo(id)) => {
                        std::ptr::eq(Arc::as_ptr(vmo), self.vmo_objs[id].as_ptr())
                    }
                    (KernelObject::Vmar(vmar), Obj::Vmar(id)) => {
                        Arc::ptr_eq(vmar, &self.vmar_objs[id])
                    }
                    _ => false,
                };
                if !same {
                    return Err(format!("p{p}: handle {value:#x} names another object"));
                }
            }
        }
        // VMOs: alive exactly while referenced; committed bytes and mapping counts.
        let mut committed_frames = 0;
        for (id, weak) in self.vmo_objs.iter().enumerate() {
            let vmo = weak.upgrade();
            let live = live_vmos.contains(&id);
            match (vmo, live) {
                (None, false) => {}
                (Some(_), false) => {
                    return Err(format!("VMO {id} is still alive, model: gone"));
                }
                (None, true) => return Err(format!("VMO {id} is gone, model: alive")),
                (Some(vmo), true) => {
                    let want = self.model.committed_pages(id) * PAGE;
                    if vmo.committed_bytes() != want {
                        return Err(format!(
                            "VMO {id}: {} bytes committed, model {want}",
                            vmo.committed_bytes()
                        ));
                    }
                    let mappings = counts.get(&id).copied().unwrap_or(0);
                    if vmo.num_mappings() != mappings {
                        return Err(format!(
                            "VMO {id}: {} mappings, model {mappings}",
                            vmo.num_mappings()
                        ));
                    }
                    if self.model.vmos[id].kind != MKind::Physical {
                        committed_frames += want / PAGE;
                    }
                }
            }
        }
        // VMARs: destroyed exactly when the model says.
        for (id, vmar) in self.vmar_objs.iter().enumerate() {
            if vmar.is_destroyed() == self.model.vmars[id].alive {
                return Err(format!(
                    "VMAR {id} destroyed: {}, model alive: {}",
                    vmar.is_destroyed(),
                    self.model.vmars[id].alive
                ));
            }
        }
        // Page tables: every translation is of a live mapping's committed page with no more than
        // its permissions, and no table page is empty.
        let mut table_pages = 0;
        for (p, proc) in self.procs.iter().enumerate() {
            let aspace = proc.aspace();
            aspace.audit().map_err(|e| format!("p{p}: audit: {e:?}"))?;
            let tables = aspace.page_table_pages();
            let needed = needed_tables(aspace);
            if tables != needed {
                return Err(format!(
                    "p{p}: {tables} page-table pages, but the translations need {needed}"
                ));
            }
            table_pages += tables as u64;
        }
        // Frames: nothing leaked, nothing freed early.
        let phys: u64 = self.phys.iter().map(|&(_, n)| n).sum();
        let want = committed_frames + table_pages + phys;
        if self.machine.frames_in_use() != want {
            return Err(format!(
                "{} frames in use; committed pages {committed_frames} + page tables {table_pages} + physical {phys} = {want}",
                self.machine.frames_in_use()
            ));
        }
        Ok(())
    }

    /// Every live VMO's contents match the model's, byte for byte.
    pub fn deep_check(&self) -> R2 {
        for id in self.model.live_vmos() {
            let vmo = self.vmo_objs[id]
                .upgrade()
                .ok_or_else(|| format!("VMO {id} is gone"))?;
            let m = &self.model.vmos[id];
            if let Some(&base) = self.phys_base.get(&id) {
                for (&index, page) in &m.data {
                    let got: Vec<u8> = (0..PAGE / 8)
                        .flat_map(|w| {
                            self.machine
                                .read_phys(PhysAddr(base.0 + index * PAGE + w * 8))
                                .to_le_bytes()
                        })
                        .collect();
                    if got[..] != page[..] {
                        return Err(format!(
                            "physical VMO {id} page {index}: {}",
                            diff_bytes(&got, &page[..], index * PAGE)
                        ));
                    }
                }
                continue;
            }
            // The pages the model has, and a zero page where it has none (for small VMOs).
            let mut pages: BTreeSet<u64> = m.data.keys().copied().collect();
            if m.pages <= 16 {
                pages.extend(0..m.pages);
            }
            let mut got = vec![0u8; PAGE_BYTES];
            for index in pages {
                vmo.read(index * PAGE, &mut got)
                    .map_err(|e| format!("VMO {id}: read: {e:?}"))?;
                let want = m
                    .data
                    .get(&index)
                    .map_or(&[0u8; PAGE_BYTES][..], |p| &p[..]);
                if got[..] != want[..] {
                    return Err(format!(
                        "VMO {id} page {index}: {}",
                        diff_bytes(&got, want, index * PAGE)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Compares contents a last time, then takes everything down: every frame must come back.
    pub fn finish(mut self) -> R2 {
        self.deep_check()?;
        self.teardown();
        let left = self.machine.frames_in_use();
        if left != 0 {
            return Err(format!("{left} frames still in use after teardown"));
        }
        Ok(())
    }

    /// Drops the processes and everything built on them, and frees the physical VMOs' frames.
    fn teardown(&mut self) {
        for cpu in &self.cpus {
            cpu.switch_to(None);
        }
        self.vmar_objs.clear();
        self.procs.clear();
        let phys = std::mem::take(&mut self.phys);
        if self.vmo_objs.iter().all(|v| v.upgrade().is_none()) {
            for (base, pages) in phys {
                let frames: Vec<PhysAddr> =
                    (0..pages).map(|i| PhysAddr(base.0 + i * PAGE)).collect();
                // SAFETY: every VMO is gone, so no mapping, page table or TLB entry refers to
                // these frames (the CPUs left every address space, dropping its tag's use).
                unsafe { self.machine.free_frames(&frames) };
            }
        }
    }

    /// The machine's counters.
    pub fn frames_allocated(&self) -> u64 {
        self.machine.counters().frames_allocated
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // On a failed run, break the CPU -> address space -> machine cycle, so that the machine
        // (and its memory) goes away.
        self.teardown();
        if self.machine.frames_in_use() != 0 {
            // The run failed with frames still in use (and said why): keep the machine's leak
            // check from panicking over the report.
            std::mem::forget(self.machine.clone());
        }
    }
}

/// The result of a harness step: a description of the first difference.
pub type R2 = Result<(), String>;

fn status(result: R) -> zx_status_t {
    match result {
        Ok(()) => ZX_OK,
        Err(status) => status,
    }
}

/// The page-table pages the translations in `aspace` need: the root, and one table per level for
/// each distinct 512 GiB, 1 GiB and 2 MiB region holding a translation.
fn needed_tables(aspace: &zx_vm::AddressSpace) -> usize {
    let mut vas = Vec::new();
    aspace.with_page_table_unsynchronized(|table, platform| {
        table.for_each_page(platform, &mut |va, _, _| vas.push(va));
    });
    let distinct = |shift: u32| {
        vas.iter()
            .map(|va| va >> shift)
            .collect::<BTreeSet<_>>()
            .len()
    };
    1 + distinct(39) + distinct(30) + distinct(21)
}

/// Where two byte strings first differ.
fn diff_bytes(got: &[u8], want: &[u8], offset: u64) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let mut s = String::new();
    match first {
        Some(i) => {
            let end = (i + 16).min(got.len());
            let _ = write!(
                s,
                "bytes differ from offset {:#x}: crate {:02x?}, model {:02x?}",
                offset + i as u64,
                &got[i..end],
                &want[i..end]
            );
        }
        None => {
            let _ = write!(s, "lengths differ: {} vs {}", got.len(), want.len());
        }
    }
    s
}
