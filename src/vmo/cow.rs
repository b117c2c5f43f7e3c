//! The copy-on-write tree behind snapshot children (docs/cow.md states its invariants; this is
//! the code that keeps them, and [`Nodes::check`] the audit that checks them).
//!
//! Every VMO of a tree is a *visible* node; its own pages stay in its [`super::VmoInner`], under
//! its lock. A snapshot turns the pages the parent had into a *hidden* node, which both the
//! parent and the child look up through. Hidden nodes live here, in one arena per tree, under
//! the tree's one lock (taken after VMO locks, before page-table locks: the order in
//! [`crate::vmar`]).
//!
//! Each hidden node keeps, per page index, which of its two sides has *diverged* from it (the
//! "split" bits): a side whose every visible VMO has its own page there, or reads zero there,
//! no longer looks up through the node at that index. A hidden page that neither side sees is
//! freed at once; a write by the one VMO that still sees it takes the frame instead of copying
//! it. Every walk here is a loop bounded by [`MAX_COW_DEPTH`].

use super::page_list::{PageList, RemovedPages};
use crate::platform::{PhysAddr, Platform};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::mutex::{SpinMutex as Mutex, SpinMutexGuard as MutexGuard};

/// The deepest a tree may grow: a snapshot that would put a VMO more than this many hidden
/// nodes below its root is `ZX_ERR_NO_RESOURCES`, so every walk is bounded by a constant and
/// no user can choose the length of one.
pub const MAX_COW_DEPTH: usize = 32;

/// One copy-on-write tree: its hidden nodes and the links of its visible ones, under one lock.
#[derive(Default)]
pub(crate) struct CowTree {
    nodes: Mutex<Nodes>,
}

impl CowTree {
    /// Takes the tree's lock (after the VMO's: the order in [`crate::vmar`]).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock()
    }

    /// Ends a round begun with [`Nodes::begin_round`], once its batch finished, and frees
    /// what the tree let go of meanwhile if no other round is under way.
    pub(crate) fn end_round(&self, platform: &dyn Platform) {
        let mut frames = Vec::new();
        {
            let mut nodes = self.lock();
            nodes.end_round();
            nodes.take_graveyard(&mut frames);
        }
        free_now(platform, &frames);
    }
}

/// Frees frames that no node holds and no translation reaches any more.
pub(crate) fn free_now(platform: &dyn Platform, frames: &[PhysAddr]) {
    if !frames.is_empty() {
        // SAFETY: the tree let go of these frames (each once) while no round that invalidates
        // its translations was under way, or one such round ended since; a frame leaves a
        // node only when no VMO sees it, and every VMO that saw it cleared its translations
        // of it in an operation whose round completed (docs/cow.md).
        unsafe { platform.free_frames(frames) };
    }
}

/// The first committed page of `pages` at or after `from`.
fn next_page(pages: &PageList, from: u64) -> Option<(u64, PhysAddr)> {
    pages.iter_range(from, u64::MAX).next()
}

/// A visible VMO's place in its tree.
pub(crate) struct CowLink {
    pub(crate) tree: Arc<CowTree>,
    pub(crate) node: NodeId,
}

/// A node's place in its tree's arena.
pub(crate) type NodeId = usize;

/// A node's link to its (hidden) parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The parent.
    pub(crate) node: NodeId,
    /// Which of the parent's two children this is (0 or 1).
    pub(crate) side: usize,
    /// Page `i` of the child is page `i + offset` of the parent...
    pub(crate) offset: u64,
    /// ...for `i < limit`; pages at or past `limit` read as zero and never fall through.
    pub(crate) limit: u64,
}

impl Link {
    /// The link of a node whose parent `self.node` goes away, to that parent's parent `up`.
    fn through(self, up: Option<Link>) -> Option<Link> {
        let up = up?;
        Some(Link {
            node: up.node,
            side: up.side,
            offset: self.offset + up.offset,
            limit: self.limit.min(up.limit.saturating_sub(self.offset)),
        })
    }

    /// The parent's index for the child's page `index`, if the child sees through there.
    fn up(&self, index: u64) -> Option<u64> {
        (index < self.limit).then(|| index + self.offset)
    }
}

/// One node: a visible VMO (no pages or children here) or a hidden one.
struct Node {
    parent: Option<Link>,
    hidden: bool,
    /// A hidden node's two children; `None` once that child died.
    children: [Option<NodeId>; 2],
    /// A hidden node's pages.
    pages: PageList,
    /// Per page index, bit `s`: side `s` diverged here.
    split: BTreeMap<u64, u8>,
}

impl Node {
    fn new(parent: Option<Link>, hidden: bool) -> Node {
        Node {
            parent,
            hidden,
            children: [None, None],
            pages: PageList::new(),
            split: BTreeMap::new(),
        }
    }

    fn split_bit(&self, index: u64, side: usize) -> bool {
        self.split
            .get(&index)
            .is_some_and(|bits| bits & (1 << side) != 0)
    }
}

/// Where a lookup found a page: in hidden node `owner`, at `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) owner: NodeId,
    pub(crate) index: u64,
    pub(crate) frame: PhysAddr,
}

/// A tree's state, under its lock.
#[derive(Default)]
pub(crate) struct Nodes {
    slots: Vec<Option<Node>>,
    free_slots: Vec<NodeId>,
    /// Shootdown rounds under way that invalidate translations of this tree's shared frames
    /// (a snapshot's write-protect, a copy's unmap). While any is, no page is copied, moved or
    /// freed ([`Nodes::settled`]), and frames the tree lets go of wait in `graveyard`.
    in_flight: u32,
    /// Frames that no node holds any more, to free once no round is under way.
    graveyard: Vec<PhysAddr>,
}

impl Nodes {
    fn node(&self, id: NodeId) -> &Node {
        self.slots[id].as_ref().expect("a live node")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.slots[id].as_mut().expect("a live node")
    }

    fn add(&mut self, node: Node) -> NodeId {
        match self.free_slots.pop() {
            Some(id) => {
                self.slots[id] = Some(node);
                id
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, id: NodeId) -> Node {
        let node = self.slots[id].take().expect("a live node");
        self.free_slots.push(id);
        node
    }

    /// A new visible node with no parent: the first VMO of a tree.
    pub(crate) fn add_root(&mut self) -> NodeId {
        self.add(Node::new(None, false))
    }

    /// How many hidden nodes lie above `id`.
    pub(crate) fn depth(&self, id: NodeId) -> usize {
        let mut depth = 0;
        let mut at = self.node(id).parent;
        while let Some(link) = at {
            depth += 1;
            at = self.node(link.node).parent;
        }
        depth
    }

    /// Whether side `side` of hidden node `id` still looks up through it at `index`: that child
    /// lives, has not diverged there, and sees that far.
    fn sees(&self, id: NodeId, side: usize, index: u64) -> bool {
        let node = self.node(id);
        let Some(child) = node.children[side] else {
            return false;
        };
        if node.split_bit(index, side) {
            return false;
        }
        let link = self.node(child).parent.expect("a child has a parent");
        index >= link.offset && index - link.offset < link.limit
    }

    /// Page `index` of visible node `from`, when an ancestor provides it (the VMO's own page,
    /// checked first by the caller, shadows it). `None`: the page reads as zero.
    pub(crate) fn lookup(&self, from: NodeId, index: u64) -> Option<Found> {
        let (mut at, mut index) = (from, index);
        // Bounded: a tree is at most MAX_COW_DEPTH deep.
        while let Some(link) = self.node(at).parent {
            index = link.up(index)?;
            let node = self.node(link.node);
            if node.split_bit(index, link.side) {
                return None;
            }
            if let Some(frame) = node.pages.get(index) {
                return Some(Found {
                    owner: link.node,
                    index,
                    frame,
                });
            }
            at = link.node;
        }
        None
    }

    /// Whether `from` is the only VMO that sees `found` (every other side between them has
    /// diverged there or died): then a write takes the frame rather than copying it.
    pub(crate) fn sole_viewer(&self, from: NodeId, index: u64, found: Found) -> bool {
        let (mut at, mut index) = (from, index);
        while let Some(link) = self.node(at).parent {
            let Some(up) = link.up(index) else {
                return false;
            };
            if self.sees(link.node, 1 - link.side, up) {
                return false;
            }
            if link.node == found.owner {
                return true;
            }
            (at, index) = (link.node, up);
        }
        false
    }

    /// Takes `found`'s frame out of its hidden node, for `from` (its sole viewer).
    pub(crate) fn take(&mut self, from: NodeId, index: u64, found: Found) -> PhysAddr {
        let owner = self.node_mut(found.owner);
        let mut removed = RemovedPages::default();
        owner
            .pages
            .remove_range(found.index, found.index + 1, &mut removed);
        // The split bits stay: the other sides that diverged here still have.
        self.diverge(from, index);
        found.frame
    }

    /// Records that node `from` no longer looks up through its parent at `index` (it has its
    /// own page there now, or reads zero there), and frees each hidden page that no one sees
    /// as a result.
    pub(crate) fn diverge(&mut self, from: NodeId, index: u64) {
        let (mut at, mut index) = (from, index);
        while let Some(link) = self.node(at).parent {
            let Some(up) = link.up(index) else {
                return;
            };
            let other_sees = self.sees(link.node, 1 - link.side, up);
            let node = self.node_mut(link.node);
            *node.split.entry(up).or_insert(0) |= 1 << link.side;
            if let Some(frame) = node.pages.get(up) {
                if other_sees {
                    return;
                }
                let mut removed = RemovedPages::default();
                node.pages.remove_range(up, up + 1, &mut removed);
                self.graveyard.push(frame);
            } else if other_sees {
                return;
            }
            // Neither side looks up through this node at `up`: nor does the node itself.
            (at, index) = (link.node, up);
        }
    }

    /// A snapshot of visible node `parent` (whose own pages, `pages`, covering `parent_pages`
    /// pages, become a new hidden node's): returns the child's new node, which sees
    /// `child_limit` pages of the hidden node from `child_offset`.
    pub(crate) fn snapshot(
        &mut self,
        parent: NodeId,
        pages: PageList,
        parent_pages: u64,
        child_offset: u64,
        child_limit: u64,
    ) -> NodeId {
        let above = self.node(parent).parent;
        let mut hidden = Node::new(above, true);
        hidden.pages = pages;
        let hidden = self.add(hidden);
        if let Some(link) = above {
            self.node_mut(link.node).children[link.side] = Some(hidden);
        }
        let child = self.add(Node::new(
            Some(Link {
                node: hidden,
                side: 1,
                offset: child_offset,
                limit: child_limit,
            }),
            false,
        ));
        self.node_mut(parent).parent = Some(Link {
            node: hidden,
            side: 0,
            offset: 0,
            limit: parent_pages,
        });
        self.node_mut(hidden).children = [Some(parent), Some(child)];
        child
    }

    /// Visible node `id` sees no page at or past `pages` any more (its VMO shrank).
    pub(crate) fn limit(&mut self, id: NodeId, pages: u64) {
        let Some(link) = self.node_mut(id).parent.as_mut() else {
            return;
        };
        if pages < link.limit {
            link.limit = pages;
            let parent = link.node;
            self.drop_unseen_by_both(parent);
        }
    }

    /// Frees each page of hidden node `id` that neither side sees (after a side's view of it
    /// narrowed).
    fn drop_unseen_by_both(&mut self, id: NodeId) {
        let mut index = 0;
        while let Some((at, _)) = next_page(&self.node(id).pages, index) {
            index = at + 1;
            if !self.sees(id, 0, at) && !self.sees(id, 1, at) {
                let mut removed = RemovedPages::default();
                self.node_mut(id)
                    .pages
                    .remove_range(at, at + 1, &mut removed);
                self.graveyard.extend(removed.frames());
            }
        }
    }

    /// Visible node `id` died. Its side of its parent is gone: the parent's pages only that
    /// side saw are freed, a parent left with no child dies too (and so on up), and a parent
    /// left with one hidden child merges into it. A parent left with one visible child stays
    /// until that VMO next takes its lock ([`Nodes::collapse`]).
    pub(crate) fn release(&mut self, id: NodeId) {
        let mut gone = self.remove(id).parent;
        while let Some(link) = gone.take() {
            let parent = link.node;
            self.node_mut(parent).children[link.side] = None;
            let survivor = self.node(parent).children[1 - link.side];
            match survivor {
                None => {
                    let node = self.remove(parent);
                    self.bury(node.pages);
                    gone = node.parent;
                }
                Some(survivor) => {
                    self.drop_unseen(parent, 1 - link.side);
                    if self.node(survivor).hidden {
                        self.merge_hidden(parent, survivor);
                    }
                }
            }
        }
    }

    /// Frees the pages of hidden node `id` that its side `side` (now its only one) does not see.
    fn drop_unseen(&mut self, id: NodeId, side: usize) {
        let child = self.node(id).children[side].expect("the surviving side");
        let link = self.node(child).parent.expect("a child has a parent");
        let node = self.node(id);
        let diverged = node.split.values().any(|bits| bits & (1 << side) != 0);
        let outside = link.offset > 0
            || node
                .pages
                .iter_range(link.offset.saturating_add(link.limit), u64::MAX)
                .next()
                .is_some();
        if !diverged && !outside {
            // The survivor sees every page (the common case: a snapshot closed unwritten).
            return;
        }
        // The other side is dead: what the survivor does not see, no side sees.
        self.drop_unseen_by_both(id);
    }

    /// Merges hidden node `parent`, whose only child is hidden node `child`, into that child.
    fn merge_hidden(&mut self, parent: NodeId, child: NodeId) {
        let link = self.node(child).parent.expect("a child has a parent");
        self.propagate_splits(parent, link.side);
        let node = self.remove(parent);
        let mut index = 0;
        while let Some((at, frame)) = next_page(&node.pages, index) {
            index = at + 1;
            // `drop_unseen` freed what the child does not see: each page left is inside its
            // window, and the child has none there (it would have diverged from this one).
            let i = at - link.offset;
            debug_assert!(i < link.limit && self.node(child).pages.get(i).is_none());
            self.node_mut(child).pages.insert(i, frame);
        }
        self.relink(child, link, node.parent);
        // The child sees each page through its own window, but its children may not (one of
        // them may be dead already, or look through a narrower window): what none of them sees
        // goes.
        self.drop_unseen_by_both(child);
    }

    /// Before hidden node `id` goes away with only side `side` left: what that side diverged
    /// from at `id` (bits without a page there), `id`'s own side diverged from above it.
    fn propagate_splits(&mut self, id: NodeId, side: usize) {
        if self.node(id).parent.is_none() {
            // Nothing above to diverge from.
            return;
        }
        let mut index = 0;
        while let Some(at) = self.node(id).split.range(index..).next().map(|(&at, _)| at) {
            index = at + 1;
            if self.node(id).split_bit(at, side) {
                self.diverge(id, at);
            }
        }
    }

    /// `child` (linked by `link` to a parent that is going away) takes that parent's place
    /// under `up`.
    fn relink(&mut self, child: NodeId, link: Link, up: Option<Link>) {
        let through = link.through(up);
        self.node_mut(child).parent = through;
        if let (Some(up), Some(through)) = (up, through) {
            self.node_mut(through.node).children[through.side] = Some(child);
            // Where the child sees less of the node above than the node that went did, the
            // pages there that no one sees any more go.
            if link.offset > 0 || link.limit < up.limit {
                self.drop_unseen_by_both(through.node);
            }
        }
    }

    /// Merges each hidden parent of visible node `id` that `id` alone still has into `id`,
    /// whose own pages are `own` (under its VMO's lock): the pages it sees move there (in one
    /// step when it has none of its own), the others are freed. Returns whether `id` is now
    /// the root of its tree (no parent).
    pub(crate) fn collapse(&mut self, id: NodeId, own: &mut PageList) -> bool {
        while let Some(link) = self.node(id).parent {
            let parent = self.node(link.node);
            if parent.children[1 - link.side].is_some() {
                return false;
            }
            self.propagate_splits(link.node, link.side);
            self.drop_unseen(link.node, link.side);
            let node = self.remove(link.node);
            let mut pages = node.pages;
            if own.committed_pages() == 0 && link.offset == 0 {
                core::mem::swap(own, &mut pages);
            } else {
                let mut index = 0;
                while let Some((at, frame)) = next_page(&pages, index) {
                    index = at + 1;
                    // As in `merge_hidden`: inside the window, and not shadowed.
                    let i = at - link.offset;
                    debug_assert!(i < link.limit && own.get(i).is_none());
                    own.insert(i, frame);
                }
            }
            self.relink(id, link, node.parent);
        }
        true
    }

    /// Marks a round under way (see `in_flight`).
    pub(crate) fn begin_round(&mut self) {
        self.in_flight += 1;
    }

    /// Marks a round complete.
    pub(crate) fn end_round(&mut self) {
        self.in_flight -= 1;
    }

    /// Whether no round is under way: only then may a page be copied, moved or freed.
    pub(crate) fn settled(&self) -> bool {
        self.in_flight == 0
    }

    /// The frames to free now (none while a round is under way), into `out`.
    pub(crate) fn take_graveyard(&mut self, out: &mut Vec<PhysAddr>) {
        if self.settled() {
            out.append(&mut self.graveyard);
        }
    }

    /// Gives a dead node's pages to the graveyard.
    fn bury(&mut self, pages: PageList) {
        let mut index = 0;
        while let Some((at, frame)) = next_page(&pages, index) {
            index = at + 1;
            self.graveyard.push(frame);
        }
    }

    /// The hidden pages counted as `from`'s committed memory: those it sees in the nodes that
    /// hold what it had before its snapshots (up its chain of first sides), so that a snapshot
    /// leaves its parent's count as it was and a new child counts only the pages it copies; and
    /// those of a node whose other side died (`from` alone sees them now).
    pub(crate) fn attributed(&self, from: NodeId) -> u64 {
        let (mut at, mut base) = (from, 0u64);
        let mut count = 0;
        while let Some(link) = self.node(at).parent {
            if link.side != 0 && self.node(link.node).children[0].is_some() {
                break;
            }
            base += link.offset;
            for (index, _) in self.node(link.node).pages.iter_range(base, u64::MAX) {
                let seen = self.lookup(from, index - base);
                count += u64::from(seen.is_some_and(|found| found.owner == link.node));
            }
            at = link.node;
        }
        count
    }

    /// Checks the tree's invariants (docs/cow.md, 1 to 3): links agree both ways, every hidden
    /// node has a live child, the depth is bounded, every hidden page is seen by a side, and
    /// no frame is in two hidden nodes. For the audit.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        let mut frames = BTreeSet::new();
        for (id, node) in self.slots.iter().enumerate() {
            let Some(node) = node else { continue };
            if let Some(link) = node.parent {
                let parent = self.slots.get(link.node).and_then(Option::as_ref);
                if !parent.is_some_and(|p| p.hidden && p.children[link.side] == Some(id)) {
                    return Err("a node's parent does not list it");
                }
            }
            if self.depth(id) > MAX_COW_DEPTH {
                return Err("a tree deeper than MAX_COW_DEPTH");
            }
            if !node.hidden {
                if node.pages.committed_pages() != 0 || node.children != [None, None] {
                    return Err("a visible node with pages or children in the tree");
                }
                continue;
            }
            if node.children == [None, None] {
                return Err("a hidden node with no live child");
            }
            for (index, frame) in node.pages.iter_range(0, u64::MAX) {
                if !self.sees(id, 0, index) && !self.sees(id, 1, index) {
                    return Err("a hidden page that no side sees");
                }
                if !frames.insert(frame) {
                    return Err("a frame in two hidden nodes");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
