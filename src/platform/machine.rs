//! The per-machine state that the kernel makes once ([`Tlb::new`]) and hands back through
//! [`super::Platform::tlb`]: one shootdown mailbox per CPU, the address space each CPU runs, the
//! ASID/PCID allocator, and each CPU's spare scratch space. It is data only: the protocols that
//! run on it (the shootdown handshake, activation, operation batches) are in the layers above,
//! [`crate::tlb`] and [`crate::vmar`], which is why the pointers it keeps are type-erased.

use super::asid::AsidAllocator;
use super::sync::{AtomicPtr, AtomicU64, Ordering};
use super::{Format, MAX_CPUS};
use alloc::boxed::Box;
use core::any::Any;
use core::fmt;
use core::ptr;
use core::sync::atomic::AtomicPtr as CoreAtomicPtr;

/// A CPU's spare scratch space, of a type the layer above chooses (boxed once more when parked,
/// so that a thin pointer can hold it).
pub(crate) type Spare = Box<dyn Any + Send>;

/// A link in a CPU's mailbox, inside the shootdown request it belongs to ([`crate::tlb`]). Its fields are written before
/// the node is published (release) and read after it is taken (acquire), by one thread each time,
/// so relaxed atomics (core's, even under loom: the mailbox head orders them) are enough.
pub(crate) struct Node {
    /// The request (type-erased: the shootdown protocol in [`crate::tlb`] knows its type; valid
    /// until the node's CPU acknowledges).
    pub(crate) request: CoreAtomicPtr<()>,
    pub(crate) next: CoreAtomicPtr<Node>,
}

impl Node {
    #[allow(clippy::declare_interior_mutable_const)] // only used to initialise fresh arrays
    pub(crate) const EMPTY: Node = Node {
        request: CoreAtomicPtr::new(ptr::null_mut()),
        next: CoreAtomicPtr::new(ptr::null_mut()),
    };
}

/// A CPU's incoming shootdown requests: a lock-free stack of nodes that live in their requests.
pub(crate) struct Mailbox {
    head: AtomicPtr<Node>,
}

impl Mailbox {
    fn new() -> Self {
        Mailbox {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Queues `node`, which no other thread can reach yet.
    pub(crate) fn push(&self, node: &Node) {
        let node = node as *const Node as *mut Node;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` points into a live request (the caller's borrow); it is not shared
            // until the CAS below publishes it (each node is pushed once, onto its own CPU's
            // mailbox).
            unsafe { (*node).next.store(head, Ordering::Relaxed) };
            match self
                .head
                .compare_exchange(head, node, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    /// Takes every queued node. Only whole lists are taken, so pushes never race with a partial
    /// take (no ABA).
    pub(crate) fn take_all(&self) -> *mut Node {
        // Look before writing: a wait loop polls this often, and an empty mailbox should not
        // bounce its cache line between CPUs.
        if self.head.load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }
}

/// Why [`Tlb::new`] refused a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbConfigError {
    /// The CPU count is 0 or above [`MAX_CPUS`].
    CpuCount {
        /// The count given.
        cpus: usize,
    },
    /// More tags than the format's TLBs can hold: x86_64 PCIDs are 1..=4095, aarch64 ASIDs
    /// 1..=255 (8-bit) or 1..=65535 (16-bit, TCR_EL1.AS = 1).
    TooManyTags {
        /// The count given.
        tags: u16,
        /// The most the format allows.
        max: u16,
    },
}

impl fmt::Display for TlbConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TlbConfigError::CpuCount { cpus } => {
                write!(f, "{cpus} CPUs: the crate handles 1 to {MAX_CPUS}")
            }
            TlbConfigError::TooManyTags { tags, max } => {
                write!(f, "{tags} tags: this page-table format has at most {max}")
            }
        }
    }
}

/// The machine's TLB-maintenance state: one shootdown mailbox per CPU, the address space each
/// CPU runs, the ASID/PCID allocator, and spare scratch space for operations. A kernel makes one
/// at boot and returns it from [`super::Platform::tlb`].
pub struct Tlb {
    /// The CPU count given to [`Tlb::new`]; the arrays below have room for [`MAX_CPUS`], so that
    /// making a `Tlb` needs no heap (a kernel may make one before its heap works).
    cpus: usize,
    mailboxes: [Mailbox; MAX_CPUS],
    /// Per CPU: the address space it runs (an `Arc` turned into a raw pointer by
    /// [`crate::vmar::AddressSpace::activate`]), or null.
    current: [AtomicPtr<()>; MAX_CPUS],
    /// Per CPU: a spare operation scratch space, kept warm so operations need no allocation.
    spare: [AtomicPtr<Spare>; MAX_CPUS],
    asids: AsidAllocator,
    rounds: AtomicU64,
}

// SAFETY: the node pointers in the mailboxes point into requests whose initiators wait until
// every node was taken and acknowledged; a node is only read by the one thread that took it.
// The `current` and `spare` pointers are owned `Arc`/`Box` values handed over atomically.
unsafe impl Send for Tlb {}
// SAFETY: as above: all shared access goes through atomics.
unsafe impl Sync for Tlb {}

impl Tlb {
    /// State for `cpus` CPUs and `tags` usable ASIDs or PCIDs (1..=tags; 0 means untagged, the
    /// fallback when they run out) for page tables in `format`. x86_64 without PCIDs and aarch64
    /// without ASIDs pass 0. Errors, rather than panics, for a CPU count outside 1..=[`MAX_CPUS`]
    /// and for more tags than `format` has.
    pub fn new(cpus: usize, tags: u16, format: Format) -> Result<Self, TlbConfigError> {
        if !(1..=MAX_CPUS).contains(&cpus) {
            return Err(TlbConfigError::CpuCount { cpus });
        }
        let max = format.max_tags();
        if tags > max {
            return Err(TlbConfigError::TooManyTags { tags, max });
        }
        Ok(Tlb {
            cpus,
            mailboxes: core::array::from_fn(|_| Mailbox::new()),
            current: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            spare: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            asids: AsidAllocator::new(tags),
            rounds: AtomicU64::new(0),
        })
    }

    /// How many CPUs the machine has: the one source of that number.
    pub fn cpu_count(&self) -> usize {
        self.cpus
    }

    /// The ASID/PCID allocator.
    pub fn asids(&self) -> &AsidAllocator {
        &self.asids
    }

    /// How many shootdown rounds have run.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Counts a shootdown round.
    pub(crate) fn count_round(&self) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// `cpu`'s mailbox of incoming shootdown requests.
    pub(crate) fn mailbox(&self, cpu: usize) -> &Mailbox {
        &self.mailboxes[cpu]
    }

    /// The slot that records which address space `cpu` runs.
    pub(crate) fn current_slot(&self, cpu: usize) -> &AtomicPtr<()> {
        &self.current[cpu]
    }

    /// The calling CPU's spare scratch space, if it has one (the layer above decides what it
    /// holds).
    pub(crate) fn take_spare(&self, cpu: usize) -> Option<Box<Spare>> {
        let spare = self.spare[..self.cpus]
            .get(cpu)?
            .swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `put_spare`, and the swap made
        // this thread its only owner.
        (!spare.is_null()).then(|| unsafe { Box::from_raw(spare) })
    }

    /// Keeps `spare` as `cpu`'s spare scratch space; dropped if the CPU has one already.
    pub(crate) fn put_spare(&self, cpu: usize, spare: Box<Spare>) {
        let Some(slot) = self.spare[..self.cpus].get(cpu) else {
            return;
        };
        let raw = Box::into_raw(spare);
        if slot
            .compare_exchange(ptr::null_mut(), raw, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: the exchange failed, so `raw` was not published: we still own it.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

impl Drop for Tlb {
    fn drop(&mut self) {
        for slot in self.spare.iter() {
            let spare = slot.swap(ptr::null_mut(), Ordering::Acquire);
            if !spare.is_null() {
                // SAFETY: made by `Box::into_raw` in `put_spare`, owned by the slot.
                drop(unsafe { Box::from_raw(spare) });
            }
        }
        // A `current` slot still set holds its address space alive, which holds the platform
        // (and this Tlb) alive: a Tlb is dropped only when no CPU runs an address space.
    }
}
