//! Build script of the test kernel.
//!
//! 1. Links with the architecture's linker script (`linker-<arch>.ld`); on x86_64 also as a plain
//!    static executable (`-no-pie`): the target's default is a static PIE, whose relocations
//!    nothing would apply at boot, and the 32-bit boot code needs absolute addresses.
//! 2. Makes the host's contract tests (`../tests/contract.rs`) compile inside the kernel: the same
//!    test functions, with `std` items taken from `alloc`, the simulation's `SimMachine`/`SimCpu`
//!    replaced by the kernel's stand-ins on real CPUs (`src/contract.rs`), and the `per_format!`
//!    list turned into a table the kernel runs. Any change to that file is picked up; a change
//!    that breaks one of the textual substitutions below fails the build with a clear message.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap();
    if os == "none" {
        let script = manifest.join(format!("linker-{arch}.ld"));
        println!("cargo:rerun-if-changed={}", script.display());
        println!(
            "cargo:rustc-link-arg-bin=zx-vm-test-kernel=-T{}",
            script.display()
        );
        if arch == "x86_64" {
            println!("cargo:rustc-link-arg-bin=zx-vm-test-kernel=-no-pie");
        }
    }

    let contract = manifest.join("../tests/contract.rs");
    println!("cargo:rerun-if-changed={}", contract.display());
    let source = fs::read_to_string(&contract).expect("read ../tests/contract.rs");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("contract.rs");
    fs::write(out, adapt_contract(&source)).expect("write contract.rs");
}

/// Replaces `from` by `to` in `text`, insisting that `from` is there.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "tests/contract.rs changed: `{from}` is gone; update kernel/build.rs"
    );
    text.replace(from, to)
}

fn adapt_contract(source: &str) -> String {
    // Inner doc comments cannot appear inside the module that includes the file.
    let mut text = source.replace("//!", "//");
    text = replace(
        &text,
        "use std::sync::Arc;",
        "use alloc::sync::Arc;\nuse alloc::vec;\nuse alloc::vec::Vec;",
    );
    text = replace(
        &text,
        "use zx_vm::sim::{SimConfig, SimCpu, SimMachine};",
        "use crate::contract::sim::{SimConfig, SimCpu, SimMachine};",
    );
    text = replace(&text, "#[test]", "");
    // The list of tests: the `per_format! { ... }` invocation becomes a table.
    let start = text
        .rfind("per_format! {")
        .expect("tests/contract.rs changed: no `per_format! {` list; update kernel/build.rs");
    let end = start
        + text[start..]
            .find('}')
            .expect("end of the per_format! list");
    let names: Vec<&str> = text[start + "per_format! {".len()..end]
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    assert!(
        !names.is_empty(),
        "tests/contract.rs: empty per_format! list"
    );
    let mut table = String::from(
        "\n/// Every contract test, by name.\npub const TESTS: &[(&str, fn(Format))] = &[\n",
    );
    for name in names {
        table.push_str(&format!("    (\"{name}\", {name}),\n"));
    }
    table.push_str("];\n");
    text.replace_range(start..=end, &table);
    text
}
