//! Kernel objects, handles and processes.
//!
//! A [`Process`] owns a handle table and an address space. A handle names a kernel object with a
//! set of [`Rights`]; the table's lock is held only to look a handle up, add or remove one, never
//! while a VM operation runs, so it stands outside the VM lock order of [`crate::vmar`].

mod handle_table;

pub use self::handle_table::{HandleTable, DEFAULT_MAX_HANDLES};

use crate::abi::{
    zx_handle_t, zx_koid_t, Rights, Status, ZxResult, ZX_DEFAULT_VMAR_RIGHTS, ZX_RIGHT_EXECUTE,
    ZX_RIGHT_READ, ZX_RIGHT_WRITE,
};
use crate::arch::Format;
use crate::platform::Platform;
use crate::vmar::{AddressSpace, AspaceError, Vmar};
use crate::vmo::Vmo;
use alloc::sync::Arc;
use spin::Mutex;

/// An object a handle can name.
#[derive(Clone)]
pub enum KernelObject {
    /// A virtual memory object.
    Vmo(Arc<Vmo>),
    /// A virtual memory address region.
    Vmar(Arc<Vmar>),
}

impl KernelObject {
    /// The object's kernel object id.
    pub fn koid(&self) -> zx_koid_t {
        match self {
            KernelObject::Vmo(vmo) => vmo.koid(),
            KernelObject::Vmar(vmar) => vmar.koid(),
        }
    }
}

/// A handle: an object and the rights held on it.
#[derive(Clone)]
pub struct Handle {
    /// The object.
    pub object: KernelObject,
    /// What the holder may do with it.
    pub rights: Rights,
}

/// The rights of a new handle to the root VMAR (`ZX_DEFAULT_VMAR_RIGHTS` plus read, write and
/// execute, as the root VMAR can map all three).
pub const ROOT_VMAR_RIGHTS: Rights = Rights::from_bits_truncate(
    ZX_DEFAULT_VMAR_RIGHTS | ZX_RIGHT_READ | ZX_RIGHT_WRITE | ZX_RIGHT_EXECUTE,
);

/// A process: a handle table and an address space.
pub struct Process {
    handles: Mutex<HandleTable>,
    aspace: Arc<AddressSpace>,
    platform: Arc<dyn Platform>,
    root_vmar: zx_handle_t,
}

impl Process {
    /// A process with a new address space in `format` and a handle to its root VMAR.
    pub fn new(platform: Arc<dyn Platform>, format: Format) -> ZxResult<Arc<Process>> {
        Self::with_handle_limit(platform, format, DEFAULT_MAX_HANDLES)
    }

    /// As [`Process::new`], with a handle table of at most `max_handles` entries.
    pub fn with_handle_limit(
        platform: Arc<dyn Platform>,
        format: Format,
        max_handles: usize,
    ) -> ZxResult<Arc<Process>> {
        let aspace = AddressSpace::new(platform.clone(), format)?;
        Self::with_aspace(platform, aspace, max_handles)
    }

    /// A process whose root VMAR is `[base, base + size)`: for a kernel that keeps lower-half
    /// root slots of its own (see [`AddressSpace::with_user_range`]).
    pub fn with_user_range(
        platform: Arc<dyn Platform>,
        format: Format,
        base: u64,
        size: u64,
    ) -> ZxResult<Arc<Process>> {
        Self::create(platform, format, base, size).map_err(Status::from)
    }

    /// As [`Process::with_user_range`], with the reason for a refusal in words
    /// ([`AddressSpace::create`]): for a kernel's bring-up log.
    pub fn create(
        platform: Arc<dyn Platform>,
        format: Format,
        base: u64,
        size: u64,
    ) -> Result<Arc<Process>, AspaceError> {
        let aspace = AddressSpace::create(platform.clone(), format, base, size)?;
        Ok(Self::with_aspace(platform, aspace, DEFAULT_MAX_HANDLES)?)
    }

    fn with_aspace(
        platform: Arc<dyn Platform>,
        aspace: Arc<AddressSpace>,
        max_handles: usize,
    ) -> ZxResult<Arc<Process>> {
        let mut handles = HandleTable::new(max_handles);
        let root_vmar = handles.add(Handle {
            object: KernelObject::Vmar(aspace.root_vmar()),
            rights: ROOT_VMAR_RIGHTS,
        })?;
        Ok(Arc::new(Process {
            handles: Mutex::new(handles),
            aspace,
            platform,
            root_vmar,
        }))
    }

    /// The handle to the root VMAR that the process was created with.
    pub fn root_vmar_handle(&self) -> zx_handle_t {
        self.root_vmar
    }

    /// The address space.
    pub fn aspace(&self) -> &Arc<AddressSpace> {
        &self.aspace
    }

    /// The platform.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Adds a handle to `object` with `rights` (the kernel's way to give a process, say, a
    /// contiguous VMO). `ZX_ERR_NO_RESOURCES` when the table is full.
    pub fn add_handle(&self, object: KernelObject, rights: Rights) -> ZxResult<zx_handle_t> {
        self.handles.lock().add(Handle { object, rights })
    }

    /// The handle `value` names (`ZX_ERR_BAD_HANDLE` if none).
    pub fn handle(&self, value: zx_handle_t) -> ZxResult<Handle> {
        self.handles.lock().get(value).cloned()
    }

    /// Removes handle `value`.
    pub fn remove_handle(&self, value: zx_handle_t) -> ZxResult<Handle> {
        self.handles.lock().remove(value)
    }

    /// Replaces handle `value` by a new handle with `rights` in one step.
    pub fn replace_handle(&self, value: zx_handle_t, rights: Rights) -> ZxResult<zx_handle_t> {
        self.handles.lock().replace(value, rights)
    }

    /// How many handles the process holds.
    pub fn handle_count(&self) -> usize {
        self.handles.lock().len()
    }

    /// The VMAR `value` names, with the handle's rights.
    pub fn vmar(&self, value: zx_handle_t) -> ZxResult<(Arc<Vmar>, Rights)> {
        let handle = self.handle(value)?;
        match handle.object {
            KernelObject::Vmar(vmar) => Ok((vmar, handle.rights)),
            _ => Err(Status::WrongType),
        }
    }

    /// The VMO `value` names, with the handle's rights.
    pub fn vmo(&self, value: zx_handle_t) -> ZxResult<(Arc<Vmo>, Rights)> {
        let handle = self.handle(value)?;
        match handle.object {
            KernelObject::Vmo(vmo) => Ok((vmo, handle.rights)),
            _ => Err(Status::WrongType),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A dying process takes its mappings with it, even where other holders keep the address
        // space or its VMOs alive.
        let _ = self.aspace.root_vmar().destroy();
    }
}
