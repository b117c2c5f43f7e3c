//! Scenario 2: snapshots of a VMO that other CPUs keep writing (`zx_vmo_create_child`).
//!
//! A parent VMO of [`PAGES`] pages is mapped writable in two address spaces, A (the first half of
//! the CPUs) and B (the rest). Every CPU but 0 is a *writer*: it stores, for ever, into its own
//! word (word `cpu`) of every page, so that its TLB holds writable translations of them all. CPU 0
//! (in A) takes [`SNAPSHOTS`] snapshots of windows of the parent ([`WINDOWS`]) while they write.
//!
//! **What is guaranteed, and how it is checked.** A store that is under way while the snapshot
//! call runs may or may not be in the child; a store that *starts* after the call returned must
//! not be. The crate promises it by making every writable translation of the parent read-only, in
//! every address space, before the call returns (a store after that faults into the crate, which
//! copies or takes the page for the parent). So there is an epoch, [`Board::epoch`]: snapshot `k`
//! is taken while it is `k - 1`, and CPU 0 sets it to `k` once the call has returned. A writer
//! reads the epoch before each store and tags the value with it ([`tag`]: epoch, writer, sequence
//! number), so a value tagged `k` or more was stored after snapshot `k` returned: **child `k` must
//! hold no value tagged `k` or more.** To make the check bite, CPU 0 waits, before it reads the
//! child, until every writer has completed a whole pass over the pages that began at epoch `k`:
//! with a missed write-protect (or a stale writable TLB entry), those stores land in the frames
//! the child shares, and the child shows them.
//!
//! The other checks, each value a writer's own word:
//! - not older than what the writer had stored, store completed, before the call began (the writer
//!   publishes each value after its store: [`Board::stored`]), and stored by that writer; word 0,
//!   which no CPU writes, is 0;
//! - the child is frozen: read with `zx_vmo_read` right after the call, again after the writers'
//!   pass, through a mapping of the child (in A, faulting into the crate), and once more in every
//!   later round while it lives ([`LIVE`] children at a time, so the tree has hidden nodes several
//!   levels deep), all the same;
//! - the child's own writes stay its own: CPU 0 writes a mark into word [`MARK_WORD`] of each
//!   child page through the mapping (a copy-on-write fault on the child's side); the parent's word
//!   stays 0 and the older children keep their own marks;
//! - at the end, with the writers stopped, the parent holds each writer's last value, and every
//!   frame is back in the allocator.
//!
//! The kernel's fault handlers route the writers' write faults on the write-protected pages (x86
//! #PF with P=1, aarch64 permission faults) to `AddressSpace::page_fault` (`mm::page_fault`).

use crate::frames::FRAMES;
use crate::mm;
use crate::platform::{KernelPlatform, Snapshot};
use crate::scenarios::mode_name;
use crate::smp;
use crate::sync::IrqSpinLock;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::syscall::*;
use zx_vm::{Platform, Process};

/// The parent's pages.
const PAGES: u64 = 8;
/// How many snapshots CPU 0 takes.
const SNAPSHOTS: u64 = 16;
/// The snapshots' windows of the parent, in turn: first page, pages.
const WINDOWS: [(u64, u64); 4] = [(0, PAGES), (2, 4), (PAGES - 1, 1), (0, 3)];
/// How many children live at once (the oldest is closed when a new one would make one more).
const LIVE: usize = 3;
/// The word of each page that CPU 0 writes through a child's mapping (no writer's word).
const MARK_WORD: u64 = PAGE_SIZE / 8 - 1;

/// A writer's value: the epoch it read before the store, the writer, a sequence number. For one
/// writer the values only grow.
fn tag(epoch: u64, writer: usize, seq: u64) -> u64 {
    (epoch << 48) | ((writer as u64) << 40) | seq
}

fn epoch_of(value: u64) -> u64 {
    value >> 48
}

fn writer_of(value: u64) -> usize {
    ((value >> 40) & 0xff) as usize
}

/// What CPU 0 writes into word [`MARK_WORD`] of page `page` of child `k`.
fn mark(k: u64, page: u64) -> u64 {
    0x3a3c_0000_0000_0000 | (k << 16) | page
}

/// What the CPUs share, in kernel memory.
struct Board {
    /// How many snapshots have returned.
    epoch: AtomicU64,
    /// Set when the writers are to stop.
    stop: AtomicBool,
    /// Per CPU: the passes over the pages it completed.
    passes: Vec<AtomicU64>,
    /// Per CPU: the epoch at the start of its last completed pass.
    pass_epoch: Vec<AtomicU64>,
    /// Per CPU and page (`cpu * PAGES + page`): the last value whose store completed.
    stored: Vec<AtomicU64>,
}

impl Board {
    fn new(n: usize) -> Board {
        let zeros = |count: usize| (0..count).map(|_| AtomicU64::new(0)).collect();
        Board {
            epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            passes: zeros(n),
            pass_epoch: zeros(n),
            stored: zeros(n * PAGES as usize),
        }
    }

    /// The words of each page that the scenario reads: one per CPU (word `w` is writer `w`'s).
    fn words(&self) -> u64 {
        self.passes.len() as u64
    }

    fn stored(&self, writer: usize, page: u64) -> u64 {
        self.stored[writer * PAGES as usize + page as usize].load(SeqCst)
    }

    /// Writer `cpu`'s loop: word `cpu` of every page at `base`, pass after pass, until stopped.
    fn write(&self, cpu: usize, base: u64) {
        let mut seq = 0;
        while !self.stop.load(SeqCst) {
            let pass_epoch = self.epoch.load(SeqCst);
            for page in 0..PAGES {
                // Read before the store: a value tagged `k` is stored after snapshot `k` returned.
                let epoch = self.epoch.load(SeqCst);
                seq += 1;
                let value = tag(epoch, cpu, seq);
                mm::store(base + page * PAGE_SIZE + cpu as u64 * 8, value).expect("writer store");
                // Published after the store: a value seen here is in memory.
                self.stored[cpu * PAGES as usize + page as usize].store(value, SeqCst);
            }
            self.pass_epoch[cpu].store(pass_epoch, SeqCst);
            self.passes[cpu].fetch_add(1, SeqCst);
        }
    }

    /// Waits until every writer has completed `count` more passes.
    fn wait_passes(&self, writers: &[usize], count: u64) {
        let start: Vec<u64> = writers
            .iter()
            .map(|&w| self.passes[w].load(SeqCst))
            .collect();
        for (&w, &start) in writers.iter().zip(&start) {
            while self.passes[w].load(SeqCst) < start + count {
                core::hint::spin_loop();
            }
        }
    }

    /// Waits until every writer has completed a pass that began at epoch `epoch` or later.
    fn wait_pass_from(&self, writers: &[usize], epoch: u64) {
        for &w in writers {
            while self.pass_epoch[w].load(SeqCst) < epoch {
                core::hint::spin_loop();
            }
        }
    }
}

/// One wrong word in a child (or, for `page` counted in the parent, in the parent).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Read through the Debug output.
struct BadWord {
    snapshot: u64,
    page: u64,
    word: u64,
    read: u64,
    /// The check it failed.
    why: &'static str,
}

struct Failures {
    count: AtomicU64,
    first: IrqSpinLock<Vec<BadWord>>,
}

impl Failures {
    fn record(&self, snapshot: u64, page: u64, word: u64, read: u64, why: &'static str) {
        self.count.fetch_add(1, SeqCst);
        let mut first = self.first.lock();
        if first.len() < 12 {
            first.push(BadWord {
                snapshot,
                page,
                word,
                read,
                why,
            });
        }
    }

    fn count(&self) -> u64 {
        self.count.load(SeqCst)
    }
}

/// A live child: its handle (in A), its mapping in A, its size, what it read at the start.
struct Child {
    k: u64,
    handle: zx_handle_t,
    addr: u64,
    pages: u64,
    /// Words `0..words` of each page, right after the call (`page * words + word`).
    words: Vec<u64>,
}

/// The scenario's fixture: the two processes, the parent's handle in A, its mappings.
struct Fixture {
    a: Arc<Process>,
    b: Arc<Process>,
    vmo: zx_handle_t,
    addr_a: u64,
    addr_b: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let platform: Arc<dyn Platform> = Arc::new(KernelPlatform);
        let a = Process::new(platform.clone(), Format::NATIVE).expect("process A");
        let b = Process::new(platform, Format::NATIVE).expect("process B");
        let mut vmo = 0;
        assert_eq!(zx_vmo_create(&a, PAGES * PAGE_SIZE, 0, &mut vmo), ZX_OK);
        let object = a.handle(vmo).expect("VMO handle");
        let vmo_b = b
            .add_handle(object.object, object.rights)
            .expect("handle in B");
        let addr_a = map(&a, vmo, PAGES);
        let addr_b = map(&b, vmo_b, PAGES);
        Fixture {
            a,
            b,
            vmo,
            addr_a,
            addr_b,
        }
    }
}

/// Maps `pages` pages of `vmo` read-write in `process`'s root VMAR.
fn map(process: &Process, vmo: zx_handle_t, pages: u64) -> u64 {
    let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
    let mut addr = 0;
    let root = process.root_vmar_handle();
    let status = zx_vmar_map(process, root, rw, 0, vmo, 0, pages * PAGE_SIZE, &mut addr);
    assert_eq!(status, ZX_OK, "map");
    addr
}

/// Reads the word at `offset` of `vmo` with `zx_vmo_read`.
fn read_word(process: &Process, vmo: zx_handle_t, offset: u64) -> u64 {
    let mut word = [0u8; 8];
    assert_eq!(zx_vmo_read(process, vmo, &mut word, offset), ZX_OK);
    u64::from_le_bytes(word)
}

/// Words `0..words` of each of `pages` pages of `vmo`, with `zx_vmo_read`.
fn read_words(process: &Process, vmo: zx_handle_t, pages: u64, words: u64) -> Vec<u64> {
    let mut all = Vec::new();
    for page in 0..pages {
        let mut buffer = alloc::vec![0u8; (words * 8) as usize];
        let status = zx_vmo_read(process, vmo, &mut buffer, page * PAGE_SIZE);
        assert_eq!(status, ZX_OK, "read");
        all.extend(
            buffer
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        );
    }
    all
}

/// The same words, loaded through the mapping at `addr` (on the calling CPU, faulting them in).
fn load_words(addr: u64, pages: u64, words: u64) -> Vec<u64> {
    let mut all = Vec::new();
    for page in 0..pages {
        for word in 0..words {
            all.push(mm::load(addr + page * PAGE_SIZE + word * 8).expect("child load"));
        }
    }
    all
}

/// What is wrong, if anything, with word `word` of a page of child `k`, read with `zx_vmo_read`
/// right after the call returned, again after the writers' pass, and through the child's mapping
/// (`reads`), when the word's writer had stored `floor` before the call began.
fn judge(k: u64, word: usize, reads: [u64; 3], floor: u64) -> Option<&'static str> {
    let [at_return, read, mapped] = reads;
    if word == 0 {
        (read != 0).then_some("word 0, which no CPU writes, is not 0")
    } else if epoch_of(read) >= k {
        Some("stored after the snapshot returned (epoch tag >= the snapshot's)")
    } else if writer_of(read) != word {
        Some("not the value of this word's writer")
    } else if read < floor {
        Some("older than a store completed before the call began")
    } else if at_return != read {
        Some("changed after the call returned")
    } else if mapped != read {
        Some("read differently through the child's mapping")
    } else {
        None
    }
}

/// Takes snapshot `k` of window `(first, pages)` of the parent while the writers write, checks
/// it, and writes its marks.
fn take_and_check(
    fx: &Fixture,
    board: &Board,
    writers: &[usize],
    k: u64,
    (first, pages): (u64, u64),
    failures: &Failures,
) -> Child {
    let words = board.words();
    // Two more passes: every writer has just written every page, so its TLB holds them writable.
    board.wait_passes(writers, 2);
    let floor: Vec<u64> = (0..pages * words)
        .map(|i| board.stored(i as usize % words as usize, first + i / words))
        .collect();
    let mut handle = 0;
    let (offset, size) = (first * PAGE_SIZE, pages * PAGE_SIZE);
    let status = zx_vmo_create_child(
        &fx.a,
        fx.vmo,
        ZX_VMO_CHILD_SNAPSHOT,
        offset,
        size,
        &mut handle,
    );
    assert_eq!(status, ZX_OK, "snapshot {k}");
    board.epoch.store(k, SeqCst);
    let at_return = read_words(&fx.a, handle, pages, words);
    // Every writer completes a pass begun after the call returned: every store of it must miss
    // the child.
    board.wait_pass_from(writers, k);
    let after = read_words(&fx.a, handle, pages, words);
    let addr = map(&fx.a, handle, pages);
    let mapped = load_words(addr, pages, words);
    for (i, &read) in after.iter().enumerate() {
        let (page, word) = (i as u64 / words, i as u64 % words);
        let reads = [at_return[i], read, mapped[i]];
        if let Some(why) = judge(k, word as usize, reads, floor[i]) {
            failures.record(k, page, word, read, why);
        }
    }
    write_marks(fx, k, addr, first, pages, failures);
    Child {
        k,
        handle,
        addr,
        pages,
        words: after,
    }
}

/// Writes child `k`'s marks through its mapping (copy-on-write faults on the child's side) and
/// checks that the parent did not get them.
fn write_marks(fx: &Fixture, k: u64, addr: u64, first: u64, pages: u64, failures: &Failures) {
    for page in 0..pages {
        mm::store(addr + page * PAGE_SIZE + MARK_WORD * 8, mark(k, page)).expect("mark store");
    }
    for page in first..first + pages {
        let read = read_word(&fx.a, fx.vmo, page * PAGE_SIZE + MARK_WORD * 8);
        if read != 0 {
            failures.record(k, page, MARK_WORD, read, "the parent sees a child's write");
        }
    }
}

/// Checks that a live child still reads as it did (writers' words) and holds its own marks.
fn check_frozen(fx: &Fixture, child: &Child, failures: &Failures) {
    let words = child.words.len() as u64 / child.pages;
    let now = read_words(&fx.a, child.handle, child.pages, words);
    for (i, (&read, &was)) in now.iter().zip(&child.words).enumerate() {
        if read != was {
            let (page, word) = (i as u64 / words, i as u64 % words);
            failures.record(child.k, page, word, read, "a live child changed");
        }
    }
    for page in 0..child.pages {
        let read = mm::load(child.addr + page * PAGE_SIZE + MARK_WORD * 8).expect("mark load");
        if read != mark(child.k, page) {
            failures.record(child.k, page, MARK_WORD, read, "a child lost its own write");
        }
    }
}

fn close(fx: &Fixture, child: Child) {
    let root = fx.a.root_vmar_handle();
    assert_eq!(
        zx_vmar_unmap(&fx.a, root, child.addr, child.pages * PAGE_SIZE),
        ZX_OK
    );
    assert_eq!(zx_handle_close(&fx.a, child.handle), ZX_OK);
}

/// CPU 0's part: the snapshots, each checked, and the live children re-checked; stops at the
/// first round with a bad word. Returns the snapshots taken.
fn snapshotter(fx: &Fixture, board: &Board, writers: &[usize], failures: &Failures) -> u64 {
    let mut live: Vec<Child> = Vec::new();
    let mut taken = 0;
    for k in 1..=SNAPSHOTS {
        let window = WINDOWS[(k as usize - 1) % WINDOWS.len()];
        let child = take_and_check(fx, board, writers, k, window, failures);
        taken = k;
        for older in &live {
            check_frozen(fx, older, failures);
        }
        live.push(child);
        if live.len() > LIVE {
            close(fx, live.remove(0));
        }
        if failures.count() != 0 {
            break;
        }
    }
    board.stop.store(true, SeqCst);
    // The writers may still be finishing a pass; these must not change anyway.
    for child in live {
        check_frozen(fx, &child, failures);
        close(fx, child);
    }
    taken
}

/// With the writers stopped: the parent holds each writer's last value.
fn check_parent(fx: &Fixture, board: &Board, failures: &Failures) {
    let words = board.words();
    let parent = read_words(&fx.a, fx.vmo, PAGES, words);
    for (i, &read) in parent.iter().enumerate() {
        let (page, word) = (i as u64 / words, i as u64 % words);
        if word != 0 && read != board.stored(word as usize, page) {
            failures.record(0, page, word, read, "the parent lost a writer's last value");
        }
    }
}

/// Runs the scenario (in the current invalidation mode); true if it passed.
pub fn run() -> bool {
    let n = smp::cpu_count();
    assert!(n >= 2, "the scenario needs at least 2 CPUs");
    let baseline = FRAMES.in_use();
    let fx = Fixture::new();
    let in_a = |cpu: usize| cpu < n.div_ceil(2);
    smp::run_on_all(0..n, &|cpu| {
        mm::switch_to(Some(if in_a(cpu) {
            fx.a.aspace()
        } else {
            fx.b.aspace()
        }))
    });
    println!(
        "snapshot ({}): {PAGES}-page VMO mapped writable at {:#x} in A (CPUs 0..{}) and {:#x} in B (CPUs {}..{n}); CPU 0 snapshots, CPUs 1..{n} write",
        mode_name(),
        fx.addr_a,
        n.div_ceil(2),
        fx.addr_b,
        n.div_ceil(2),
    );
    let board = Board::new(n);
    let writers: Vec<usize> = (1..n).collect();
    let failures = Failures {
        count: AtomicU64::new(0),
        first: IrqSpinLock::new(Vec::new()),
    };
    let taken = AtomicU64::new(0);
    let before = Snapshot::take();
    smp::run_on_all(0..n, &|cpu| {
        if cpu == 0 {
            taken.store(snapshotter(&fx, &board, &writers, &failures), SeqCst);
        } else {
            board.write(cpu, if in_a(cpu) { fx.addr_a } else { fx.addr_b });
        }
    });
    let delta = Snapshot::take().since(&before);
    check_parent(&fx, &board, &failures);

    smp::run_on_all(0..n, &|_| mm::switch_to(None));
    drop(fx);
    let leaked = FRAMES.in_use() - baseline;
    let bad = failures.count();
    let passes: u64 = board.passes.iter().map(|p| p.load(SeqCst)).sum();
    println!(
        "snapshot ({}): {} of {SNAPSHOTS} snapshots, {passes} writer passes of {PAGES} stores; {} shootdown rounds, {} IPIs sent, {} page flushes, {} span flushes, {} full flushes, {} page faults (retries included), {} frames allocated and freed; {bad} bad words; {leaked} frames leaked",
        mode_name(),
        taken.load(SeqCst),
        delta.shootdowns,
        delta.ipis,
        delta.page_invalidations,
        delta.span_invalidations,
        delta.full_invalidations,
        delta.page_faults,
        delta.frames_allocated,
    );
    for bad in failures.first.lock().iter() {
        println!("  bad word: {bad:x?} (epoch tag {})", epoch_of(bad.read));
    }
    bad == 0 && leaked == 0
}
