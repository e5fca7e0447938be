#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The heap probes' per-call cost, in-process: median ns per malloc+free pair.

Runs the two disabled benches of probe_tests (tests/probe/inprocess_test.cpp:
DISABLED_FastPathCost and DISABLED_FastPathCostWithDistinctPointers), each in a process of
its own that patches its own libc with the real probe image, REPS times, and prints the
median of every figure they report ("bench:" lines; thread CPU time per malloc+free pair):

  pair      malloc(32)+free of one block, 2M times: unpatched, patched but disabled,
            patched at the default 512 KiB rate (the fast path), and at rate 1 (every call
            recorded with a 16 KiB stack copy: fresh ring pages, steady state, and with the
            thread's stack bounds registered so the copy is a memcpy)
  distinct  100k live malloc(48) then 100k frees: the free path's pointer filter

The fast path's cost is rate512k - unpatched. A time is a bench figure, never a test
assertion: see bench/HEAP.md for the results and the machine.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

LINE = re.compile(r"^bench: (\w+) (.*)$")


def run_once(probe_tests, test):
    out = subprocess.run(
        [probe_tests, "--gtest_also_run_disabled_tests", f"--gtest_filter=ProbeInProcess.{test}"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "DEBUGINFOD_URLS": ""})
    if out.returncode != 0 or "[  PASSED  ] 1 test" not in out.stdout:
        sys.exit(f"{test} failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    figures = {}
    for line in out.stdout.splitlines():
        m = LINE.match(line)
        if m:
            for kv in m.group(2).split():
                key, value = kv.split("=")
                figures[f"{m.group(1)}.{key}"] = float(value)
    if not figures:
        sys.exit(f"{test} printed no bench: line:\n{out.stdout}")
    return figures


def main():
    build = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe-tests", default=os.path.join(build, "tests", "probe", "probe_tests"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    runs = {}
    for rep in range(args.reps):
        for test in ("DISABLED_FastPathCost", "DISABLED_FastPathCostWithDistinctPointers"):
            for key, value in run_once(args.probe_tests, test).items():
                runs.setdefault(key, []).append(value)
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    load = os.getloadavg()
    print(f"ns per malloc+free pair (thread CPU time), medians of {args.reps}; "
          f"load average {load[0]:.2f}")
    print("| figure | median | min | max |")
    print("|---|---:|---:|---:|")
    for key, values in runs.items():
        print(f"| {key} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    for group in ("pair", "distinct"):
        # Per run (the two figures of one run share its machine state), then the median.
        extra = [f - u for f, u in zip(runs[f"{group}.rate512k"], runs[f"{group}.unpatched"])]
        print(f"{group}: the fast path (512 KiB rate) adds {statistics.median(extra):+.1f} ns "
              f"per pair (median of {len(extra)}; min {min(extra):+.1f}, max {max(extra):+.1f})")


if __name__ == "__main__":
    main()
