//! A reference model of the crate's syscalls, and a harness that runs every call on both the crate
//! (on a simulated machine) and the model, and compares them.
//!
//! Used by `tests/model.rs` (random sequences, proptest) and `tests/exhaustion.rs` (a fixed
//! sequence rerun with the frame allocator failing at every point), through
//! `#[path = "common/model/mod.rs"] mod model;`. The model's types are here, its calls in
//! `handles.rs`, `vmo.rs`, `child.rs`, `vmar.rs` and `vmar_calls.rs`; the operation grammar is in
//! `grammar.rs`, the random strategies over it in `strategy.rs` and hand-written sequences in
//! `tours.rs`; the harness is in `harness.rs`, its steps in `steps_vmo.rs` and `steps_vmar.rs`,
//! its checks in `check.rs`.
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
//! Children (`zx_vmo_create_child`, `child.rs`) are the model at its most eager: a snapshot is a
//! copy of its parent's pages in its range, taken when it is made (zeroes past the parent's end);
//! a slice or reference is a name for its target's pages at an offset, and every call on it acts
//! there. The model keeps no copy-on-write tree, only what the statuses need: which VMOs form a
//! snapshot family (DECOMMIT is refused while a relative lives; ZERO writes over pages instead of
//! giving them back), a bound on each one's depth, and, per page, whether its committed bytes
//! count for it or for a relative. Pages are `Arc`s that a snapshot shares and a write copies
//! (`Arc::make_mut`), so the frames the crate should use are the distinct pages of the live VMOs.
//! Committed bytes and frames are exact until a VMO of a family dies (or one shrinks); after that
//! the crate's attribution and merges follow its tree's shape, and the model checks a range
//! ([`Model::committed_bounds`], [`Model::distinct_frames`]).
//!
//! # The harness
//!
//! [`World`] holds a [`SimMachine`], processes, CPUs and a [`Model`]. [`World::step`] resolves one
//! [`Op`] against the current state (handles and addresses are picked by index), runs it on both,
//! and compares the status and every output (handles' existence, addresses, bytes read, values
//! loaded, fault kinds). After every step it checks that the crate's state still matches the model
//! ([`World::check`]): handle tables (values, rights, objects), VMO liveness, sizes, committed
//! bytes, mapping counts and lineage (parent, children, snapshot or not), VMAR liveness,
//! `AddressSpace::audit()` (which checks the copy-on-write tree of every VMO it finds a
//! translation of), no empty page-table page, and frame accounting (frames in use = distinct
//! pages of live VMOs + contiguous VMOs' pages + page-table pages + physical VMOs' frames). Every
//! few steps, and at the end, it compares VMO contents byte for byte ([`World::deep_check`]);
//! after the last, everything is dropped and every frame must come back.
//!
//! In exhaustion mode (`World::exhaustion`), a call may fail with `ZX_ERR_NO_MEMORY` where the
//! model says `ZX_OK`; the model then forgets the call (it is restored from a copy taken before),
//! and the checks that follow prove the crate changed nothing either.
#![allow(dead_code)]

mod check;
mod child;
mod grammar;
mod handles;
mod harness;
mod steps_vmar;
mod steps_vmo;
mod strategy;
mod tours;
mod vmar;
mod vmar_calls;
mod vmo;

use self::check::*;
pub use self::grammar::*;
pub use self::harness::*;
// Only `tests/model.rs` draws random sequences and runs the tours.
#[allow(unused_imports)]
pub use self::strategy::*;
#[allow(unused_imports)]
pub use self::tours::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
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
///
/// A snapshot child is an eager copy: its own `data`, copied from the parent when it is made
/// (the pages stay shared `Arc`s until one side writes, which is how the model counts frames, not
/// what it answers). A slice or reference has no pages of its own: every call on it acts on its
/// [`MAlias::target`].
#[derive(Clone, Debug)]
pub struct MVmo {
    pub kind: MKind,
    /// Created with `ZX_VMO_RESIZABLE` (a reference: its target was).
    pub resizable: bool,
    /// The size in pages (a reference follows its target's: [`Model::size_pages`]).
    pub pages: u64,
    pub data: BTreeMap<u64, Page>,
    pub pins: BTreeMap<u64, u32>,
    /// A slice or reference: the VMO whose pages it shows.
    pub alias: Option<MAlias>,
    /// The VMO whose handle `zx_vmo_create_child` was given, for a child.
    pub parent: Option<usize>,
    /// A snapshot child (`ZX_INFO_VMO_IS_COW_CLONE`).
    pub cow_clone: bool,
    /// The snapshot family the VMO belongs to: it shares pages (or did) with a snapshot parent or
    /// child, so that DECOMMIT is refused while a relative lives, and ZERO writes over pages
    /// instead of giving them back. It leaves its family when a DECOMMIT finds it alone.
    pub tree: Option<usize>,
    /// Pages in `data` whose committed bytes count for another VMO of the family (the one that
    /// had them when a snapshot shared them); a page the VMO writes or commits is its own.
    pub foreign: BTreeSet<u64>,
    /// The crate's copy-on-write depth: hidden nodes above the VMO (an upper bound once a VMO of
    /// its family died, since the crate then merges nodes away).
    pub depth: usize,
    /// A paged VMO with large pages (`Vmo::create_large_pages`): a fault on a page commits the
    /// whole aligned run of [`RUN_PAGES`] around it where the run lies inside the VMO, has no
    /// page yet, the VMO is in no snapshot family and the machine has an aligned run of frames
    /// ([`Model::run_available`]); and a load commits (no zero page). Invisible otherwise.
    pub large: bool,
}

/// A slice or reference: another VMO's pages under another name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MAlias {
    /// The VMO whose pages it shows: never an alias (an alias of an alias shows the VMO
    /// underneath).
    pub target: usize,
    /// Page `i` of the alias is page `i + offset` of the target (0 for a reference).
    pub offset: u64,
    /// A reference: the whole target, whose size it follows.
    pub reference: bool,
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

/// `zx_info_vmo_t`, reduced to what the model knows. The committed bytes are a range: exact
/// (both ends equal) except for a VMO of a snapshot family in which a VMO died, whose pages the
/// crate then attributes by the shape of its tree ([`Model::committed_bounds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MInfo {
    pub size_bytes: u64,
    pub committed_bytes: (u64, u64),
    pub num_mappings: u64,
    pub num_children: u64,
    pub parent: Option<usize>,
    pub cow_clone: bool,
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
    /// Snapshot families made so far (each VMO's [`MVmo::tree`] is one of them).
    pub trees: usize,
    /// Pages a VMO of each snapshot family gave up by shrinking, which the crate may keep in a
    /// hidden node while the family lives (`a_shrink_frees_what_no_one_sees_two_nodes_up` in
    /// `tests/regressions.rs`).
    pub shed: BTreeMap<usize, Vec<Page>>,
    /// For a snapshot whose depth the model cannot know (an upper bound at the limit, in a
    /// family where a VMO died): the crate's answer, which the model then follows.
    pub depth_override: Option<bool>,
    /// Whether the machine has a free 2 MiB-aligned run of frames for the access being modelled
    /// (the harness asks the machine before each access): a fault on a large-page VMO commits a
    /// whole run only then.
    pub run_available: bool,
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
            trees: 0,
            shed: BTreeMap::new(),
            depth_override: None,
            run_available: false,
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
}
