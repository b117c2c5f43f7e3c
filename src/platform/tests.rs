//! Unit tests of the CPU sets.

use super::*;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::AtomicUsize;

/// Each operation on a set, at both ends of the index range.
#[test]
fn cpu_sets_hold_what_was_put_in() {
    assert_eq!(CpuSet::single(0), CpuSet(1));
    assert_eq!(CpuSet::single(5), CpuSet(1 << 5));
    assert_eq!(CpuSet::single(63), CpuSet(1 << 63));
    let set = CpuSet(0b1011);
    assert!(set.contains(0) && set.contains(1) && set.contains(3));
    assert!(!set.contains(2) && !set.contains(63));
    assert!(CpuSet(u64::MAX).contains(63));
    assert!(
        !CpuSet(u64::MAX).contains(MAX_CPUS),
        "an index past the set"
    );
    assert!(CpuSet::EMPTY.is_empty() && !CpuSet::single(3).is_empty());
    assert_eq!(
        (CpuSet::EMPTY.len(), set.len(), CpuSet(u64::MAX).len()),
        (0, 3, 64)
    );
    assert_eq!(CpuSet(0b0110).union(CpuSet(0b1100)), CpuSet(0b1110));
    assert_eq!(CpuSet(0b0110).difference(CpuSet(0b1100)), CpuSet(0b0010));
    assert_eq!(CpuSet(0b0111).without(1), CpuSet(0b0101));
    assert_eq!(CpuSet(0b0111).without(5), CpuSet(0b0111));
    assert_eq!(CpuSet(u64::MAX).without(63), CpuSet(u64::MAX >> 1));
    assert_eq!(CpuSet(u64::MAX).without(MAX_CPUS), CpuSet(u64::MAX));
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 1, 3]);
    assert_eq!(CpuSet(u64::MAX).iter().count(), 64);
    assert_eq!(CpuSet(1 << 63).iter().collect::<Vec<_>>(), [63]);
    assert_eq!(format!("{set:?}"), "{0, 1, 3}");
}

/// CPUs join and leave an atomic set; an index past the set is refused on the way in and
/// ignored on the way out.
#[test]
fn atomic_cpu_sets_join_and_leave() {
    let set = AtomicCpuSet::new();
    assert!(set.load().is_empty());
    set.insert(2);
    set.insert(63);
    assert_eq!(set.load(), CpuSet((1 << 2) | (1 << 63)));
    set.remove(2);
    set.remove(MAX_CPUS);
    assert_eq!(set.load(), CpuSet(1 << 63));
    set.insert_all(CpuSet(0b101));
    set.insert_all(CpuSet::EMPTY);
    assert_eq!(set.load(), CpuSet((1 << 63) | 0b101));
    assert!(set.take(0));
    assert!(!set.take(0), "taken once");
    assert!(!set.take(1) && !set.take(MAX_CPUS));
    assert_eq!(set.load(), CpuSet((1 << 63) | 0b100));
    assert!(set.take(2) && set.take(63));
    assert!(set.load().is_empty());
    assert_eq!(AtomicCpuSet::from(CpuSet(0b11)).load(), CpuSet(0b11));
}

#[test]
#[should_panic(expected = "beyond MAX_CPUS")]
fn an_atomic_set_refuses_an_index_past_it() {
    AtomicCpuSet::new().insert(MAX_CPUS);
}

/// A platform that implements only what it must, counting the pins it is asked for.
struct Minimal {
    tlb: Tlb,
    pinned: AtomicUsize,
}

// SAFETY: a test platform with no frames and no CPUs to reach: nothing here maps or frees memory.
unsafe impl Platform for Minimal {
    fn alloc_frame(&self) -> Option<PhysAddr> {
        None
    }
    unsafe fn free_frames(&self, _frames: &[PhysAddr]) {}
    fn phys_to_virt(&self, _pa: PhysAddr) -> *mut u8 {
        core::ptr::null_mut()
    }
    fn current_cpu(&self) -> usize {
        0
    }
    fn preempt_disable(&self) {
        self.pinned.fetch_add(1, Ordering::SeqCst);
    }
    fn preempt_enable(&self) {
        self.pinned.fetch_sub(1, Ordering::SeqCst);
    }
    fn tlb(&self) -> &Tlb {
        &self.tlb
    }
    fn invalidate_local(&self, _request: &TlbInvalidate<'_>) {}
    unsafe fn load_root(&self, _root: PhysAddr, _asid: u16, _flush: bool) {}
    unsafe fn load_kernel_root(&self) {}
}

/// What a platform gets when it leaves the optional methods out, and a pin that lets go of its
/// CPU when it drops.
#[test]
fn optional_platform_methods_have_their_documented_defaults() {
    let platform = Minimal {
        tlb: Tlb::new(1, 0, Format::X86_64).unwrap(),
        pinned: AtomicUsize::new(0),
    };
    assert_eq!(platform.alloc_contiguous(4), None);
    assert_eq!(platform.memory_attributes(), MemoryAttributes::DEFAULT);
    assert_eq!(
        platform.invalidation_is_broadcast(),
        cfg!(target_arch = "aarch64")
    );
    {
        let pin = CpuPin::new(&platform);
        assert_eq!(pin.cpu(), 0);
        assert_eq!(platform.pinned.load(Ordering::SeqCst), 1);
    }
    assert_eq!(
        platform.pinned.load(Ordering::SeqCst),
        0,
        "unpinned on drop"
    );
}

/// The names and the debug output the crate's messages use.
#[test]
fn formats_and_addresses_print_as_documented() {
    assert_eq!(Format::X86_64.name(), "x86_64");
    assert_eq!(Format::Aarch64.name(), "aarch64");
    assert_eq!(
        format!("{:?}", PhysAddr(0x1234_5000)),
        "PhysAddr(0x12345000)"
    );
}

/// The bare-metal default of `Platform::tlb_features` reads the CPU once and keeps every field
/// (each flag either way, the largest INVLPGB count too): a second read is not made.
#[test]
fn tlb_features_are_read_once_and_kept_whole() {
    static READS: AtomicUsize = AtomicUsize::new(0);
    const FOUND: [TlbFeatures; 3] = [
        TlbFeatures {
            range: true,
            ttl: false,
            invlpgb: 65536,
        },
        TlbFeatures {
            range: false,
            ttl: true,
            invlpgb: 1,
        },
        TlbFeatures::NONE,
    ];
    fn second() -> TlbFeatures {
        READS.fetch_add(1, Ordering::SeqCst);
        TlbFeatures {
            range: true,
            ttl: true,
            invlpgb: 7,
        }
    }
    let reads: [fn() -> TlbFeatures; 3] = [|| FOUND[0], || FOUND[1], || FOUND[2]];
    for (found, read) in FOUND.into_iter().zip(reads) {
        let cache = AtomicU64::new(0);
        assert_eq!(TlbFeatures::once_in(&cache, read), found);
        assert_eq!(
            TlbFeatures::once_in(&cache, second),
            found,
            "kept from the first read"
        );
    }
    assert_eq!(READS.load(Ordering::SeqCst), 0, "read once");
    // The global one answers the same way.
    assert_eq!(TlbFeatures::once(reads[1]), FOUND[1]);
    assert_eq!(TlbFeatures::once(second), FOUND[1]);
}
