//! A `no_std` virtual-memory subsystem modelled on Fuchsia's Zircon.
//!
//! The modules are layers: each uses only the ones before it in this list, and
//! `tests/layers.rs` fails the build of the tests on an import that runs up it.
//!
//! Layers, from the bottom: abi, platform, arch, tlb, vmo, vmar, object, syscall, kit, sim.
//!
//! - [`abi`]: Zircon's names and numbers (statuses, rights, options), and kernel object ids.
//! - [`platform`]: what a kernel provides (the [`Platform`] trait, [`platform::CpuPin`]) and the
//!   per-machine state it makes once ([`platform::Tlb`]); the bare-metal TLB instructions.
//! - [`arch`]: page tables in the x86_64 and aarch64 formats behind one walker, which records
//!   what it changed in an [`arch::PendingFlush`]; the translation-regime checks.
//! - [`tlb`]: batched invalidation, the cross-CPU shootdown, and frames freed only after it. It
//!   knows CPUs, tags, address ranges and deferred work, never VMARs or VMOs.
//! - [`vmo`]: virtual memory objects, their pages, and the list of their mappings, which reach
//!   their address spaces through a trait the layer above implements.
//! - [`vmar`]: address spaces, VMARs in intrusive red-black trees, mappings, the page-fault path,
//!   and the crate's lock order.
//! - [`object`]: handles, rights and processes; [`syscall`]: Zircon's syscalls over them, with
//!   `zx_vmar_op_range` first among them.
//! - [`kit`]: an integration kit for hobby kernels: a freeing frame allocator over a bump
//!   allocator, a ready single-CPU `Platform`, fault decoding, `x86_64` crate conversions.
//! - `sim` (feature `sim`, hosted targets): a simulated machine for the host.
//!
//! ```
//! # #[cfg(feature = "sim")] {
//! use std::sync::Arc;
//! use zx_vm::abi::*;
//! use zx_vm::syscall::*;
//! use zx_vm::{arch::Format, sim::SimMachine, Platform, Process};
//!
//! let machine = SimMachine::with_frames(1024);
//! let platform: Arc<dyn Platform> = machine.clone();
//! let process = Process::new(platform, Format::NATIVE).unwrap();
//! let root = process.root_vmar_handle();
//!
//! let (mut vmo, mut addr) = (0, 0);
//! assert_eq!(zx_vmo_create(&process, 4 * PAGE_SIZE, 0, &mut vmo), ZX_OK);
//! assert_eq!(zx_vmo_write(&process, vmo, b"hello", 0), ZX_OK);
//! let rw = ZX_VM_PERM_READ | ZX_VM_PERM_WRITE;
//! assert_eq!(zx_vmar_map(&process, root, rw, 0, vmo, 0, 4 * PAGE_SIZE, &mut addr), ZX_OK);
//!
//! let status = zx_vmar_op_range(&process, root, ZX_VMAR_OP_DECOMMIT, addr, PAGE_SIZE, 0, 0);
//! assert_eq!(status, ZX_OK);
//! let mut bytes = [0xff; 5];
//! assert_eq!(zx_vmo_read(&process, vmo, &mut bytes, 0), ZX_OK);
//! assert_eq!(bytes, [0; 5]);
//! # }
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

extern crate alloc;

pub mod abi;
pub mod arch;
pub mod kit;
pub mod object;
pub mod platform;
#[cfg(all(feature = "sim", not(target_os = "none")))]
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
