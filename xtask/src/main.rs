//! `cargo xtask qemu <x86_64|aarch64> [--break-remote-flush] [--runs N] [--timeout SECONDS]`
//!
//! Builds the test kernel (`kernel/`) for `<arch>-unknown-none` and runs it under QEMU (TCG, never
//! KVM: stale TLB entries only show under TCG), with 4 CPUs and 256 MiB. The kernel reports its
//! result through QEMU's exit status (x86_64: `isa-debug-exit`, where 33 means success; aarch64:
//! semihosting `SYS_EXIT`, where 0 does); a run that outlives the time limit is killed and fails.
//!
//! `--break-remote-flush` builds zx-vm with its deliberately broken shootdown (remote CPUs
//! acknowledge without flushing; on aarch64 the kernel then invalidates by IPI, so that there is a
//! remote flush to skip). The kernel test must then fail; `--runs N` repeats the run and counts.
//!
//! The exit status is 0 when every run passed, 1 otherwise (so with `--break-remote-flush`, 1 is
//! the expected outcome), 2 for a usage or build error.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: cargo xtask qemu <x86_64|aarch64> [--break-remote-flush] [--runs N] [--timeout SECONDS]";

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

    /// QEMU's arguments for `kernel`.
    fn qemu_args(self, kernel: &Path) -> Vec<String> {
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
            // EL1 entry, GICv2, PSCI through HVC, semihosting for the exit status.
            Arch::Aarch64 => vec![
                "-machine",
                "virt,gic-version=2",
                "-cpu",
                "cortex-a72",
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
        args
    }

    fn passed(self, status: ExitStatus) -> bool {
        match self {
            Arch::X86_64 => status.code() == Some(33),
            Arch::Aarch64 => status.code() == Some(0),
        }
    }
}

struct Options {
    arch: Arch,
    break_remote_flush: bool,
    runs: u32,
    timeout: Duration,
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
        break_remote_flush: false,
        runs: 1,
        timeout: Duration::from_secs(120),
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage_error(&format!("{name} needs a positive number")))
        };
        match arg {
            "--break-remote-flush" => options.break_remote_flush = true,
            "--runs" => options.runs = number("--runs") as u32,
            "--timeout" => options.timeout = Duration::from_secs(number("--timeout")),
            other => usage_error(&format!("unknown option `{other}`")),
        }
    }
    options
}

/// Builds the kernel; returns the ELF's path.
fn build(options: &Options, root: &Path) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = options.arch.target();
    // The broken build gets its own target directory, so that switching between the two does not
    // rebuild zx-vm each time.
    let target_dir = if options.break_remote_flush {
        root.join("target/break-remote-flush")
    } else {
        root.join("target")
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
    if options.break_remote_flush {
        command.args(["--features", "break-remote-flush"]);
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

/// Runs QEMU once; true if the kernel reported success in time.
fn run(options: &Options, kernel: &Path) -> bool {
    let arch = options.arch;
    let started = Instant::now();
    let mut child = Command::new(arch.qemu())
        .args(arch.qemu_args(kernel))
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
                let passed = arch.passed(status);
                println!(
                    "xtask: QEMU exited with {status} after {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    if passed { "PASS" } else { "FAIL" }
                );
                return passed;
            }
            Ok(None) if started.elapsed() > options.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                println!(
                    "xtask: QEMU killed after the time limit of {} s: FAIL (the kernel hung)",
                    options.timeout.as_secs()
                );
                return false;
            }
            Ok(None) => sleep(Duration::from_millis(20)),
            Err(e) => {
                println!("xtask: waiting for QEMU failed: {e}: FAIL");
                return false;
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
    let mut passed = 0;
    for i in 1..=options.runs {
        if options.runs > 1 {
            println!("xtask: run {i} of {}", options.runs);
        }
        if run(&options, &kernel) {
            passed += 1;
        }
    }
    let failed = options.runs - passed;
    println!(
        "xtask: {} {}: {passed} passed, {failed} failed",
        options.arch.name(),
        if options.break_remote_flush {
            "with break-remote-flush"
        } else {
            "kernel test"
        }
    );
    if options.break_remote_flush {
        println!(
            "xtask: the broken shootdown was caught in {failed} of {} runs",
            options.runs
        );
    }
    exit(if failed == 0 { 0 } else { 1 });
}
