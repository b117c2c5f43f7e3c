//! The one permission table: what each `ZX_VM_PERM_*` bit needs and grants. Mapping, protecting,
//! allocating VMARs and the syscalls' rights checks all read it, so a permission is described
//! in one place.

use crate::abi::{Rights, VmOptions};
use crate::arch::MmuFlags;

/// One permission: the `ZX_VM_PERM_*` bit, the `ZX_VM_CAN_MAP_*` bit a VMAR (and the handles
/// behind a mapping) must grant for it, the handle right it needs, and the page permission it
/// becomes.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    /// The `ZX_VM_PERM_*` bit.
    pub perm: VmOptions,
    /// The `ZX_VM_CAN_MAP_*` bit.
    pub can_map: VmOptions,
    /// The handle right.
    pub right: Rights,
    /// The page permission.
    pub mmu: MmuFlags,
}

/// Read, write, execute.
pub const PERMISSIONS: [Permission; 3] = [
    Permission {
        perm: VmOptions::PERM_READ,
        can_map: VmOptions::CAN_MAP_READ,
        right: Rights::READ,
        mmu: MmuFlags::READ,
    },
    Permission {
        perm: VmOptions::PERM_WRITE,
        can_map: VmOptions::CAN_MAP_WRITE,
        right: Rights::WRITE,
        mmu: MmuFlags::WRITE,
    },
    Permission {
        perm: VmOptions::PERM_EXECUTE,
        can_map: VmOptions::CAN_MAP_EXECUTE,
        right: Rights::EXECUTE,
        mmu: MmuFlags::EXECUTE,
    },
];

/// Converts `ZX_VM_PERM_*` bits into page permissions.
pub fn perms_to_mmu(options: VmOptions) -> MmuFlags {
    PERMISSIONS
        .iter()
        .filter(|p| options.contains(p.perm))
        .fold(MmuFlags::empty(), |flags, p| flags | p.mmu)
}

/// The `ZX_VM_CAN_MAP_*` bits that the `ZX_VM_PERM_*` bits of `options` need.
pub fn perms_needing_can_map(options: VmOptions) -> VmOptions {
    PERMISSIONS
        .iter()
        .filter(|p| options.contains(p.perm))
        .fold(VmOptions::empty(), |can_map, p| can_map | p.can_map)
}

/// The handle rights that the `ZX_VM_PERM_*` and `ZX_VM_CAN_MAP_*` bits of `options` need.
pub fn rights_for_perms(options: VmOptions) -> Rights {
    PERMISSIONS
        .iter()
        .filter(|p| options.intersects(p.perm | p.can_map))
        .fold(Rights::empty(), |rights, p| rights | p.right)
}

/// Whether a set of `ZX_VM_PERM_*` bits is one a mapping can have (no write without read).
pub fn valid_perms(options: VmOptions) -> bool {
    !options.contains(VmOptions::PERM_WRITE) || options.contains(VmOptions::PERM_READ)
}
