#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""CPU truth on an oversubscribed machine: profctl's cpu profile and perf's, on the same run,
against the target's own measure.

Run by hand (not a test); see bench/CPU_TRUTH.md. Python 3 standard library and perf.

The target (tests/targets/sampling/sampling_truth work N) runs two threads over three
functions that take about 50/30/20 % of their CPU and measures each function's CPU time
with CLOCK_THREAD_CPUTIME_ID around every call; 16 competitors (sampling_truth hog: ~100
us bursts, 50 us sleeps) keep the 2 vCPUs oversubscribed. Per repetition:

  timer+perf  profctl attach --profiles cpu -d D (the default: CPU-timer samples) and
              perf record -F 99 -g -p PID -- sleep D, both at once, on the same window
  ticks       PROFCTL_CPU_TICKS=1 profctl attach ... (the ticker-driven samples profctl
              used before; deferred when the thread was waiting for a CPU)

Each config's window gets its own truth (the target's counters read just before and after).
Shares are of the three functions' samples; "clock" is the share of all samples in the
clock reads around the calls (stack top in clock_gettime, outside the three functions),
whose truth is the workers' CPU outside the functions. The table gives medians over the
repetitions, and the largest error of each tool.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

FUNCS = ["work_fifty", "work_thirty", "work_twenty"]


def classify(frames, weight, acc):
    for i, f in enumerate(FUNCS):
        if any(f in x for x in frames):
            acc[i] += weight
            return
    if any("clock_gettime" in x for x in frames[:3]):
        acc[3] += weight
    else:
        acc[4] += weight


def shares(acc):
    funcs = sum(acc[:3]) or 1
    total = sum(acc) or 1
    return [100 * a / funcs for a in acc[:3]] + [100 * acc[3] / total]


def profctl_shares(outdir):
    cap = json.load(open(os.path.join(outdir, "capture.json")))
    p = cap["profiles"]["cpu"]
    ci = [i for i, t in enumerate(p["sample_types"]) if t["type"] == "cpu"][0]
    acc = [0.0] * 5
    for s in p["samples"]:
        classify([f.get("function") or "" for f in s["frames"]], s["values"][ci], acc)
    si = [i for i, t in enumerate(p["sample_types"]) if t["type"] == "samples"][0]
    return shares(acc), sum(s["values"][si] for s in p["samples"])


def perf_shares(data):
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True,
                         text=True).stdout
    acc = [0.0] * 5
    n = 0
    for block in out.split("\n\n"):
        frames = [ln.split(None, 1)[1] if len(ln.split(None, 1)) > 1 else ""
                  for ln in block.strip().splitlines()]
        if frames:
            classify(frames, 1.0, acc)
            n += 1
    return shares(acc), n


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.path.join(here, "..", "build")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profctl", default=os.path.join(build, "profctl"))
    ap.add_argument("--target",
                    default=os.path.join(build, "tests", "targets", "sampling", "sampling_truth"))
    ap.add_argument("--hogs", type=int, default=16)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--unit", default="100000")
    args = ap.parse_args()
    hogs = [subprocess.Popen([args.target, "hog"]) for _ in range(args.hogs)]
    tg = subprocess.Popen([args.target, "work", args.unit], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    results = {"truth": [], "profctl": [], "perf": [], "truth-ticks": [], "ticks": []}
    counts = {"profctl": [], "perf": [], "ticks": []}

    def truth():
        tg.stdin.write("truth\n")
        tg.stdin.flush()
        # fifty, thirty, twenty (the functions' CPU); the workers' whole CPU (cpu=) is not used
        return [int(w.split("=")[1]) for w in tg.stdout.readline().split()][:3]

    def cpu():
        total = 0
        for t in os.listdir(f"/proc/{tg.pid}/task"):
            try:
                if open(f"/proc/{tg.pid}/task/{t}/comm").read().startswith("worker"):
                    total += int(open(f"/proc/{tg.pid}/task/{t}/schedstat").read().split()[0])
            except OSError:
                pass
        return total

    def window_truth(t0, t1, c0, c1):
        d = [b - a for a, b in zip(t0, t1)]
        s = sum(d) or 1
        return [100 * x / s for x in d] + [100 * (1 - s / max(1, c1 - c0))]

    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)
    try:
        assert tg.stdout.readline().startswith("ready")
        time.sleep(1)
        with tempfile.TemporaryDirectory(prefix="profctl-cpu-truth-") as work:
            for rep in range(args.reps):
                out = os.path.join(work, f"timer{rep}")
                data = os.path.join(work, f"perf{rep}.data")
                c0, t0 = cpu(), truth()
                perf = subprocess.Popen(["perf", "record", "-q", "-F", "99", "-g", "-p",
                                         str(tg.pid), "-o", data, "--", "sleep",
                                         str(args.duration)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                subprocess.run([args.profctl, "attach", str(tg.pid), "--profiles", "cpu", "-d",
                                f"{args.duration}s", "-o", out, "--format", "json"], env=env,
                               check=True, capture_output=True)
                perf.wait()
                t1, c1 = truth(), cpu()
                results["truth"].append(window_truth(t0, t1, c0, c1))
                s, n = profctl_shares(out)
                results["profctl"].append(s)
                counts["profctl"].append(n)
                s, n = perf_shares(data)
                results["perf"].append(s)
                counts["perf"].append(n)
                out = os.path.join(work, f"ticks{rep}")
                c0, t0 = cpu(), truth()
                subprocess.run([args.profctl, "attach", str(tg.pid), "--profiles", "cpu", "-d",
                                f"{args.duration}s", "-o", out, "--format", "json"],
                               env=dict(env, PROFCTL_CPU_TICKS="1"), check=True,
                               capture_output=True)
                t1, c1 = truth(), cpu()
                results["truth-ticks"].append(window_truth(t0, t1, c0, c1))
                s, n = profctl_shares(out)
                results["ticks"].append(s)
                counts["ticks"].append(n)
                print(f"rep {rep + 1}: " + "; ".join(f"{k} {[round(x, 1) for x in v[-1]]}"
                                                     for k, v in results.items()),
                      file=sys.stderr, flush=True)
    finally:
        for p in hogs + [tg]:
            p.kill()
            p.wait()

    def med(key):
        return [statistics.median(r[i] for r in results[key]) for i in range(4)]

    def worst(key, truth_key):
        return max(abs(r[i] - t[i]) for r, t in zip(results[key], results[truth_key])
                   for i in range(4))

    print(f"target: sampling_truth work {args.unit} (2 threads, 50/30/20), {args.hogs} hogs, "
          f"{os.cpu_count()} CPUs, {args.duration} s windows, medians of {args.reps}\n")
    print("| | work_fifty | work_thirty | work_twenty | clock reads | largest error | samples |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = [("truth (the target's own measure)", "truth", None, None),
            ("profctl, CPU timer (default)", "profctl", "truth", "profctl"),
            ("`perf record -F 99 -g`, same window", "perf", "truth", "perf"),
            ("truth, ticks window", "truth-ticks", None, None),
            ("profctl, ticks (`PROFCTL_CPU_TICKS=1`)", "ticks", "truth-ticks", "ticks")]
    for label, key, tkey, ckey in rows:
        m = med(key)
        err = f"{worst(key, tkey):.1f} pts" if tkey else ""
        n = f"{statistics.median(counts[ckey]):.0f}" if ckey else ""
        print(f"| {label} | {m[0]:.1f} % | {m[1]:.1f} % | {m[2]:.1f} % | {m[3]:.1f} % | {err} "
              f"| {n} |")


if __name__ == "__main__":
    main()
