//! The page list's tests.

use super::*;
use alloc::vec::Vec;

/// A run lives in a block, as its first frame: every page's frame is the run's first plus its
/// index; it stays a run only while whole; a decommit of some pages keeps the rest where they
/// were, in the block (no allocation); a page committed again with another frame takes the run
/// into a chunk of its own, and the empty block goes.
#[test]
fn a_run_lives_in_a_block_until_a_commit_into_a_hole() {
    const C: u64 = CHUNK_PAGES;
    let mut list = PageList::new();
    let first = PhysAddr::from_frame_number(4 * C);
    list.insert_run(C, first);
    assert_eq!(list.committed_pages(), C);
    assert_eq!(list.run_at(C), Some(first));
    assert_eq!((list.run_at(0), list.run_at(C + 1)), (None, None));
    assert_eq!(
        list.get(C + 9),
        Some(PhysAddr::from_frame_number(4 * C + 9))
    );
    assert_eq!((list.get(0), list.get(2 * C)), (None, None));
    assert_eq!(list.heap_bytes(), core::mem::size_of::<RunBlock>());
    assert!(list.chunks.is_empty());
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(C + 3, C + 5, &mut removed), 2);
    let frames: Vec<u64> = removed.frames().map(PhysAddr::frame_number).collect();
    assert_eq!(frames, [4 * C + 3, 4 * C + 4]);
    assert!(removed.runs.is_empty(), "a part of a run is frames");
    assert_eq!(list.run_at(C), None, "no longer whole");
    assert_eq!(list.get(C + 4), None);
    assert_eq!(
        list.get(C + 5),
        Some(PhysAddr::from_frame_number(4 * C + 5))
    );
    assert_eq!(list.heap_bytes(), core::mem::size_of::<RunBlock>());
    list.insert(C + 3, PhysAddr::from_frame_number(7));
    assert!(list.runs.is_empty(), "the block went with its last run");
    assert_eq!(list.chunks.len(), 1);
    assert_eq!(list.get(C + 3), Some(PhysAddr::from_frame_number(7)));
    assert_eq!(
        list.get(C + 511),
        Some(PhysAddr::from_frame_number(5 * C - 1))
    );
    assert_eq!(list.get(C + 4), None);
    assert_eq!(list.committed_pages(), C - 1);
    let all: Vec<(u64, u64)> = list
        .iter_range(C, 2 * C)
        .map(|(i, pa)| (i, pa.frame_number()))
        .collect();
    assert_eq!(all.len(), (C - 1) as usize);
    assert!(all
        .iter()
        .all(|&(i, f)| i == C + 3 && f == 7 || f == 4 * C + (i - C)));
}

/// A run with few pages left goes into a packed chunk at a commit into one of its holes, with
/// its frames; a whole run taken whole leaves as its first frame alone.
#[test]
fn a_run_with_few_pages_left_packs() {
    const C: u64 = CHUNK_PAGES;
    let mut list = PageList::new();
    list.insert_run(0, PhysAddr::from_frame_number(C));
    list.insert_run(2 * C, PhysAddr::from_frame_number(3 * C));
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(3, C - 1, &mut removed), C - 4);
    assert_eq!(list.remove_range(2 * C, 3 * C, &mut removed), C);
    assert_eq!(removed.runs, [PhysAddr::from_frame_number(3 * C)]);
    list.insert(5, PhysAddr::from_frame_number(9));
    assert!(list.runs.is_empty());
    assert!(!list.chunks.values().any(|c| c.is_direct()));
    let left: Vec<(u64, u64)> = list
        .iter_range(0, u64::MAX)
        .map(|(i, pa)| (i, pa.frame_number()))
        .collect();
    assert_eq!(
        left,
        [(0, C), (1, C + 1), (2, C + 2), (5, 9), (C - 1, 2 * C - 1)]
    );
    assert_eq!(list.committed_pages(), 5);
    // The run's pages left the run blocks' count with it: a removal of everything counts 5.
    removed.clear();
    assert_eq!(list.remove_range(0, u64::MAX, &mut removed), 5);
    assert_eq!(removed.frames().count(), 5);
}

/// Listing a range that starts past a block's first chunk finds the runs of that block, and of
/// the next, and nothing outside the range.
#[test]
fn iter_range_finds_runs_inside_a_block() {
    const C: u64 = CHUNK_PAGES;
    const B: u64 = BLOCK_RUNS;
    let mut list = PageList::new();
    for chunk in [1, 2, B + 1] {
        list.insert_run(chunk * C, PhysAddr::from_frame_number(chunk * C));
    }
    let pages = |a, b| list.iter_range(a, b).map(|(i, _)| i).collect::<Vec<_>>();
    assert_eq!(pages(C, 3 * C), (C..3 * C).collect::<Vec<_>>());
    assert_eq!(pages(2 * C + 7, 2 * C + 9), [2 * C + 7, 2 * C + 8]);
    assert_eq!(pages(3 * C, (B + 1) * C), Vec::<u64>::new());
    assert_eq!(pages((B + 1) * C + 3, (B + 1) * C + 4), [(B + 1) * C + 3]);
    assert!(list.any_in_range(2 * C + 511, 2 * C + 512));
    assert!(!list.any_in_range(3 * C, (B + 1) * C));
    assert_eq!(
        list.iter_range(C + 4, C + 5).next(),
        Some((C + 4, PhysAddr::from_frame_number(C + 4)))
    );
}

/// Runs and chunks side by side: a range over all of a list moves both maps out; one over a
/// block's every run moves the block; one over part of a block takes run by run; a list's pages
/// come out in page order across both maps.
#[test]
fn runs_leave_by_map_block_and_slot() {
    const C: u64 = CHUNK_PAGES;
    const B: u64 = BLOCK_RUNS * C;
    let run = |n: u64| PhysAddr::from_frame_number(n * C);
    let mut list = PageList::new();
    list.insert_run(0, run(1));
    list.insert(C + 1, PhysAddr::from_frame_number(5));
    list.insert_run(2 * C, run(2));
    list.insert_run(5 * C, run(5));
    list.insert_run(B + C, run(3));
    let order: Vec<u64> = list.iter_range(0, u64::MAX).map(|(i, _)| i).collect();
    assert_eq!(order.len() as u64, 4 * C + 1);
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(list.iter_range(C, 2 * C + 2).count(), 3);
    let mut removed = RemovedPages::default();
    // Two of the first block's three runs, and the chunk: run by run.
    assert_eq!(list.remove_range(0, 3 * C, &mut removed), 2 * C + 1);
    assert_eq!(removed.runs, [run(1), run(2)]);
    assert_eq!((removed.blocks.len(), removed.run_maps.len()), (0, 0));
    assert_eq!((removed.maps.len(), list.runs.len()), (1, 2));
    // Every run of a block, with more blocks left: the block moves.
    list.insert_run(2 * B, run(4));
    removed.clear();
    assert_eq!(list.remove_range(B, 2 * B, &mut removed), C);
    assert_eq!((removed.blocks.len(), removed.runs.len()), (1, 0));
    assert_eq!(removed.frames().count() as u64, C);
    // The rest: the map moves.
    removed.clear();
    assert_eq!(list.remove_range(0, u64::MAX, &mut removed), 2 * C);
    assert_eq!(removed.run_maps.len(), 1);
    assert_eq!((list.committed_pages(), list.runs.len()), (0, 0));
    assert!(list.iter_range(0, u64::MAX).next().is_none());
}

#[test]
fn insert_get_remove() {
    let mut list = PageList::new();
    for i in [0u64, 1, 63, 64, 1000] {
        list.insert(i, PhysAddr::from_frame_number(i + 7));
    }
    assert_eq!(list.committed_pages(), 5);
    assert_eq!(list.get(63), Some(PhysAddr::from_frame_number(70)));
    assert_eq!(list.get(2), None);
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(1, 65, &mut removed), 3);
    assert_eq!(removed.frames().count(), 3);
    assert_eq!(list.committed_pages(), 2);
    assert!(list.any_in_range(0, 1));
    assert!(!list.any_in_range(1, 1000));
    assert_eq!(list.iter_range(0, 2000).count(), 2);
    // Page 0's chunk keeps page 0; page 1000's chunk stays.
    assert_eq!(list.chunks.len(), 2);
    assert_eq!(list.remove_range(1000, 1001, &mut removed), 1);
    // A chunk whose last page left is gone.
    assert_eq!(list.chunks.len(), 1);
}

/// `iter_range` finds pages in any chunk of the range, far past the first ones, and an empty
/// range (also one on a chunk boundary, or at 0) yields nothing.
#[test]
fn iter_range_reaches_every_chunk_and_empty_ranges_are_empty() {
    let mut list = PageList::new();
    let far = 100 * CHUNK_PAGES + 3;
    list.insert(far, PhysAddr::from_frame_number(9));
    list.insert(CHUNK_PAGES, PhysAddr::from_frame_number(8));
    let found: Vec<_> = list.iter_range(0, far + 1).map(|(i, _)| i).collect();
    assert_eq!(found, [CHUNK_PAGES, far]);
    assert_eq!(list.iter_range(far, far + 1).count(), 1);
    for at in [0, CHUNK_PAGES, far] {
        assert_eq!(list.iter_range(at, at).count(), 0, "{at}");
    }
}

/// A range that takes every chunk moves the whole map out at once; one that leaves a chunk
/// takes chunk by chunk. Both give back every frame once.
#[test]
fn whole_lists_move_out_at_once() {
    const C: u64 = CHUNK_PAGES;
    let mut list = PageList::new();
    for i in C..4 * C {
        list.insert(i, PhysAddr::from_frame_number(i));
    }
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(C, 4 * C, &mut removed), 3 * C);
    assert_eq!((removed.maps.len(), removed.chunks.len()), (1, 0));
    assert_eq!(removed.frames().count() as u64, 3 * C);
    assert_eq!(list.committed_pages(), 0);
    assert!(list.chunks.is_empty());
    list.insert(0, PhysAddr::from_frame_number(1));
    list.insert(C, PhysAddr::from_frame_number(2));
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(C, 2 * C, &mut removed), 1);
    assert_eq!((removed.maps.len(), removed.chunks.len()), (0, 1));
    assert_eq!(list.get(0), Some(PhysAddr::from_frame_number(1)));
    removed.clear();
    assert!(removed.is_empty());
}

/// Pages committed in any order come back in page order with their own frames; a range
/// inside a chunk takes exactly its pages, across bitmap words and at the chunk's ends.
#[test]
fn packed_frames_follow_page_order() {
    let mut list = PageList::new();
    let pages = [511u64, 0, 64, 63, 200, 128, 1, 127, 65, 300];
    for &i in &pages {
        list.insert(i, PhysAddr::from_frame_number(1000 + i));
    }
    let mut sorted = pages;
    sorted.sort_unstable();
    let listed: Vec<_> = list.iter_range(0, CHUNK_PAGES).collect();
    let expected: Vec<_> = sorted
        .iter()
        .map(|&i| (i, PhysAddr::from_frame_number(1000 + i)))
        .collect();
    assert_eq!(listed, expected);
    for &i in &pages {
        assert_eq!(list.get(i), Some(PhysAddr::from_frame_number(1000 + i)));
    }
    assert_eq!(list.get(2), None);
    assert_eq!(list.iter_range(64, 128).count(), 3);
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(63, 129, &mut removed), 5);
    let taken: Vec<_> = removed.frames().map(|f| f.frame_number() - 1000).collect();
    assert_eq!(taken, [63, 64, 65, 127, 128]);
    let left: Vec<_> = list.iter_range(0, CHUNK_PAGES).map(|(i, _)| i).collect();
    assert_eq!(left, [0, 1, 200, 300, 511]);
    assert_eq!(list.get(300), Some(PhysAddr::from_frame_number(1300)));
    assert_eq!(list.get(511), Some(PhysAddr::from_frame_number(1511)));
    assert_eq!(list.committed_pages(), 5);
    // A whole 64-page word at once, then the chunk's last page.
    list.insert(64 * 3 + 5, PhysAddr::from_frame_number(7));
    assert_eq!(list.remove_range(128, 256, &mut removed), 2);
    assert_eq!(list.remove_range(511, 512, &mut removed), 1);
    let left: Vec<_> = list.iter_range(0, CHUNK_PAGES).map(|(i, _)| i).collect();
    assert_eq!(left, [0, 1, 300]);
    assert!(list.heap_bytes() >= core::mem::size_of::<Chunk>() + 3 * 4);
}

/// Against a plain map, over random commits and range removals that cross the packed and
/// direct forms, chunk ends and bitmap words: every lookup, listing, count and removed frame
/// agrees.
#[test]
#[cfg_attr(miri, ignore = "4,000 rounds of safe code: minutes under Miri")]
fn agrees_with_a_plain_map() {
    use alloc::collections::BTreeMap;
    let mut list = PageList::new();
    let mut oracle = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    // Pages come from six chunks, over three run blocks; `real` maps a position in them to
    // its page (monotonic, so a range of positions is a range of pages).
    const KEYS: [u64; 6] = [0, 1, 2, BLOCK_RUNS - 1, BLOCK_RUNS, 2 * BLOCK_RUNS + 1];
    let span = KEYS.len() as u64 * CHUNK_PAGES;
    let real = |p: u64| match KEYS.get((p / CHUNK_PAGES) as usize) {
        Some(&key) => key * CHUNK_PAGES + p % CHUNK_PAGES,
        None => (KEYS[KEYS.len() - 1] + 1) * CHUNK_PAGES,
    };
    // Rounds with only packed chunks, and with a direct one, and with a run: all must occur.
    let mut forms = [0; 3];
    for round in 0..4000u64 {
        let dice = next(16);
        if dice == 0 {
            // A run, where its chunk holds nothing.
            let start = real(next(span) / CHUNK_PAGES * CHUNK_PAGES);
            let chunk = start..start + CHUNK_PAGES;
            if oracle.range(chunk.clone()).next().is_none() {
                let first = (1 << 24) + round * CHUNK_PAGES;
                list.insert_run(start, PhysAddr::from_frame_number(first));
                for (i, page) in chunk.enumerate() {
                    oracle.insert(page, PhysAddr::from_frame_number(first + i as u64));
                }
            }
        } else if dice > 2 {
            let page = real(next(span));
            if let alloc::collections::btree_map::Entry::Vacant(slot) = oracle.entry(page) {
                slot.insert(PhysAddr::from_frame_number(round + 1));
                list.insert(page, PhysAddr::from_frame_number(round + 1));
            }
        } else {
            let start = next(span);
            let long = next(16) == 0;
            let end = real(start + next(if long { span } else { 70 }).min(span - start));
            let start = real(start);
            let mut removed = RemovedPages::default();
            let taken = list.remove_range(start, end, &mut removed);
            let mut got: Vec<_> = removed.frames().collect();
            let mut want = Vec::new();
            oracle.retain(|&page, &mut frame| {
                let inside = (start..end).contains(&page);
                if inside {
                    want.push(frame);
                }
                !inside
            });
            got.sort_unstable_by_key(|f| f.0);
            want.sort_unstable_by_key(|f| f.0);
            assert_eq!((taken as usize, &got), (want.len(), &want), "round {round}");
        }
        assert_eq!(list.committed_pages(), oracle.len() as u64);
        let direct = list.chunks.values().any(|c| c.is_direct());
        forms[usize::from(direct)] += 1;
        forms[2] += usize::from(!list.runs.is_empty());
        let probe = real(next(span));
        assert_eq!(list.get(probe), oracle.get(&probe).copied());
        if round % 97 == 0 {
            let (a, b) = (real(next(span)), real(next(span)));
            let listed: Vec<_> = list.iter_range(a, b).collect();
            let want: Vec<_> = oracle.range(a..b.max(a)).map(|(&p, &f)| (p, f)).collect();
            assert_eq!(listed, want, "round {round}");
            assert_eq!(list.any_in_range(a, b), !want.is_empty());
        }
    }
    assert!(forms.iter().all(|&n| n > 100), "{forms:?}");
}

/// A chunk that grows past the packed form keeps every frame where it was.
#[test]
fn a_chunk_turns_direct_without_losing_a_frame() {
    let mut list = PageList::new();
    let pages: Vec<u64> = (0..CHUNK_PAGES).map(|i| (i * 37) % CHUNK_PAGES).collect();
    for (n, &page) in pages.iter().enumerate() {
        list.insert(page, PhysAddr::from_frame_number(page + 5));
        assert_eq!(list.committed_pages(), n as u64 + 1);
    }
    for page in 0..CHUNK_PAGES {
        assert_eq!(list.get(page), Some(PhysAddr::from_frame_number(page + 5)));
    }
    let direct = list.heap_bytes();
    assert!(direct >= CHUNK_PAGES as usize * 4, "{direct}");
    let mut removed = RemovedPages::default();
    assert_eq!(
        list.remove_range(10, CHUNK_PAGES - 10, &mut removed),
        CHUNK_PAGES - 20
    );
    let taken: Vec<_> = removed.frames().map(|f| f.frame_number() - 5).collect();
    assert_eq!(taken, (10..CHUNK_PAGES - 10).collect::<Vec<_>>());
    assert_eq!(list.get(9), Some(PhysAddr::from_frame_number(14)));
    assert_eq!(list.get(10), None);
    // Removal does not allocate: the chunk keeps its direct slots until it empties.
    assert_eq!(list.heap_bytes(), direct);
}

/// Pages taken out are "empty" only when no kind of them is there: single frames, whole
/// chunks and whole lists each count (a batch dropped with any of them is a leak the debug
/// build names).
#[test]
fn removed_pages_are_empty_only_with_nothing_in_them() {
    let mut removed = RemovedPages::default();
    assert!(removed.is_empty());
    removed.frames.push(PhysAddr(0));
    assert!(!removed.is_empty());
    removed.clear();
    assert!(removed.is_empty());
    let mut list = PageList::new();
    list.insert(0, PhysAddr::from_frame_number(1));
    list.insert(CHUNK_PAGES, PhysAddr::from_frame_number(2));
    assert_eq!(list.remove_range(0, CHUNK_PAGES, &mut removed), 1);
    assert_eq!((removed.chunks.len(), removed.maps.len()), (1, 0));
    assert!(!removed.is_empty());
    removed.clear();
    assert_eq!(list.remove_range(0, 2 * CHUNK_PAGES, &mut removed), 1);
    assert_eq!((removed.chunks.len(), removed.maps.len()), (0, 1));
    assert!(!removed.is_empty());
}

/// A range whose ends cut two direct chunks counts every page it takes from each (the second
/// chunk's count must not include the first's frames already taken out), and the heap
/// accounting is each chunk's size and its slots' capacity, in both forms.
#[test]
fn counts_across_two_direct_chunks_and_heap_bytes_are_exact() {
    let mut list = PageList::new();
    for page in (CHUNK_PAGES - 200)..(CHUNK_PAGES + 200) {
        list.insert(page, PhysAddr::from_frame_number(page));
    }
    assert!(list.chunks.values().all(|c| c.is_direct()));
    let mut removed = RemovedPages::default();
    assert_eq!(
        list.remove_range(CHUNK_PAGES - 10, CHUNK_PAGES + 10, &mut removed),
        20
    );
    assert_eq!(list.committed_pages(), 380);
    assert_eq!(removed.frames().count(), 20);
    let exact = |list: &PageList| {
        list.chunks
            .values()
            .map(|c| core::mem::size_of::<Chunk>() + 4 * c.slot_capacity())
            .sum::<usize>()
    };
    assert_eq!(list.heap_bytes(), exact(&list));
    let mut packed = PageList::new();
    for page in [3, 9, 70] {
        packed.insert(page, PhysAddr::from_frame_number(page));
    }
    assert!(!packed.chunks.values().any(|c| c.is_direct()));
    assert_eq!(packed.heap_bytes(), exact(&packed));
}

#[test]
fn frame_zero_is_representable() {
    let mut list = PageList::new();
    list.insert(5, PhysAddr(0));
    assert_eq!(list.get(5), Some(PhysAddr(0)));
}

/// A range over exactly a block's runs moves the block whole, wherever in the block its runs
/// sit (not only from slot 0 to slot 63), and over exactly the list's runs moves the map; the
/// frames taken out are the runs' frames, each once.
#[test]
fn a_range_over_exactly_a_blocks_runs_moves_it() {
    const C: u64 = CHUNK_PAGES;
    const B: u64 = BLOCK_RUNS;
    let run = |n: u64| PhysAddr::from_frame_number(n * C);
    let mut list = PageList::new();
    for (chunk, frame) in [(5, 1), (6, 2), (B + 3, 3), (3 * B + 8, 4)] {
        list.insert_run(chunk * C, run(frame));
    }
    let mut removed = RemovedPages::default();
    assert_eq!(list.remove_range(5 * C, 7 * C, &mut removed), 2 * C);
    assert_eq!((removed.blocks.len(), removed.runs.len()), (1, 0));
    assert_eq!(list.remove_range((B + 3) * C, (B + 4) * C, &mut removed), C);
    assert_eq!((removed.blocks.len(), removed.run_maps.len()), (2, 0));
    let mut frames: Vec<u64> = removed.frames().map(PhysAddr::frame_number).collect();
    frames.sort_unstable();
    let want: Vec<u64> = (C..4 * C).collect();
    assert_eq!(frames, want);
    removed.clear();
    // One run left, taken alone: past it on both sides there is nothing, so the map moves.
    assert_eq!(list.remove_range(3 * B * C, 4 * B * C, &mut removed), C);
    assert_eq!(removed.run_maps.len(), 1);
    // A whole run taken on its own (its block keeps others) leaves as its first frame.
    list.insert_run(0, run(7));
    list.insert_run(C, run(8));
    removed.clear();
    assert_eq!(list.remove_range(C, 2 * C, &mut removed), C);
    assert_eq!(removed.runs, [run(8)]);
    let frames: Vec<u64> = removed.frames().map(PhysAddr::frame_number).collect();
    assert_eq!(frames, (8 * C..9 * C).collect::<Vec<_>>());
}

/// A run taken out piece by piece: a middle piece is only that piece (even where its ends add
/// up to a run's length), the counts are right when the pages join others already taken out, and
/// the run's slot goes when its last page does, leaving its neighbour in the block as it was.
#[test]
fn a_run_taken_piece_by_piece_leaves_its_neighbour() {
    const C: u64 = CHUNK_PAGES;
    let mut list = PageList::new();
    list.insert_run(C, PhysAddr::from_frame_number(4 * C));
    list.insert_run(2 * C, PhysAddr::from_frame_number(8 * C));
    let mut removed = RemovedPages::default();
    // 100 + 412 = 512: still a middle piece of 312 pages.
    assert_eq!(list.remove_range(C + 100, C + 412, &mut removed), 312);
    assert!(removed.runs.is_empty());
    assert_eq!(
        list.get(C + 99),
        Some(PhysAddr::from_frame_number(4 * C + 99))
    );
    assert_eq!(
        list.get(C + 412),
        Some(PhysAddr::from_frame_number(4 * C + 412))
    );
    assert_eq!(list.get(C + 100), None);
    // The rest, into the same `removed` (which holds 312 frames already).
    assert_eq!(list.remove_range(C, C + 100, &mut removed), 100);
    assert_eq!(list.remove_range(C + 412, 2 * C, &mut removed), 100);
    assert_eq!(removed.frames().count(), 512);
    assert_eq!(list.committed_pages(), C);
    assert_eq!(list.iter_range(0, u64::MAX).count() as u64, C);
    assert_eq!(list.run_at(2 * C), Some(PhysAddr::from_frame_number(8 * C)));
    assert_eq!(list.run_at(C), None);
    assert_eq!(list.runs.len(), 1);
    assert_eq!(list.remove_range(2 * C, 3 * C, &mut removed), C);
    assert!(list.runs.is_empty(), "the block goes with its last run");
}
