//! The range engine: what every range operation (protect, DECOMMIT) shares, in one place.
//!
//! [`Vmar::range_op`] rounds the length up to whole pages and checks the address, locks the
//! address space's tree, checks that the VMAR is alive and holds the range, finds the mappings
//! that cover every page of it through nested VMARs, and hands them to the operation; once the
//! operation returns and the locks are dropped, it invalidates what the operation recorded, in
//! one shootdown round, and only then frees what it took. An operation is one closure: its own
//! checks, then its change, written into the batch it is given.

use super::*;

/// The statuses of the shared checks. They differ between operations (Zircon's, kept: the
/// contract's for DECOMMIT).
pub(super) struct RangeRules {
    /// A length that rounds up past the end of the address space.
    pub(super) overflow: Status,
    /// A range that leaves the VMAR.
    pub(super) outside: Status,
    /// A page of the range that no mapping covers.
    pub(super) gap: Status,
}

/// What an operation works on once the shared checks passed.
pub(super) struct Range<'a> {
    /// The address space's tree, locked.
    pub(super) tree: &'a mut AspaceTree,
    /// The mappings covering the range, each with the part it covers, in address order.
    pub(super) covered: &'a [Covered],
    /// Room for the VMOs the operation locks ([`HeldVmos::lock_covered`]).
    pub(super) vmos: &'a mut Vec<Arc<Vmo>>,
    /// Room for regions the operation collects.
    pub(super) regions: &'a mut Vec<Arc<Region>>,
    /// Where the operation records what to invalidate and what to free after.
    pub(super) batch: &'a mut TlbBatch,
}

impl Vmar {
    /// Runs a range operation over `[addr, addr + len)` (see the module's description). A zero
    /// length or an unaligned address is `ZX_ERR_INVALID_ARGS`, a destroyed VMAR
    /// `ZX_ERR_BAD_STATE`, the rest as `rules` says.
    pub(super) fn range_op(
        &self,
        addr: u64,
        len: u64,
        rules: &RangeRules,
        op: impl FnOnce(Range<'_>) -> ZxResult,
    ) -> ZxResult {
        let size = page_round_up(len).ok_or(rules.overflow)?;
        if size == 0 || !is_page_aligned(addr) {
            return Err(Status::InvalidArgs);
        }
        let platform = &**self.aspace.platform();
        let mut batch = TlbBatch::new(platform);
        let mut tree = self.aspace.lock_tree();
        let mut scratch = RangeScratch::take(&mut tree);
        let result = self
            .cover_locked(&tree, addr, size, rules, &mut scratch)
            .and_then(|()| {
                let RangeScratch {
                    covered,
                    vmos,
                    regions,
                    ..
                } = &mut scratch;
                op(Range {
                    tree: &mut tree,
                    covered,
                    vmos,
                    regions,
                    batch: &mut batch,
                })
            });
        scratch.put(&mut tree);
        drop(tree);
        batch.finish(platform);
        result
    }

    /// The shared checks under the tree lock: a live VMAR that holds the range, every page of it
    /// covered by a mapping (into `scratch.covered`).
    fn cover_locked(
        &self,
        tree: &AspaceTree,
        addr: u64,
        size: u64,
        rules: &RangeRules,
        scratch: &mut RangeScratch,
    ) -> ZxResult {
        let node = tree.node(self.id)?;
        let end = addr.checked_add(size).ok_or(rules.outside)?;
        if addr < node.base || end > node.end() {
            return Err(rules.outside);
        }
        let RangeScratch { walk, covered, .. } = scratch;
        tree.covering_mappings(self.id, addr, end, rules.gap, walk, covered)
    }
}
