#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The cost to the target of the block and mutex profiles.

Run by hand (not a test); see bench/WAITS.md. Python 3 standard library only.

Runs bench/wait_bench_target (T threads x N iterations of an uncontended lock/unlock, and
every S-th iteration a contended lock held ~1 us; every 4S-th a 20 us timed condition
wait) under each config, and reads the workload's own elapsed time (CLOCK_MONOTONIC
around the workload only), so start-up and writing the profile are not in it:

  base        TARGET                                                  (unprofiled)
  waits       profctl run --profiles mutex,block -- TARGET            (defaults: block
              rate 10us, mutex fraction 1)
  waits-all   ... --block-rate 1 --mutex-fraction 1                   (every wait recorded)
  heap-waits  profctl run --profiles heap,mutex,block -- TARGET       (all three probes)

Every repetition runs every config once, in an order rotated from one repetition to the
next; ratios are to the same repetition's unprofiled run; the table gives medians. The
cost per recorded wait is (elapsed - unprofiled elapsed) / waits recorded (profctl's -v
counters), per thread of the workload (the threads run in parallel).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ELAPSED = re.compile(r"^elapsed_ns (\d+) locks (\d+) shared (\d+)", re.M)
WAITS = re.compile(r"waits (\d+) seen (\d+) recorded")
CONFIGS = ["base", "waits", "waits-all", "heap-waits"]


def run(args, cfg, workdir):
    target = [args.target, str(args.threads), str(args.iters), str(args.shared_every)]
    out = os.path.join(workdir, cfg)
    os.makedirs(out, exist_ok=True)
    if cfg == "base":
        argv = target
    else:
        profiles = "heap,mutex,block" if cfg == "heap-waits" else "mutex,block"
        argv = [args.profctl, "run", "--profiles", profiles, "-o", out, "-v"]
        if cfg == "waits-all":
            argv += ["--block-rate", "1", "--mutex-fraction", "1"]
        argv += ["--"] + target
    env = dict(os.environ, LC_ALL="C")
    env.pop("DEBUGINFOD_URLS", None)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                       timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{cfg} exited {p.returncode}: {p.stderr.strip()[-400:]!r}")
    m = ELAPSED.search(p.stdout)
    if not m:
        raise RuntimeError(f"{cfg}: no elapsed line: {p.stdout[-300:]!r}")
    res = {"elapsed_ns": int(m.group(1)), "locks": int(m.group(2)), "shared": int(m.group(3))}
    w = WAITS.search(p.stderr)
    res["seen"], res["recorded"] = (int(w.group(1)), int(w.group(2))) if w else (0, 0)
    return res


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profctl", default=os.path.join(here, "..", "build", "profctl"))
    ap.add_argument("--target",
                    default=os.path.join(here, "..", "build", "bench", "wait_bench_target"))
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--iters", type=int, default=2000000)
    ap.add_argument("--shared-every", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    results = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="profctl-wait-bench-") as work:
        for rep in range(args.reps):
            order = CONFIGS[rep % len(CONFIGS):] + CONFIGS[:rep % len(CONFIGS)]
            for cfg in order:
                results[cfg].append(run(args, cfg, work))
                print(f"rep {rep + 1} {cfg}: {results[cfg][-1]}", file=sys.stderr, flush=True)
    base = [r["elapsed_ns"] for r in results["base"]]
    print(f"workload: {args.threads} threads x {args.iters} uncontended lock/unlock, every "
          f"{args.shared_every}th a contended lock (~1 us held), every {4 * args.shared_every}th"
          f" a 20 us condition wait; {os.cpu_count()} CPUs; medians of {args.reps}\n")
    print("| config | workload elapsed | slowdown | waits timed | waits recorded | "
          "cost per recorded wait |")
    print("|---|---:|---:|---:|---:|---:|")
    for cfg in CONFIGS:
        rs = results[cfg]
        el = statistics.median(r["elapsed_ns"] for r in rs)
        ratio = statistics.median(r["elapsed_ns"] / b for r, b in zip(rs, base))
        seen = statistics.median(r["seen"] for r in rs)
        rec = statistics.median(r["recorded"] for r in rs)
        if cfg == "base" or rec == 0:
            per = "-"
        else:
            per = "%.1f us" % statistics.median(
                (r["elapsed_ns"] - b) * args.threads / max(1, r["recorded"]) / 1e3
                for r, b in zip(rs, base))
        print(f"| {cfg} | {el / 1e6:.0f} ms | {ratio:.2f}x | {seen:.0f} | {rec:.0f} | {per} |")


if __name__ == "__main__":
    main()
