//! Reading and writing a VMO's bytes (`zx_vmo_read`, `zx_vmo_write`).

use super::{Vmo, VmoInner, VmoKind};
use crate::abi::{Status, ZxResult, PAGE_SHIFT, PAGE_SIZE};
use crate::tlb::TlbBatch;

impl Vmo {
    /// Reads `buffer.len()` bytes at `offset`. Uncommitted pages read as zero and stay uncommitted.
    pub fn read(&self, offset: u64, buffer: &mut [u8]) -> ZxResult {
        if matches!(self.kind, VmoKind::Physical { .. }) {
            return Err(Status::NotSupported);
        }
        if let Some(forward) = self.forward(offset, buffer.len() as u64) {
            let (target, offset) = forward?;
            return target.read(offset, buffer);
        }
        let inner = self.lock();
        let (first, last) = self.page_range(&inner, offset, buffer.len() as u64)?;
        let mut done = 0usize;
        for index in first..last {
            let page_start = index << PAGE_SHIFT;
            let from = (offset + done as u64) - page_start;
            let n = ((PAGE_SIZE - from) as usize).min(buffer.len() - done);
            let out = &mut buffer[done..done + n];
            match self.read_page_locked(&inner, index) {
                Some((pa, _)) => {
                    let src = self.platform.phys_to_virt(pa);
                    // SAFETY: the frame is committed to this VMO (or to a hidden parent it reads
                    // through, which frees nothing that a VMO sees) and cannot be freed while we
                    // hold its lock; `from + n <= PAGE_SIZE`, and `out` is a distinct Rust buffer.
                    unsafe {
                        core::ptr::copy_nonoverlapping(src.add(from as usize), out.as_mut_ptr(), n)
                    };
                }
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, committing the pages it touches. On `ZX_ERR_NO_MEMORY` nothing
    /// is written, and the pages this call committed are given back.
    pub fn write(&self, offset: u64, data: &[u8]) -> ZxResult {
        if matches!(self.kind, VmoKind::Physical { .. }) {
            return Err(Status::NotSupported);
        }
        if let Some(forward) = self.forward(offset, data.len() as u64) {
            let (target, offset) = forward?;
            return target.write(offset, data);
        }
        self.until_settled(|| {
            let mut batch = TlbBatch::new(&*self.platform);
            let round = {
                let mut inner = self.lock();
                let (first, last) = self.page_range(&inner, offset, data.len() as u64)?;
                // Commit first, so that a failure changes nothing.
                self.commit_all_locked(&mut inner, first, last, &mut batch)?;
                self.unmap_zero_pages_locked(&mut inner, first, last, &mut batch);
                self.copy_in_locked(&inner, offset, data, first, last);
                Self::begin_round_locked(&mut inner, &batch)
            };
            self.finish_round(batch, round);
            Ok(())
        })
    }

    /// Copies `data` to `offset`, over the committed pages `[first, last)` it covers.
    fn copy_in_locked(&self, inner: &VmoInner, offset: u64, data: &[u8], first: u64, last: u64) {
        let mut done = 0usize;
        for index in first..last {
            let page_start = index << PAGE_SHIFT;
            let to = (offset + done as u64) - page_start;
            let n = ((PAGE_SIZE - to) as usize).min(data.len() - done);
            let pa = self
                .lookup_page_locked(inner, index)
                .expect("committed by the caller, under the same lock");
            let dst = self.platform.phys_to_virt(pa);
            // SAFETY: as in `read`: the frame is committed and locked, `to + n <= PAGE_SIZE`.
            unsafe {
                core::ptr::copy_nonoverlapping(data[done..].as_ptr(), dst.add(to as usize), n)
            };
            done += n;
        }
    }
}
