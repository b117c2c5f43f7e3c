//! The harness: runs each operation on the crate and on the model, compares the results, and
//! checks the crate's state against the model's after every step.

use super::*;

// =================================================================================================
// The harness
// =================================================================================================

/// How to build a [`World`].
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub format: Format,
    pub cpus: usize,
    pub tags: u16,
    pub broadcast: bool,
    pub frames: usize,
    /// One process per entry, with this handle limit.
    pub handle_limits: Vec<usize>,
    /// The machine has a shared zero page: read faults commit nothing.
    pub zero_page: bool,
}

impl WorldConfig {
    /// Two processes (the second with a small handle table) and three CPUs.
    pub fn standard(format: Format, tags: u16, broadcast: bool) -> WorldConfig {
        WorldConfig {
            format,
            cpus: 3,
            tags,
            broadcast,
            // Room for a few 2 MiB runs (512 frames each) besides the small VMOs.
            frames: 8192,
            handle_limits: vec![1 << 16, 6],
            zero_page: false,
        }
    }
}

/// The crate on a simulated machine, the model, and what links them.
pub struct World {
    pub machine: Arc<SimMachine>,
    pub procs: Vec<Arc<Process>>,
    pub cpus: Vec<SimCpu>,
    pub model: Model,
    /// The crate object behind each model VMO (weak: the crate decides when it dies).
    pub(super) vmo_objs: Vec<Weak<Vmo>>,
    /// Each model VMO's koid (0 for one that died at once).
    pub(super) koids: Vec<u64>,
    /// The crate object behind each model VMAR.
    pub(super) vmar_objs: Vec<Arc<Vmar>>,
    /// Every handle value issued to each process.
    pub(super) issued: Vec<Vec<zx_handle_t>>,
    /// Addresses returned by map and allocate, and the root VMARs' base.
    pub(super) addrs: Vec<u64>,
    /// Mappings of 2 MiB or more that maps made, per address space: (address, length), for
    /// [`Addr::Run`].
    pub(super) large_maps: Vec<Vec<(u64, u64)>>,
    /// Addresses accessed, per address space.
    pub(super) touched: Vec<Vec<u64>>,
    /// Every page accessed, per address space: where a TLB may hold a translation.
    pub(super) accessed: Vec<BTreeSet<u64>>,
    /// The CPU that made the last access.
    pub(super) last_cpu: usize,
    /// The machine's counters before the op being run.
    pub(super) counters_before: CounterSnapshot,
    /// Frames the harness allocated to back physical VMOs: (first, count).
    pub(super) phys: Vec<(PhysAddr, u64)>,
    /// Each physical model VMO's first frame.
    pub(super) phys_base: BTreeMap<usize, PhysAddr>,
    /// Accept `ZX_ERR_NO_MEMORY` (and `FaultError::NoMemory`) where the model says success.
    pub exhaustion: bool,
    /// Calls that failed for lack of memory.
    pub no_memory: u64,
    /// Things worth reporting that are not failures.
    pub notes: Vec<String>,
    /// Compare contents every this many steps (0: only on `Op::Check` and at the end).
    pub deep_every: usize,
    pub(super) steps: usize,
    /// The op being run, for outcome counts.
    pub(super) current: &'static str,
    /// The crate's status for the last syscall-like op (loads, stores and switches leave it).
    pub last_status: Option<zx_status_t>,
    /// The outcome of the last load or store: `Some(None)` if it succeeded.
    pub last_fault: Option<Option<FaultError>>,
}

impl World {
    pub fn new(config: &WorldConfig) -> World {
        let machine = SimMachine::new(SimConfig {
            frames: config.frames,
            cpus: config.cpus,
            poison_freed: true,
            tags: config.tags,
            broadcast: config.broadcast,
        });
        let platform: Arc<dyn Platform> = machine.clone();
        let mut model = Model::new(config.cpus, config.frames as u64);
        if config.zero_page {
            machine.enable_zero_page();
            model.zero_page = true;
            model.frames -= 1;
        }
        let mut procs = Vec::new();
        let mut vmar_objs = Vec::new();
        let mut issued = Vec::new();
        for &limit in &config.handle_limits {
            let process = Process::with_handle_limit(platform.clone(), config.format, limit)
                .expect("Process::with_handle_limit");
            let root = process.root_vmar_handle();
            model.add_process(limit, root);
            vmar_objs.push(process.vmar(root).expect("root VMAR").0);
            issued.push(vec![root]);
            procs.push(process);
        }
        let cpus: Vec<SimCpu> = (0..config.cpus).map(|i| machine.cpu(i)).collect();
        for (i, cpu) in cpus.iter().enumerate() {
            let p = i % procs.len();
            cpu.switch_to(Some(procs[p].aspace()));
            model.cpus[i] = Some(p);
        }
        World {
            machine,
            procs,
            cpus,
            model,
            vmo_objs: Vec::new(),
            koids: Vec::new(),
            vmar_objs,
            issued,
            addrs: vec![USER_ASPACE_BASE],
            large_maps: vec![Vec::new(); config.handle_limits.len()],
            touched: vec![Vec::new(); config.handle_limits.len()],
            accessed: vec![BTreeSet::new(); config.handle_limits.len()],
            last_cpu: 0,
            counters_before: CounterSnapshot::default(),
            phys: Vec::new(),
            phys_base: BTreeMap::new(),
            exhaustion: false,
            no_memory: 0,
            notes: Vec::new(),
            deep_every: 8,
            steps: 0,
            current: "",
            last_status: None,
            last_fault: None,
        }
    }

    // ---- resolving arguments ---------------------------------------------------------------------

    pub(super) fn proc(&self, p: u8) -> usize {
        usize::from(p) % self.procs.len()
    }

    pub(super) fn cpu(&self, cpu: u8) -> usize {
        if cpu >= 128 {
            self.last_cpu
        } else {
            usize::from(cpu) % self.cpus.len()
        }
    }

    pub(super) fn live_handles(&self, p: usize, pick: impl Fn(&Obj) -> bool) -> Vec<zx_handle_t> {
        self.model.procs[p]
            .handles
            .iter()
            .filter(|(_, h)| pick(&h.obj))
            .map(|(&v, _)| v)
            .collect()
    }

    pub(super) fn pick(list: &[zx_handle_t], i: u8) -> zx_handle_t {
        if list.is_empty() {
            ZX_HANDLE_INVALID
        } else {
            list[usize::from(i) % list.len()]
        }
    }

    /// The handle value `h` names in process `p` now.
    pub fn handle(&self, p: usize, h: H) -> zx_handle_t {
        match h {
            H::Vmo(i) => Self::pick(&self.live_handles(p, |o| matches!(o, Obj::Vmo(_))), i),
            H::Vmar(i) => Self::pick(&self.live_handles(p, |o| matches!(o, Obj::Vmar(_))), i),
            H::Any(i) => Self::pick(&self.live_handles(p, |_| true), i),
            H::RecentVmo(i) | H::RecentVmar(i) => {
                let vmo = matches!(h, H::RecentVmo(_));
                self.issued[p]
                    .iter()
                    .rev()
                    .filter(|v| {
                        self.model.procs[p]
                            .handles
                            .get(v)
                            .is_some_and(|mh| matches!(mh.obj, Obj::Vmo(_)) == vmo)
                    })
                    .nth(usize::from(i))
                    .copied()
                    .unwrap_or(ZX_HANDLE_INVALID)
            }
            H::Stale(i) => Self::pick(&self.issued[p], i),
            H::Invalid => ZX_HANDLE_INVALID,
            H::Garbage(i) => GARBAGE[usize::from(i) % GARBAGE.len()],
        }
    }

    pub(super) fn off(o: Off) -> u64 {
        match o {
            Off::Pages(n) => u64::from(n) * PAGE,
            Off::Raw(v) => v,
        }
    }

    pub(super) fn len(l: Len) -> u64 {
        match l {
            Len::Pages(n) => u64::from(n) * PAGE,
            Len::Raw(v) => v,
        }
    }

    /// The address `a` names now, in process `p`'s address space.
    pub fn addr(&self, p: usize, a: Addr) -> u64 {
        match a {
            Addr::Touched {
                back,
                pages,
                keep_offset,
            } => {
                let touched = &self.touched[p];
                let Some(&va) = touched
                    .iter()
                    .rev()
                    .nth(usize::from(back) % touched.len().max(1))
                else {
                    return USER_ASPACE_BASE;
                };
                let va = if keep_offset { va } else { va & !(PAGE - 1) };
                va.wrapping_add_signed(i64::from(pages) * PAGE as i64)
            }
            Addr::In { idx, page, bytes } => {
                let regions = self.model.regions(p);
                if regions.is_empty() {
                    return USER_ASPACE_BASE + u64::from(bytes);
                }
                let (base, size) = regions[usize::from(idx) % regions.len()];
                base + (u64::from(page) % (size / PAGE + 1)) * PAGE + u64::from(bytes)
            }
            Addr::Known { idx, pages, bytes } => self.addrs[usize::from(idx) % self.addrs.len()]
                .wrapping_add_signed(i64::from(pages) * PAGE as i64)
                .wrapping_add(u64::from(bytes)),
            Addr::Raw(v) => v,
            Addr::Run { idx, page, bytes } => {
                let maps = &self.large_maps[p];
                let (base, len) = if maps.is_empty() {
                    (USER_ASPACE_BASE + large_slot(u64::from(idx) % 4 + 1), MIB2)
                } else {
                    maps[usize::from(idx) % maps.len()]
                };
                base + (u64::from(page) % (len / PAGE + 1)) * PAGE + u64::from(bytes)
            }
        }
    }

    pub(super) fn rights_arg(&self, p: usize, handle: zx_handle_t, r: RightsArg) -> u32 {
        let current = self.model.procs[p]
            .handles
            .get(&handle)
            .map_or(0, |h| h.rights);
        match r {
            RightsArg::Same => ZX_RIGHT_SAME_RIGHTS,
            RightsArg::Drop(mask) => DROPPABLE
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .fold(current, |rights, (_, r)| rights & !r),
            RightsArg::Grow(i) => current | DROPPABLE[usize::from(i) % DROPPABLE.len()],
            RightsArg::Raw(v) => v,
        }
    }

    // ---- comparing -------------------------------------------------------------------------------

    /// Compares the crate's status with the model's. In exhaustion mode, `ZX_ERR_NO_MEMORY` where
    /// the model succeeded undoes the model's step (`saved`). Returns whether both succeeded.
    pub(super) fn settle(
        &mut self,
        what: &dyn Fn() -> String,
        saved: Option<Model>,
        got: zx_status_t,
        want: zx_status_t,
    ) -> Result<bool, String> {
        record(self.current, status_name(got));
        self.last_status = Some(got);
        // A call that fails changes nothing, down to the machine: no frame allocated or freed,
        // no invalidation, no IPI. (Out of memory, a call may have taken frames and given them
        // back; the kernel-side creations here take theirs before they can fail; and a failed
        // replace still closes its handle, which may free the last reference to a VMO.)
        // A snapshot whose handle finds no room was made, and shared its parent's pages, before
        // it died again.
        let exempt = matches!(
            self.current,
            "contiguous"
                | "physical"
                | "large pages"
                | "large contiguous"
                | "large physical"
                | "zx_handle_replace"
        ) || (self.current == "zx_vmo_create_child" && got == ZX_ERR_NO_RESOURCES);
        if got != ZX_OK && !self.exhaustion && !exempt {
            let mut delta = self.machine.counters().since(&self.counters_before);
            // Out of memory, a call may have taken frames, as long as it gave each back.
            if got == ZX_ERR_NO_MEMORY && delta.frames_allocated == delta.frames_freed {
                (delta.frames_allocated, delta.frames_freed) = (0, 0);
            }
            if delta != CounterSnapshot::default() {
                return Err(format!(
                    "{}: failed with {}, but the machine changed: {delta:?}",
                    what(),
                    status_name(got),
                ));
            }
        }
        if got == want {
            return Ok(got == ZX_OK);
        }
        // Only calls that take frames may run out of them (zx_vmar_op_range, unmap, protect and
        // the handle calls never allocate a frame, and their contracts have no NO_MEMORY).
        let allocates = matches!(
            self.current,
            "zx_vmo_write"
                | "zx_vmo_op_range"
                | "zx_vmar_map"
                | "pin"
                | "contiguous"
                | "large contiguous"
        );
        if self.exhaustion && allocates && got == ZX_ERR_NO_MEMORY && want == ZX_OK {
            self.model = saved.expect("a copy is kept in exhaustion mode");
            self.no_memory += 1;
            return Ok(false);
        }
        Err(format!(
            "{}: crate returned {} ({got}), model {} ({want})",
            what(),
            status_name(got),
            status_name(want)
        ))
    }

    pub(super) fn saved(&self) -> Option<Model> {
        self.exhaustion.then(|| self.model.clone())
    }

    /// A handle value the crate just issued to `p` must be new (and not `ZX_HANDLE_INVALID`).
    pub(super) fn check_new_handle(
        &self,
        p: usize,
        value: zx_handle_t,
        what: &dyn Fn() -> String,
    ) -> R2 {
        if value == ZX_HANDLE_INVALID || self.model.procs[p].handles.contains_key(&value) {
            return Err(format!(
                "{}: issued handle {value:#x}, which is invalid or already live",
                what()
            ));
        }
        Ok(())
    }

    pub(super) fn issue(&mut self, p: usize, value: zx_handle_t) {
        self.issued[p].push(value);
    }

    pub(super) fn register_vmo(&mut self, p: usize, value: zx_handle_t) {
        let vmo = self.procs[p].vmo(value).expect("a new VMO handle").0;
        self.vmo_objs.push(Arc::downgrade(&vmo));
        self.koids.push(vmo.koid());
        assert_eq!(self.vmo_objs.len(), self.model.vmos.len());
    }

    /// A model VMO that the crate made and dropped at once (a snapshot with no room for its
    /// handle).
    pub(super) fn register_dead_vmo(&mut self) {
        self.vmo_objs.push(Weak::new());
        self.koids.push(0);
        assert_eq!(self.vmo_objs.len(), self.model.vmos.len());
    }

    pub(super) fn register_vmar(&mut self, p: usize, value: zx_handle_t) {
        let vmar = self.procs[p].vmar(value).expect("a new VMAR handle").0;
        self.vmar_objs.push(vmar);
        assert_eq!(self.vmar_objs.len(), self.model.vmars.len());
    }

    // ---- running ---------------------------------------------------------------------------------

    /// Runs `op` on the crate and the model, compares, and checks the state after.
    pub fn step(&mut self, op: &Op) -> R2 {
        self.step_unchecked(op)?;
        self.steps += 1;
        self.check().map_err(|e| format!("after {op:?}: {e}"))?;
        if matches!(op, Op::Check) || (self.deep_every != 0 && (self.steps % self.deep_every == 0))
        {
            // Every page every 16 steps (and on `Op::Check`), a sample of a large VMO's between.
            let full = matches!(op, Op::Check) || self.steps % 16 == 0;
            self.deep_check_pages(full)
                .map_err(|e| format!("after {op:?}: {e}"))?;
        }
        Ok(())
    }

    /// Runs every op of `ops` with [`World::step`], then [`World::finish`].
    pub fn run(mut self, ops: &[Op]) -> R2 {
        for (i, op) in ops.iter().enumerate() {
            self.step(op).map_err(|e| format!("step {i}: {e}"))?;
        }
        self.finish()
    }

    /// Runs `op` and compares its results, without the state check.
    pub fn step_unchecked(&mut self, op: &Op) -> R2 {
        self.current = op_name(op);
        self.counters_before = self.machine.counters();
        self.last_status = None;
        self.last_fault = None;
        match *op {
            Op::VmoCreate { p, size, options } => self.step_vmo_create(p, size, options)?,
            Op::VmoRead { p, h, offset, len } => self.step_vmo_read(p, h, offset, len)?,
            Op::VmoWrite {
                p,
                h,
                offset,
                len,
                seed,
            } => self.step_vmo_write(p, h, offset, len, seed)?,
            Op::VmoOpRange {
                p,
                h,
                op,
                offset,
                size,
                buffer,
            } => self.step_vmo_op_range(p, h, op, offset, size, buffer)?,
            Op::VmoGetSize { p, h } => self.step_vmo_get_size(p, h)?,
            Op::VmoSetSize { p, h, size } => self.step_vmo_set_size(p, h, size)?,
            Op::VmoInfo { p, h } => self.step_vmo_info(p, h)?,
            Op::VmoCreateChild {
                p,
                h,
                options,
                offset,
                size,
            } => self.step_vmo_create_child(p, h, options, offset, size)?,
            Op::VmarAllocate { .. }
            | Op::VmarMap { .. }
            | Op::VmarUnmap { .. }
            | Op::VmarProtect { .. }
            | Op::VmarDestroy { .. }
            | Op::VmarOpRange { .. } => self.step_vmar_call(op)?,
            Op::Duplicate { p, h, rights } => self.step_duplicate(p, h, rights)?,
            Op::Replace { p, h, rights } => self.step_replace(p, h, rights)?,
            Op::Close { p, h } => self.step_close(p, h)?,
            Op::Transfer { p, h } => self.step_transfer(p, h)?,
            Op::Load { cpu, addr } => self.step_load(cpu, addr)?,
            Op::Store { cpu, addr, value } => self.step_store(cpu, addr, value)?,
            Op::Switch { cpu, to } => self.step_switch(cpu, to)?,
            Op::Pin { p, h, offset, len } => self.step_pin(true, p, h, offset, len)?,
            Op::Unpin { p, h, offset, len } => self.step_pin(false, p, h, offset, len)?,
            Op::Contiguous { p, pages } => self.step_contiguous(p, pages)?,
            Op::Physical { p, pages } => self.step_physical(p, pages)?,
            Op::LargeVmo {
                p,
                kind,
                runs,
                extra,
            } => self.step_large_vmo(p, kind, runs, extra)?,
            Op::Check => {}
        }
        Ok(())
    }
}

/// The result of a harness step: a description of the first difference.
pub type R2 = Result<(), String>;

pub(super) fn status(result: R) -> zx_status_t {
    match result {
        Ok(()) => ZX_OK,
        Err(status) => status,
    }
}
