#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The cost of following a process tree: `profctl run` (children followed, the default),
`profctl run --no-children` and `perf record -g` (which follows children too) on workloads
made of processes.

Run by hand (not a test); see bench/TREE.md. Python 3 standard library only.

Workloads (each a `sh -c` script that times itself with `date +%s%N` around its work, so
tool start-up and the writing of profiles are not in the number):

  forks     300 x fork+exec of /bin/true from a shell loop (process creation at full speed)
  pipeline  seq 1 1000000 | sort -R | md5sum (the CPU is in the children)

Configs: base (no tool), profctl (run, children followed), profctl-nochildren, perf
(`perf record -g -F 99`). Every repetition runs every config once, in an order rotated from
one repetition to the next; ratios are to the same repetition's base; the table gives medians.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

WORKLOADS = {
    "forks": "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done",
    "pipeline": "seq 1 1000000 | sort -R | md5sum >/dev/null",
}
CONFIGS = ["base", "profctl", "profctl-nochildren", "perf"]
ELAPSED = re.compile(r"^elapsed_ns (\d+)$", re.M)


def script(work):
    return f"s=$(date +%s%N); {work}; e=$(date +%s%N); echo elapsed_ns $((e-s)) >&2"


def run(args, cfg, workload, workdir):
    cmd = ["/bin/sh", "-c", script(WORKLOADS[workload])]
    out = os.path.join(workdir, f"{cfg}-{workload}")
    if cfg == "base":
        argv = cmd
    elif cfg.startswith("profctl"):
        exe = args.baseline if cfg == "profctl-baseline" else args.profctl
        argv = [exe, "run", "--profiles", "cpu,wall", "-o", out, "--format", "json"]
        if cfg == "profctl-nochildren":
            argv.append("--no-children")
        argv += ["--"] + cmd
    else:
        argv = ["perf", "record", "-q", "-g", "-F", "99", "-o", out + ".perf.data", "--"] + cmd
    env = dict(os.environ, LC_ALL="C")
    env.pop("DEBUGINFOD_URLS", None)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                       timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{cfg}/{workload} exited {p.returncode}: {p.stderr.strip()[-400:]!r}")
    m = ELAPSED.search(p.stderr)
    if not m:
        raise RuntimeError(f"{cfg}/{workload}: no elapsed line: {p.stderr[-300:]!r}")
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profctl", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--baseline", help="another profctl (an older commit), children followed, "
                    "run in the same rounds as column profctl-baseline")
    args = ap.parse_args()
    configs = [c for c in CONFIGS if c != "perf" or shutil.which("perf")]
    if args.baseline:
        configs.insert(1, "profctl-baseline")
    if "perf" not in configs:
        print("perf not found: its column is left out", file=sys.stderr)
    results = {(c, w): [] for c in configs for w in WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="tree_bench.") as workdir:
        for rep in range(args.reps):
            order = configs[rep % len(configs):] + configs[:rep % len(configs)]
            for workload in WORKLOADS:
                for cfg in order:
                    ns = run(args, cfg, workload, workdir)
                    results[(cfg, workload)].append(ns)
                    print(f"rep {rep + 1} {workload} {cfg}: {ns / 1e6:.0f} ms", file=sys.stderr)
    lines = ["| workload | " + " | ".join(configs) + " |",
             "|---|" + "---:|" * len(configs)]
    for workload in WORKLOADS:
        base = results[("base", workload)]
        cells = []
        for cfg in configs:
            ms = statistics.median(results[(cfg, workload)]) / 1e6
            if cfg == "base":
                cells.append(f"{ms:.0f} ms")
            else:
                ratios = [a / b for a, b in zip(results[(cfg, workload)], base)]
                cells.append(f"{ms:.0f} ms ({statistics.median(ratios):.2f}x)")
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
