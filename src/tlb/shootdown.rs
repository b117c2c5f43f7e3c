//! The TLB-shootdown handshake between CPUs.
//!
//! # Protocol
//!
//! The initiator has already cleared the page-table entries. Pinned to its CPU (a [`CpuPin`]: the
//! CPU index it flushes and serves is read once, and stays true), it then
//! 1. builds one [`Request`] for the whole operation on its own stack, with a count of the remote
//!    CPUs that must acknowledge it and one mailbox node per CPU (nothing is allocated);
//! 2. pushes the request's node for each target CPU onto that CPU's mailbox (a lock-free stack)
//!    and sends the IPIs;
//! 3. invalidates its own TLB while the IPIs are in flight;
//! 4. waits until the count reaches zero, serving its own mailbox meanwhile.
//!
//! Where the platform reports AMD's INVLPGB ([`Platform::tlb_features`]), an address space that
//! has a tag and is active on another CPU is not sent IPIs: the initiator broadcasts its
//! invalidation with INVLPGB ([`Platform::invalidate_broadcast`]) and waits with one TLBSYNC
//! ([`Platform::sync_broadcast`]) before the IPI steps, which then cover only what is left.
//!
//! A target, in its IPI handler ([`Tlb::handle_ipi`]), takes everything from its mailbox, carries
//! each invalidation out, and only then decrements the request's count (release ordering, so the
//! initiator's acquire load that sees zero comes after every remote flush). It reads the next node
//! before that decrement and touches nothing of the request after it: the initiator may return,
//! and its stack frame go, as soon as the count is zero.
//!
//! # Why it cannot deadlock
//!
//! - The crate starts a shootdown only after dropping its own locks, so no target can be spinning
//!   on a lock the initiator holds while the initiator waits for it.
//! - Two CPUs that shoot at each other with interrupts disabled each serve the other's request from
//!   their wait loop (step 4), so both complete without taking an interrupt.
//! - The mailbox takes no lock: pushing is a compare-and-swap, taking is one swap of the head. An
//!   IPI handler that interrupts its own CPU's wait loop finds either the requests or nothing, never
//!   a held lock. A handler that finds nothing (the wait loop was faster) does nothing.
//!
//! # What the kernel guarantees (the IPI handler's obligations, stated once)
//!
//! - The IPI is delivered to every target CPU once its interrupts are enabled, and the handler
//!   runs `platform.tlb().handle_ipi(&CpuPin::new(platform))` on the interrupted CPU with the
//!   IPI's own interrupts masked, then acknowledges the interrupt (EOI).
//! - The handler needs no heap and takes no lock: `handle_ipi` allocates and frees nothing, so the
//!   kernel's heap need not be usable in interrupt context for its sake.
//! - A CPU that waits with interrupts disabled does not wait for a kernel lock held by a CPU that
//!   is inside a crate operation (the crate's operations themselves never wait on a kernel lock).
//! - The thread that runs an operation does not migrate while a [`CpuPin`] lives
//!   ([`Platform::preempt_disable`]); [`Platform::current_cpu`] answers an index below the CPU
//!   count given to [`Tlb::new`].
//!
//! # Why no translation survives the round
//!
//! The count is decremented only after the flush, and the initiator frees frames only after it
//! reads zero; the push happens before the IPI, so a target's handler (or its wait loop) finds the
//! request. A CPU that was not a target either did not run the address space when the targets were
//! read, in which case it is marked stale and flushes the tag before its next use
//! ([`crate::vmar::AddressSpace::activate`]), or it never ran it.

use super::FlushTarget;
use crate::arch::PendingFlush;
use crate::platform::sync::{AtomicUsize, Ordering};
use crate::platform::{
    CpuPin, CpuSet, Node, PhysAddr, Platform, Tlb, TlbFeatures, TlbInvalidate, MAX_CPUS,
};
use alloc::sync::Arc;

/// Where one address space's invalidation must go: the CPUs that must carry it out, and the
/// address space's tag and root. What to invalidate stays in the operation's [`PendingFlush`]:
/// a round reads the record in place (through [`TlbInvalidate`], the platform's view of it) and
/// copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reach {
    /// The CPUs that must carry it out.
    pub targets: CpuSet,
    pub asid: u16,
    pub root: PhysAddr,
}

/// One address space's part of a shootdown round: its record, its reach, and (in a batch) the
/// address space itself, kept alive until the round completed. A batch keeps its items (and the
/// capacity of their table lists) from one operation to the next.
pub(crate) struct Item {
    pub target: Option<Arc<dyn FlushTarget>>,
    pub pending: PendingFlush,
    /// Filled in from the target just before the round.
    pub reach: Reach,
}

impl Item {
    /// A record with no target yet and nowhere to go.
    pub const fn new() -> Self {
        Item {
            target: None,
            pending: PendingFlush::new(),
            reach: Reach {
                targets: CpuSet::EMPTY,
                asid: 0,
                root: PhysAddr(0),
            },
        }
    }

    /// The invalidation to carry out with `features`, less INVLPGB (which only
    /// [`Item::broadcast`] items use).
    fn invalidate(&self, features: TlbFeatures) -> TlbInvalidate<'_> {
        let features = TlbFeatures {
            invlpgb: 0,
            ..features
        };
        self.request(features)
    }

    fn request(&self, features: TlbFeatures) -> TlbInvalidate<'_> {
        TlbInvalidate {
            asid: self.reach.asid,
            root: self.reach.root,
            scope: self.pending.scope_with(features),
            tables_freed: self.pending.tables_freed() && !cfg!(feature = "break-table-flush"),
            features,
        }
    }

    /// Whether this item goes to every CPU by INVLPGB instead of IPIs, in a round that
    /// `initiator` runs: the CPUs have it, the address space is active on a CPU other than the
    /// initiator (else a local invalidation is all it needs), and it has a tag (the same on
    /// every CPU: tags are handed out machine-wide, and a tag that comes back is flushed on
    /// every CPU that may cache it before it is used again).
    fn broadcast(&self, features: TlbFeatures, initiator: usize) -> bool {
        features.invlpgb > 0
            && self.reach.asid != 0
            && !self.pending.is_empty()
            && !self.reach.targets.without(initiator).is_empty()
    }

    /// Whether `cpu` must carry this item out, in a round that `initiator` runs.
    fn targets(&self, cpu: usize, features: TlbFeatures, initiator: usize) -> bool {
        self.reach.targets.contains(cpu)
            && !self.pending.is_empty()
            && !self.broadcast(features, initiator)
    }
}

/// One operation's shootdown, on the initiator's stack: the initiator does not return before
/// every target acknowledged, and a target touches the request only before its acknowledgement.
struct Request<'a> {
    items: &'a [Item],
    /// What the initiator's platform offered: every CPU carries the items out alike.
    features: TlbFeatures,
    /// The initiator's CPU (which items it broadcast depends on it).
    initiator: usize,
    /// Remote CPUs that have not acknowledged yet.
    pending: AtomicUsize,
    /// One mailbox node per CPU, so that queueing the request allocates nothing.
    nodes: [Node; MAX_CPUS],
}

/// Carries out, on `cpu`, every item that targets it in a round `initiator` runs.
fn flush_on(
    items: &[Item],
    platform: &dyn Platform,
    cpu: usize,
    features: TlbFeatures,
    initiator: usize,
) {
    for item in items {
        if item.targets(cpu, features, initiator) {
            platform.invalidate_local(&item.invalidate(features));
        }
    }
}

impl Tlb {
    /// Runs one shootdown round for `items` and returns when every targeted CPU has completed it.
    /// Called with no crate lock held. Allocates nothing: the request lives on this stack frame,
    /// which outlives every target's use of it.
    pub(crate) fn shoot(&self, pin: &CpuPin<'_>, items: &[Item]) {
        if items.iter().all(|item| item.pending.is_empty()) {
            return;
        }
        let platform = pin.platform();
        let features = platform.tlb_features();
        self.count_round();
        if platform.invalidation_is_broadcast() {
            // One broadcast per item reaches every CPU and completes before it returns.
            for item in items.iter().filter(|item| !item.pending.is_empty()) {
                platform.invalidate_local(&item.invalidate(features));
            }
            return;
        }
        let me = pin.cpu();
        if items.iter().any(|item| item.broadcast(features, me)) {
            // INVLPGB for every tagged address space active elsewhere: no IPI, one TLBSYNC for
            // the round (on this CPU, which issued them: the round is pinned).
            for item in items.iter().filter(|item| item.broadcast(features, me)) {
                platform.invalidate_broadcast(&item.request(features));
            }
            if !cfg!(feature = "break-tlbsync") {
                platform.sync_broadcast();
            }
        }
        // Every target is below the CPU count: CPUs join active sets only through a `CpuPin`,
        // which checks its index.
        let remote = items
            .iter()
            .filter(|item| !item.pending.is_empty() && !item.broadcast(features, me))
            .fold(CpuSet::EMPTY, |set, item| set.union(item.reach.targets))
            .without(me);
        if remote.is_empty() {
            // Nobody else to reach: no request, no mailbox, no wait.
            flush_on(items, platform, me, features, me);
            return;
        }
        let request = Request {
            items,
            features,
            initiator: me,
            pending: AtomicUsize::new(remote.len()),
            nodes: [Node::EMPTY; MAX_CPUS],
        };
        let erased = &request as *const Request<'_> as *mut ();
        for cpu in remote.iter() {
            request.nodes[cpu].request.store(erased, Ordering::Relaxed);
            self.mailbox(cpu).push(&request.nodes[cpu]);
        }
        platform.send_ipi(remote);
        // Our own flush overlaps with the remote ones.
        flush_on(items, platform, me, features, me);
        while request.pending.load(Ordering::Acquire) != 0 {
            // Serve requests aimed at us: with interrupts disabled here, that is how two CPUs
            // shooting at each other both finish.
            self.serve(platform, me);
            platform.wait_hint();
        }
    }

    /// The body of the shootdown IPI handler: carries out every request queued for the calling
    /// CPU, then acknowledges each. Safe to call spuriously, and from the interrupted CPU's own
    /// wait loop. Allocates and frees nothing.
    pub fn handle_ipi(&self, pin: &CpuPin<'_>) {
        self.serve(pin.platform(), pin.cpu());
    }

    fn serve(&self, platform: &dyn Platform, me: usize) {
        let mut node = self.mailbox(me).take_all();
        while !node.is_null() {
            // SAFETY: `node` was queued by `shoot` and unlinked by our `take_all`; its request's
            // initiator waits for our acknowledgement below, so the node and the request are
            // alive until then, and no other thread reads this node.
            let (request, next) = unsafe {
                (
                    &*((*node).request.load(Ordering::Relaxed) as *const Request<'_>),
                    (*node).next.load(Ordering::Relaxed),
                )
            };
            if !cfg!(feature = "break-remote-flush") {
                flush_on(
                    request.items,
                    platform,
                    me,
                    request.features,
                    request.initiator,
                );
            }
            // Release: the flush above happens before the initiator sees the acknowledgement.
            // After it, the initiator may return: neither `node` nor `request` is touched again.
            request.pending.fetch_sub(1, Ordering::Release);
            node = next;
        }
    }
}

/// The handshake, model-checked with loom: every interleaving (up to loom's bounds) of an
/// initiator and its targets. Run with `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::platform::Format;
    use core::ptr;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    /// What both simulated CPUs share.
    struct Shared {
        tlb: Tlb,
        /// An IPI waits for each CPU.
        ipi: [AtomicBool; 2],
        /// Each CPU has carried out an invalidation.
        flushed: [AtomicBool; 2],
    }

    /// One CPU's view of the machine.
    struct Cpu {
        id: usize,
        shared: Arc<Shared>,
    }

    // SAFETY: a model of two CPUs: no frames, no page tables; `current_cpu` is fixed per thread.
    unsafe impl Platform for Cpu {
        fn alloc_frame(&self) -> Option<PhysAddr> {
            None
        }
        unsafe fn free_frames(&self, _frames: &[PhysAddr]) {}
        fn phys_to_virt(&self, _pa: PhysAddr) -> *mut u8 {
            ptr::null_mut()
        }
        fn current_cpu(&self) -> usize {
            self.id
        }
        fn tlb(&self) -> &Tlb {
            &self.shared.tlb
        }
        fn send_ipi(&self, targets: CpuSet) {
            for cpu in targets.iter() {
                self.shared.ipi[cpu].store(true, Ordering::Release);
            }
        }
        fn invalidate_local(&self, _request: &TlbInvalidate<'_>) {
            self.shared.flushed[self.id].store(true, Ordering::Relaxed);
        }
        fn invalidation_is_broadcast(&self) -> bool {
            false
        }
        fn wait_hint(&self) {
            thread::yield_now();
        }
        unsafe fn load_root(&self, _root: PhysAddr, _asid: u16, _flush: bool) {}
        unsafe fn load_kernel_root(&self) {}
    }

    fn item(targets: CpuSet) -> Item {
        let mut item = Item::new();
        item.pending.add_page(0x1000);
        item.reach = Reach {
            targets,
            asid: 1,
            root: PhysAddr(0x1000),
        };
        item
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            tlb: Tlb::new(2, 0, Format::X86_64).unwrap(),
            ipi: [AtomicBool::new(false), AtomicBool::new(false)],
            flushed: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.max_branches = 100_000;
        builder.check(f);
    }

    /// When the initiator returns, the target has flushed: the acknowledgement never comes first.
    #[test]
    fn acknowledged_only_after_the_remote_flush() {
        model(|| {
            let shared = shared();
            let done = Arc::new(AtomicBool::new(false));
            let target = {
                let (shared, done) = (shared.clone(), done.clone());
                thread::spawn(move || {
                    let cpu = Cpu { id: 1, shared };
                    // Interrupts enabled: take the IPI whenever it is there.
                    while !done.load(Ordering::Acquire) {
                        if cpu.shared.ipi[1].load(Ordering::Relaxed)
                            && cpu.shared.ipi[1].swap(false, Ordering::Acquire)
                        {
                            cpu.shared.tlb.handle_ipi(&CpuPin::new(&cpu));
                        }
                        thread::yield_now();
                    }
                })
            };
            let cpu = Cpu { id: 0, shared };
            cpu.shared
                .tlb
                .shoot(&CpuPin::new(&cpu), &[item(CpuSet(0b11))]);
            assert!(
                cpu.shared.flushed[0].load(Ordering::Relaxed),
                "the initiator flushed"
            );
            assert!(
                cpu.shared.flushed[1].load(Ordering::Relaxed),
                "acknowledged before flushing"
            );
            done.store(true, Ordering::Release);
            target.join().unwrap();
        });
    }

    /// Takes a pending IPI, as an interrupt window does.
    fn serve(cpu: &Cpu) {
        if cpu.shared.ipi[cpu.id].load(Ordering::Relaxed)
            && cpu.shared.ipi[cpu.id].swap(false, Ordering::Acquire)
        {
            cpu.shared.tlb.handle_ipi(&CpuPin::new(cpu));
        }
    }

    /// Two CPUs that shoot at each other with interrupts disabled both finish their shootdowns
    /// (each serves the other's from its own wait loop), each having flushed for the other; then
    /// they enable interrupts until both are done.
    #[test]
    fn mutual_shootdowns_with_interrupts_disabled_finish() {
        model(|| {
            let shared = shared();
            let finished = Arc::new(AtomicUsize::new(0));
            let run = |cpu: Cpu, finished: Arc<AtomicUsize>| {
                let other = 1 - cpu.id;
                cpu.shared
                    .tlb
                    .shoot(&CpuPin::new(&cpu), &[item(CpuSet::single(other))]);
                assert!(cpu.shared.flushed[other].load(Ordering::Relaxed));
                finished.fetch_add(1, Ordering::Release);
                while finished.load(Ordering::Acquire) < 2 {
                    serve(&cpu);
                    thread::yield_now();
                }
            };
            let thread1 = {
                let (shared, finished) = (shared.clone(), finished.clone());
                thread::spawn(move || run(Cpu { id: 1, shared }, finished))
            };
            run(Cpu { id: 0, shared }, finished);
            thread1.join().unwrap();
        });
    }
}
