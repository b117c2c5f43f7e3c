//! A reference model of the crate's syscalls, and a harness that runs every call on both the crate
//! (on a simulated machine) and the model, and compares them.
//!
//! Used by `tests/model.rs` (random sequences, proptest) and `tests/exhaustion.rs` (a fixed
//! sequence rerun with the frame allocator failing at every point), through
//! `#[path = "common/model/mod.rs"] mod model;`: the model here, the operation grammar in
//! `grammar.rs`, the harness in `harness.rs`.
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

mod grammar;
mod harness;

pub use self::grammar::*;
pub use self::harness::*;

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
pub(super) const PAGE_BYTES: usize = PAGE_SIZE as usize;

/// Every right Zircon defines (`ZX_RIGHT_DUPLICATE` up to `ZX_RIGHT_MANAGE_VMO`): a rights value
/// with any other bit set is invalid.
pub(super) const ALL_RIGHTS: zx_rights_t = (1 << 25) - 1;
/// Every `ZX_VM_*` option bit Zircon defines up to `ZX_VM_PERM_READ_IF_XOM_UNSUPPORTED`; the crate
/// rejects any other bit (alignment flags included) with `ZX_ERR_INVALID_ARGS`.
pub(super) const ALL_VM_OPTIONS: zx_vm_option_t = (1 << 15) - 1;
pub(super) const PERMS: zx_vm_option_t = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE | ZX_VM_PERM_EXECUTE;
pub(super) const CAN_MAP_RWX: zx_vm_option_t =
    ZX_VM_CAN_MAP_READ | ZX_VM_CAN_MAP_WRITE | ZX_VM_CAN_MAP_EXECUTE;
/// The largest VMO (the crate's documented `MAX_VMO_SIZE`: the user address space).
pub(super) const MAX_VMO_SIZE: u64 = 1 << 47;
/// Zircon refuses to destroy an address space's root VMAR (`ZX_ERR_NOT_SUPPORTED`). The crate
/// once destroyed it (pinned by `destroying_the_root_vmar_is_not_supported` in
/// `tests/regressions.rs`); fixed, so the model refuses it too.
pub(super) const ROOT_VMAR_DESTROY_ALLOWED: bool = false;
/// The rights of a process's first handle to its root VMAR: the default VMAR rights plus read,
/// write and execute, since the root VMAR can map all three.
pub const ROOT_VMAR_RIGHTS: zx_rights_t =
    ZX_DEFAULT_VMAR_RIGHTS | ZX_RIGHT_READ | ZX_RIGHT_WRITE | ZX_RIGHT_EXECUTE;

pub(super) fn round_up(value: u64) -> Option<u64> {
    value.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

pub(super) fn aligned(value: u64) -> bool {
    value % PAGE == 0
}

/// The handle rights that `ZX_VM_PERM_*` bits need (`PERM_READ` needs `ZX_RIGHT_READ`, ...).
pub(super) fn rights_for_perms(perms: zx_vm_option_t) -> zx_rights_t {
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
pub(super) fn perms_for_rights(rights: zx_rights_t) -> zx_vm_option_t {
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
pub(super) fn perms_for_can_map(can_map: zx_vm_option_t) -> zx_vm_option_t {
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
pub(super) fn valid_perms(perms: zx_vm_option_t) -> bool {
    perms & ZX_VM_PERM_WRITE == 0 || perms & ZX_VM_PERM_READ != 0
}

/// `Err(ZX_ERR_ACCESS_DENIED)` unless `rights` holds all of `needed`.
pub(super) fn need(rights: zx_rights_t, needed: zx_rights_t) -> R {
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

pub(super) fn zero_page() -> Page {
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
    /// Created with `ZX_VMO_RESIZABLE`.
    pub resizable: bool,
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
    pub(super) fn end(&self) -> u64 {
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
    /// The machine's frames: a commit of more new pages than that cannot succeed.
    pub frames: u64,
    /// The machine has a shared zero page: a load of an uncommitted page of a paged VMO reads
    /// zero and commits nothing.
    pub zero_page: bool,
}

impl Model {
    /// A model with `cpus` CPUs, `frames` frames and no process.
    pub fn new(cpus: usize, frames: u64) -> Model {
        Model {
            procs: Vec::new(),
            vmos: Vec::new(),
            vmars: Vec::new(),
            cpus: vec![None; cpus],
            frames,
            zero_page: false,
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

    pub(super) fn handle(&self, p: usize, h: zx_handle_t) -> R<MHandle> {
        self.procs[p]
            .handles
            .get(&h)
            .copied()
            .ok_or(ZX_ERR_BAD_HANDLE)
    }

    pub(super) fn vmo_handle(&self, p: usize, h: zx_handle_t) -> R<(usize, zx_rights_t)> {
        match self.handle(p, h)? {
            MHandle {
                obj: Obj::Vmo(id),
                rights,
            } => Ok((id, rights)),
            _ => Err(ZX_ERR_WRONG_TYPE),
        }
    }

    pub(super) fn vmar_handle(&self, p: usize, h: zx_handle_t) -> R<(usize, zx_rights_t)> {
        match self.handle(p, h)? {
            MHandle {
                obj: Obj::Vmar(id),
                rights,
            } => Ok((id, rights)),
            _ => Err(ZX_ERR_WRONG_TYPE),
        }
    }

    pub(super) fn has_room(&self, p: usize) -> R {
        if self.procs[p].handles.len() >= self.procs[p].limit {
            Err(ZX_ERR_NO_RESOURCES)
        } else {
            Ok(())
        }
    }

    /// Adds a handle under the value the crate issued (the model does not choose values; the
    /// harness checks that the value is new).
    pub(super) fn add_handle(
        &mut self,
        p: usize,
        obj: Obj,
        rights: zx_rights_t,
        value: zx_handle_t,
    ) -> R {
        self.has_room(p)?;
        self.procs[p].handles.insert(value, MHandle { obj, rights });
        Ok(())
    }

    /// The rights a duplicate or replacement asks for: `ZX_RIGHT_SAME_RIGHTS`, or a subset.
    pub(super) fn derived_rights(old: zx_rights_t, rights: zx_rights_t) -> R<zx_rights_t> {
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

    pub(super) fn new_vmo(&mut self, kind: MKind, pages: u64) -> usize {
        let data = match kind {
            MKind::Paged => BTreeMap::new(),
            MKind::Contiguous | MKind::Physical => (0..pages).map(|i| (i, zero_page())).collect(),
        };
        self.vmos.push(MVmo {
            kind,
            resizable: false,
            pages,
            data,
            pins: BTreeMap::new(),
        });
        self.vmos.len() - 1
    }

    /// `zx_vmo_create`: a paged VMO, size rounded up to pages (0 allowed); `ZX_VMO_RESIZABLE`
    /// makes it resizable and adds `ZX_RIGHT_RESIZE` to the handle.
    pub fn vmo_create(&mut self, p: usize, size: u64, options: u32, new: zx_handle_t) -> R {
        if options & !(ZX_VMO_RESIZABLE | ZX_VMO_DISCARDABLE) != 0 {
            return Err(ZX_ERR_INVALID_ARGS);
        }
        if options & ZX_VMO_DISCARDABLE != 0 {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        let size = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if size > MAX_VMO_SIZE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        // A VMO whose handle cannot be added is dropped again: nothing changes.
        self.has_room(p)?;
        let id = self.new_vmo(MKind::Paged, size / PAGE);
        let resizable = options & ZX_VMO_RESIZABLE != 0;
        self.vmos[id].resizable = resizable;
        let rights = ZX_DEFAULT_VMO_RIGHTS | if resizable { ZX_RIGHT_RESIZE } else { 0 };
        self.add_handle(p, Obj::Vmo(id), rights, new)
    }

    /// `zx_vmo_set_size`: WRITE, then RESIZE if the VMO is resizable; a fixed VMO is
    /// UNAVAILABLE. A shrink takes the pages past the end (none may be pinned) and zeroes the
    /// bytes past `size` in the last page.
    pub fn vmo_set_size(&mut self, p: usize, h: zx_handle_t, size: u64) -> R {
        let (vmo, rights) = self.vmo_handle(p, h)?;
        need(rights, ZX_RIGHT_WRITE)?;
        if self.vmos[vmo].resizable {
            need(rights, ZX_RIGHT_RESIZE)?;
        } else {
            return Err(ZX_ERR_UNAVAILABLE);
        }
        let rounded = round_up(size).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if rounded > MAX_VMO_SIZE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        let (new, old) = (rounded / PAGE, self.vmos[vmo].pages);
        if new < old && self.any_pinned(vmo, new, old) {
            return Err(ZX_ERR_BAD_STATE);
        }
        self.decommit_pages(vmo, new, old);
        if size % PAGE != 0 && size < old * PAGE {
            self.zero_committed_bytes(vmo, size, rounded.min(old * PAGE));
        }
        self.vmos[vmo].pages = new;
        Ok(())
    }

    /// `ZX_VMO_OP_ZERO` on `[offset, offset + len)`, rights checked: whole unpinned pages of a
    /// paged VMO leave it, everything else in the range is written over where committed.
    fn vmo_zero(&mut self, vmo: usize, offset: u64, len: u64) -> R {
        let end = offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if end > self.vmos[vmo].pages * PAGE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        if self.vmos[vmo].kind == MKind::Physical {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
        self.zero_committed_bytes(vmo, offset, end);
        if self.vmos[vmo].kind == MKind::Paged {
            for index in offset.div_ceil(PAGE)..end / PAGE {
                if !self.vmos[vmo].pins.contains_key(&index) {
                    self.vmos[vmo].data.remove(&index);
                }
            }
        }
        Ok(())
    }

    /// Writes zeroes over `[start, end)` where the VMO's pages are committed.
    fn zero_committed_bytes(&mut self, vmo: usize, start: u64, end: u64) {
        let committed: Vec<u64> = self.vmos[vmo]
            .data
            .range(start / PAGE..end.div_ceil(PAGE))
            .map(|(&i, _)| i)
            .collect();
        for index in committed {
            let from = start.max(index * PAGE) - index * PAGE;
            let to = end.min((index + 1) * PAGE) - index * PAGE;
            self.commit_page(vmo, index)[from as usize..to as usize].fill(0);
        }
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
    pub(super) fn page_range(&self, vmo: usize, offset: u64, len: u64) -> R<(u64, u64)> {
        let end = offset.checked_add(len).ok_or(ZX_ERR_OUT_OF_RANGE)?;
        if end > self.vmos[vmo].pages * PAGE {
            return Err(ZX_ERR_OUT_OF_RANGE);
        }
        if len == 0 {
            return Ok((offset / PAGE, offset / PAGE));
        }
        Ok((offset / PAGE, end.div_ceil(PAGE)))
    }

    pub(super) fn read_bytes(&self, vmo: usize, offset: u64, len: usize) -> Vec<u8> {
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

    pub(super) fn commit_page(&mut self, vmo: usize, index: u64) -> &mut [u8; PAGE_BYTES] {
        Arc::make_mut(self.vmos[vmo].data.entry(index).or_insert_with(zero_page))
    }

    pub(super) fn write_bytes(&mut self, vmo: usize, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, to) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE_BYTES - to).min(data.len() - done);
            self.commit_page(vmo, index)[to..to + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Commits pages `[first, last)` (nothing to do unless paged). More new pages than the
    /// machine has frames cannot be committed: `ZX_ERR_NO_MEMORY`, before anything changes (the
    /// crate gives back what it took). The check also keeps the model from building a page per
    /// page of a huge VMO's range.
    pub(super) fn commit_range(&mut self, vmo: usize, first: u64, last: u64) -> R {
        if self.vmos[vmo].kind != MKind::Paged || first >= last {
            return Ok(());
        }
        let present = self.vmos[vmo].data.range(first..last).count() as u64;
        if last - first - present > self.frames {
            return Err(ZX_ERR_NO_MEMORY);
        }
        for index in first..last {
            self.commit_page(vmo, index);
        }
        Ok(())
    }

    pub(super) fn any_pinned(&self, vmo: usize, first: u64, last: u64) -> bool {
        first < last && self.vmos[vmo].pins.range(first..last).next().is_some()
    }

    /// Takes pages `[first, last)` (clamped to the VMO) out of a paged VMO.
    pub(super) fn decommit_pages(&mut self, vmo: usize, first: u64, last: u64) {
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
                self.commit_range(vmo, first, last)
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
            ZX_VMO_OP_ZERO => {
                need(rights, ZX_RIGHT_WRITE)?;
                self.vmo_zero(vmo, offset, size)
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
        self.commit_range(vmo, first, last)?;
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

    pub(super) fn span(&self, child: &MChild) -> (u64, u64) {
        match child {
            MChild::Vmar(id) => (self.vmars[*id].base, self.vmars[*id].end()),
            MChild::Map(m) => (m.base, m.base + m.len),
        }
    }

    pub(super) fn insert_child(&mut self, vmar: usize, child: MChild) {
        let base = self.span(&child).0;
        let at = self.vmars[vmar]
            .children
            .iter()
            .position(|c| self.span(c).0 > base)
            .unwrap_or(self.vmars[vmar].children.len());
        self.vmars[vmar].children.insert(at, child);
    }

    pub(super) fn overlaps(&self, vmar: usize, start: u64, end: u64) -> bool {
        self.vmars[vmar].children.iter().any(|c| {
            let (b, e) = self.span(c);
            b < end && e > start
        })
    }

    /// First fit: the lowest address in the VMAR where `size` bytes are free.
    pub(super) fn find_gap(&self, vmar: usize, size: u64) -> Option<u64> {
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
    pub(super) fn sub_range(&self, vmar: usize, offset: u64, size: u64) -> Option<(u64, u64)> {
        let v = &self.vmars[vmar];
        let start = v.base.checked_add(offset)?;
        let end = start.checked_add(size)?;
        (end <= v.end() && start < end).then_some((start, end))
    }

    /// Splits the mapping piece of `vmar` that strictly contains `va` into two at `va`.
    pub(super) fn split(&mut self, vmar: usize, va: u64) {
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
    pub(super) fn destroy_subtree(&mut self, id: usize) {
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
    pub(super) fn unmap_range(
        &mut self,
        vmar: usize,
        start: u64,
        end: u64,
        may_destroy_vmars: bool,
    ) -> R {
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
    pub(super) fn covering(
        &self,
        vmar: usize,
        start: u64,
        end: u64,
    ) -> Option<Vec<(usize, u64, u64)>> {
        let mut out = Vec::new();
        self.covering_into(vmar, start, end, &mut out)
            .then_some(out)
    }

    pub(super) fn covering_into(
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
    pub(super) fn piece_at(&self, vmar: usize, va: u64) -> &MMapping {
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
        // After the permission checks, before placement (and its CAN_MAP_SPECIFIC check): a
        // resizable VMO when the caller asked for a fixed one.
        if options & ZX_VM_REQUIRE_NON_RESIZABLE != 0 && self.vmos[vmo].resizable {
            return Err(ZX_ERR_NOT_SUPPORTED);
        }
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
    pub(super) fn mapping_at(&self, p: usize, va: u64) -> Result<&MMapping, MFault> {
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
        let v = &self.vmos[mapping.vmo];
        if store.is_none() && self.zero_page && v.kind == MKind::Paged {
            // A load reads the page or the zero page; it commits nothing.
            return Ok(v.data.get(&index).map_or(0, |page| {
                u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"))
            }));
        }
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
