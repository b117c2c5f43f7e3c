//! A `no_std` virtual-memory subsystem modelled on Fuchsia's Zircon.
//!
//! - [`vmo`]: virtual memory objects, their pages and the list of their mappings.
//! - [`vmar`]: address spaces, VMARs in intrusive red-black trees, mappings, the page-fault path,
//!   and the crate's lock order.
//! - [`arch`]: page tables in the x86_64 and aarch64 formats behind one walker, and the TLB
//!   instructions (bare metal only).
//! - [`tlb`]: batched invalidation, and frames freed only after it.
//! - [`object`]: handles, rights and processes; [`syscall`]: Zircon's syscalls over them, with
//!   `zx_vmar_op_range` first among them.
//! - [`platform`]: what a kernel provides; `sim` (feature `sim`): a simulated machine for the host.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

extern crate alloc;

pub mod abi;
pub mod arch;
pub mod object;
pub mod platform;
#[cfg(feature = "sim")]
pub mod sim;
pub mod syscall;
pub mod tlb;
pub mod vmar;
pub mod vmo;

pub use abi::{Rights, Status, VmOptions, ZxResult};
pub use object::{KernelObject, Process};
pub use platform::{PhysAddr, Platform};
pub use vmar::{AddressSpace, Vmar};
pub use vmo::Vmo;

static_assertions::const_assert_eq!(abi::PAGE_SIZE, 1 << abi::PAGE_SHIFT);
static_assertions::const_assert!(platform::MAX_CPUS <= 64);
