//! `zx_vmo_create_child`: snapshots (copy-on-write), slices and references, on both page-table
//! formats. What each reads after writes on either side, what it commits and frees, what a
//! CPU's TLB may keep (a write through a translation cached before the snapshot must fault),
//! Zircon's statuses and rights. The simulated machine's leak check runs when each test's
//! machine drops: no frame is leaked or freed twice.

mod common;

use common::*;
use zx_vm::abi::*;
use zx_vm::arch::{Format, MmuFlags};
use zx_vm::syscall::*;
use zx_vm::Process;

fn close(p: &Process, handle: zx_handle_t) {
    assert_eq!(zx_handle_close(p, handle), ZX_OK);
}

/// A snapshot reads as its parent did at the call; afterwards neither sees the other's writes,
/// and no page is copied until written. The parent keeps counting the pages it had; the child
/// counts only what it copied.
#[test]
fn a_snapshot_reads_the_parent_as_it_was_and_writes_stay_apart() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let parent = patterned_vmo(&p, 8);
    let before = machine.frames_in_use();
    let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, 8 * PAGE_SIZE).unwrap();
    assert_eq!(machine.frames_in_use(), before, "a snapshot copies nothing");
    assert_eq!(first_words(&p, snap, 8), first_words(&p, parent, 8));
    assert_eq!(info(&p, parent).committed_bytes, 8 * PAGE_SIZE);
    assert_eq!(info(&p, snap).committed_bytes, 0);

    write_word(&p, parent, PAGE_SIZE, 11);
    write_word(&p, snap, 2 * PAGE_SIZE, 22);
    assert_eq!(read_word(&p, parent, PAGE_SIZE), 11);
    assert_eq!(
        read_word(&p, snap, PAGE_SIZE),
        pattern(1, 0),
        "the child keeps page 1"
    );
    assert_eq!(read_word(&p, snap, 2 * PAGE_SIZE), 22);
    assert_eq!(
        read_word(&p, parent, 2 * PAGE_SIZE),
        pattern(2, 0),
        "the parent keeps page 2"
    );
    assert_eq!(
        machine.frames_in_use(),
        before + 2,
        "one copy per page written"
    );
    assert_eq!(info(&p, snap).committed_bytes, PAGE_SIZE);
    assert_eq!(info(&p, parent).committed_bytes, 8 * PAGE_SIZE);

    // The last one to see a shared page takes it instead of copying it.
    write_word(&p, snap, PAGE_SIZE + 8, 33);
    assert_eq!(
        machine.frames_in_use(),
        before + 2,
        "page 1: the parent copied it already"
    );
    assert_eq!(read_word(&p, snap, PAGE_SIZE), pattern(1, 0));
    assert_eq!(read_word(&p, snap, PAGE_SIZE + 8), 33);

    // Closing the child frees what only it saw; the parent reads what it wrote.
    close(&p, snap);
    assert_eq!(read_word(&p, parent, PAGE_SIZE), 11);
    assert_eq!(read_word(&p, parent, 2 * PAGE_SIZE), pattern(2, 0));
    assert_eq!(
        machine.frames_in_use(),
        before,
        "the child's pages went back"
    );
    // Alone again, the parent decommits.
    assert_eq!(
        zx_vmo_op_range(&p, parent, ZX_VMO_OP_DECOMMIT, 0, 8 * PAGE_SIZE, 0, 0),
        ZX_OK
    );
    assert_eq!(machine.frames_in_use(), before - 8);
}

/// Closing the parent first: the child keeps reading the snapshot, and the pages only the
/// parent saw go back.
#[test]
fn closing_the_parent_first_keeps_the_child_whole() {
    let machine = machine(1);
    let p = process(&machine, Format::X86_64);
    let parent = patterned_vmo(&p, 4);
    let before = machine.frames_in_use();
    let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
    close(&p, parent);
    assert_eq!(
        machine.frames_in_use(),
        before - 2,
        "pages 0 and 3: only the parent saw them"
    );
    assert_eq!(first_words(&p, snap, 2), vec![pattern(1, 0), pattern(2, 0)]);
    write_word(&p, snap, 0, 5);
    assert_eq!(
        machine.frames_in_use(),
        before - 2,
        "the child took page 1, copying nothing"
    );
    assert_eq!(read_word(&p, snap, 0), 5);
    close(&p, snap);
    assert_eq!(machine.frames_in_use(), before - 4);
}

/// Snapshots of snapshots: each reads its own history, writes anywhere stay where they were
/// made, and closing them in any order leaks nothing.
#[test]
fn a_chain_of_snapshots_keeps_every_history() {
    for order in [[0usize, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
        let machine = machine(1);
        let p = process(&machine, Format::X86_64);
        let base = machine.frames_in_use();
        let a = patterned_vmo(&p, 4);
        let b = child(&p, a, ZX_VMO_CHILD_SNAPSHOT, 0, 4 * PAGE_SIZE).unwrap();
        write_word(&p, a, 0, 100);
        let c = child(&p, b, ZX_VMO_CHILD_SNAPSHOT, 0, 4 * PAGE_SIZE).unwrap();
        write_word(&p, b, PAGE_SIZE, 200);
        let d = child(
            &p,
            a,
            ZX_VMO_CHILD_SNAPSHOT_AT_LEAST_ON_WRITE,
            0,
            4 * PAGE_SIZE,
        )
        .unwrap();
        write_word(&p, c, 2 * PAGE_SIZE, 300);
        write_word(&p, a, 3 * PAGE_SIZE, 400);
        let expect = |h, words: [u64; 4]| assert_eq!(first_words(&p, h, 4), words.to_vec());
        let pat = |i| pattern(i, 0);
        expect(a, [100, pat(1), pat(2), 400]);
        expect(b, [pat(0), 200, pat(2), pat(3)]);
        expect(c, [pat(0), pat(1), 300, pat(3)]);
        expect(d, [100, pat(1), pat(2), pat(3)]);
        let handles = [a, b, c, d];
        for (closed, &i) in order.iter().enumerate() {
            close(&p, handles[i]);
            for &j in &order[closed + 1..] {
                let words = first_words(&p, handles[j], 4);
                let want = [
                    [100, pat(1), pat(2), 400],
                    [pat(0), 200, pat(2), pat(3)],
                    [pat(0), pat(1), 300, pat(3)],
                    [100, pat(1), pat(2), pat(3)],
                ][j];
                assert_eq!(words, want.to_vec(), "{order:?}: after closing {i}, {j}");
            }
        }
        assert_eq!(machine.frames_in_use(), base, "{order:?}");
    }
}

/// The write-protect: a CPU that cached a writable translation of the parent before the
/// snapshot cannot write through it afterwards (the snapshot's round took it away), so the
/// child never sees a write made after the snapshot. Both formats, the parent mapped in two
/// address spaces.
#[test]
fn a_snapshot_write_protects_every_translation_of_the_parent() {
    for format in Format::ALL {
        let machine = machine(2);
        let spaces = TwoSpaces::new(&machine, format, 4, patterned_vmo);
        spaces.expect_patterns(4);
        spaces.cpu_a.store(spaces.in_a, 1).unwrap();
        spaces.cpu_b.store(spaces.in_b + PAGE_SIZE, 2).unwrap();
        // A neighbour: another VMO mapped writable right after the parent in A.
        let other = patterned_vmo(&spaces.a, 1);
        let next = map_rw(&spaces.a, spaces.a.root_vmar_handle(), other, 0, 1);
        assert_eq!(
            next,
            spaces.in_a + 4 * PAGE_SIZE,
            "{format:?}: placed right after"
        );
        spaces.cpu_a.store(next, 3).unwrap();
        let counters = machine.counters();
        let snap = child(
            &spaces.a,
            spaces.vmo,
            ZX_VMO_CHILD_SNAPSHOT,
            0,
            4 * PAGE_SIZE,
        )
        .unwrap();
        let delta = machine.counters().since(&counters);
        assert_eq!(
            delta.shootdowns, 1,
            "{format:?}: one round for both address spaces"
        );
        for (cpu, base) in [(&spaces.cpu_a, spaces.in_a), (&spaces.cpu_b, spaces.in_b)] {
            for page in 0..4 {
                if let Some(entry) = cpu.tlb_entry(base + page * PAGE_SIZE) {
                    assert!(
                        !entry.flags.contains(MmuFlags::WRITE),
                        "{format:?}: page {page}"
                    );
                }
            }
        }
        let kept = spaces
            .cpu_a
            .tlb_entry(next)
            .expect("the neighbour's entry stays");
        assert!(
            kept.flags.contains(MmuFlags::WRITE),
            "{format:?}: and stays writable"
        );
        // Writes after the snapshot: through both spaces, on pages written before and not.
        spaces.cpu_a.store(spaces.in_a, 10).unwrap();
        spaces.cpu_b.store(spaces.in_b + 2 * PAGE_SIZE, 20).unwrap();
        assert_eq!(
            spaces.cpu_b.load(spaces.in_b).unwrap(),
            10,
            "{format:?}: B sees A's write"
        );
        assert_eq!(
            spaces.cpu_a.load(spaces.in_a + 2 * PAGE_SIZE).unwrap(),
            20,
            "{format:?}"
        );
        assert_eq!(
            first_words(&spaces.a, snap, 4),
            vec![1, 2, pattern(2, 0), pattern(3, 0)],
            "{format:?}: the child holds the parent as it was at the call"
        );
        assert_eq!(spaces.a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(spaces.b.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// A mapping of the child: reads map the shared pages read-only, a write copies the page and
/// maps the copy writable, and the parent's mapping keeps its own.
#[test]
fn a_mapped_child_copies_on_write_fault() {
    for format in Format::ALL {
        let machine = machine(1);
        let p = process(&machine, format);
        let parent = patterned_vmo(&p, 4);
        let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, 4 * PAGE_SIZE).unwrap();
        let in_parent = map_rw(&p, p.root_vmar_handle(), parent, 0, 4);
        let in_child = map_rw(&p, p.root_vmar_handle(), snap, 0, 4);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(in_child + PAGE_SIZE).unwrap(), pattern(1, 0));
        assert_eq!(cpu.load(in_parent + PAGE_SIZE).unwrap(), pattern(1, 0));
        let shared = cpu.tlb_entry(in_child + PAGE_SIZE).unwrap();
        assert_eq!(
            shared.frame,
            cpu.tlb_entry(in_parent + PAGE_SIZE).unwrap().frame
        );
        assert!(
            !shared.flags.contains(MmuFlags::WRITE),
            "{format:?}: shared read-only"
        );
        let before = machine.frames_in_use();
        cpu.store(in_child + PAGE_SIZE + 8, 7).unwrap();
        assert_eq!(machine.frames_in_use(), before + 1, "{format:?}: one copy");
        let own = cpu.tlb_entry(in_child + PAGE_SIZE).unwrap();
        assert_ne!(own.frame, shared.frame, "{format:?}");
        assert!(own.flags.contains(MmuFlags::WRITE), "{format:?}");
        assert_eq!(cpu.load(in_child + PAGE_SIZE).unwrap(), pattern(1, 0));
        assert_eq!(
            cpu.load(in_parent + PAGE_SIZE + 8).unwrap(),
            pattern(1, 1),
            "{format:?}"
        );
        // The parent writes the page the child copied: it is the last to see it, and takes it.
        cpu.store(in_parent + PAGE_SIZE, 9).unwrap();
        assert_eq!(
            machine.frames_in_use(),
            before + 1,
            "{format:?}: no second copy"
        );
        assert_eq!(
            cpu.tlb_entry(in_parent + PAGE_SIZE).unwrap().frame,
            shared.frame
        );
        assert_eq!(read_word(&p, snap, PAGE_SIZE), pattern(1, 0), "{format:?}");
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        // Protect cannot make a shared page writable.
        let status = zx_vmar_protect(
            &p,
            p.root_vmar_handle(),
            ZX_VM_PERM_READ | ZX_VM_PERM_WRITE,
            in_child,
            4 * PAGE_SIZE,
        );
        assert_eq!(status, ZX_OK);
        assert_eq!(cpu.load(in_child + 3 * PAGE_SIZE).unwrap(), pattern(3, 0));
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        cpu.store(in_child + 3 * PAGE_SIZE, 1).unwrap();
        assert_eq!(
            read_word(&p, parent, 3 * PAGE_SIZE),
            pattern(3, 0),
            "{format:?}"
        );
        cpu.switch_to(None);
    }
}

/// A copy changes the writer's frame: every translation of that page in every mapping of the
/// writer, in every address space, goes in the copy's round, so no CPU keeps reading the shared
/// frame the writer no longer uses.
#[test]
fn a_copy_clears_the_writers_translations_everywhere() {
    for format in Format::ALL {
        let machine = machine(2);
        let spaces = TwoSpaces::new(&machine, format, 4, |p, pages| {
            let parent = patterned_vmo(p, pages);
            child(p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, pages * PAGE_SIZE).unwrap()
        });
        spaces.expect_patterns(4);
        let shared = spaces.cpu_b.tlb_entry(spaces.in_b + PAGE_SIZE).unwrap();
        write_word(&spaces.a, spaces.vmo, PAGE_SIZE, 77);
        assert!(
            spaces.cpu_b.tlb_entry(spaces.in_b + PAGE_SIZE).is_none(),
            "{format:?}: B's translation of the shared frame went"
        );
        assert_eq!(
            spaces.cpu_b.load(spaces.in_b + PAGE_SIZE).unwrap(),
            77,
            "{format:?}"
        );
        assert_eq!(
            spaces.cpu_a.load(spaces.in_a + PAGE_SIZE).unwrap(),
            77,
            "{format:?}"
        );
        let own = spaces.cpu_b.tlb_entry(spaces.in_b + PAGE_SIZE).unwrap();
        assert_ne!(own.frame, shared.frame, "{format:?}");
        // A write fault through A: the copy's round reaches B too.
        spaces.cpu_a.store(spaces.in_a + 2 * PAGE_SIZE, 88).unwrap();
        assert_eq!(
            spaces.cpu_b.load(spaces.in_b + 2 * PAGE_SIZE).unwrap(),
            88,
            "{format:?}"
        );
        assert_eq!(spaces.a.aspace().audit(), Ok(()), "{format:?}");
        assert_eq!(spaces.b.aspace().audit(), Ok(()), "{format:?}");
    }
}

/// The zero page and snapshots: an uncommitted page reads through the zero page on both
/// sides, a write on one side commits it there only, and the other keeps reading zero.
#[test]
fn snapshots_share_the_zero_page_too() {
    for format in Format::ALL {
        let machine = machine(1);
        let zero = machine.enable_zero_page();
        let p = process(&machine, format);
        let mut parent = 0;
        assert_eq!(zx_vmo_create(&p, 2 * PAGE_SIZE, 0, &mut parent), ZX_OK);
        write_word(&p, parent, 0, 5);
        let in_parent = map_rw(&p, p.root_vmar_handle(), parent, 0, 2);
        let cpu = machine.cpu(0);
        cpu.switch_to(Some(p.aspace()));
        assert_eq!(cpu.load(in_parent + PAGE_SIZE).unwrap(), 0);
        assert_eq!(cpu.tlb_entry(in_parent + PAGE_SIZE).unwrap().frame, zero);
        let snap = child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, 2 * PAGE_SIZE).unwrap();
        let in_snap = map_rw(&p, p.root_vmar_handle(), snap, 0, 2);
        assert_eq!(cpu.load(in_snap + PAGE_SIZE).unwrap(), 0);
        assert_eq!(
            cpu.tlb_entry(in_snap + PAGE_SIZE).unwrap().frame,
            zero,
            "{format:?}"
        );
        assert_eq!(cpu.load(in_snap).unwrap(), 5);
        cpu.store(in_parent + PAGE_SIZE, 6).unwrap();
        assert_eq!(cpu.load(in_parent + PAGE_SIZE).unwrap(), 6);
        assert_eq!(cpu.load(in_snap + PAGE_SIZE).unwrap(), 0, "{format:?}");
        cpu.store(in_snap + PAGE_SIZE, 7).unwrap();
        assert_eq!(cpu.load(in_snap + PAGE_SIZE).unwrap(), 7);
        assert_eq!(cpu.load(in_parent + PAGE_SIZE).unwrap(), 6, "{format:?}");
        assert_eq!(committed(&p, snap), PAGE_SIZE, "{format:?}");
        assert_eq!(p.aspace().audit(), Ok(()), "{format:?}");
        cpu.switch_to(None);
    }
}

/// While a snapshot's write-protect round is under way, a CPU may still write through the
/// writable entry it cached: that store lands in the page the child now shares. A copy of that
/// page for the parent made before the round completed would lose the store from the parent,
/// so copies wait for the round (docs/cow.md, rule 6). CPU 1 holds the round open with its
/// interrupts off while another CPU writes the parent and CPU 1 stores through its stale entry.
#[test]
fn copies_wait_for_the_snapshots_round() {
    for format in Format::ALL {
        let machine = machine(3);
        let p = process(&machine, format);
        let parent = patterned_vmo(&p, 1);
        let addr = map_rw(&p, p.root_vmar_handle(), parent, 0, 1);
        let cpu1 = machine.cpu(1);
        let attached = cpu1.attach();
        cpu1.switch_to(Some(p.aspace()));
        cpu1.store(addr, 1).unwrap();
        cpu1.set_interrupts(false);
        let ipis = machine.counters().ipis;
        std::thread::scope(|s| {
            let snapper = s.spawn(|| {
                machine.cpu(0).enter();
                child(&p, parent, ZX_VMO_CHILD_SNAPSHOT, 0, PAGE_SIZE).unwrap()
            });
            while machine.counters().ipis == ipis {
                std::thread::yield_now();
            }
            // The round is under way: CPU 1 has its IPI pending and its entry still cached.
            let writer = s.spawn(|| {
                machine.cpu(2).enter();
                write_word(&p, parent, 8, 2);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            cpu1.store(addr, 3).unwrap();
            cpu1.set_interrupts(true);
            cpu1.poll();
            // CPU 1 takes the IPIs of the rounds still to come (the writer's copy has one).
            while !(snapper.is_finished() && writer.is_finished()) {
                cpu1.poll();
                std::thread::yield_now();
            }
            let snap = snapper.join().unwrap();
            writer.join().unwrap();
            assert_eq!(
                read_word(&p, parent, 0),
                3,
                "{format:?}: CPU 1's store is the parent's"
            );
            assert_eq!(read_word(&p, parent, 8), 2, "{format:?}");
            assert_eq!(read_word(&p, snap, 8), pattern(0, 1), "{format:?}");
        });
        cpu1.switch_to(None);
        drop(attached);
    }
}
