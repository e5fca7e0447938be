#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The cost to the target of sampling with `profctl attach`.

Run by hand (not a test); see bench/SAMPLING.md. Python 3 standard library only.

For each shape (BUSY busy threads + IDLE blocked threads; default 8+0 and 8+56), starts
bench/sampling_bench_target BUSY IDLE and measures its throughput (loop iterations per
second, summed over the busy threads) over a window of W seconds:

  * baseline: no profctl;
  * at each rate (default 19, 99, 499 Hz): inside a
    `profctl attach PID -d Ds --rate HZ --profiles cpu,wall -o TMP -v` capture, the
    window starting once the target is traced (its TracerPid is set) and profctl has had
    --settle seconds to set up (read the modules) and begin sampling.

Every repetition runs every config once, in an order rotated from one repetition to the
next (drift in the machine's speed falls on all configs alike); the ratio to the baseline
is taken within a repetition, and the table gives medians over repetitions. Besides the
slowdown it reports profctl's own figures: pause per thread per sample (capture.json
.pause), snapshots per second and unwinding throughput (the -v debug line), dropped or
lost samples (capture.json .warnings), and the CPU profctl used during the window
(/proc/PROFCTL/task/*/stat: the sampling thread and the unwinding thread apart).
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
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

# "profctl[cli] debug: 198 ticks (99.0/s), 243 snapshots, 1143 reused, 0 signals re-delivered;
#  unwound 243 in 0.006s; pause (stop to resume) median 4us worst 57us; interrupt to stop ..."
DEBUG_LINE = re.compile(
    r"(\d+) ticks(?: \([0-9.]+/s\))?, (\d+) snapshots, (\d+) reused, (\d+) signals re-delivered; "
    r"unwound (\d+) in ([0-9.]+)s")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Target:
    """sampling_bench_target BUSY IDLE, spoken to through its stdin/stdout."""

    def __init__(self, path, busy, idle):
        self.proc = subprocess.Popen([path, str(busy), str(idle)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid = self.proc.pid
        line = self._readline(60)
        if line != "ready":
            raise RuntimeError(f"target: expected 'ready', got {line!r}")

    def _readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError("target: no answer within %ds" % timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"target exited (status {self.proc.poll()})")
        return line.strip()

    def count(self):
        """(total iterations, the target's CLOCK_MONOTONIC ns when it read them)."""
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        it, t = self._readline(60).split()
        return int(it), int(t)

    def tracer_pid(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)  # by pid: the process we started
        self.proc.wait()


def task_cpu_ticks(pid):
    """{tid: utime+stime in clock ticks} for every thread of pid (empty when gone)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        out[int(tid)] = int(fields[11]) + int(fields[12])
    return out


def process_cpu_ticks(pid):
    """utime+stime of the whole process (all its threads) in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def throughput(target, window_s):
    """{"thr": iterations per second, "cpus": CPU-seconds per second the target got}."""
    c0 = process_cpu_ticks(target.pid)
    i0, t0 = target.count()
    time.sleep(window_s)
    i1, t1 = target.count()
    c1 = process_cpu_ticks(target.pid)
    secs = (t1 - t0) / 1e9
    return {"thr": (i1 - i0) / secs, "cpus": (c1 - c0) / CLK_TCK / secs}


def run_baseline(target, window_s):
    return throughput(target, window_s)


def run_profctl(args, target, rate, trace=False):
    """One window inside a profctl capture at `rate` Hz. Returns a dict of figures."""
    duration = args.settle + args.window + args.tail
    outdir = tempfile.mkdtemp(prefix="sampling_bench.")
    argv = args.wrap.split() + [args.profctl, "attach", str(target.pid), "-d", f"{duration:g}s", "--rate",
            f"{rate:g}", "--profiles", args.profiles, "-o", outdir, "-v"]
    env = dict(os.environ, LC_ALL="C")
    env.pop("DEBUGINFOD_URLS", None)
    errf = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=errf, env=env)
    res = {"ok": False}
    try:
        deadline = time.monotonic() + 30
        while target.tracer_pid() != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("profctl did not attach")
            time.sleep(0.002)
        time.sleep(args.settle)
        cpu0 = task_cpu_ticks(proc.pid)
        if trace:
            perf, data = perf_trace(args.window)
        res.update(throughput(target, args.window))
        cpu1 = task_cpu_ticks(proc.pid)
        still_traced = target.tracer_pid() == proc.pid
        if trace:
            res["trace"] = parse_trace(perf_script(perf, data), proc.pid)
        rc = proc.wait(timeout=120 + duration)
        errf.seek(0)
        err = errf.read()
        if rc != 0:
            raise RuntimeError(f"profctl exited {rc}: {err.strip()[-500:]}")
        if not still_traced:
            raise RuntimeError("the window outlasted the capture (raise --tail)")
        m = DEBUG_LINE.search(err)
        if not m:
            raise RuntimeError(f"no debug line in profctl's stderr: {err.strip()[-500:]}")
        ticks, snaps, reused, _sig, unwound, unwind_s = m.groups()
        with open(os.path.join(outdir, "capture.json")) as f:
            cap = json.load(f)
        pause = cap.get("pause", {})
        warnings = cap.get("warnings", [])
        # The sampling loop runs on profctl's main thread (tid == pid); the others unwind.
        main_d = cpu1.get(proc.pid, 0) - cpu0.get(proc.pid, 0)
        other_d = sum(v - cpu0.get(t, 0) for t, v in cpu1.items() if t != proc.pid)
        res.update(
            ok=True,
            ticks=int(ticks),
            snapshots=int(snaps),
            reused=int(reused),
            unwound=int(unwound),
            unwind_s=float(unwind_s),
            duration=duration,
            pause_med_ns=int(pause.get("median_ns", 0)),
            pause_worst_ns=int(pause.get("worst_ns", 0)),
            pause_samples=int(pause.get("samples", 0)),
            dropped=sum(int(re.match(r"(\d+)", w).group(1)) for w in warnings
                        if "dropped" in w and re.match(r"\d+", w)),
            lost=sum(int(re.match(r"(\d+)", w).group(1)) for w in warnings
                     if "lost" in w and re.match(r"\d+", w)),
            warnings=warnings,
            cpu_main=main_d / CLK_TCK / args.window,
            cpu_other=other_d / CLK_TCK / args.window,
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # by pid: the process we started
            proc.wait()
        errf.close()
        shutil.rmtree(outdir, ignore_errors=True)
    return res


PTRACE_INTERRUPT = 0x4207
PTRACE_CONT = 7
SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.* next_pid=(\d+)")
PERF_LINE = re.compile(r"^\s*\S.*?\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def parse_trace(text, sampler):
    """Splits every per-thread pause of profctl's sampling thread (tid `sampler`) seen in
    `perf script` output into: a. interrupt -> the thread is on a CPU (it waits for a CPU
    it would have waited for anyway), b. on a CPU -> stopped, c. stopped -> the sampler's
    wait4 returns (the sampler's own wake-up latency), d. wait4 -> PTRACE_CONT returned
    (registers, stack copy, resume). b+c+d is what the target really loses."""
    oncpu, pending, recs = {}, {}, []
    for line in text.splitlines():
        m = PERF_LINE.match(line)
        if not m:
            continue
        tid, _cpu, t, ev, rest = int(m.group(1)), m.group(2), float(m.group(3)), m.group(4), \
            m.group(5)
        if ev == "sched:sched_switch":
            sm = SWITCH.search(rest)
            if not sm:
                continue
            prev, pstate, nxt = int(sm.group(1)), sm.group(2), int(sm.group(3))
            oncpu[prev], oncpu[nxt] = False, True
            if nxt in pending:
                pending[nxt].setdefault("on", t)
            if prev in pending and pstate.startswith("t"):
                pending[prev].setdefault("stopped", t)
            continue
        if tid != sampler:
            continue
        if ev == "raw_syscalls:sys_enter":
            nm = re.match(r"NR (\d+) \((\w+), (\w+)", rest)
            if not nm:
                continue
            nr, a0, a1 = int(nm.group(1)), int(nm.group(2), 16), int(nm.group(3), 16)
            if nr == 101 and a0 == PTRACE_INTERRUPT:
                pending[a1] = {"int": t}
                if oncpu.get(a1):
                    pending[a1]["on"] = t
            elif nr == 101 and a0 == PTRACE_CONT and a1 in pending:
                pending[a1]["cont_enter"] = t
        elif ev == "raw_syscalls:sys_exit":
            nm = re.match(r"NR (\d+) = (-?\d+)", rest)
            if not nm:
                continue
            nr, ret = int(nm.group(1)), int(nm.group(2))
            if nr == 61 and ret in pending:
                pending[ret]["waitret"] = t
            elif nr == 101:
                for k, d in list(pending.items()):
                    if "cont_enter" in d:
                        d["cont"] = t
                        recs.append(d)
                        del pending[k]
    full = [d for d in recs if all(k in d for k in ("int", "on", "stopped", "waitret", "cont"))]
    # A thread stopped while on a CPU is switched out at the stop; "on" is then its
    # interrupt time (it already had the CPU).
    return {
        "n": len(full),
        "a": [d["on"] - d["int"] for d in full],
        "b": [max(0.0, d["stopped"] - d["on"]) for d in full],
        "c": [max(0.0, d["waitret"] - d["stopped"]) for d in full],
        "d": [d["cont"] - d["waitret"] for d in full],
        "hold": [d["cont"] - d["stopped"] for d in full],
        "pause": [d["cont"] - d["int"] for d in full],
    }


def perf_trace(seconds):
    """Starts a system-wide perf recording of syscalls and scheduler switches."""
    data = tempfile.mktemp(prefix="sampling_bench.", suffix=".perf")
    proc = subprocess.Popen(
        ["perf", "record", "-q", "-a", "-o", data, "-e",
         "raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch",
         "--", "sleep", f"{seconds:g}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, data


def perf_script(proc, data):
    try:
        proc.wait(timeout=60)
        out = subprocess.run(["perf", "script", "-i", data, "-F", "tid,cpu,time,event,trace"],
                             capture_output=True, text=True, timeout=300).stdout
        # -F without comm: prepend a placeholder so that PERF_LINE's comm field matches.
        return "\n".join("x " + l for l in out.splitlines())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # by pid: the process we started
            proc.wait()
        try:
            os.unlink(data)
        except OSError:
            pass


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_for_quiet(max_load, wait_s):
    """Waits up to wait_s for the 1-minute load average to fall below max_load."""
    deadline = time.monotonic() + wait_s
    load = loadavg()
    while load >= max_load and time.monotonic() < deadline:
        log(f"load average {load:.2f} >= {max_load}: waiting (up to {wait_s:.0f}s in all)")
        time.sleep(15)
        load = loadavg()
    if load >= max_load:
        log(f"warning: load average still {load:.2f}: the numbers below share the machine")
    return load


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_us(ns):
    return f"{ns / 1000:.0f}" if ns >= 10000 else f"{ns / 1000:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profctl", required=True, help="path to the profctl binary")
    ap.add_argument("--target", help="sampling_bench_target (default: bench/ in profctl's "
                    "build directory)")
    ap.add_argument("--shapes", default="8x0,8x56", help="BUSYxIDLE,... (default 8x0,8x56)")
    ap.add_argument("--rates", default="19,99,499", help="Hz,... (default 19,99,499)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--window", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds between profctl attaching and the window (its set-up)")
    ap.add_argument("--tail", type=float, default=1.0,
                    help="seconds of capture left after the window")
    ap.add_argument("--profiles", default="cpu,wall")
    ap.add_argument("--wrap", default="",
                    help="a command that execs profctl, e.g. 'chrt -f 10' or 'nice -n -10' "
                    "(diagnosis: what profctl's own scheduling latency adds to the pause)")
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--load-wait", type=float, default=180,
                    help="seconds to wait for the load average to fall below --max-load")
    ap.add_argument("--trace", action="store_true",
                    help="also run one capture per rate under `perf record` and break the "
                    "pause down (needs perf and root)")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()

    args.profctl = os.path.abspath(args.profctl)
    target_path = args.target or os.path.join(os.path.dirname(args.profctl), "bench",
                                              "sampling_bench_target")
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    configs = [None] + rates  # None: baseline

    version = subprocess.run([args.profctl, "--version"], capture_output=True,
                             text=True).stdout.strip() or "?"
    load_start = wait_for_quiet(args.max_load, args.load_wait)
    started = datetime.datetime.now().astimezone()

    results = {}  # (shape, config) -> list of per-rep dicts (with "ratio")
    traces = {}  # (shape, rate) -> parse_trace() of one capture under perf
    failures = 0
    for shape in shapes:
        busy, idle = shape
        log(f"shape {busy} busy + {idle} idle")
        target = Target(target_path, busy, idle)
        try:
            # Warm-up: one baseline window and one short capture (page cache, debug info).
            run_baseline(target, 1.0)
            run_profctl(args, target, rates[0])
            for rep in range(args.reps):
                k = rep % len(configs)
                order = configs[k:] + configs[:k]
                this = {}
                for cfg in order:
                    if not target.alive():
                        raise RuntimeError("the target died")
                    try:
                        r = run_baseline(target, args.window) if cfg is None else \
                            run_profctl(args, target, cfg)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        log(f"  rep {rep + 1} {cfg or 'baseline'}: FAILED: {e}")
                        failures += 1
                        continue
                    this[cfg] = r
                    desc = "baseline" if cfg is None else f"{cfg:g} Hz"
                    extra = "" if cfg is None else (
                        f", pause median {fmt_us(r['pause_med_ns'])} us worst "
                        f"{fmt_us(r['pause_worst_ns'])} us, {r['snapshots']} snapshots, "
                        f"{r['ticks']} ticks, profctl cpu {100 * (r['cpu_main'] + r['cpu_other']):.1f}%")
                    log(f"  rep {rep + 1} {desc}: {r['thr'] / 1e6:.2f} M it/s on {r['cpus']:.2f} CPUs"
                        f"{extra}")
                base = this.get(None)
                for cfg, r in this.items():
                    if base is not None:
                        r["ratio"] = r["thr"] / base["thr"]
                        if r["cpus"] > 0 and base["cpus"] > 0:
                            r["eff"] = (r["thr"] / r["cpus"]) / (base["thr"] / base["cpus"])
                    results.setdefault((shape, cfg), []).append(r)
            # One more capture per rate under perf (not in the medians: perf costs too).
            for rate in rates if args.trace else []:
                try:
                    r = run_profctl(args, target, rate, trace=True)
                    traces[(shape, rate)] = r["trace"]
                    log(f"  traced {rate:g} Hz: {r['trace']['n']} pauses broken down")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log(f"  traced {rate:g} Hz: FAILED: {e}")
                    failures += 1
        finally:
            target.kill()
    load_end = loadavg()

    lines = []
    lines.append(f"Measured {started:%Y-%m-%d %H:%M %Z}; {os.cpu_count()} CPUs "
                 f"({platform.processor() or platform.machine()}), kernel {platform.release()}; "
                 f"load average {load_start:.2f} at start, {load_end:.2f} at end.")
    lines.append(f"{version} ({args.profctl}); {args.reps} repetitions, window "
                 f"{args.window:g} s, `--profiles {args.profiles}`, capture "
                 f"`-d {args.settle + args.window + args.tail:g}s`"
                 + (f", profctl run under `{args.wrap}`" if args.wrap else "") + ".")
    lines.append("")
    lines.append("| shape | rate | runs | throughput M it/s | vs baseline | slowdown "
                 "| target CPUs | per CPU-s vs baseline | pause median µs | pause worst µs | ticks/s | snapshots/s "
                 "| unwound/s | profctl CPU % (sampler + unwinder) | dropped / lost |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape in shapes:
        sname = f"{shape[0]} busy + {shape[1]} idle"
        for cfg in configs:
            rs = results.get((shape, cfg), [])
            if not rs:
                lines.append(f"| {sname} | {cfg or 'baseline'} | 0 |" + " – |" * 12)
                continue
            thr = med([r["thr"] for r in rs]) / 1e6
            cpus = med([r["cpus"] for r in rs])
            if cfg is None:
                lo = min(r["thr"] for r in rs) / 1e6
                hi = max(r["thr"] for r in rs) / 1e6
                lines.append(f"| {sname} | none (baseline) | {len(rs)} | {thr:.2f} "
                             f"({lo:.2f}–{hi:.2f}) | 1 | – | {cpus:.2f} | 1 |" + " – |" * 7)
                continue
            ratio = med([r["ratio"] for r in rs if "ratio" in r])
            ticks_s = med([r["ticks"] / r["duration"] for r in rs])
            snaps_s = med([r["snapshots"] / r["duration"] for r in rs])
            unw = med([r["unwound"] / r["unwind_s"] for r in rs if r["unwind_s"] > 0])
            cpu_m = med([r["cpu_main"] for r in rs]) * 100
            cpu_o = med([r["cpu_other"] for r in rs]) * 100
            dropped = sum(r["dropped"] for r in rs)
            lost = sum(r["lost"] for r in rs)
            lines.append(
                f"| {sname} | {cfg:g} Hz | {len(rs)} | {thr:.2f} | {ratio:.3f} "
                f"| {100 * (1 - ratio):.1f}% | {cpus:.2f} "
                f"| {med([r['eff'] for r in rs if 'eff' in r]):.3f} "
                f"| {fmt_us(med([r['pause_med_ns'] for r in rs]))} "
                f"| {fmt_us(med([r['pause_worst_ns'] for r in rs]))} "
                f"| {ticks_s:.0f} | {snaps_s:.0f} | {unw:.0f} "
                f"| {cpu_m + cpu_o:.1f} ({cpu_m:.1f} + {cpu_o:.1f}) | {dropped} / {lost} |")
    if traces:
        def q(xs, f):
            xs = sorted(xs)
            return f"{xs[min(len(xs) - 1, int(len(xs) * f))] * 1e6:.0f}" if xs else "–"
        lines.append("")
        lines.append("Pause per thread per sample, broken down (one capture per rate under "
                     "`perf record -a`, its window only; median / p90 µs):")
        lines.append("")
        lines.append("| shape | rate | pauses | pause (interrupt → resumed) | a. waiting for "
                     "a CPU | b. on CPU → stopped | c. stopped → profctl wakes "
                     "| d. profctl's work | held (b + c + d) |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for (shape, rate), tr in traces.items():
            cells = " | ".join(f"{q(tr[k], 0.5)} / {q(tr[k], 0.9)}"
                               for k in ("pause", "a", "b", "c", "d", "hold"))
            lines.append(f"| {shape[0]} busy + {shape[1]} idle | {rate:g} Hz | {tr['n']} "
                         f"| {cells} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
