#!/usr/bin/env python3
"""Tables and a plot from `cargo bench --bench decommit` and `--bench children` runs (python3
standard library only).

Reads criterion's results under target/criterion (each case's new/benchmark.json and
new/estimates.json) and the benches' own target/criterion/zx-vm-extra.json (decommit: counter
deltas, memory) and zx-vm-children-extra.json (snapshot children: counter deltas), prints Markdown
tables with medians, ns/page and the ratios the targets name, and writes an SVG plot of pages per
second against range size: ours on both formats against the peers.

    python3 benches/plot.py [--criterion target/criterion] [--svg BENCHMARKS.svg]
"""

import argparse
import json
import math
import os
import sys


def load(root):
    results = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        median = est["median"]["point_estimate"]
        ci = est["median"]["confidence_interval"]
        pages = bench.get("throughput", {}).get("Elements", 1)
        results[(bench["group_id"], bench["function_id"], bench["value_str"])] = {
            "median_ns": median,
            "lo_ns": ci["lower_bound"],
            "hi_ns": ci["upper_bound"],
            "pages": pages,
        }
    extra = {}
    path = os.path.join(root, "zx-vm-extra.json")
    if os.path.exists(path):
        with open(path) as f:
            extra = json.load(f)
    # The children bench's counters stay apart: its cases take other numbers of rounds per call
    # than a decommit's one, which the decommit tables check.
    children = {}
    path = os.path.join(root, "zx-vm-children-extra.json")
    if os.path.exists(path):
        with open(path) as f:
            children = json.load(f)
    return results, extra, children


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def fmt_rate(pages_per_s):
    if pages_per_s >= 1e9:
        return f"{pages_per_s / 1e9:.2f} G"
    if pages_per_s >= 1e6:
        return f"{pages_per_s / 1e6:.1f} M"
    return f"{pages_per_s / 1e3:.1f} k"


def rate(r):
    return r["pages"] / (r["median_ns"] * 1e-9)


FORMATS = ["x86_64", "aarch64"]
PEERS = ["x86_64-crate", "madvise", "floor"]


def curve(results, function):
    """(pages, result) of the single-mapping curve: sub-ranges and full VMOs."""
    points = []
    for (group, func, value), r in results.items():
        if func == function and group in ("range", "full", "peers"):
            points.append((int(value), r))
    return sorted(points, key=lambda p: p[0])


def tables(results, extra):
    out = []
    w = out.append
    # The main comparison: ours against each peer at the same page count.
    w("### Single mapping, fully committed and mapped: ours against the peers\n")
    w("Sizes 1-512 pages are sub-ranges of a 1024-page mapping (`range`); 256, 16384 and 262144 "
      "pages are whole VMOs of 1 MiB, 64 MiB and 1 GiB (`full`). Ratios: peer's median time / "
      "ours (above 1: ours is faster).\n")
    w("| pages | format | ours median | ns/page | pages/s | vs x86_64 crate | vs madvise | vs floor | sim free_frames share |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for fmt in FORMATS:
        for pages, r in curve(results, f"ours-{fmt}"):
            peer = {p: results.get(("peers", p, str(pages))) for p in PEERS}
            sim = results.get(("platform", "sim-free_frames", str(pages)))
            ratio = lambda p: f"{peer[p]['median_ns'] / r['median_ns']:.2f}x" if peer[p] else "-"
            share = f"{sim['median_ns'] / r['median_ns'] * 100:.0f}%" if sim else "-"
            w(f"| {pages} | {fmt} | {fmt_time(r['median_ns'])} | {r['median_ns'] / pages:.2f} | "
              f"{fmt_rate(rate(r))} | {ratio('x86_64-crate')} | {ratio('madvise')} | "
              f"{ratio('floor')} | {share} |")
    w("")
    w("### The peers\n")
    w("| pages | x86_64 crate | ns/page | madvise(DONTNEED) | ns/page | floor | ns/page | sim free_frames | ns/page |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pages, _ in curve(results, "floor"):
        cells = []
        for group, func in [("peers", "x86_64-crate"), ("peers", "madvise"), ("peers", "floor"),
                            ("platform", "sim-free_frames")]:
            r = results.get((group, func, str(pages)))
            cells += [fmt_time(r["median_ns"]), f"{r['median_ns'] / pages:.2f}"] if r else ["-", "-"]
        w(f"| {pages} | " + " | ".join(cells) + " |")
    w("")
    for group, title, note in [
        ("sparse", "Sparse: a 1 GiB range (262144 pages)",
         "`1in16`: 16384 pages committed (1 in 16); `empty`: nothing committed."),
        ("matrix", "Fuchsia's matrix: mappings x pages each", "One VMO, N adjacent mappings of P pages, one decommit over all of them."),
        ("aspaces4", "One VMO in 4 address spaces, active on 4 CPUs",
         "Pages are VMO pages; each has a translation in all 4 address spaces (4 PTEs), one shootdown round with 3 IPIs."),
    ]:
        w(f"### {title}\n")
        w(note + "\n")
        w("| case | format | median | ns/page (range) | ns/committed page | rounds | IPIs | page inv. | full inv. |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for fmt in FORMATS:
            rows = [(v, r) for (g, f, v), r in results.items() if g == group and f == f"ours-{fmt}"]
            def key(item):
                v = item[0]
                parts = [int(x) if x.isdigit() else x for x in v.replace("x", " ").split()]
                return [str(p) if not isinstance(p, int) else f"{p:08d}" for p in parts]
            for value, r in sorted(rows, key=key):
                c = extra.get(f"counters/{group}/ours-{fmt}/{value}", {})
                committed = c.get("frames_freed", 0)
                per_committed = "-"
                if group == "sparse":
                    committed_pages = 16384 if value == "1in16" else 0
                    per_committed = f"{r['median_ns'] / committed_pages:.2f}" if committed_pages else "-"
                elif committed:
                    per_committed = f"{r['median_ns'] / r['pages']:.2f}"
                w(f"| {value} | {fmt} | {fmt_time(r['median_ns'])} | {r['median_ns'] / r['pages']:.3f} | "
                  f"{per_committed} | {c.get('shootdowns', '-')} | {c.get('ipis', '-')} | "
                  f"{c.get('page_invalidations', '-')} | {c.get('full_invalidations', '-')} |")
        w("")
    zero = results.get(("fault", "zero-4k", "64"))
    if zero:
        w("### The fault path: first-touch write faults against zeroing\n")
        w("64 write faults through `AddressSpace::page_fault` (commit a zeroed frame, map it) against "
          "a loop that zeroes 64 present 4 KiB pages. Ratio: ours / the loop (target: at most 2).\n")
        w("| case | median | ns/page | ratio to the zeroing loop |")
        w("|---|---:|---:|---:|")
        for fmt in FORMATS:
            r = results.get(("fault", f"ours-{fmt}", "first-touch-64"))
            if r:
                w(f"| ours-{fmt} | {fmt_time(r['median_ns'])} | {r['median_ns'] / 64:.1f} | "
                  f"{r['median_ns'] / zero['median_ns']:.2f}x |")
        w(f"| zero-4k | {fmt_time(zero['median_ns'])} | {zero['median_ns'] / 64:.1f} | 1.00x |")
        w("")
        w("64 read faults that map the shared zero page (nothing committed) against the 64 "
          "first-touch write faults of the same format. Ratio: zero-page read / zero-fill write.\n")
        w("| format | zero-page read | ns/page | zero-fill write | ratio |")
        w("|---|---:|---:|---:|---:|")
        for fmt in FORMATS:
            r = results.get(("fault", f"ours-{fmt}", "zero-page-read-64"))
            fill = results.get(("fault", f"ours-{fmt}", "first-touch-64"))
            if r and fill:
                w(f"| {fmt} | {fmt_time(r['median_ns'])} | {r['median_ns'] / 64:.1f} | "
                  f"{fmt_time(fill['median_ns'])} | {r['median_ns'] / fill['median_ns']:.2f}x |")
        w("")
    w("### Shootdown rounds per call (counter deltas of one checked run)\n")
    w("| case | rounds | IPIs | page invalidations | full invalidations | frames freed |")
    w("|---|---:|---:|---:|---:|---:|")
    for key in sorted(k for k in extra if k.startswith("counters/")):
        c = extra[key]
        w(f"| {key[len('counters/'):]} | {c['shootdowns']} | {c['ipis']} | {c['page_invalidations']} | "
          f"{c['full_invalidations']} | {c['frames_freed']} |")
    w("")
    w("### Memory (heap bytes, counting global allocator)\n")
    w("| VMO | committed pages | heap requested | B/page | malloc-usable | B/page | page_list_heap_bytes() | B/page |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(k for k in extra if k.startswith("memory/vmo/")):
        m = extra[key]
        w(f"| {key.split('/')[-1]} | {m['committed_pages']} | {m['heap_requested']} | {m['requested_per_page']:.2f} | "
          f"{m['heap_usable']} | {m['usable_per_page']:.2f} | {m['page_list_heap_bytes']} | {m['page_list_per_page']:.2f} |")
    if "memory/vmo_object" in extra:
        m = extra["memory/vmo_object"]
        w(f"\nA VMO object with its handle, nothing committed: {m['heap_requested']} B requested, "
          f"{m['heap_usable']} B usable.")
    for key in sorted(k for k in extra if k.startswith("memory/mapping/")):
        m = extra[key]
        w(f"Per mapping ({key.split('/')[-1]} mapping(s)): {m['per_mapping_requested']:.1f} B requested, "
          f"{m['per_mapping_usable']:.1f} B usable.")
    w("")
    return "\n".join(out)


def targets(results, extra):
    out = []
    w = out.append
    w("### Targets\n")
    w("| target | format | measured | met |")
    w("|---|---|---:|---|")
    gib = "262144"
    madvise = results.get(("peers", "madvise", gib))
    floor = results.get(("peers", "floor", gib))
    crate = results.get(("peers", "x86_64-crate", gib))
    for fmt in FORMATS:
        r = results.get(("full", f"ours-{fmt}", gib))
        if not r:
            continue
        ns = r["median_ns"] / r["pages"]
        w(f"| 1 GiB: at most 5 ns/page | {fmt} | {ns:.2f} ns/page | {'yes' if ns <= 5 else 'NO'} |")
        if madvise:
            x = madvise["median_ns"] / r["median_ns"]
            w(f"| 1 GiB: at least 40x madvise's pages/s | {fmt} | {x:.1f}x | {'yes' if x >= 40 else 'NO'} |")
        if floor:
            x = r["median_ns"] / floor["median_ns"]
            w(f"| 1 GiB: within 5x the floor | {fmt} | {x:.1f}x the floor's time | {'yes' if x <= 5 else 'NO'} |")
        if crate:
            x = crate["median_ns"] / r["median_ns"]
            w(f"| 1 GiB: at least 3x the x86_64 crate | {fmt} | {x:.2f}x | {'yes' if x >= 3 else 'NO'} |")
        e = results.get(("sparse", f"ours-{fmt}", "empty"))
        if e:
            w(f"| 1 GiB, nothing committed: under 2 µs | {fmt} | {fmt_time(e['median_ns'])} | "
              f"{'yes' if e['median_ns'] < 2000 else 'NO'} |")
    for key in sorted(k for k in extra if k.startswith("memory/vmo/")):
        m = extra[key]
        w(f"| at most 8 heap B per committed page ({key.split('/')[-1]}) | - | "
          f"{m['requested_per_page']:.2f} B ({m['usable_per_page']:.2f} usable) | "
          f"{'yes' if m['usable_per_page'] <= 8 else 'NO'} |")
    rounds = [extra[k]["shootdowns"] for k in extra if k.startswith("counters/")]
    if rounds:
        w(f"| one shootdown round per call | all | {min(rounds)}..{max(rounds)} rounds "
          f"(0 only when nothing was committed) | {'yes' if max(rounds) <= 1 else 'NO'} |")
    w("")
    return "\n".join(out)


def children_tables(results, children):
    """The snapshot-children cases (benches/children.rs), each against its same-run peer."""
    out = []
    w = out.append
    small = results.get(("snapshot", "ours", "close-4KiB"))
    large = results.get(("snapshot", "ours", "close-2MiB"))
    if small and large:
        x = large["median_ns"] / small["median_ns"]
        w("### Snapshot children: snapshot+close\n")
        w("A snapshot child of a fully committed, unmapped VMO, and its close, both timed. Ratio: "
          "2 MiB / 4 KiB (target: at most 2).\n")
        w("| case | median | ratio to 4 KiB | target met |")
        w("|---|---:|---:|---|")
        w(f"| close-4KiB | {fmt_time(small['median_ns'])} | 1.00x | |")
        w(f"| close-2MiB | {fmt_time(large['median_ns'])} | {x:.2f}x | {'yes' if x <= 2 else 'NO'} |")
        w("")
    rows = []
    for fmt in FORMATS:
        cow = results.get(("fault", f"ours-{fmt}", "cow-write-64"))
        fill = results.get(("fault", f"ours-{fmt}", "zero-fill-write-64"))
        prot = results.get(("fault", f"ours-{fmt}", "cow-write-protected-64"))
        if cow and fill:
            p = (f"{fmt_time(prot['median_ns'])} | {prot['median_ns'] / 64:.1f} | "
                 f"{prot['median_ns'] / fill['median_ns']:.2f}x") if prot else "- | - | -"
            rows.append(f"| {fmt} | {fmt_time(cow['median_ns'])} | {cow['median_ns'] / 64:.1f} | "
                        f"{fmt_time(fill['median_ns'])} | {fill['median_ns'] / 64:.1f} | "
                        f"{cow['median_ns'] / fill['median_ns']:.2f}x | {p} |")
    if rows:
        w("### Snapshot children: copy-on-write faults against zero-fill faults\n")
        w("64 write faults through `AddressSpace::page_fault`: `cow-write`, a fresh child's first "
          "write to pages it shares (copy, map); `zero-fill-write`, a plain VMO's first write (zero, "
          "map); `cow-write-protected`, the parent's write to its own write-protected mapping (copy, "
          "clear the read-only entry in a round, fault again to map the copy). Ratios: over "
          "zero-fill-write.\n")
        w("| format | cow-write | ns/page | zero-fill-write | ns/page | cow / zero-fill | "
          "cow-write-protected | ns/page | protected / zero-fill |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        out.extend(rows)
        w("")
    rows = []
    for fmt in FORMATS:
        snap = results.get(("snapshot", f"ours-{fmt}", "64MiB-4spaces"))
        again = results.get(("snapshot", f"ours-{fmt}", "64MiB-4spaces-again"))
        prot = results.get(("snapshot", f"ours-{fmt}", "protect-64MiB-4spaces"))
        if not snap:
            continue
        c = lambda case: children.get(f"counters/snapshot/ours-{fmt}/{case}", {})
        rounds = lambda case: f"{c(case).get('shootdowns', '-')} / {c(case).get('ipis', '-')}"
        ratio = lambda r: f"{r['median_ns'] / prot['median_ns']:.2f}x" if r and prot else "-"
        cell = lambda r: fmt_time(r["median_ns"]) if r else "-"
        rows.append(f"| {fmt} | {cell(snap)} | {rounds('64MiB-4spaces')} | {ratio(snap)} | "
                    f"{cell(again)} | {rounds('64MiB-4spaces-again')} | {ratio(again)} | "
                    f"{cell(prot)} | {rounds('protect-64MiB-4spaces')} |")
    if rows:
        w("### Snapshot children: a 64 MiB VMO mapped writable in 4 address spaces on 4 CPUs\n")
        w("The snapshot write-protects the 4 mappings (16384 entries each, every page in every "
          "CPU's TLB); the peer makes the same 4 mappings read-only with `zx_vmar_protect`, one "
          "call (and one round) per mapping. `again`: the VMO's previous snapshot closed and every "
          "page taken back first. Ratios: over the peer (below 1: the snapshot is faster).\n")
        w("| format | snapshot | rounds / IPIs | vs protect | snapshot again | rounds / IPIs | "
          "vs protect | protect x4 | rounds / IPIs |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        out.extend(rows)
        w("")
    return "\n".join(out)


def svg(results, path):
    series = [
        ("ours-x86_64", "ours, x86_64 format", "#1f77b4", ""),
        ("ours-aarch64", "ours, aarch64 format", "#2ca02c", "6,3"),
        ("x86_64-crate", "x86_64 crate OffsetPageTable", "#ff7f0e", ""),
        ("madvise", "Linux madvise(MADV_DONTNEED)", "#d62728", ""),
        ("floor", "floor: clear entry + push frame", "#7f7f7f", "2,3"),
    ]
    data = []
    for func, label, color, dash in series:
        pts = [(p, rate(r)) for p, r in curve(results, func)]
        if pts:
            data.append((label, color, dash, pts))
    if not data:
        return
    xs = [p for _, _, _, pts in data for p, _ in pts]
    ys = [y for _, _, _, pts in data for _, y in pts]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    width, height = 760, 470
    left, right, top, bottom = 80, 250, 40, 60
    pw, ph = width - left - right, height - top - bottom
    sx = lambda x: left + (math.log10(x) - x0) / (x1 - x0 or 1) * pw
    sy = lambda y: top + ph - (math.log10(y) - y0) / (y1 - y0 or 1) * ph
    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">')
    o.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    o.append(f'<text x="{left}" y="22" font-size="15">Decommit throughput: pages per second '
             f'against range size (log-log, medians)</text>')
    for e in range(y0, y1 + 1):
        y = sy(10 ** e)
        o.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
    last_label = -1e9
    for x in sorted(set(xs)):
        px = sx(x)
        o.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ph}" stroke="#eee"/>')
        if px - last_label >= 14:  # 32 and 33 would overlap
            o.append(f'<text x="{px:.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="10">{x}</text>')
            last_label = px
    o.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    o.append(f'<text x="{left + pw / 2}" y="{height - 18}" text-anchor="middle">pages per call '
             f'(4 KiB pages; 262144 = 1 GiB)</text>')
    o.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
             f'transform="rotate(-90 18 {top + ph / 2})">pages per second</text>')
    for i, (label, color, dash, pts) in enumerate(data):
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        o.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
        for x, y in pts:
            o.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        ly = top + 14 + i * 20
        o.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 40}" y2="{ly}" '
                 f'stroke="{color}" stroke-width="2"{dash_attr}/>')
        o.append(f'<text x="{left + pw + 46}" y="{ly + 4}">{label}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"))
    parser.add_argument("--svg", default="BENCHMARKS.svg")
    args = parser.parse_args()
    results, extra, children = load(args.criterion)
    if not results:
        sys.exit(f"no criterion results under {args.criterion}: run cargo bench --bench decommit first")
    print(targets(results, extra))
    print(tables(results, extra))
    section = children_tables(results, children)
    if section:
        print(section)
    svg(results, args.svg)
    print(f"(plot written to {args.svg})")


if __name__ == "__main__":
    main()
