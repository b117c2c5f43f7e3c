//! Pins: pages a kernel keeps committed for DMA, which DECOMMIT refuses to take.

use super::*;

impl Vmo {
    /// Pins `[offset, offset + len)` (page aligned): commits the pages and keeps them from being
    /// decommitted until [`Vmo::unpin`]. Kernel use (DMA).
    pub fn pin(&self, offset: u64, len: u64) -> ZxResult {
        if !is_page_aligned(offset) || !is_page_aligned(len) || len == 0 {
            return Err(Status::InvalidArgs);
        }
        if let Some(forward) = self.forward(offset, len) {
            let (target, offset) = forward?;
            return target.pin(offset, len);
        }
        self.until_settled(|| {
            let mut batch = TlbBatch::new(&*self.platform);
            let round = {
                let mut inner = self.lock();
                let (first, last) = self.page_range(&inner, offset, len)?;
                // A page pinned u32::MAX times takes no more pins (Zircon: ZX_ERR_UNAVAILABLE),
                // checked before anything changes.
                if inner
                    .pins
                    .range(first..last)
                    .any(|(_, &count)| count == u32::MAX)
                {
                    return Err(Status::Unavailable.into());
                }
                self.commit_all_locked(&mut inner, first, last, &mut batch)?;
                for index in first..last {
                    *inner.pins.entry(index).or_insert(0) += 1;
                }
                self.unmap_zero_pages_locked(&mut inner, first, last, &mut batch);
                Self::begin_round_locked(&mut inner, &batch)
            };
            self.finish_round(batch, round);
            Ok(())
        })
    }

    /// Undoes one [`Vmo::pin`] of the same range. `ZX_ERR_BAD_STATE` if a page is not pinned.
    pub fn unpin(&self, offset: u64, len: u64) -> ZxResult {
        if !is_page_aligned(offset) || !is_page_aligned(len) || len == 0 {
            return Err(Status::InvalidArgs);
        }
        if let Some(forward) = self.forward(offset, len) {
            let (target, offset) = forward?;
            return target.unpin(offset, len);
        }
        let mut inner = self.lock();
        let (first, last) = self.page_range(&inner, offset, len)?;
        if (first..last).any(|index| !inner.pins.contains_key(&index)) {
            return Err(Status::BadState);
        }
        for index in first..last {
            let count = inner.pins.get_mut(&index).expect("checked above");
            *count -= 1;
            if *count == 0 {
                inner.pins.remove(&index);
            }
        }
        Ok(())
    }

    /// Whether any page in `[first, last)` is pinned.
    pub(crate) fn any_pinned_locked(inner: &VmoInner, first: u64, last: u64) -> bool {
        first < last && inner.pins.range(first..last).next().is_some()
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::super::*;
    use crate::sim::SimMachine;

    /// A page pinned `u32::MAX` times takes no more pins: `ZX_ERR_UNAVAILABLE`, and nothing
    /// changes (the other pages of the range are not pinned again).
    #[test]
    fn pin_counts_cannot_overflow() {
        let machine = SimMachine::with_frames(64);
        let vmo = Vmo::create(machine.clone(), 4 * PAGE_SIZE).unwrap();
        vmo.pin(0, 2 * PAGE_SIZE).unwrap();
        *vmo.lock().pins.get_mut(&1).unwrap() = u32::MAX;
        assert_eq!(vmo.pin(0, 2 * PAGE_SIZE), Err(Status::Unavailable));
        assert_eq!(
            vmo.lock().pins.get(&0),
            Some(&1),
            "page 0 was not pinned again"
        );
        assert_eq!(vmo.pin(0, PAGE_SIZE), Ok(()));
        assert_eq!(vmo.lock().pins.get(&0), Some(&2));
        *vmo.lock().pins.get_mut(&1).unwrap() = 1;
        vmo.unpin(0, 2 * PAGE_SIZE).unwrap();
        vmo.unpin(0, PAGE_SIZE).unwrap();
        assert!(vmo.lock().pins.is_empty());
    }
}
