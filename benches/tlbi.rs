//! Invalidation the hardware offers (issue 14): a DECOMMIT of 1, 32, 33, 512 and 4096 pages on
//! two CPUs that both cache every page of the mapping (the range and 32 pages either side),
//! with and without each feature:
//!
//! - `aarch64-none`: single-page `TLBI VALE1` per page up to 32, then `TLBI ASIDE1`;
//! - `aarch64-range`: FEAT_TLBIRANGE and FEAT_TTL: range TLBIs up to 2^21 pages;
//! - `x86_64-none`: IPIs, INVLPG per page up to 32, then the whole PCID;
//! - `x86_64-invlpgb`: INVLPGB (8 pages per instruction, as on Zen 3) and one TLBSYNC, no IPI.
//!
//! Both machines use IPIs (the aarch64 one carries spans out with the local forms on each CPU),
//! so the two formats differ only in the feature. Per case it prints, per DECOMMIT: the
//! invalidation instructions (single-page, range, full, INVLPGB, TLBSYNC, summed over the CPUs
//! that ran them), the IPIs, and how many of the 128 translations outside the range (64 per
//! CPU) survive. The counts go to `target/criterion/zx-vm-tlbi-extra.json`. 2^21 pages are past
//! what the simulation maps in a bench; `tests/tlbi.rs` counts them on the record instead.

mod common;

use common::*;
use std::hint::black_box;
use std::sync::Arc;
use zx_vm::abi::*;
use zx_vm::arch::Format;
use zx_vm::platform::TlbFeatures;
use zx_vm::sim::{CounterSnapshot, SimMachine};
use zx_vm::syscall::*;
use zx_vm::Process;

/// Pages either side of the range, cached by both CPUs: what a ranged DECOMMIT may keep.
const AROUND: u64 = 32;

const CONFIGS: [(Format, &str, TlbFeatures); 4] = [
    (Format::Aarch64, "none", TlbFeatures::NONE),
    (
        Format::Aarch64,
        "range",
        TlbFeatures {
            range: true,
            ttl: true,
            invlpgb: 0,
        },
    ),
    (Format::X86_64, "none", TlbFeatures::NONE),
    (
        Format::X86_64,
        "invlpgb",
        TlbFeatures {
            range: false,
            ttl: false,
            invlpgb: 8,
        },
    ),
];

struct Decommit {
    machine: Arc<SimMachine>,
    process: Arc<Process>,
    addr: u64,
    pages: u64,
    label: String,
    before: CounterSnapshot,
    last: CounterSnapshot,
    kept: usize,
}

impl Decommit {
    fn new(format: Format, name: &str, features: TlbFeatures, pages: u64) -> Decommit {
        let total = pages + 2 * AROUND;
        let machine = machine(frames_for(total, 1), 2);
        machine.set_tlb_features(features);
        let process = process(&machine, format);
        let vmo = vmo_create(&process, total);
        let addr = map_anywhere(&process, vmo, 0, total);
        for cpu in 0..2 {
            machine.cpu(cpu).switch_to(Some(process.aspace()));
        }
        Decommit {
            machine,
            process,
            addr,
            pages,
            label: format!("tlbi-decommit/{}-{name}/{pages}", format.name()),
            before: CounterSnapshot::default(),
            last: CounterSnapshot::default(),
            kept: 0,
        }
    }

    fn va(&self, page: u64) -> u64 {
        self.addr + page * PAGE_SIZE
    }
}

impl Workload for Decommit {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn prepare(&mut self, _slot: usize) {
        for cpu in 0..2 {
            let cpu = self.machine.cpu(cpu);
            for page in 0..self.pages + 2 * AROUND {
                cpu.load(self.va(page)).expect("a mapped page");
            }
        }
        self.machine.cpu(0).enter();
        self.before = self.machine.counters();
    }

    fn run(&mut self, _slot: usize) {
        let p = &self.process;
        let status = zx_vmar_op_range(
            p,
            p.root_vmar_handle(),
            ZX_VMAR_OP_DECOMMIT,
            black_box(self.va(AROUND)),
            self.pages * PAGE_SIZE,
            0,
            0,
        );
        assert_eq!(status, ZX_OK);
    }

    fn check(&mut self, _slot: usize) {
        self.last = self.machine.counters().since(&self.before);
        assert_eq!(self.last.shootdowns, 1, "{}", self.label);
        let outside = (0..AROUND).chain(AROUND + self.pages..2 * AROUND + self.pages);
        let mut kept = 0;
        for cpu in 0..2 {
            let cpu = self.machine.cpu(cpu);
            for page in AROUND..AROUND + self.pages {
                assert!(cpu.tlb_entry(self.va(page)).is_none(), "{}", self.label);
            }
            kept += outside
                .clone()
                .filter(|&page| cpu.tlb_entry(self.va(page)).is_some())
                .count();
        }
        self.kept = kept;
    }

    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.last)
    }
}

impl Drop for Decommit {
    fn drop(&mut self) {
        let c = &self.last;
        println!(
            "{}: per decommit: single {}, range {}, full {}, INVLPGB {}, TLBSYNC {}, IPIs {}; \
             translations outside kept {} of {}",
            self.label,
            c.page_invalidations,
            c.range_invalidations,
            c.full_invalidations,
            c.broadcast_invalidations,
            c.tlbsyncs,
            c.ipis,
            self.kept,
            4 * AROUND
        );
        for cpu in 0..2 {
            self.machine.cpu(cpu).switch_to(None);
        }
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (format, name, features) in CONFIGS {
        for pages in [1u64, 32, 33, 512, 4096] {
            out.push(Case {
                group: "tlbi-decommit",
                function: format!("{}-{name}", format.name()),
                param: pages.to_string(),
                build: Box::new(move || Box::new(Decommit::new(format, name, features, pages))),
            });
        }
    }
    out
}

fn main() {
    common::run(cases(), "zx-vm-tlbi-extra.json", |_| {});
}
