//! The TLB-shootdown handshake between CPUs.
//!
//! # Protocol
//!
//! The initiator has already cleared the page-table entries. It then
//! 1. builds one [`Request`] for the whole operation, with a count of the remote CPUs that must
//!    acknowledge it;
//! 2. pushes the request onto each target CPU's mailbox (a lock-free stack) and sends the IPIs;
//! 3. invalidates its own TLB while the IPIs are in flight;
//! 4. waits until the count reaches zero, serving its own mailbox meanwhile.
//!
//! A target, in its IPI handler ([`Tlb::handle_ipi`]), takes everything from its mailbox, carries
//! each invalidation out, and only then decrements the request's count (release ordering, so the
//! initiator's acquire load that sees zero comes after every remote flush).
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
//! What the kernel guarantees: the IPI is delivered to every target CPU once its interrupts are
//! enabled, and the handler runs `handle_ipi` with the IPI's own interrupts masked; and a CPU that
//! waits with interrupts disabled does not wait for a kernel lock held by a CPU that is inside a
//! crate operation (the crate's operations themselves never wait on a kernel lock).
//!
//! # Why no translation survives the round
//!
//! The count is decremented only after the flush, and the initiator frees frames only after it
//! reads zero; the push happens before the IPI, so a target's handler (or its wait loop) finds the
//! request. A CPU that was not a target either did not run the address space when the targets were
//! read, in which case it is marked stale and flushes the tag before its next use
//! ([`crate::vmar::AddressSpace::activate`]), or it never ran it.

use super::sync::{Arc, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use super::AsidAllocator;
use crate::platform::{CpuSet, PhysAddr, Platform, TlbInvalidate, TlbScope};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;

/// One address space's part of a shootdown.
#[derive(Debug)]
pub(crate) struct Item {
    /// The CPUs that must carry it out.
    pub targets: CpuSet,
    pub asid: u16,
    pub root: PhysAddr,
    /// The pages, or empty with `full`.
    pub pages: Vec<u64>,
    pub full: bool,
    pub tables_freed: bool,
}

impl Item {
    fn invalidate(&self) -> TlbInvalidate<'_> {
        TlbInvalidate {
            asid: self.asid,
            root: self.root,
            scope: if self.full {
                TlbScope::All
            } else {
                TlbScope::Pages(&self.pages)
            },
            tables_freed: self.tables_freed,
        }
    }
}

/// One operation's shootdown, shared by the initiator and its targets.
struct Request {
    items: Vec<Item>,
    /// Remote CPUs that have not acknowledged yet.
    pending: AtomicUsize,
}

impl Request {
    /// Carries out, on `cpu`, every item that targets it.
    fn flush_on(&self, platform: &dyn Platform, cpu: usize) {
        for item in &self.items {
            if item.targets.contains(cpu) {
                platform.invalidate_local(&item.invalidate());
            }
        }
    }
}

struct Node {
    request: Arc<Request>,
    next: *mut Node,
}

/// A CPU's incoming shootdown requests: a lock-free stack.
struct Mailbox {
    head: AtomicPtr<Node>,
}

impl Mailbox {
    fn new() -> Self {
        Mailbox {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn push(&self, request: Arc<Request>) {
        let node = Box::into_raw(Box::new(Node {
            request,
            next: ptr::null_mut(),
        }));
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` came from Box::into_raw above and is not shared until the CAS below
            // publishes it, so writing its `next` is exclusive.
            unsafe { (*node).next = head };
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
    fn take_all(&self) -> *mut Node {
        // Look before writing: a wait loop polls this often, and an empty mailbox should not
        // bounce its cache line between CPUs.
        if self.head.load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }
}

/// The machine's TLB-maintenance state: one shootdown mailbox per CPU and the ASID/PCID
/// allocator. A kernel makes one at boot and returns it from [`Platform::tlb`].
pub struct Tlb {
    mailboxes: Box<[Mailbox]>,
    asids: AsidAllocator,
    rounds: AtomicU64,
}

// SAFETY: the raw node pointers in the mailboxes are owned by the mailbox they are linked into;
// they are only created by `push` and only dereferenced after `take_all` removed them, by the one
// thread that took them. `Request` is Send + Sync (atomics and plain data).
unsafe impl Send for Tlb {}
// SAFETY: as above: all shared access goes through the atomic head pointers.
unsafe impl Sync for Tlb {}

impl Tlb {
    /// State for `cpus` CPUs and `tags` usable ASIDs or PCIDs (1..=tags; 0 means untagged, the
    /// fallback when they run out). x86_64 without PCIDs and aarch64 without ASIDs pass 0.
    pub fn new(cpus: usize, tags: u16) -> Self {
        assert!((1..=crate::platform::MAX_CPUS).contains(&cpus));
        Tlb {
            mailboxes: (0..cpus).map(|_| Mailbox::new()).collect(),
            asids: AsidAllocator::new(tags),
            rounds: AtomicU64::new(0),
        }
    }

    /// The ASID/PCID allocator.
    pub fn asids(&self) -> &AsidAllocator {
        &self.asids
    }

    /// How many shootdown rounds have run.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Runs one shootdown round for `items` and returns when every targeted CPU has completed it.
    /// Called with no crate lock held.
    pub(crate) fn shoot(&self, platform: &dyn Platform, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        self.rounds.fetch_add(1, Ordering::Relaxed);
        if platform.invalidation_is_broadcast() {
            // One broadcast per item reaches every CPU and completes before it returns.
            for item in &items {
                platform.invalidate_local(&item.invalidate());
            }
            return;
        }
        let me = platform.current_cpu();
        let remote = items
            .iter()
            .fold(CpuSet::EMPTY, |set, item| set.union(item.targets))
            .without(me);
        let request = Arc::new(Request {
            items,
            pending: AtomicUsize::new(remote.len()),
        });
        if !remote.is_empty() {
            for cpu in remote.iter() {
                self.mailboxes[cpu].push(request.clone());
            }
            platform.send_ipi(remote);
        }
        // Our own flush overlaps with the remote ones.
        request.flush_on(platform, me);
        while request.pending.load(Ordering::Acquire) != 0 {
            // Serve requests aimed at us: with interrupts disabled here, that is how two CPUs
            // shooting at each other both finish.
            self.handle_ipi(platform);
            platform.wait_hint();
        }
    }

    /// The body of the shootdown IPI handler: carries out every request queued for the calling
    /// CPU, then acknowledges each. Safe to call spuriously, and from the interrupted CPU's own
    /// wait loop.
    pub fn handle_ipi(&self, platform: &dyn Platform) {
        let me = platform.current_cpu();
        let mut node = self.mailboxes[me].take_all();
        while !node.is_null() {
            // SAFETY: `node` was made by Box::into_raw in `push` and unlinked by our `take_all`;
            // no other thread can reach it any more, so we own it.
            let node_box = unsafe { Box::from_raw(node) };
            if !cfg!(feature = "break-remote-flush") {
                node_box.request.flush_on(platform, me);
            }
            // Release: the flush above happens before the initiator sees the acknowledgement.
            node_box.request.pending.fetch_sub(1, Ordering::Release);
            node = node_box.next;
        }
    }
}

impl Drop for Tlb {
    fn drop(&mut self) {
        for mailbox in self.mailboxes.iter() {
            let mut node = mailbox.take_all();
            while !node.is_null() {
                // SAFETY: as in `handle_ipi`: unlinked by `take_all`, owned here.
                let node_box = unsafe { Box::from_raw(node) };
                node = node_box.next;
            }
        }
    }
}

/// The handshake, model-checked with loom: every interleaving (up to loom's bounds) of an
/// initiator and its targets. Run with `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicBool;
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

    impl Platform for Cpu {
        fn alloc_frame(&self) -> Option<PhysAddr> {
            None
        }
        unsafe fn free_frames(&self, _frames: &[PhysAddr]) {}
        fn phys_to_virt(&self, _pa: PhysAddr) -> *mut u8 {
            ptr::null_mut()
        }
        fn cpu_count(&self) -> usize {
            2
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
        fn load_root(&self, _root: PhysAddr, _asid: u16, _flush: bool) {}
    }

    fn item(targets: CpuSet) -> Item {
        Item {
            targets,
            asid: 1,
            root: PhysAddr(0x1000),
            pages: alloc::vec![0x1000],
            full: false,
            tables_freed: false,
        }
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            tlb: Tlb::new(2, 0),
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
                            cpu.shared.tlb.handle_ipi(&cpu);
                        }
                        thread::yield_now();
                    }
                })
            };
            let cpu = Cpu { id: 0, shared };
            cpu.shared.tlb.shoot(&cpu, alloc::vec![item(CpuSet(0b11))]);
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
            cpu.shared.tlb.handle_ipi(cpu);
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
                    .shoot(&cpu, alloc::vec![item(CpuSet::single(other))]);
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
