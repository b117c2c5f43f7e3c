//! The kernel's own synchronisation: an interrupt-safe spinlock and a write-once cell.
//!
//! Every kernel lock disables interrupts while it is held. The shootdown IPI handler no longer
//! needs that for itself: `Tlb::handle_ipi` takes no lock and allocates and frees nothing (the
//! requests live on their initiators' stacks), and the kernel's part of the handler only bumps
//! atomic counters. The locks stay interrupt-safe anyway, because:
//! - the `Platform` contract promises the crate that the heap is usable from the IPI handler's
//!   context, for whatever a kernel's handler does besides `handle_ipi`; with the heap lock
//!   interrupt-safe that holds whatever the handler interrupted;
//! - the page-fault handler takes the frame-allocator and heap locks (through the crate's
//!   `page_fault`) in exception context, and the panic path prints from wherever it was raised,
//!   exception handlers included; a lock that an interrupt could find held by the code it
//!   interrupted must keep interrupts off;
//! - a CPU holding a kernel lock is never interrupted, so no other CPU spins on that lock while
//!   its holder serves interrupts.
//!
//! What makes this safe next to the crate's shootdowns: no kernel lock is held across a crate
//! call that may start one (the frame-allocator and heap locks are leaves, held only inside
//! `alloc_frame`/`free_frames` or an allocation), so a CPU spinning on a kernel lock with its
//! interrupts off never waits for a CPU that is itself waiting for that CPU's acknowledgement.
//! (The crate's own locks are never taken in the IPI handler, so they need not be
//! interrupt-safe.)

use crate::arch;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// A spinlock that keeps interrupts disabled on the holding CPU.
pub struct IrqSpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time (the `locked` flag is
// taken with acquire and released with release ordering), so sharing the lock between CPUs only
// needs `T: Send`, as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for IrqSpinLock<T> {}
// SAFETY: as above, moving the lock moves the `T`.
unsafe impl<T: Send> Send for IrqSpinLock<T> {}

impl<T> IrqSpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        IrqSpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Disables interrupts, then spins until the lock is free and takes it.
    pub fn lock(&self) -> IrqSpinGuard<'_, T> {
        let interrupts = arch::interrupts_disable();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        IrqSpinGuard {
            lock: self,
            interrupts,
        }
    }

    /// Takes the lock even if it is held, for the panic path only (the holder may be the CPU
    /// that panicked, or a CPU that will never let go).
    ///
    /// # Safety
    /// The caller must be the only CPU still running kernel code that uses this lock's value,
    /// or accept interleaved access to it (the console, while panicking).
    pub unsafe fn force_lock(&self) -> IrqSpinGuard<'_, T> {
        let interrupts = arch::interrupts_disable();
        self.locked.swap(true, Ordering::Acquire);
        IrqSpinGuard {
            lock: self,
            interrupts,
        }
    }
}

/// Access to an [`IrqSpinLock`]'s value; unlocking restores the interrupt state.
pub struct IrqSpinGuard<'a, T> {
    lock: &'a IrqSpinLock<T>,
    interrupts: bool,
}

impl<T> Deref for IrqSpinGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this CPU holds the lock, so no other reference to
        // the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for IrqSpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for IrqSpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        arch::interrupts_restore(self.interrupts);
    }
}

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// A value set once (at boot) and read-only afterwards.
pub struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the value is written once, before `state` becomes READY with release ordering, and only
// read (shared) after an acquire load saw READY; so sharing needs `T: Send + Sync`.
unsafe impl<T: Send + Sync> Sync for Once<T> {}

impl<T> Once<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Once {
            state: AtomicU8::new(UNINIT),
            value: UnsafeCell::new(None),
        }
    }

    /// Sets the value; panics if it was set before.
    pub fn set(&self, value: T) -> &T {
        assert!(
            self.state
                .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            "Once::set called twice"
        );
        // SAFETY: the BUSY state, won by the compare-exchange above, excludes every other writer,
        // and readers only look after READY.
        unsafe { *self.value.get() = Some(value) };
        self.state.store(READY, Ordering::Release);
        self.get()
    }

    /// The value, if set.
    pub fn try_get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY was stored after the value was written and it is never written again.
        unsafe { (*self.value.get()).as_ref() }
    }

    /// The value; panics if it was not set.
    pub fn get(&self) -> &T {
        self.try_get().expect("Once::get before Once::set")
    }
}
