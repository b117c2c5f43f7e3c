//! Unit tests of VMOs on the simulated machine.

use super::*;
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
