//! `cargo xtask qemu <x86_64|aarch64> [--pcid[=TAGS]] [--cpu-max] [--break-remote-flush]
//! [--break-write-protect] [--break-split] [--break-range] [--runs N] [--timeout SECONDS]`
//!
//! Builds the test kernel (`kernel/`) for `<arch>-unknown-none` and runs it under QEMU (TCG, never
//! KVM: stale TLB entries only show under TCG), with 4 CPUs and 256 MiB. The kernel reports its
//! result through QEMU's exit status (x86_64: `isa-debug-exit`, where 33 means success; aarch64:
//! semihosting `SYS_EXIT`, where 0 does); a run that outlives the time limit is killed and fails.
//!
//! `--pcid` (x86_64 only) runs the same kernel with PCIDs: the kernel command line (`-append
//! pcid`, or `pcid=TAGS` for `--pcid=TAGS`) makes the kernel check CPUID for PCID and INVPCID, set
//! CR4.PCIDE on every CPU and give the crate that many tags (2 by default: few, so that they are
//! reused). No rebuild: the kernel reads it at boot. QEMU's TCG offers neither PCID nor INVPCID in
//! any CPU model (`-cpu max` included; `+pcid` is dropped with a warning), so under TCG the kernel
//! says so and the run ends SKIPPED (exit status 3 here); on a QEMU whose `-cpu max` offers them,
//! the same command runs every scenario with PCIDs.
//!
//! `--cpu-max` (aarch64 only) runs on `-cpu max` instead of `cortex-a72`: a CPU with
//! FEAT_TLBIRANGE and FEAT_TTL, so that the crate invalidates spans with range TLBIs (the kernel
//! prints what it found). `--break-range` builds zx-vm with its deliberately broken range
//! encoding (a wrong granule, which invalidates nothing); with `--cpu-max` the run must fail.
//!
//! The kernel is built into `$CARGO_TARGET_DIR` when that is set, else `target/` at the workspace
//! root (a broken build into a subdirectory named after its features: `break-remote-flush/`,
//! `break-write-protect/`, `break-split/`, or several joined by `+`).
//!
//! `--break-remote-flush` builds zx-vm with its deliberately broken shootdown (remote CPUs
//! acknowledge without flushing; on aarch64 the kernel then invalidates by IPI, so that there is a
//! remote flush to skip). `--break-write-protect` builds it with its deliberately broken snapshot
//! (the parent's writable translations stay writable), which the kernel's snapshot scenario must
//! catch. `--break-split` builds it with its deliberately broken split of large leaves (no
//! break-before-make on aarch64, the changes made inside the new table not invalidated), which
//! the kernel's large-page scenario must catch. With any of them, the kernel test must fail;
//! `--runs N` repeats the run and counts.
//!
//! The exit status is 0 when every run passed, 1 when one failed (so with a `--break-*` flag, 1
//! is the expected outcome), 2 for a usage or build error, and 3 when the kernel had nothing to
//! test and said so (x86_64 exit status 37: `--pcid` on a CPU model without PCID or INVPCID,
//! which under TCG is every model).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: cargo xtask qemu <x86_64|aarch64> [--pcid[=TAGS]] [--cpu-max] [--break-remote-flush] \
     [--break-write-protect] [--break-split] [--break-range] [--runs N] [--timeout SECONDS]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    fn target(self) -> String {
        format!("{}-unknown-none", self.name())
    }

    fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// QEMU's arguments for `kernel`, with `command_line` for the kernel (x86_64 only).
    fn qemu_args(self, kernel: &Path, command_line: Option<&str>, cpu_max: bool) -> Vec<String> {
        let mut args: Vec<String> = match self {
            // `-cpu max` for 1 GiB pages (the kernel's direct map); PVH boot from the ELF note.
            Arch::X86_64 => vec![
                "-machine",
                "pc",
                "-cpu",
                "max",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            // EL1 entry, GICv2, PSCI through HVC, semihosting for the exit status; `max` has
            // FEAT_TLBIRANGE and FEAT_TTL, the Cortex-A72 (Armv8.0) neither.
            Arch::Aarch64 => vec![
                "-machine",
                "virt,gic-version=2",
                "-cpu",
                if cpu_max { "max" } else { "cortex-a72" },
                "-semihosting",
            ],
        }
        .into_iter()
        .map(String::from)
        .collect();
        args.extend(
            [
                "-accel",
                "tcg",
                "-smp",
                "4",
                "-m",
                "256M",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-no-reboot",
                "-kernel",
            ]
            .map(String::from),
        );
        args.push(kernel.display().to_string());
        if let Some(line) = command_line {
            args.extend(["-append".to_string(), line.to_string()]);
        }
        args
    }

    fn outcome(self, status: ExitStatus) -> Outcome {
        match (self, status.code()) {
            (Arch::X86_64, Some(33)) | (Arch::Aarch64, Some(0)) => Outcome::Pass,
            (Arch::X86_64, Some(37)) => Outcome::Skip,
            _ => Outcome::Fail,
        }
    }
}

/// How one run ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    /// The kernel had nothing to test (and said why).
    Skip,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

struct Options {
    arch: Arch,
    /// `--pcid`: the kernel argument (`pcid` or `pcid=TAGS`).
    pcid: Option<String>,
    /// `--cpu-max`: aarch64 on `-cpu max` (range TLBIs).
    cpu_max: bool,
    /// Which of [`BREAKAGES`] to build with.
    broken: [bool; BREAKAGES.len()],
    runs: u32,
    timeout: Duration,
}

/// The deliberately broken builds of zx-vm: the feature (zx-vm's and the kernel's, and the flag
/// without its `--`) and what it breaks.
const BREAKAGES: [(&str, &str); 4] = [
    ("break-remote-flush", "shootdown"),
    ("break-write-protect", "write-protect"),
    ("break-split", "large-leaf split"),
    ("break-range", "range-TLBI encoding"),
];

impl Options {
    /// The features of the broken builds asked for, in [`BREAKAGES`]' order.
    fn features(&self) -> Vec<&'static str> {
        self.breakages().map(|(feature, _)| feature).collect()
    }

    /// What the broken builds asked for break.
    fn broken_parts(&self) -> Vec<&'static str> {
        self.breakages().map(|(_, what)| what).collect()
    }

    fn breakages(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        BREAKAGES
            .into_iter()
            .zip(self.broken)
            .filter_map(|(breakage, on)| on.then_some(breakage))
    }
}

fn usage_error(message: &str) -> ! {
    eprintln!("xtask: {message}\n{USAGE}");
    exit(2)
}

fn parse() -> Options {
    let args: Vec<String> = env::args().skip(1).collect();
    let mut args = args.iter().map(String::as_str);
    match args.next() {
        Some("qemu") => {}
        Some(other) => usage_error(&format!("unknown command `{other}`")),
        None => usage_error("no command"),
    }
    let arch = match args.next() {
        Some("x86_64") => Arch::X86_64,
        Some("aarch64") => Arch::Aarch64,
        Some(other) => usage_error(&format!("unknown architecture `{other}`")),
        None => usage_error("no architecture"),
    };
    let mut options = Options {
        arch,
        pcid: None,
        cpu_max: false,
        broken: [false; BREAKAGES.len()],
        runs: 1,
        timeout: Duration::from_secs(120),
    };
    while let Some(arg) = args.next() {
        let breakage = BREAKAGES
            .iter()
            .position(|&(feature, _)| arg.strip_prefix("--") == Some(feature));
        if let Some(i) = breakage {
            options.broken[i] = true;
            continue;
        }
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage_error(&format!("{name} needs a positive number")))
        };
        match arg {
            "--pcid" => options.pcid = Some("pcid".into()),
            "--cpu-max" => options.cpu_max = true,
            tags if tags.starts_with("--pcid=") => {
                let tags = &tags["--pcid=".len()..];
                if tags.parse::<u16>().map_or(true, |tags| tags == 0) {
                    usage_error("--pcid=TAGS needs a positive number of tags (x86_64 has 4095)");
                }
                options.pcid = Some(format!("pcid={tags}"));
            }
            "--runs" => options.runs = number("--runs") as u32,
            "--timeout" => options.timeout = Duration::from_secs(number("--timeout")),
            other => usage_error(&format!("unknown option `{other}`")),
        }
    }
    if options.cpu_max && arch != Arch::Aarch64 {
        usage_error("--cpu-max is for aarch64 (x86_64 always runs on -cpu max)");
    }
    if options.pcid.is_some() && arch != Arch::X86_64 {
        usage_error("--pcid is for x86_64 (aarch64 always runs with ASIDs)");
    }
    options
}

/// Builds the kernel; returns the ELF's path.
fn build(options: &Options, root: &Path) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = options.arch.target();
    // Each broken build gets its own target directory, so that switching between them does not
    // rebuild zx-vm each time.
    let base = env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let breakages = options.features();
    let target_dir = if breakages.is_empty() {
        base
    } else {
        base.join(breakages.join("+"))
    };
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--package",
            "zx-vm-test-kernel",
            "--release",
            "--target",
            &target,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if !breakages.is_empty() {
        command.args(["--features", &breakages.join(",")]);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| usage_error(&format!("cannot run cargo: {e}")));
    if !status.success() {
        eprintln!("xtask: building the kernel failed");
        exit(2);
    }
    target_dir.join(target).join("release/zx-vm-test-kernel")
}

/// Runs QEMU once: whether the kernel reported success (or a skip) in time.
fn run(options: &Options, kernel: &Path) -> Outcome {
    let arch = options.arch;
    let started = Instant::now();
    let mut child = Command::new(arch.qemu())
        .args(arch.qemu_args(kernel, options.pcid.as_deref(), options.cpu_max))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            usage_error(&format!(
                "cannot run {}: {e} (apt-get install qemu-system-x86 qemu-system-arm)",
                arch.qemu()
            ))
        });
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let outcome = arch.outcome(status);
                println!(
                    "xtask: QEMU exited with {status} after {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    outcome.name()
                );
                return outcome;
            }
            Ok(None) if started.elapsed() > options.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                println!(
                    "xtask: QEMU killed after the time limit of {} s: FAIL (the kernel hung)",
                    options.timeout.as_secs()
                );
                return Outcome::Fail;
            }
            Ok(None) => sleep(Duration::from_millis(20)),
            Err(e) => {
                println!("xtask: waiting for QEMU failed: {e}: FAIL");
                return Outcome::Fail;
            }
        }
    }
}

fn main() {
    let options = parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf();
    let kernel = build(&options, &root);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for i in 1..=options.runs {
        if options.runs > 1 {
            println!("xtask: run {i} of {}", options.runs);
        }
        match run(&options, &kernel) {
            Outcome::Pass => passed += 1,
            Outcome::Fail => failed += 1,
            Outcome::Skip => skipped += 1,
        }
    }
    let breakages = options.features();
    let what = format!(
        "{}{} {}",
        options.arch.name(),
        if options.pcid.is_some() {
            " (PCIDs)"
        } else {
            ""
        },
        if breakages.is_empty() {
            "kernel test".to_string()
        } else {
            format!("with {}", breakages.join(" and "))
        }
    );
    if skipped > 0 {
        println!("xtask: {what}: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("xtask: {what}: {passed} passed, {failed} failed");
    }
    if !breakages.is_empty() && skipped < options.runs {
        let broken = options.broken_parts().join(" and ");
        println!(
            "xtask: the broken {broken} was caught in {failed} of {} runs",
            options.runs - skipped
        );
    }
    exit(if failed > 0 {
        1
    } else if skipped > 0 {
        3
    } else {
        0
    });
}
