//! The tree on its own, with made-up frame numbers: lookups, divergence, the move of a page to
//! its last viewer, deaths and merges, and the invariant check catching what it must.

use super::*;
use alloc::vec;

fn frame(n: u64) -> PhysAddr {
    PhysAddr(n << 12)
}

/// A parent with pages 0..4 (frames 10..14) snapshotted whole: (nodes, parent, child, hidden).
fn snapshot_of_four() -> (Nodes, NodeId, NodeId, NodeId) {
    let mut nodes = Nodes::default();
    let parent = nodes.add_root();
    let mut pages = PageList::new();
    for i in 0..4 {
        pages.insert(i, frame(10 + i));
    }
    let child = nodes.snapshot(parent, pages, 4, 0, 4);
    let hidden = nodes.node(parent).parent.unwrap().node;
    (nodes, parent, child, hidden)
}

fn graveyard(nodes: &mut Nodes) -> Vec<PhysAddr> {
    let mut out = Vec::new();
    nodes.take_graveyard(&mut out);
    out.sort();
    out
}

#[test]
fn both_sides_see_the_snapshot_until_they_diverge() {
    let (mut nodes, parent, child, hidden) = snapshot_of_four();
    assert_eq!(nodes.check(), Ok(()));
    for side in [parent, child] {
        let found = nodes.lookup(side, 2).unwrap();
        assert_eq!(
            (found.owner, found.index, found.frame),
            (hidden, 2, frame(12))
        );
        assert!(!nodes.sole_viewer(side, 2, found));
    }
    assert_eq!(nodes.lookup(child, 4), None, "past the limit");
    nodes.diverge(child, 2);
    assert_eq!(nodes.lookup(child, 2), None, "the child diverged there");
    assert_eq!(nodes.lookup(parent, 2).unwrap().frame, frame(12));
    let found = nodes.lookup(parent, 2).unwrap();
    assert!(nodes.sole_viewer(parent, 2, found), "the last viewer");
    assert_eq!(nodes.take(parent, 2, found), frame(12));
    assert_eq!(nodes.lookup(parent, 2), None);
    assert_eq!(graveyard(&mut nodes), vec![], "taken, not freed");
    // Both diverge from page 1 without taking it: it goes.
    nodes.diverge(child, 1);
    nodes.diverge(parent, 1);
    assert_eq!(graveyard(&mut nodes), vec![frame(11)]);
    assert_eq!(nodes.check(), Ok(()));
}

#[test]
fn a_child_at_an_offset_sees_its_window_only() {
    let mut nodes = Nodes::default();
    let parent = nodes.add_root();
    let mut pages = PageList::new();
    for i in 0..4 {
        pages.insert(i, frame(10 + i));
    }
    let child = nodes.snapshot(parent, pages, 4, 1, 2);
    assert_eq!(nodes.lookup(child, 0).unwrap().frame, frame(11));
    assert_eq!(nodes.lookup(child, 1).unwrap().frame, frame(12));
    assert_eq!(nodes.lookup(child, 2), None);
    // The parent is the only viewer of page 0 and 3.
    let found = nodes.lookup(parent, 3).unwrap();
    assert!(nodes.sole_viewer(parent, 3, found));
    let found = nodes.lookup(parent, 1).unwrap();
    assert!(!nodes.sole_viewer(parent, 1, found));
    // The parent dies: pages 0 and 3 go; the child's stay.
    nodes.release(parent);
    assert_eq!(graveyard(&mut nodes), vec![frame(10), frame(13)]);
    assert_eq!(nodes.check(), Ok(()));
    let mut own = PageList::new();
    assert!(nodes.collapse(child, &mut own), "alone now");
    assert_eq!(own.get(0), Some(frame(11)));
    assert_eq!(own.get(1), Some(frame(12)));
    assert_eq!(own.committed_pages(), 2);
    assert_eq!(nodes.depth(child), 0);
}

#[test]
fn a_collapse_keeps_the_survivors_own_pages_and_frees_what_they_hide() {
    let (mut nodes, parent, child, _) = snapshot_of_four();
    nodes.diverge(parent, 0);
    let mut own = PageList::new();
    own.insert(0, frame(20));
    assert!(!nodes.collapse(parent, &mut own), "the child lives");
    nodes.release(child);
    assert_eq!(
        graveyard(&mut nodes),
        vec![frame(10)],
        "only the child saw page 0"
    );
    assert!(nodes.collapse(parent, &mut own));
    assert_eq!(own.get(0), Some(frame(20)));
    assert_eq!(own.get(3), Some(frame(13)));
    assert_eq!(own.committed_pages(), 4);
    assert_eq!(graveyard(&mut nodes), vec![]);
}

#[test]
fn a_dead_middle_merges_into_its_hidden_child() {
    // a -> snapshot b; then b -> snapshot c: the hidden node of the second sits under the first.
    let (mut nodes, a, b, top) = snapshot_of_four();
    let mut own_b = PageList::new();
    own_b.insert(1, frame(21));
    nodes.diverge(b, 1);
    let c = nodes.snapshot(b, own_b, 4, 0, 4);
    let lower = nodes.node(b).parent.unwrap().node;
    assert_eq!(nodes.depth(c), 2);
    assert_eq!(nodes.lookup(c, 1).unwrap().frame, frame(21));
    assert_eq!(nodes.lookup(c, 2).unwrap().frame, frame(12));
    // a dies: its hidden node's pages that b's side sees move down into `lower`.
    nodes.release(a);
    assert_eq!(
        graveyard(&mut nodes),
        vec![frame(11)],
        "page 1: b's side had diverged"
    );
    assert!(nodes.slots[top].is_none(), "merged away");
    assert_eq!(nodes.depth(c), 1);
    assert_eq!(nodes.lookup(c, 2).unwrap().owner, lower);
    assert_eq!(nodes.lookup(b, 1).unwrap().frame, frame(21));
    assert_eq!(nodes.check(), Ok(()));
    nodes.release(b);
    nodes.release(c);
    let all = graveyard(&mut nodes);
    assert_eq!(
        all,
        vec![frame(10), frame(12), frame(13), frame(21)],
        "each once"
    );
}

#[test]
fn rounds_under_way_keep_the_graveyard() {
    let (mut nodes, parent, child, _) = snapshot_of_four();
    nodes.begin_round();
    assert!(!nodes.settled());
    nodes.release(child);
    nodes.release(parent);
    assert_eq!(
        graveyard(&mut nodes),
        vec![],
        "nothing freed while a round is under way"
    );
    nodes.end_round();
    assert_eq!(graveyard(&mut nodes).len(), 4);
}

#[test]
fn attribution_counts_what_the_original_had() {
    let (mut nodes, parent, child, _) = snapshot_of_four();
    assert_eq!(nodes.attributed(parent), 4);
    assert_eq!(nodes.attributed(child), 0);
    nodes.diverge(parent, 3);
    assert_eq!(nodes.attributed(parent), 3);
}

#[test]
fn the_check_catches_broken_invariants() {
    let (mut nodes, parent, child, hidden) = snapshot_of_four();
    nodes.node_mut(hidden).split.insert(1, 0b11);
    assert_eq!(nodes.check(), Err("a hidden page that no side sees"));
    nodes.node_mut(hidden).split.clear();
    nodes.node_mut(child).pages.insert(0, frame(30));
    assert_eq!(
        nodes.check(),
        Err("a visible node with pages or children in the tree")
    );
    let mut removed = RemovedPages::default();
    nodes.node_mut(child).pages.remove_range(0, 1, &mut removed);
    nodes.node_mut(hidden).children[1] = None;
    assert_eq!(nodes.check(), Err("a node's parent does not list it"));
    nodes.node_mut(hidden).children = [None, None];
    nodes.node_mut(parent).parent = None;
    nodes.node_mut(child).parent = None;
    assert_eq!(nodes.check(), Err("a hidden node with no live child"));
    let (mut nodes, parent, _, _) = snapshot_of_four();
    let mut pages = PageList::new();
    pages.insert(0, frame(10));
    nodes.snapshot(parent, pages, 4, 0, 4);
    assert_eq!(nodes.check(), Err("a frame in two hidden nodes"));
}

#[test]
fn a_merge_composes_the_windows_and_frees_what_falls_outside() {
    let mut nodes = Nodes::default();
    let p = nodes.add_root();
    let mut pages = PageList::new();
    for i in 0..8 {
        pages.insert(i, frame(10 + i));
    }
    // C sees pages 2..6 of P; D sees pages 1..3 of C, so 3..5 of P.
    let c = nodes.snapshot(p, pages, 8, 2, 4);
    let d = nodes.snapshot(c, PageList::new(), 4, 1, 2);
    assert_eq!(nodes.lookup(d, 0).unwrap().frame, frame(13));
    assert_eq!(nodes.lookup(d, 1).unwrap().frame, frame(14));
    assert_eq!(nodes.lookup(d, 2), None);
    // C dies: the node under it has D alone, until D's next collapse relinks D to P's node.
    nodes.release(c);
    assert_eq!(
        graveyard(&mut nodes),
        vec![],
        "P still sees everything C saw"
    );
    let mut own = PageList::new();
    assert!(!nodes.collapse(d, &mut own), "P lives");
    assert_eq!(nodes.depth(d), 1);
    let link = nodes.node(d).parent.unwrap();
    assert_eq!((link.offset, link.limit), (3, 2), "windows composed");
    assert_eq!(nodes.lookup(d, 0).unwrap().frame, frame(13));
    assert_eq!(nodes.lookup(d, 1).unwrap().frame, frame(14));
    assert_eq!(nodes.lookup(d, 2), None);
    // P diverges from page 5, which D does not see: it goes.
    nodes.diverge(p, 5);
    assert_eq!(graveyard(&mut nodes), vec![frame(15)]);
    nodes.release(p);
    assert_eq!(
        graveyard(&mut nodes).len(),
        5,
        "pages 0-2, 6, 7: only P saw them"
    );
    assert!(nodes.collapse(d, &mut own));
    assert_eq!(own.get(0), Some(frame(13)));
    assert_eq!(own.get(1), Some(frame(14)));
    assert_eq!(own.committed_pages(), 2);
    assert_eq!(nodes.check(), Ok(()));
}

#[test]
fn a_shrink_frees_the_pages_it_alone_saw() {
    let (mut nodes, parent, child, _) = snapshot_of_four();
    nodes.diverge(parent, 3);
    nodes.diverge(parent, 2);
    nodes.limit(child, 3);
    assert_eq!(
        graveyard(&mut nodes),
        vec![frame(13)],
        "page 2 is still the child's"
    );
    nodes.limit(child, 4);
    assert_eq!(nodes.lookup(child, 3), None, "a view never widens again");
    assert_eq!(nodes.check(), Ok(()));
}

#[test]
fn a_death_frees_what_the_survivor_diverged_from_or_cannot_see() {
    // The child (side 1) survives, having diverged from page 2.
    let (mut nodes, parent, child, _) = snapshot_of_four();
    nodes.diverge(child, 2);
    nodes.release(parent);
    assert_eq!(graveyard(&mut nodes), vec![frame(12)]);
    assert_eq!(nodes.check(), Ok(()));
    // A child at an offset whose window reaches the parent's end: the page before it goes.
    let mut nodes = Nodes::default();
    let parent = nodes.add_root();
    let mut pages = PageList::new();
    for i in 0..4 {
        pages.insert(i, frame(10 + i));
    }
    let child = nodes.snapshot(parent, pages, 4, 1, 3);
    nodes.release(parent);
    assert_eq!(graveyard(&mut nodes), vec![frame(10)]);
    assert_eq!(nodes.lookup(child, 0).unwrap().frame, frame(11));
    assert_eq!(nodes.check(), Ok(()));
}

#[test]
fn a_merge_into_a_hidden_child_keeps_its_window() {
    // C sees 2 of P's 4 pages; D, a snapshot of C, sees C's 2.
    let mut nodes = Nodes::default();
    let p = nodes.add_root();
    let mut pages = PageList::new();
    for i in 0..4 {
        pages.insert(i, frame(10 + i));
    }
    let c = nodes.snapshot(p, pages, 4, 0, 2);
    let d = nodes.snapshot(c, PageList::new(), 2, 0, 2);
    nodes.release(p);
    assert_eq!(graveyard(&mut nodes), vec![frame(12), frame(13)]);
    assert_eq!(nodes.check(), Ok(()));
    assert_eq!(nodes.lookup(d, 1).unwrap().frame, frame(11));
    assert_eq!(nodes.lookup(c, 0).unwrap().frame, frame(10));
}

#[test]
fn what_a_dead_sides_sibling_diverged_from_goes_up() {
    // P -> C, then C -> D. D writes page 1 (diverges), then C dies: the node above sees D's
    // divergence as its whole side's once D's node merges away.
    let (mut nodes, p, c, top) = snapshot_of_four();
    let d = nodes.snapshot(c, PageList::new(), 4, 0, 4);
    nodes.diverge(d, 1);
    nodes.release(c);
    let mut own = PageList::new();
    own.insert(1, frame(21));
    assert!(!nodes.collapse(d, &mut own), "P lives");
    assert_eq!(nodes.node(d).parent.unwrap().node, top);
    // P diverges from page 1 too: no one sees it; it goes.
    nodes.diverge(p, 1);
    assert_eq!(graveyard(&mut nodes), vec![frame(11)]);
    assert_eq!(nodes.check(), Ok(()));
}

#[test]
fn a_merge_into_a_node_with_a_dead_side_keeps_only_what_the_live_one_sees() {
    // P -> C; C -> D at page 2. C dies (its node keeps D alone), then P: P's node merges into
    // C's, where only D looks, from page 2.
    let (mut nodes, p, c, _) = snapshot_of_four();
    let d = nodes.snapshot(c, PageList::new(), 4, 2, 2);
    nodes.release(c);
    assert_eq!(graveyard(&mut nodes), vec![], "P sees everything");
    nodes.release(p);
    assert_eq!(graveyard(&mut nodes), vec![frame(10), frame(11)]);
    assert_eq!(nodes.check(), Ok(()));
    assert_eq!(nodes.lookup(d, 0).unwrap().frame, frame(12));
    assert_eq!(nodes.lookup(d, 1).unwrap().frame, frame(13));
}

#[test]
fn a_child_whose_parent_died_counts_what_it_alone_sees() {
    let (mut nodes, parent, child, _) = snapshot_of_four();
    assert_eq!(nodes.attributed(child), 0);
    nodes.release(parent);
    assert_eq!(nodes.attributed(child), 4);
}
