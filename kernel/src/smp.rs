//! The CPUs: per-CPU state, and a way to run a closure on another CPU.
//!
//! Secondary CPUs, once started (`arch::start_secondaries`), sit in [`worker_loop`]: with
//! interrupts enabled they sleep until a job is posted for them and a wake-up IPI arrives, run the
//! job, and report that it is done. The boot CPU runs the scenarios and hands jobs out with
//! [`run_on`] (one CPU, waiting) or [`run_on_all`] (several CPUs at once, waiting for all).

use crate::arch;
use crate::platform::KernelPlatform;
use crate::sync::IrqSpinLock;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use zx_vm::platform::MAX_CPUS;

/// A job for another CPU: a borrowed closure. The poster waits until the job is done, so the
/// borrow outlives every use (see `run_on_all`).
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the closure is `Sync`, so calling it from another CPU through a shared reference is
// allowed; the pointer itself is only dereferenced while the poster waits (see `run_on_all`).
unsafe impl Send for Job {}

/// One CPU's state. `repr(C)` with `index` and `fixup` first: the architecture code reads them
/// at fixed offsets from the per-CPU register (x86_64 `gs:0`/`gs:8`, aarch64 `[TPIDR_EL1]`).
#[repr(C)]
pub struct PerCpu {
    /// The CPU's index (0 is the boot CPU): what [`zx_vm::Platform::current_cpu`] answers.
    pub index: usize,
    /// While non-zero, where a kernel access to user memory that the crate cannot resolve
    /// resumes (see `arch::probe_read`); the fault handler clears it.
    pub fixup: AtomicUsize,
    /// The hardware's name for the CPU: x86_64 local APIC ID, aarch64 MPIDR affinity.
    pub hw_id: AtomicUsize,
    /// Set by the CPU itself once it runs kernel code with interrupts enabled.
    pub online: AtomicBool,
    job: IrqSpinLock<Option<Job>>,
    job_done: AtomicBool,
}

impl PerCpu {
    const fn new(index: usize) -> Self {
        PerCpu {
            index,
            fixup: AtomicUsize::new(0),
            hw_id: AtomicUsize::new(0),
            online: AtomicBool::new(false),
            job: IrqSpinLock::new(None),
            job_done: AtomicBool::new(false),
        }
    }
}

/// Every CPU's state.
pub static PERCPU: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i].index = i;
        i += 1;
    }
    cpus
};

/// How many CPUs the machine has: the count the boot CPU gave the crate's `Tlb` (the one record
/// of it, `Tlb::cpu_count`); 1 before the `Tlb` is made.
pub fn cpu_count() -> usize {
    KernelPlatform::try_tlb().map_or(1, |tlb| tlb.cpu_count())
}

/// The calling CPU's state.
pub fn this_cpu() -> &'static PerCpu {
    &PERCPU[arch::cpu_index()]
}

/// How many CPUs have come online.
pub fn online_count() -> usize {
    (0..cpu_count())
        .filter(|&cpu| PERCPU[cpu].online.load(Ordering::Acquire))
        .count()
}

/// A secondary CPU's life after its architecture set-up: run jobs for ever.
pub fn worker_loop() -> ! {
    let me = this_cpu();
    me.online.store(true, Ordering::Release);
    loop {
        // Interrupts off between the check and the sleep: a wake-up IPI that arrives in between
        // stays pending and ends the sleep (`arch::enable_interrupts_and_wait`).
        let interrupts = arch::interrupts_disable();
        let job = me.job.lock().take();
        match job {
            Some(Job(f)) => {
                arch::interrupts_restore(interrupts);
                // SAFETY: the poster keeps the closure alive until it sees `job_done` (below).
                unsafe { (*f)(me.index) };
                me.job_done.store(true, Ordering::Release);
            }
            None => arch::enable_interrupts_and_wait(),
        }
    }
}

/// Runs `f(cpu)` on every CPU in `cpus` at the same time (the calling CPU too, if listed, last)
/// and returns when all have finished.
pub fn run_on_all(cpus: impl IntoIterator<Item = usize> + Clone, f: &(dyn Fn(usize) + Sync)) {
    let me = arch::cpu_index();
    // SAFETY: only the lifetime changes. The other CPUs use the closure until they report their
    // job done, and this function waits for that below before it returns (a panic ends the whole
    // run, without unwinding, so the wait cannot be skipped): `f` outlives every use.
    let f_static: &'static (dyn Fn(usize) + Sync) = unsafe { core::mem::transmute(f) };
    let job = Job(f_static as *const (dyn Fn(usize) + Sync));
    for cpu in cpus.clone() {
        if cpu == me {
            continue;
        }
        assert!(
            PERCPU[cpu].online.load(Ordering::Acquire),
            "CPU {cpu} is not online"
        );
        PERCPU[cpu].job_done.store(false, Ordering::Relaxed);
        let previous = PERCPU[cpu].job.lock().replace(job);
        assert!(previous.is_none(), "CPU {cpu} already has a job");
        arch::send_ipi(cpu, arch::Ipi::Wake);
    }
    if cpus.clone().into_iter().any(|cpu| cpu == me) {
        f(me);
    }
    for cpu in cpus {
        if cpu != me {
            while !PERCPU[cpu].job_done.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        }
    }
}

/// Runs `f` on `cpu` and returns its result.
pub fn run_on<R: Send>(cpu: usize, f: impl Fn() -> R + Sync) -> R {
    let result = IrqSpinLock::new(None);
    run_on_all([cpu], &|_| {
        let value = f();
        *result.lock() = Some(value);
    });
    let value = result.lock().take();
    value.expect("the job ran")
}
