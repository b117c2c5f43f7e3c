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
            frames: 4096,
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
    /// The crate object behind each model VMAR.
    pub(super) vmar_objs: Vec<Arc<Vmar>>,
    /// Every handle value issued to each process.
    pub(super) issued: Vec<Vec<zx_handle_t>>,
    /// Addresses returned by map and allocate, and the root VMARs' base.
    pub(super) addrs: Vec<u64>,
    /// Addresses accessed, per address space.
    pub(super) touched: Vec<Vec<u64>>,
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
            vmar_objs,
            issued,
            addrs: vec![USER_ASPACE_BASE],
            touched: vec![Vec::new(); config.handle_limits.len()],
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
        let exempt = matches!(
            self.current,
            "contiguous" | "physical" | "zx_handle_replace"
        );
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
            "zx_vmo_write" | "zx_vmo_op_range" | "zx_vmar_map" | "pin" | "contiguous"
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
            self.deep_check()
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
            Op::VmarAllocate {
                p,
                h,
                options,
                offset,
                size,
            } => self.step_vmar_allocate(p, h, options, offset, size)?,
            Op::VmarMap {
                p,
                vmar,
                vmo,
                options,
                vmar_offset,
                vmo_offset,
                len,
            } => self.step_vmar_map(p, vmar, vmo, options, vmar_offset, vmo_offset, len)?,
            Op::VmarUnmap { p, h, addr, len } => self.step_vmar_unmap(p, h, addr, len)?,
            Op::VmarProtect {
                p,
                h,
                options,
                addr,
                len,
            } => self.step_vmar_protect(p, h, options, addr, len)?,
            Op::VmarDestroy { p, h } => self.step_vmar_destroy(p, h)?,
            Op::VmarOpRange {
                p,
                h,
                op,
                addr,
                len,
                buffer,
                buffer_size,
            } => self.step_vmar_op_range(p, h, op, addr, len, buffer, buffer_size)?,
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
            Op::Check => {}
        }
        Ok(())
    }

    /// `Op::VmoCreate`, on the crate and on the model.
    pub(super) fn step_vmo_create(&mut self, p: u8, size: Len, options: u32) -> R2 {
        let p = self.proc(p);
        let size = Self::len(size);
        let what = || format!("zx_vmo_create(p{p}, size {size:#x}, options {options:#x})");
        let saved = self.saved();
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_vmo_create(&self.procs[p], size, options, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.vmo_create(p, size, options, out));
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }

    /// `Op::VmoRead`, on the crate and on the model.
    pub(super) fn step_vmo_read(&mut self, p: u8, h: H, offset: Off, len: u16) -> R2 {
        let p = self.proc(p);
        let (h, offset) = (self.handle(p, h), Self::off(offset));
        let what = || format!("zx_vmo_read(p{p}, {h:#x}, offset {offset:#x}, len {len})");
        let mut buf = vec![0xa5; usize::from(len)];
        let got = zx_vmo_read(&self.procs[p], h, &mut buf, offset);
        let want = self.model.vmo_read(p, h, offset, usize::from(len));
        if self.settle(
            &what,
            None,
            got,
            status(want.as_ref().map(drop).map_err(|&e| e)),
        )? {
            let want = want.expect("ok");
            if buf != want {
                return Err(format!("{}: {}", what(), diff_bytes(&buf, &want, offset)));
            }
        }
        Ok(())
    }

    /// `Op::VmoWrite`, on the crate and on the model.
    pub(super) fn step_vmo_write(&mut self, p: u8, h: H, offset: Off, len: u16, seed: u8) -> R2 {
        let p = self.proc(p);
        let (h, offset) = (self.handle(p, h), Self::off(offset));
        let data = write_data(seed, usize::from(len));
        let what = || format!("zx_vmo_write(p{p}, {h:#x}, offset {offset:#x}, len {len})");
        let saved = self.saved();
        let got = zx_vmo_write(&self.procs[p], h, &data, offset);
        let want = status(self.model.vmo_write(p, h, offset, &data));
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::VmoOpRange`, on the crate and on the model.
    pub(super) fn step_vmo_op_range(
        &mut self,
        p: u8,
        h: H,
        op: u32,
        offset: Off,
        size: Len,
        buffer: u64,
    ) -> R2 {
        let p = self.proc(p);
        let (h, offset, size) = (self.handle(p, h), Self::off(offset), Self::len(size));
        let what = || {
            format!(
                "zx_vmo_op_range(p{p}, {h:#x}, op {op}, offset {offset:#x}, size {size:#x}, buffer {buffer:#x})"
            )
        };
        let saved = self.saved();
        let got = zx_vmo_op_range(&self.procs[p], h, op, offset, size, buffer, 0);
        let want = status(self.model.vmo_op_range(p, h, op, offset, size, buffer, 0));
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::VmoGetSize`, on the crate and on the model.
    pub(super) fn step_vmo_get_size(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_vmo_get_size(p{p}, {h:#x})");
        let mut size = 0;
        let got = zx_vmo_get_size(&self.procs[p], h, &mut size);
        let want = self.model.vmo_get_size(p, h);
        if self.settle(&what, None, got, status(want.map(drop)))? && Ok(size) != want {
            return Err(format!("{}: size {size:#x}, model {want:?}", what()));
        }
        Ok(())
    }

    /// `Op::VmoSetSize`, on the crate and on the model.
    pub(super) fn step_vmo_set_size(&mut self, p: u8, h: H, size: Len) -> R2 {
        let p = self.proc(p);
        let (h, size) = (self.handle(p, h), Self::len(size));
        let what = || format!("zx_vmo_set_size(p{p}, {h:#x}, {size:#x})");
        let saved = self.saved();
        let got = zx_vmo_set_size(&self.procs[p], h, size);
        let want = status(self.model.vmo_set_size(p, h, size));
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::VmoInfo`, on the crate and on the model.
    pub(super) fn step_vmo_info(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_object_get_info_vmo(p{p}, {h:#x})");
        let mut info = zx_info_vmo_t::default();
        let got = zx_object_get_info_vmo(&self.procs[p], h, &mut info);
        let want = self.model.vmo_info(p, h);
        if self.settle(&what, None, got, status(want.map(drop)))? {
            let got = MInfo {
                size_bytes: info.size_bytes,
                committed_bytes: info.committed_bytes,
                num_mappings: info.num_mappings,
            };
            if Ok(got) != want {
                return Err(format!("{}: {got:?}, model {want:?}", what()));
            }
        }
        Ok(())
    }

    /// `Op::VmarAllocate`, on the crate and on the model.
    pub(super) fn step_vmar_allocate(
        &mut self,
        p: u8,
        h: H,
        options: u32,
        offset: Off,
        size: Len,
    ) -> R2 {
        let p = self.proc(p);
        let (h, offset, size) = (self.handle(p, h), Self::off(offset), Self::len(size));
        let what = || {
            format!(
                "zx_vmar_allocate(p{p}, {h:#x}, options {options:#x}, offset {offset:#x}, size {size:#x})"
            )
        };
        let saved = self.saved();
        let (mut child, mut addr) = (ZX_HANDLE_INVALID, 0);
        let got = zx_vmar_allocate(
            &self.procs[p],
            h,
            options,
            offset,
            size,
            &mut child,
            &mut addr,
        );
        if got == ZX_OK {
            self.check_new_handle(p, child, &what)?;
        }
        let want = self.model.vmar_allocate(p, h, options, offset, size, child);
        if self.settle(&what, saved, got, status(want.map(drop)))? {
            if Ok(addr) != want {
                return Err(format!("{}: address {addr:#x}, model {want:x?}", what()));
            }
            self.issue(p, child);
            self.register_vmar(p, child);
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// `Op::VmarMap`, on the crate and on the model.
    #[allow(clippy::too_many_arguments)] // the operation's fields, as `Op` names them
    pub(super) fn step_vmar_map(
        &mut self,
        p: u8,
        vmar: H,
        vmo: H,
        options: u32,
        vmar_offset: Off,
        vmo_offset: Off,
        len: Len,
    ) -> R2 {
        let p = self.proc(p);
        let (vmar, vmo) = (self.handle(p, vmar), self.handle(p, vmo));
        let (vmar_offset, vmo_offset) = (Self::off(vmar_offset), Self::off(vmo_offset));
        let len = Self::len(len);
        let what = || {
            format!(
                "zx_vmar_map(p{p}, {vmar:#x}, options {options:#x}, vmar_offset {vmar_offset:#x}, vmo {vmo:#x}, vmo_offset {vmo_offset:#x}, len {len:#x})"
            )
        };
        let saved = self.saved();
        let mut addr = 0;
        let got = zx_vmar_map(
            &self.procs[p],
            vmar,
            options,
            vmar_offset,
            vmo,
            vmo_offset,
            len,
            &mut addr,
        );
        let want = self
            .model
            .vmar_map(p, vmar, options, vmar_offset, vmo, vmo_offset, len);
        if self.settle(&what, saved, got, status(want.map(drop)))? {
            if Ok(addr) != want {
                return Err(format!("{}: address {addr:#x}, model {want:x?}", what()));
            }
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// `Op::VmarUnmap`, on the crate and on the model.
    pub(super) fn step_vmar_unmap(&mut self, p: u8, h: H, addr: Addr, len: Len) -> R2 {
        let p = self.proc(p);
        let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
        let what = || format!("zx_vmar_unmap(p{p}, {h:#x}, {addr:#x}, len {len:#x})");
        let got = zx_vmar_unmap(&self.procs[p], h, addr, len);
        let want = status(self.model.vmar_unmap(p, h, addr, len));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::VmarProtect`, on the crate and on the model.
    pub(super) fn step_vmar_protect(
        &mut self,
        p: u8,
        h: H,
        options: u32,
        addr: Addr,
        len: Len,
    ) -> R2 {
        let p = self.proc(p);
        let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
        let what = || {
            format!("zx_vmar_protect(p{p}, {h:#x}, options {options:#x}, {addr:#x}, len {len:#x})")
        };
        let got = zx_vmar_protect(&self.procs[p], h, options, addr, len);
        let want = status(self.model.vmar_protect(p, h, options, addr, len));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::VmarDestroy`, on the crate and on the model.
    pub(super) fn step_vmar_destroy(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_vmar_destroy(p{p}, {h:#x})");
        let got = zx_vmar_destroy(&self.procs[p], h);
        let want = status(self.model.vmar_destroy(p, h));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::VmarOpRange`, on the crate and on the model.
    #[allow(clippy::too_many_arguments)] // the operation's fields, as `Op` names them
    pub(super) fn step_vmar_op_range(
        &mut self,
        p: u8,
        h: H,
        op: u32,
        addr: Addr,
        len: Len,
        buffer: u64,
        buffer_size: usize,
    ) -> R2 {
        let p = self.proc(p);
        let (h, addr, len) = (self.handle(p, h), self.addr(p, addr), Self::len(len));
        let what = || {
            format!(
                "zx_vmar_op_range(p{p}, {h:#x}, op {op}, {addr:#x}, size {len:#x}, buffer {buffer:#x}, {buffer_size})"
            )
        };
        let got = zx_vmar_op_range(&self.procs[p], h, op, addr, len, buffer, buffer_size);
        let want = status(
            self.model
                .vmar_op_range(p, h, op, addr, len, buffer, buffer_size),
        );
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::Duplicate`, on the crate and on the model.
    pub(super) fn step_duplicate(&mut self, p: u8, h: H, rights: RightsArg) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let rights = self.rights_arg(p, h, rights);
        let what = || format!("zx_handle_duplicate(p{p}, {h:#x}, rights {rights:#x})");
        let saved = self.saved();
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_handle_duplicate(&self.procs[p], h, rights, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.duplicate(p, h, rights, out));
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
        }
        Ok(())
    }

    /// `Op::Replace`, on the crate and on the model.
    pub(super) fn step_replace(&mut self, p: u8, h: H, rights: RightsArg) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let rights = self.rights_arg(p, h, rights);
        let what = || format!("zx_handle_replace(p{p}, {h:#x}, rights {rights:#x})");
        let mut out = ZX_HANDLE_INVALID;
        let got = zx_handle_replace(&self.procs[p], h, rights, &mut out);
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.replace(p, h, rights, out));
        if self.settle(&what, None, got, want)? {
            self.issue(p, out);
        }
        Ok(())
    }

    /// `Op::Close`, on the crate and on the model.
    pub(super) fn step_close(&mut self, p: u8, h: H) -> R2 {
        let p = self.proc(p);
        let h = self.handle(p, h);
        let what = || format!("zx_handle_close(p{p}, {h:#x})");
        let got = zx_handle_close(&self.procs[p], h);
        let want = status(self.model.close(p, h));
        self.settle(&what, None, got, want)?;
        Ok(())
    }

    /// `Op::Transfer`, on the crate and on the model.
    pub(super) fn step_transfer(&mut self, p: u8, h: H) -> R2 {
        let from = self.proc(p);
        let to = (from + 1) % self.procs.len();
        let h = self.handle(from, h);
        let what = || format!("transfer(p{from} {h:#x} -> p{to})");
        // What a channel would do: needs TRANSFER; the handle moves only if it fits.
        let mut out = ZX_HANDLE_INVALID;
        let got = match self.procs[from].handle(h) {
            Err(status) => status.into_raw(),
            Ok(handle) if !handle.rights.contains(Rights::TRANSFER) => ZX_ERR_ACCESS_DENIED,
            Ok(handle) => match self.procs[to].add_handle(handle.object, handle.rights) {
                Err(status) => status.into_raw(),
                Ok(value) => {
                    out = value;
                    self.procs[from]
                        .remove_handle(h)
                        .expect("the handle was just looked up");
                    ZX_OK
                }
            },
        };
        if got == ZX_OK {
            self.check_new_handle(to, out, &what)?;
        }
        let want = status(self.model.transfer(from, h, to, out));
        if self.settle(&what, None, got, want)? {
            self.issue(to, out);
        }
        Ok(())
    }

    /// `Op::Load`, on the crate and on the model.
    pub(super) fn step_load(&mut self, cpu: u8, addr: Addr) -> R2 {
        let c = self.cpu(cpu);
        let va = self.addr(self.model.cpus[c].unwrap_or(0), addr) & !7;
        self.access(c, va, None)?;
        Ok(())
    }

    /// `Op::Store`, on the crate and on the model.
    pub(super) fn step_store(&mut self, cpu: u8, addr: Addr, value: u64) -> R2 {
        let c = self.cpu(cpu);
        let va = self.addr(self.model.cpus[c].unwrap_or(0), addr) & !7;
        self.access(c, va, Some(value))?;
        Ok(())
    }

    /// `Op::Switch`, on the crate and on the model.
    pub(super) fn step_switch(&mut self, cpu: u8, to: Option<u8>) -> R2 {
        let c = self.cpu(cpu);
        let to = to.map(|p| self.proc(p));
        self.cpus[c].switch_to(to.map(|p| self.procs[p].aspace()));
        self.model.cpus[c] = to;
        Ok(())
    }

    /// `Op::Pin` (with `pin`) or `Op::Unpin`, on the crate and on the model.
    pub(super) fn step_pin(&mut self, pin: bool, p: u8, h: H, offset: Off, len: Len) -> R2 {
        let p = self.proc(p);
        let (h, offset, len) = (self.handle(p, h), Self::off(offset), Self::len(len));
        let what = || {
            let name = if pin { "pin" } else { "unpin" };
            format!("Vmo::{name}(p{p} {h:#x}, offset {offset:#x}, len {len:#x})")
        };
        let saved = self.saved();
        let got = match self.procs[p].vmo(h) {
            Err(status) => status.into_raw(),
            Ok((vmo, _)) if pin => to_status(vmo.pin(offset, len)),
            Ok((vmo, _)) => to_status(vmo.unpin(offset, len)),
        };
        let want = status(if pin {
            self.model.pin(p, h, offset, len)
        } else {
            self.model.unpin(p, h, offset, len)
        });
        self.settle(&what, saved, got, want)?;
        Ok(())
    }

    /// `Op::Contiguous`, on the crate and on the model.
    pub(super) fn step_contiguous(&mut self, p: u8, pages: u8) -> R2 {
        let p = self.proc(p);
        let size = u64::from(pages) * PAGE;
        let what = || format!("Vmo::create_contiguous(p{p}, size {size:#x})");
        let saved = self.saved();
        let platform: Arc<dyn Platform> = self.machine.clone();
        let mut out = ZX_HANDLE_INVALID;
        let got = match Vmo::create_contiguous(platform, size) {
            Err(status) => status.into_raw(),
            Ok(vmo) => match self.procs[p].add_handle(
                KernelObject::Vmo(vmo),
                Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
            ) {
                Err(status) => status.into_raw(),
                Ok(value) => {
                    out = value;
                    ZX_OK
                }
            },
        };
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.vmo_create_contiguous(p, size, out));
        if self.settle(&what, saved, got, want)? {
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }

    /// `Op::Physical`, on the crate and on the model.
    pub(super) fn step_physical(&mut self, p: u8, pages: u8) -> R2 {
        let p = self.proc(p);
        let pages = u64::from(pages.max(1));
        let what = || format!("Vmo::create_physical(p{p}, {pages} pages)");
        // Device memory stand-in: frames the harness takes from the allocator and zeroes,
        // so that the allocator never hands them out while the VMO exists.
        let Some(base) = self.machine.alloc_contiguous(pages as usize) else {
            return Ok(());
        };
        for i in 0..pages {
            // SAFETY: the frame was just allocated for the harness and nothing else uses
            // it; `phys_to_virt` gives PAGE_SIZE writable bytes (the Platform contract).
            unsafe {
                std::ptr::write_bytes(
                    self.machine.phys_to_virt(PhysAddr(base.0 + i * PAGE)),
                    0,
                    PAGE_BYTES,
                )
            };
        }
        self.phys.push((base, pages));
        let platform: Arc<dyn Platform> = self.machine.clone();
        let vmo = Vmo::create_physical(platform, base, pages * PAGE)
            .map_err(|e| format!("{}: {e:?}", what()))?;
        let mut out = ZX_HANDLE_INVALID;
        let got = match self.procs[p].add_handle(
            KernelObject::Vmo(vmo),
            Rights::from_bits_truncate(ZX_DEFAULT_VMO_RIGHTS),
        ) {
            Err(status) => status.into_raw(),
            Ok(value) => {
                out = value;
                ZX_OK
            }
        };
        if got == ZX_OK {
            self.check_new_handle(p, out, &what)?;
        }
        let want = status(self.model.vmo_create_physical(p, pages, out));
        if self.settle(&what, None, got, want)? {
            self.phys_base.insert(self.model.vmos.len() - 1, base);
            self.issue(p, out);
            self.register_vmo(p, out);
        }
        Ok(())
    }

    /// A load or store on CPU `c`, compared with the model: the value, or the fault.
    pub(super) fn access(&mut self, c: usize, va: u64, store: Option<u64>) -> R2 {
        self.last_cpu = c;
        if let Some(p) = self.model.cpus[c] {
            let touched = &mut self.touched[p];
            if touched.len() >= 16 {
                touched.remove(0);
            }
            touched.push(va);
        }
        let what = || match store {
            None => format!("cpu{c}.load({va:#x})"),
            Some(v) => format!("cpu{c}.store({va:#x}, {v:#x})"),
        };
        let saved = self.saved();
        let got = match store {
            None => self.cpus[c].load(va),
            Some(value) => self.cpus[c].store(va, value).map(|()| 0),
        };
        let want = self.model.access(c, va, store);
        match &got {
            Ok(_) => record(self.current, "Ok"),
            Err(e) => record(self.current, &format!("{e:?}")),
        }
        self.last_fault = Some(got.err());
        let same = match (&got, &want) {
            (Ok(a), Ok(b)) => a == b,
            (Err(FaultError::NotMapped), Err(MFault::NotMapped))
            | (Err(FaultError::AccessDenied), Err(MFault::AccessDenied))
            | (Err(FaultError::OutOfRange), Err(MFault::OutOfRange)) => true,
            (Err(FaultError::NoMemory), Ok(_)) if self.exhaustion => {
                // The fault ran out of memory: for the page (nothing changed), or for a page
                // table after committing the page (which then stays committed, zero-filled, as
                // in Zircon). Follow whichever happened.
                self.model = saved.expect("a copy is kept in exhaustion mode");
                self.no_memory += 1;
                if let Some((vmo, index)) = self.model.fault_target(c, va) {
                    let committed = self.vmo_objs[vmo]
                        .upgrade()
                        .map_or(0, |v| v.committed_bytes());
                    if committed == (self.model.committed_pages(vmo) + 1) * PAGE
                        && self.model.vmos[vmo].kind == MKind::Paged
                    {
                        self.model.commit_page(vmo, index);
                        self.notes.push(format!(
                            "{}: NoMemory after committing VMO page {index}",
                            what()
                        ));
                    }
                }
                true
            }
            _ => false,
        };
        if !same {
            return Err(format!("{}: crate {got:x?}, model {want:x?}", what()));
        }
        Ok(())
    }

    // ---- checking --------------------------------------------------------------------------------

    /// The crate's state matches the model's, and the crate's own invariants hold.
    pub fn check(&self) -> R2 {
        let live_vmos = self.model.live_vmos();
        let counts = self.model.mapping_counts();
        // Handle tables: the same values, rights and objects.
        for (p, proc) in self.procs.iter().enumerate() {
            let model = &self.model.procs[p];
            if proc.handle_count() != model.handles.len() {
                return Err(format!(
                    "p{p}: {} handles, model {}",
                    proc.handle_count(),
                    model.handles.len()
                ));
            }
            for (&value, mh) in &model.handles {
                let handle = proc
                    .handle(value)
                    .map_err(|e| format!("p{p}: handle {value:#x} missing: {e:?}"))?;
                if handle.rights.bits() != mh.rights {
                    return Err(format!(
                        "p{p}: handle {value:#x} rights {:#x}, model {:#x}",
                        handle.rights.bits(),
                        mh.rights
                    ));
                }
                let same = match (&handle.object, mh.obj) {
                    (KernelObject::Vmo(vmo), Obj::Vmo(id)) => {
                        std::ptr::eq(Arc::as_ptr(vmo), self.vmo_objs[id].as_ptr())
                    }
                    (KernelObject::Vmar(vmar), Obj::Vmar(id)) => {
                        Arc::ptr_eq(vmar, &self.vmar_objs[id])
                    }
                    _ => false,
                };
                if !same {
                    return Err(format!("p{p}: handle {value:#x} names another object"));
                }
            }
        }
        // VMOs: alive exactly while referenced; committed bytes and mapping counts.
        let mut committed_frames = 0;
        for (id, weak) in self.vmo_objs.iter().enumerate() {
            let vmo = weak.upgrade();
            let live = live_vmos.contains(&id);
            match (vmo, live) {
                (None, false) => {}
                (Some(_), false) => {
                    return Err(format!("VMO {id} is still alive, model: gone"));
                }
                (None, true) => return Err(format!("VMO {id} is gone, model: alive")),
                (Some(vmo), true) => {
                    let want = self.model.committed_pages(id) * PAGE;
                    if vmo.committed_bytes() != want {
                        return Err(format!(
                            "VMO {id}: {} bytes committed, model {want}",
                            vmo.committed_bytes()
                        ));
                    }
                    let mappings = counts.get(&id).copied().unwrap_or(0);
                    if vmo.num_mappings() != mappings {
                        return Err(format!(
                            "VMO {id}: {} mappings, model {mappings}",
                            vmo.num_mappings()
                        ));
                    }
                    if self.model.vmos[id].kind != MKind::Physical {
                        committed_frames += want / PAGE;
                    }
                }
            }
        }
        // VMARs: destroyed exactly when the model says.
        for (id, vmar) in self.vmar_objs.iter().enumerate() {
            if vmar.is_destroyed() == self.model.vmars[id].alive {
                return Err(format!(
                    "VMAR {id} destroyed: {}, model alive: {}",
                    vmar.is_destroyed(),
                    self.model.vmars[id].alive
                ));
            }
        }
        // Page tables: every translation is of a live mapping's committed page with no more than
        // its permissions, and no table page is empty.
        let mut table_pages = 0;
        for (p, proc) in self.procs.iter().enumerate() {
            let aspace = proc.aspace();
            aspace.audit().map_err(|e| format!("p{p}: audit: {e:?}"))?;
            let tables = aspace.page_table_pages();
            let needed = needed_tables(aspace);
            if tables != needed {
                return Err(format!(
                    "p{p}: {tables} page-table pages, but the translations need {needed}"
                ));
            }
            table_pages += tables as u64;
        }
        // Frames: nothing leaked, nothing freed early.
        let phys: u64 = self.phys.iter().map(|&(_, n)| n).sum();
        let want = committed_frames + table_pages + phys;
        if self.machine.frames_in_use() != want {
            return Err(format!(
                "{} frames in use; committed pages {committed_frames} + page tables {table_pages} + physical {phys} = {want}",
                self.machine.frames_in_use()
            ));
        }
        Ok(())
    }

    /// Every live VMO's contents match the model's, byte for byte.
    pub fn deep_check(&self) -> R2 {
        for id in self.model.live_vmos() {
            let vmo = self.vmo_objs[id]
                .upgrade()
                .ok_or_else(|| format!("VMO {id} is gone"))?;
            let m = &self.model.vmos[id];
            if let Some(&base) = self.phys_base.get(&id) {
                for (&index, page) in &m.data {
                    let got: Vec<u8> = (0..PAGE / 8)
                        .flat_map(|w| {
                            self.machine
                                .read_phys(PhysAddr(base.0 + index * PAGE + w * 8))
                                .to_le_bytes()
                        })
                        .collect();
                    if got[..] != page[..] {
                        return Err(format!(
                            "physical VMO {id} page {index}: {}",
                            diff_bytes(&got, &page[..], index * PAGE)
                        ));
                    }
                }
                continue;
            }
            // The pages the model has, and a zero page where it has none (for small VMOs).
            let mut pages: BTreeSet<u64> = m.data.keys().copied().collect();
            if m.pages <= 16 {
                pages.extend(0..m.pages);
            }
            let mut got = vec![0u8; PAGE_BYTES];
            for index in pages {
                vmo.read(index * PAGE, &mut got)
                    .map_err(|e| format!("VMO {id}: read: {e:?}"))?;
                let want = m
                    .data
                    .get(&index)
                    .map_or(&[0u8; PAGE_BYTES][..], |p| &p[..]);
                if got[..] != want[..] {
                    return Err(format!(
                        "VMO {id} page {index}: {}",
                        diff_bytes(&got, want, index * PAGE)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Compares contents a last time, then takes everything down: every frame must come back.
    pub fn finish(mut self) -> R2 {
        self.deep_check()?;
        self.teardown();
        let left = self.machine.frames_in_use();
        if left != 0 {
            return Err(format!("{left} frames still in use after teardown"));
        }
        Ok(())
    }

    /// Drops the processes and everything built on them, and frees the physical VMOs' frames.
    pub(super) fn teardown(&mut self) {
        for cpu in &self.cpus {
            cpu.switch_to(None);
        }
        self.vmar_objs.clear();
        self.procs.clear();
        let phys = std::mem::take(&mut self.phys);
        if self.vmo_objs.iter().all(|v| v.upgrade().is_none()) {
            for (base, pages) in phys {
                let frames: Vec<PhysAddr> =
                    (0..pages).map(|i| PhysAddr(base.0 + i * PAGE)).collect();
                // SAFETY: every VMO is gone, so no mapping, page table or TLB entry refers to
                // these frames (the CPUs left every address space, dropping its tag's use).
                unsafe { self.machine.free_frames(&frames) };
            }
        }
    }

    /// The machine's counters.
    pub fn frames_allocated(&self) -> u64 {
        self.machine.counters().frames_allocated
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // On a failed run, break the CPU -> address space -> machine cycle, so that the machine
        // (and its memory) goes away.
        self.teardown();
        if self.machine.frames_in_use() != 0 {
            // The run failed with frames still in use (and said why): keep the machine's leak
            // check from panicking over the report.
            std::mem::forget(self.machine.clone());
        }
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

/// The page-table pages the translations in `aspace` need: the root, and one table per level for
/// each distinct 512 GiB, 1 GiB and 2 MiB region holding a translation.
pub(super) fn needed_tables(aspace: &zx_vm::AddressSpace) -> usize {
    let mut vas = Vec::new();
    aspace.with_page_table_unsynchronized(|table, platform| {
        table.for_each_page(platform, &mut |va, _, _| vas.push(va));
    });
    let distinct = |shift: u32| {
        vas.iter()
            .map(|va| va >> shift)
            .collect::<BTreeSet<_>>()
            .len()
    };
    1 + distinct(39) + distinct(30) + distinct(21)
}

/// Where two byte strings first differ.
pub(super) fn diff_bytes(got: &[u8], want: &[u8], offset: u64) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let mut s = String::new();
    match first {
        Some(i) => {
            let end = (i + 16).min(got.len());
            let _ = write!(
                s,
                "bytes differ from offset {:#x}: crate {:02x?}, model {:02x?}",
                offset + i as u64,
                &got[i..end],
                &want[i..end]
            );
        }
        None => {
            let _ = write!(s, "lengths differ: {} vs {}", got.len(), want.len());
        }
    }
    s
}
