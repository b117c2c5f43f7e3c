//! A process's handle table.
//!
//! Handle values are Zircon-shaped: never 0, the two low bits set. The rest holds a slot index and
//! a generation, so a closed handle's value stays invalid after its slot is reused (until the
//! generation wraps, after 1024 reuses of the same slot).

use super::Handle;
use crate::abi::{zx_handle_t, Rights, Status, ZxResult};
use alloc::vec::Vec;

/// The default limit on handles per process.
pub const DEFAULT_MAX_HANDLES: usize = 1 << 16;

const FIXED_BITS: u32 = 0b11;
const INDEX_BITS: u32 = 20;
const GENERATION_MASK: u32 = (1 << 10) - 1;

struct Slot {
    generation: u32,
    handle: Option<Handle>,
}

/// Handles by value.
pub struct HandleTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
}

impl HandleTable {
    /// An empty table that holds at most `limit` handles (and never more than 2^20).
    pub fn new(limit: usize) -> Self {
        HandleTable {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit: limit.min(1 << INDEX_BITS),
        }
    }

    /// How many handles are in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn encode(index: u32, generation: u32) -> zx_handle_t {
        (((generation & GENERATION_MASK) << INDEX_BITS) | index) << 2 | FIXED_BITS
    }

    fn decode(&self, value: zx_handle_t) -> ZxResult<usize> {
        if value & FIXED_BITS != FIXED_BITS {
            return Err(Status::BadHandle);
        }
        let index = ((value >> 2) & ((1 << INDEX_BITS) - 1)) as usize;
        let generation = value >> (2 + INDEX_BITS);
        match self.slots.get(index) {
            Some(slot)
                if slot.handle.is_some() && slot.generation & GENERATION_MASK == generation =>
            {
                Ok(index)
            }
            _ => Err(Status::BadHandle),
        }
    }

    /// Adds `handle`; `ZX_ERR_NO_RESOURCES` when the table is full, `ZX_ERR_NO_MEMORY` when the
    /// heap cannot grow it.
    pub fn add(&mut self, handle: Handle) -> ZxResult<zx_handle_t> {
        if self.len >= self.limit {
            return Err(Status::NoResources);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                // Fallible growth: heap exhaustion is ZX_ERR_NO_MEMORY, not an abort. The free
                // list gets room for every slot now, so that `remove` never allocates.
                let slots = self.slots.len() + 1;
                self.slots.try_reserve(1).map_err(|_| Status::NoMemory)?;
                self.free
                    .try_reserve(slots.saturating_sub(self.free.len()))
                    .map_err(|_| Status::NoMemory)?;
                self.slots.push(Slot {
                    generation: 0,
                    handle: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.handle = Some(handle);
        self.len += 1;
        Ok(Self::encode(index, slot.generation))
    }

    /// The handle `value` names.
    pub fn get(&self, value: zx_handle_t) -> ZxResult<&Handle> {
        let index = self.decode(value)?;
        Ok(self.slots[index].handle.as_ref().expect("decode checked"))
    }

    /// Removes and returns the handle `value` names.
    pub fn remove(&mut self, value: zx_handle_t) -> ZxResult<Handle> {
        let index = self.decode(value)?;
        let slot = &mut self.slots[index];
        let handle = slot.handle.take().expect("decode checked");
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        Ok(handle)
    }

    /// Replaces `value` by a handle to the same object with `rights` (a subset of the old ones,
    /// or `ZX_ERR_INVALID_ARGS` and nothing changes).
    pub fn replace(&mut self, value: zx_handle_t, rights: Rights) -> ZxResult<zx_handle_t> {
        let old = self.get(value)?;
        if !old.rights.contains(rights) {
            return Err(Status::InvalidArgs);
        }
        let mut handle = self.remove(value)?;
        handle.rights = rights;
        // The slot just freed is reused, so this cannot fail for lack of room.
        self.add(handle)
    }
}
