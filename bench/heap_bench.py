#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The cost to the target of the heap profile: profctl vs heaptrack.

Run by hand (not a test); see bench/HEAP.md. Python 3 standard library only.

Runs bench/heap_bench_target (T threads x N iterations of malloc of 16..512 bytes + free
of a random earlier allocation, ~L live per thread) under every config below, and reads
the workload's own elapsed time (CLOCK_MONOTONIC around the workload only, printed by the
target), so start-up, loading, attaching and writing the profile are not in it:

  base          TARGET                                              (unprofiled)
  run           profctl run --profiles heap -- TARGET               (default --mem-rate 512K)
  run-rate1     profctl run --profiles heap --mem-rate 1 -- TARGET  (every call recorded)
  run-rate1-2K  ... --mem-rate 1 --probe-stack-bytes 2K             (smaller stack copies)
  attach        TARGET --wait; profctl attach PID --profiles heap   (default rate)
  heaptrack     heaptrack TARGET                                    (LD_PRELOAD at launch)
  heaptrack-p   TARGET --wait; heaptrack -p PID                     (gdb injection)

For the attach configs the target prints "ready" and waits on stdin; it is told to start
once the tool reports its probes installed ("heap probes installed" in profctl's -v log,
"injection finished" from heaptrack) and --settle seconds have passed.

Every repetition runs every config once, in an order rotated from one repetition to the
next; ratios are taken to the same repetition's unprofiled run, and the table gives
medians over repetitions. For the rate-1 configs it also gives the cost per recorded event
((elapsed - unprofiled elapsed) / records profctl read, allocations + frees), and profctl's
counters (records read, dropped because the ring was full).
"""

import argparse
import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ELAPSED = re.compile(r"^elapsed_ns (\d+) mallocs (\d+) frees (\d+) threads (\d+)", re.M)
# profctl[probe] debug: heap: 39656 records read (39656 written by the target), 764353
# dropped (ring full), ...
RECORDS = re.compile(r"(?:heap|probes): (\d+) records read \((\d+) written by the target\), (\d+) dropped "
                     r"\(ring full\)")
HT_ALLOCS = re.compile(r"allocations:\s+(\d+)")

CONFIGS = ["base", "run", "run-rate1", "run-rate1-2K", "attach", "heaptrack", "heaptrack-p"]
DESC = {
    "base": "unprofiled",
    "run": "`profctl run --profiles heap` (rate 512K)",
    "run-rate1": "`profctl run --profiles heap --mem-rate 1`",
    "run-rate1-2K": "`profctl run --profiles heap --mem-rate 1 --probe-stack-bytes 2K`",
    "attach": "`profctl attach PID --profiles heap` (rate 512K)",
    "heaptrack": "`heaptrack TARGET`",
    "heaptrack-p": "`heaptrack -p PID`",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def tool_env():
    env = dict(os.environ, LC_ALL="C")
    env.pop("DEBUGINFOD_URLS", None)  # gdb (heaptrack -p) and profctl: no network
    return env


def parse_elapsed(text, what):
    m = ELAPSED.search(text)
    if not m:
        raise RuntimeError(f"{what}: no 'elapsed_ns' line in the target's output: "
                           f"{text.strip()[-400:]!r}")
    return {"elapsed_ns": int(m.group(1)), "mallocs": int(m.group(2)), "frees": int(m.group(3))}


def parse_profctl(err, outdir, res):
    m = RECORDS.search(err)
    if not m:
        raise RuntimeError(f"no 'records read' line in profctl's stderr: {err.strip()[-400:]!r}")
    res["records"], res["written"], res["ring_dropped"] = (int(g) for g in m.groups())
    try:
        with open(os.path.join(outdir, "capture.json")) as f:
            cap = json.load(f)
        res["counters"] = cap["profiles"]["heap"].get("counters", {})
    except (OSError, KeyError, ValueError) as e:
        raise RuntimeError(f"capture.json: {e}")


def kill_by_pid(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # by pid: a process we started
    proc.wait()


def run_launch(args, cfg, workdir):
    """base, run*, heaptrack: the tool starts the target; the target prints its time."""
    outdir = os.path.join(workdir, cfg)
    os.makedirs(outdir, exist_ok=True)
    target = [args.target] + args.target_args
    if cfg == "base":
        argv = target
    elif cfg.startswith("run"):
        argv = [args.profctl, "run", "--profiles", "heap", "-o", outdir, "-v"]
        if cfg.startswith("run-rate1"):
            argv += ["--mem-rate", "1"]
        if cfg.endswith("-2K"):
            argv += ["--probe-stack-bytes", "2K"]
        argv += ["--"] + target
    elif cfg == "heaptrack":
        argv = [args.heaptrack, "-o", os.path.join(outdir, "ht")] + target
    else:
        raise ValueError(cfg)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=tool_env(), timeout=args.timeout, cwd=outdir)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cfg} exited {p.returncode}: {p.stderr.strip()[-400:]!r}")
    res = parse_elapsed(p.stdout, cfg)
    res["wall_s"] = wall
    if cfg.startswith("run"):
        parse_profctl(p.stderr, outdir, res)
    elif cfg == "heaptrack":
        m = HT_ALLOCS.search(p.stdout + p.stderr)
        res["allocs"] = int(m.group(1)) if m else 0
    return res


class LineReader:
    """Collects a pipe's lines in a thread; wait_for(substring) blocks until one matches."""

    def __init__(self, pipe):
        self.lines, self.cond, self.done = [], threading.Condition(), False
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe):
        for line in pipe:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait_for(self, needle, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(needle in l for l in self.lines):
                left = deadline - time.monotonic()
                if self.done or left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def text(self, timeout=60):
        self.thread.join(timeout)
        with self.cond:
            return "".join(self.lines)


def run_attach(args, cfg, workdir):
    """attach, heaptrack-p: the target waits on stdin until the tool has attached."""
    outdir = os.path.join(workdir, cfg)
    os.makedirs(outdir, exist_ok=True)
    target = subprocess.Popen([args.target] + args.target_args + ["--wait"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              bufsize=1, cwd=outdir)
    tool = None
    try:
        ready, _, _ = select.select([target.stdout], [], [], 30)
        line = target.stdout.readline().strip() if ready else ""
        if line != "ready":
            raise RuntimeError(f"target: expected 'ready', got {line!r}")
        if cfg == "attach":
            argv = [args.profctl, "attach", str(target.pid), "--profiles", "heap", "-o", outdir,
                    "-v"]
            needle, stream = "heap probes installed", "stderr"
        else:
            argv = [args.heaptrack, "-p", str(target.pid), "-o", os.path.join(outdir, "ht")]
            needle, stream = "injection finished", "stdout"
        t0 = time.monotonic()
        tool = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=tool_env(), cwd=outdir)
        out, err = LineReader(tool.stdout), LineReader(tool.stderr)
        watched = err if stream == "stderr" else out
        if not watched.wait_for(needle, args.timeout):
            raise RuntimeError(f"{cfg}: no {needle!r} (exit {tool.poll()}): "
                               f"{(out.text(1) + err.text(1)).strip()[-400:]!r}")
        attach_s = time.monotonic() - t0
        time.sleep(args.settle)
        target.stdin.write("go\n")
        target.stdin.flush()
        ready, _, _ = select.select([target.stdout], [], [], args.timeout)
        tout = target.stdout.readline() if ready else ""
        res = parse_elapsed(tout, cfg)
        target.wait(timeout=args.timeout)
        rc = tool.wait(timeout=args.timeout)
        wall = time.monotonic() - t0
        o, e = out.text(), err.text()
        # profctl attach: 3 = the target went away during the capture (here: it finished).
        if rc not in ((0, 3) if cfg == "attach" else (0,)):
            raise RuntimeError(f"{cfg} exited {rc}: {(o + e).strip()[-400:]!r}")
        res["wall_s"] = wall
        res["attach_s"] = attach_s
        if cfg == "attach":
            parse_profctl(e, outdir, res)
        else:
            m = HT_ALLOCS.search(o + e)
            res["allocs"] = int(m.group(1)) if m else 0
        return res
    finally:
        if tool is not None:
            kill_by_pid(tool)
        kill_by_pid(target)


def run_one(args, cfg):
    workdir = tempfile.mkdtemp(prefix="heap_bench.")
    try:
        if cfg in ("attach", "heaptrack-p"):
            return run_attach(args, cfg, workdir)
        return run_launch(args, cfg, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def load1():
    return float(loadavg().split()[0])


def wait_for_quiet(max_load, wait_s):
    deadline = time.monotonic() + wait_s
    while load1() >= max_load and time.monotonic() < deadline:
        log(f"load average {load1():.2f} >= {max_load}: waiting (up to {wait_s:.0f}s in all)")
        time.sleep(10)
    if load1() >= max_load:
        log(f"warning: load average still {load1():.2f}: the numbers below share the machine")
    return loadavg()


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def version_of(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profctl", required=True, help="path to the profctl binary")
    ap.add_argument("--target", help="heap_bench_target (default: bench/ in profctl's build "
                    "directory)")
    ap.add_argument("--heaptrack", default="heaptrack")
    ap.add_argument("--iters", type=int, default=1000000, help="iterations per thread")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--live", type=int, default=1000, help="live allocations per thread")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds between an attach completing and the workload starting")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per tool run")
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--load-wait", type=float, default=60,
                    help="seconds to wait for the load average to fall below --max-load")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()

    args.profctl = os.path.abspath(args.profctl)
    args.target = os.path.abspath(args.target or os.path.join(
        os.path.dirname(args.profctl), "bench", "heap_bench_target"))
    args.target_args = ["--iters", str(args.iters), "--threads", str(args.threads),
                        "--live", str(args.live)]
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c}")
    if "base" not in configs:
        configs.insert(0, "base")
    if any(c.startswith("heaptrack") for c in configs) and not shutil.which(args.heaptrack):
        ap.error(f"{args.heaptrack} not found (or leave it out with --configs)")

    profctl_version = version_of([args.profctl, "--version"])
    ht_version = version_of([args.heaptrack, "--version"]) if shutil.which(args.heaptrack) else "-"
    load_start = wait_for_quiet(args.max_load, args.load_wait)
    started = datetime.datetime.now().astimezone()

    # Warm-up (page cache, debug info, gdb's symbol reading): one run of each, not counted.
    failures = 0
    for cfg in configs:
        try:
            run_one(args, cfg)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log(f"  warm-up {cfg}: FAILED: {e}")
    results = {c: [] for c in configs}
    for rep in range(args.reps):
        k = rep % len(configs)
        order = configs[k:] + configs[:k]
        this = {}
        for cfg in order:
            try:
                r = run_one(args, cfg)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"  rep {rep + 1} {cfg}: FAILED: {e}")
                failures += 1
                continue
            this[cfg] = r
            extra = ""
            if "ring_dropped" in r:
                extra = f", {r['records']} records read, {r['ring_dropped']} dropped (ring full)"
            elif r.get("allocs"):
                extra = f", {r['allocs']} allocations recorded"
            log(f"  rep {rep + 1} {cfg}: {r['elapsed_ns'] / 1e6:.1f} ms"
                f" (wall {r['wall_s']:.2f} s){extra}")
        base = this.get("base")
        for cfg, r in this.items():
            if base is not None:
                r["ratio"] = r["elapsed_ns"] / base["elapsed_ns"]
                delta = r["elapsed_ns"] - base["elapsed_ns"]
                r["ns_per_call"] = delta / (r["mallocs"] + r["frees"])
                if r.get("records") and "ring_dropped" in r:
                    r["ns_per_event"] = delta / r["records"]
            results[cfg].append(r)
    load_end = loadavg()

    calls = (args.iters + args.live) * args.threads * 2
    lines = []
    lines.append(f"Measured {started:%Y-%m-%d %H:%M %Z}; {os.cpu_count()} CPUs "
                 f"({platform.processor() or platform.machine()}), kernel "
                 f"{platform.release()}; load average (1/5/15 min) {load_start} at start, "
                 f"{load_end} at end.")
    lines.append(f"profctl {profctl_version} ({args.profctl}); {ht_version}. Workload: "
                 f"{args.threads} threads x {args.iters} iterations, {args.live} live per "
                 f"thread: {calls} malloc + free calls; {args.reps} repetitions.")
    lines.append("")
    lines.append("| config | runs | workload ms (min–max) | vs unprofiled | wall s (tool "
                 "start to exit) | records read | ring-full drops | ns per recorded event "
                 "| ns per call |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in configs:
        rs = results[cfg]
        if not rs:
            lines.append(f"| {DESC[cfg]} | 0 |" + " – |" * 7)
            continue
        ms = med([r["elapsed_ns"] for r in rs]) / 1e6
        lo = min(r["elapsed_ns"] for r in rs) / 1e6
        hi = max(r["elapsed_ns"] for r in rs) / 1e6
        ratio = med([r["ratio"] for r in rs if "ratio" in r])
        wall = med([r["wall_s"] for r in rs])
        recs = med([r["records"] for r in rs]) if any("records" in r for r in rs) else None
        allocs = med([r["allocs"] for r in rs]) if any(r.get("allocs") for r in rs) else None
        drops = med([r["ring_dropped"] for r in rs]) if any("ring_dropped" in r for r in rs) \
            else None
        per_ev = [r["ns_per_event"] for r in rs if "ns_per_event" in r]
        per_call = [r["ns_per_call"] for r in rs if "ns_per_call" in r]
        show_cost = cfg.startswith("run-rate1")
        lines.append(
            f"| {DESC[cfg]} | {len(rs)} | {ms:.1f} ({lo:.1f}–{hi:.1f}) | "
            + ("1" if cfg == "base" else f"{ratio:.2f}x") + f" | {wall:.2f} | "
            + (f"{recs:.0f}" if recs is not None else
               f"{allocs:.0f} allocs" if allocs is not None else "–") + " | "
            + (f"{drops:.0f}" if drops is not None else "–") + " | "
            + (f"{med(per_ev):.0f}" if show_cost and per_ev else "–") + " | "
            + (f"{med(per_call):.0f}" if cfg != "base" and per_call else "–") + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
