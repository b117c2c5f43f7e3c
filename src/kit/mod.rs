//! An integration kit for hobby kernels (see the pieces below).

pub mod aarch64_esr;
pub mod frames;
pub mod single_cpu;
#[cfg(target_arch = "x86_64")]
pub mod x86;
