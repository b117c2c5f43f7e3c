//! The simulated CPUs: each one's TLB (translations and walk caches, tagged), and the loads
//! and stores that translate through it, walk the tables on a miss and raise page faults into
//! the crate.

use super::*;

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// The frame.
    pub frame: PhysAddr,
    /// Its permissions.
    pub flags: MmuFlags,
}

/// A CPU's TLB: translations by (tag, virtual page number), large ones by (tag, level, virtual
/// page number of their first page), its walk caches, and the tag in use.
#[derive(Default)]
pub(super) struct CpuTlb {
    pub(super) entries: BTreeMap<(u16, u64), TlbEntry>,
    /// Translations of large leaves: level 1 (2 MiB) or 2 (1 GiB); the frame is the first one.
    pub(super) large: BTreeMap<(u16, usize, u64), TlbEntry>,
    /// Cached upper-level entries (x86 paging-structure caches, arm64 walk caches): by (tag, level
    /// of the table they point to, first address that table covers), the table and the format
    /// of the walk that cached it. A TLB miss starts its walk at the deepest one that covers the
    /// address, so a table freed while cached here is walked through, as on hardware.
    pub(super) walks: BTreeMap<(u16, usize, u64), (PhysAddr, Format)>,
    /// The tag of the loaded user root, if any. (The root itself is
    /// [`CpuState::loaded_root`].)
    pub(super) tag: Option<u16>,
}

impl CpuTlb {
    pub(super) fn drop_tag(&mut self, tag: u16) {
        self.entries.retain(|&(t, _), _| t != tag);
        self.large.retain(|&(t, _, _), _| t != tag);
        self.walks.retain(|&(t, _, _), _| t != tag);
    }

    /// The cached translation of `va`'s page under `tag`, of whatever size (the smallest first):
    /// the page's frame, the permissions, and the level of the leaf it came from.
    pub(super) fn lookup(&self, tag: u16, va: u64) -> Option<(TlbEntry, usize)> {
        self.cached_sizes(tag, va).next()
    }

    /// Every translation of `va`'s page cached under `tag`, smallest first, each as the page's
    /// frame and permissions with the level of its leaf.
    fn cached_sizes(&self, tag: u16, va: u64) -> impl Iterator<Item = (TlbEntry, usize)> + '_ {
        let vpn = va / PAGE_SIZE;
        let small = self.entries.get(&(tag, vpn)).map(|&entry| (entry, 0));
        let large = LARGE_LEVELS.iter().filter_map(move |&level| {
            let base = vpn & !(entry_span(level) / PAGE_SIZE - 1);
            self.large.get(&(tag, level, base)).map(|entry| {
                let frame = PhysAddr(entry.frame.0 + (vpn - base) * PAGE_SIZE);
                let view = TlbEntry {
                    frame,
                    flags: entry.flags,
                };
                (view, level)
            })
        });
        small.into_iter().chain(large)
    }

    /// Caches the translation of `va`'s page (to `frame`, from a leaf at `level`). Panics if the
    /// TLB then holds two translations of different sizes for one address that disagree: what
    /// break-before-make exists to prevent (a TLB conflict on aarch64).
    pub(super) fn insert(&mut self, tag: u16, va: u64, entry: TlbEntry, level: usize, cpu: usize) {
        let vpn = va / PAGE_SIZE;
        let pages = entry_span(level) / PAGE_SIZE;
        let first = vpn & !(pages - 1);
        let stored = TlbEntry {
            frame: PhysAddr(entry.frame.0 - (vpn - first) * PAGE_SIZE),
            flags: entry.flags,
        };
        if level == 0 {
            self.entries.insert((tag, vpn), stored);
        } else {
            self.large.insert((tag, level, first), stored);
        }
        // Every other size cached for this page must translate it the same way.
        for (other, other_level) in self.cached_sizes(tag, va) {
            assert!(
                other_level == level || other == entry,
                "TLB conflict on CPU {cpu}: page {va:#x} is cached as {entry:?} from a level-{level} \
                 leaf and as {other:?} from a level-{other_level} leaf (a large leaf changed size \
                 without break-before-make)"
            );
        }
    }

    /// Drops every translation of `va`'s page under `tag`, of whatever size: an invalidation by
    /// address reaches the large translation that covers it (Intel SDM 4.10.4.1; ARM ARM D8.13).
    pub(super) fn invalidate(&mut self, tag: u16, va: u64) {
        let vpn = va / PAGE_SIZE;
        self.entries.remove(&(tag, vpn));
        for level in LARGE_LEVELS {
            let pages = entry_span(level) / PAGE_SIZE;
            self.large.remove(&(tag, level, vpn & !(pages - 1)));
        }
    }

    /// The deepest cached walk covering `va` under `tag`: the table and its level.
    pub(super) fn cached_walk(&self, tag: u16, va: u64) -> Option<(PhysAddr, usize, Format)> {
        (0..3).find_map(|level| {
            let base = va & !(entry_span(level + 1) - 1);
            self.walks
                .get(&(tag, level, base))
                .map(|&(table, format)| (table, level, format))
        })
    }

    /// Drops the walk-cache entries an invalidation of the page at `va` under `tag` reaches: on
    /// x86_64 (INVLPG, INVPCID) every one of the tag, whatever its address (Intel SDM 4.10.4.1);
    /// on aarch64 those on `va`'s walk, and only for a non-leaf invalidation (`TLBI VAE1IS`:
    /// `tables_freed`), since `TLBI VALE1IS` keeps them.
    pub(super) fn drop_walks(&mut self, tag: u16, va: u64, tables_freed: bool) {
        let x86 = self
            .walks
            .iter()
            .any(|(&(t, _, _), &(_, format))| t == tag && format == Format::X86_64);
        if x86 {
            self.walks
                .retain(|&(t, _, _), &mut (_, format)| t != tag || format != Format::X86_64);
        }
        if tables_freed {
            for level in 0..3 {
                self.walks
                    .remove(&(tag, level, va & !(entry_span(level + 1) - 1)));
            }
        }
    }
}

pub(super) struct CpuState {
    pub(super) tlb: Mutex<CpuTlb>,
    /// An IPI waits to be taken.
    pub(super) ipi_pending: AtomicBool,
    /// A thread drives this CPU and takes its IPIs.
    pub(super) attached: AtomicBool,
    /// IPIs are taken between accesses (otherwise only in the crate's shootdown wait loop).
    pub(super) interrupts: AtomicBool,
    pub(super) ipis_received: AtomicU64,
    /// Whether the TLB may hold a translation or a walk: set (under the TLB's lock) before
    /// anything is cached, cleared by the freed-frame check (under the lock) when it finds the
    /// TLB empty, so that a check while nothing is cached takes no lock.
    pub(super) may_cache: AtomicBool,
    /// The loaded user root table (the CPU's CR3 / TTBR0_EL1), or [`NO_ROOT`]: changed under
    /// the TLB's lock with its tag, readable without it (for the same check).
    pub(super) loaded_root: AtomicU64,
    /// This CPU issued INVLPGBs and no TLBSYNC since: it may free nothing.
    pub(super) unsynced: AtomicBool,
}

impl CpuState {
    /// The loaded user root table, if any.
    pub(super) fn root(&self) -> Option<PhysAddr> {
        let root = self.loaded_root.load(Ordering::Acquire);
        (root != NO_ROOT).then_some(PhysAddr(root))
    }
}

/// [`CpuState::loaded_root`] when no root is loaded.
pub(super) const NO_ROOT: u64 = u64::MAX;

/// A simulated CPU. Its loads and stores translate through its TLB, walk the page tables of the
/// address space it runs on when the TLB misses, and raise page faults into the crate.
#[derive(Clone)]
pub struct SimCpu {
    pub(super) machine: Arc<SimMachine>,
    pub(super) index: usize,
}

/// While alive, a thread drives the CPU: IPIs wait for it to take them between accesses.
pub struct Attached {
    pub(super) cpu: SimCpu,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.cpu.state().attached.store(false, Ordering::SeqCst);
        self.cpu.set_interrupts(true);
        self.cpu.poll();
    }
}

impl SimCpu {
    pub(super) fn state(&self) -> &CpuState {
        &self.machine.cpus[self.index]
    }

    /// Makes the calling thread run as this CPU: [`Platform::current_cpu`] answers its index,
    /// e.g. for syscalls made on the thread.
    pub fn enter(&self) {
        CURRENT_CPU.with(|cpu| cpu.set(self.index));
    }

    /// Makes the calling thread drive this CPU until the guard drops: IPIs are then taken by this
    /// thread, between accesses or in [`SimCpu::poll`], instead of on the sender's.
    pub fn attach(&self) -> Attached {
        self.enter();
        self.state().attached.store(true, Ordering::SeqCst);
        Attached { cpu: self.clone() }
    }

    /// Enables or disables this CPU's interrupts: while disabled, IPIs wait (the crate's own
    /// shootdown wait loop still serves them).
    pub fn set_interrupts(&self, enabled: bool) {
        self.state().interrupts.store(enabled, Ordering::SeqCst);
    }

    /// Takes a pending IPI, as an interrupt window does (nothing while interrupts are disabled).
    pub fn poll(&self) {
        if self.state().interrupts.load(Ordering::SeqCst)
            && self.state().ipi_pending.swap(false, Ordering::SeqCst)
        {
            SimMachine::as_cpu(self.index, || {
                self.machine.tlb.handle_ipi(&CpuPin::new(&*self.machine))
            });
        }
    }

    /// The CPU's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The machine.
    pub fn machine(&self) -> &Arc<SimMachine> {
        &self.machine
    }

    /// Switches the CPU to `aspace` (or to none), as a context switch does, through
    /// [`AddressSpace::activate`] and [`AddressSpace::deactivate`].
    pub fn switch_to(&self, aspace: Option<&Arc<AddressSpace>>) {
        self.enter();
        self.poll();
        let pin = CpuPin::new(&*self.machine);
        match aspace {
            // SAFETY: the simulated CPU runs no code through its tables (the "kernel" is the
            // host), and it loads roots only here.
            Some(new) => unsafe { new.activate(&pin) },
            // SAFETY: as above.
            None => unsafe { AddressSpace::deactivate(&pin) },
        }
    }

    /// The address space the CPU runs, if any.
    pub fn current(&self) -> Option<Arc<AddressSpace>> {
        self.enter();
        AddressSpace::current(&CpuPin::new(&*self.machine))
    }

    /// Translates `va` for `access` and runs `op` on the word, faulting into the crate as needed.
    pub(super) fn access<R>(
        &self,
        va: u64,
        access: Access,
        op: impl Fn(&AtomicU64) -> R,
    ) -> Result<R, FaultError> {
        self.enter();
        let counters = &self.machine.counters;
        let offset = va % PAGE_SIZE;
        let needed = match access {
            Access::Read => MmuFlags::READ,
            Access::Write => MmuFlags::WRITE,
            Access::Execute => MmuFlags::EXECUTE,
        };
        // A fault handler that made progress is retried; three faults in a row without progress
        // mean the access is refused.
        for _ in 0..3 {
            self.poll();
            let aspace = self.current().ok_or(FaultError::NotMapped)?;
            {
                // The TLB stays locked from lookup to access: an invalidation of this CPU waits
                // for the access under way, as TLB maintenance completion does on hardware.
                let mut tlb = lock(&self.state().tlb);
                let tag = tlb.tag.ok_or(FaultError::NotMapped)?;
                if let Some((entry, level)) = tlb.lookup(tag, va) {
                    if entry.flags.contains(needed) {
                        counters.tlb_hits.fetch_add(1, Ordering::Relaxed);
                        self.speculative_walk(&mut tlb, tag, va, level, aspace.format());
                        self.machine.check_not_zero_page(entry.frame, access);
                        return Ok(op(self.machine.word(PhysAddr(entry.frame.0 + offset))));
                    }
                }
                // A permission fault on a cached entry faults without a walk. As on aarch64,
                // the entry stays in the TLB: the crate's fault path must invalidate it once it
                // resolved the fault, or the access faults again.
                let cached = tlb.lookup(tag, va).is_some();
                counters
                    .tlb_misses
                    .fetch_add(u64::from(!cached), Ordering::Relaxed);
                let walked = if cached {
                    None
                } else {
                    let root = self.state().root().ok_or(FaultError::NotMapped)?;
                    self.state().may_cache.store(true, Ordering::Release);
                    let format = aspace.format();
                    // The walk starts at the deepest cached entry that covers the address.
                    let (table, level) = match tlb.cached_walk(tag, va) {
                        Some((table, level, _)) => (table, level),
                        None => (root, 3),
                    };
                    let mut seen = [(0usize, PhysAddr(0)); 3];
                    let mut count = 0;
                    // SAFETY: the simulated memory is never unmapped, so every table stays
                    // readable; a table freed under the walk reads as stale or poisoned data, as
                    // on hardware.
                    let result = unsafe {
                        walk_format(format, &*self.machine, table, level, va, &mut |l, t| {
                            seen[count] = (l, t);
                            count += 1;
                        })
                    };
                    for &(level, table) in &seen[..count] {
                        let base = va & !(entry_span(level + 1) - 1);
                        tlb.walks.insert((tag, level, base), (table, format));
                    }
                    result
                };
                if let Some((frame, flags, level)) = walked {
                    if flags.contains(needed) {
                        tlb.insert(tag, va, TlbEntry { frame, flags }, level, self.index);
                        self.machine.check_not_zero_page(frame, access);
                        return Ok(op(self.machine.word(PhysAddr(frame.0 + offset))));
                    }
                }
            }
            counters.page_faults.fetch_add(1, Ordering::Relaxed);
            aspace.page_fault(va, access)?;
        }
        Err(FaultError::AccessDenied)
    }

    /// Loads the 8-aligned word at `va`.
    pub fn load(&self, va: u64) -> Result<u64, FaultError> {
        assert!(va % 8 == 0, "unaligned load at {va:#x}");
        self.access(va, Access::Read, |word| word.load(Ordering::Relaxed))
    }

    /// Stores `value` to the 8-aligned word at `va`.
    pub fn store(&self, va: u64, value: u64) -> Result<(), FaultError> {
        assert!(va % 8 == 0, "unaligned store at {va:#x}");
        self.access(va, Access::Write, |word| {
            word.store(value, Ordering::Relaxed)
        })
    }

    /// The translation of `va`'s page this CPU's TLB holds under its current tag, if any (from
    /// a translation of any size: the frame is that of the page).
    pub fn tlb_entry(&self, va: u64) -> Option<TlbEntry> {
        self.tlb_translation(va).map(|(entry, _)| entry)
    }

    /// As [`SimCpu::tlb_entry`], with the level of the leaf the translation came from (0: 4 KiB,
    /// 1: 2 MiB, 2: 1 GiB).
    pub fn tlb_translation(&self, va: u64) -> Option<(TlbEntry, usize)> {
        let tlb = lock(&self.state().tlb);
        let tag = tlb.tag?;
        tlb.lookup(tag, va)
    }

    /// How many translations this CPU's TLB holds, under every tag, of every size.
    pub fn tlb_len(&self) -> usize {
        let tlb = lock(&self.state().tlb);
        tlb.entries.len() + tlb.large.len()
    }

    /// An aarch64 MMU may walk the tables at any time and cache what it finds (ARM ARM D8.2.7):
    /// on a hit in a large translation (`level` above 0) of an aarch64 address space, walk `va`
    /// as well and cache the result, so that a table that replaced a large leaf without
    /// break-before-make is seen next to the stale leaf.
    fn speculative_walk(&self, tlb: &mut CpuTlb, tag: u16, va: u64, level: usize, format: Format) {
        if level == 0 || format != Format::Aarch64 {
            return;
        }
        let Some(root) = self.state().root() else {
            return;
        };
        // SAFETY: the simulated memory is never unmapped (as in `access`).
        let walked =
            unsafe { walk_format(Format::Aarch64, &*self.machine, root, 3, va, &mut |_, _| {}) };
        if let Some((frame, flags, level)) = walked {
            self.state().may_cache.store(true, Ordering::Release);
            tlb.insert(tag, va, TlbEntry { frame, flags }, level, self.index);
        }
    }

    /// Invalidates this CPU's translation of `va` under its current tag, as INVLPG would.
    pub fn invalidate_page(&self, va: u64) {
        let mut tlb = lock(&self.state().tlb);
        if let Some(tag) = tlb.tag {
            tlb.invalidate(tag, va);
        }
    }
}
