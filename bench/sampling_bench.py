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
(/proc/PROFCTL/task/*/schedstat: the sampling thread and the unwinding thread apart).

--tools runs other samplers in the same rotating rounds, each at every rate:
`profctl` (the above), `profctl-signals` (the same with PROFCTL_CPU_SIGNALS=1: the cpu
profile from ptrace stops and signals instead of kernel sample records, the path of a
machine that allows perf events but not their sample rings, e.g. past perf_event_mlock_kb),
`profctl-ticks` (PROFCTL_CPU_TICKS=1: no perf event at all, the ticker's ptrace stops only,
the path of a container or a perf_event_paranoid that refuses perf_event_open), `perf`
(`perf record -F HZ -g -p PID -- sleep D`, D the same capture length) and `perf-dwarf`
(the same with `--call-graph dwarf`). For perf the window starts --settle seconds after
perf started its workload (its events are open and enabled by then); perf's own CPU and
sample count are reported, profctl's own figures are not.
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

# Matches the start of the line only: what follows "unwound N in Xs" changes between
# profctl versions.
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


def task_cpu_seconds(pid):
    """{tid: CPU seconds} for every thread of pid (empty when gone). From
    /proc/PID/task/TID/schedstat (nanoseconds: a tool's fraction of a percent shows),
    else from stat's utime+stime (10 ms ticks)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
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


TOOLS = ("profctl", "profctl-signals", "profctl-ticks", "perf", "perf-dwarf")
PROFCTL_ENV = {"profctl": {}, "profctl-signals": {"PROFCTL_CPU_SIGNALS": "1"},
               "profctl-ticks": {"PROFCTL_CPU_TICKS": "1"}}
PERF_CALL_GRAPH = {"perf": ["-g"], "perf-dwarf": ["--call-graph", "dwarf"]}


def run_tool(args, target, tool, rate):
    if tool in PROFCTL_ENV:
        return run_profctl(args, target, rate, env_extra=PROFCTL_ENV[tool])
    return run_perf(args, target, rate, PERF_CALL_GRAPH[tool])


def perf_started_workload(perf_pid):
    """True once perf's child runs `sleep`: perf record opens and enables its events
    before it lets its workload exec."""
    try:
        with open(f"/proc/{perf_pid}/task/{perf_pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return False
    for kid in kids:
        try:
            with open(f"/proc/{kid}/comm") as f:
                if f.read().strip() == "sleep":
                    return True
        except OSError:
            continue
    return False


PERF_SAMPLES = re.compile(r"\((\d+) samples\)")


def run_perf(args, target, rate, call_graph):
    """One window inside `perf record -F rate CALL_GRAPH -p PID -- sleep D`."""
    duration = args.settle + args.window + args.tail
    fd, data = tempfile.mkstemp(prefix="sampling_bench.", suffix=".perf.data")
    os.close(fd)
    argv = [args.perf, "record", "-F", f"{rate:g}", *call_graph, "-p", str(target.pid),
            "-o", data, "--", "sleep", f"{duration:g}"]
    env = dict(os.environ, LC_ALL="C")
    env.pop("DEBUGINFOD_URLS", None)
    errf = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=errf, env=env)
    res = {"ok": False}
    try:
        deadline = time.monotonic() + 30
        while not perf_started_workload(proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                errf.seek(0)
                raise RuntimeError(f"perf did not start: {errf.read().strip()[-500:]}")
            time.sleep(0.002)
        time.sleep(args.settle)
        cpu0 = task_cpu_seconds(proc.pid)
        res.update(throughput(target, args.window))
        cpu1 = task_cpu_seconds(proc.pid)
        still_running = proc.poll() is None
        rc = proc.wait(timeout=120 + duration)
        errf.seek(0)
        err = errf.read()
        if rc != 0:
            raise RuntimeError(f"perf exited {rc}: {err.strip()[-500:]}")
        if not still_running:
            raise RuntimeError("the window outlasted the recording (raise --tail)")
        m = PERF_SAMPLES.search(err)
        res.update(
            ok=True,
            duration=duration,
            samples=int(m.group(1)) if m else None,
            cpu_main=sum(v - cpu0.get(t, 0) for t, v in cpu1.items()) / args.window,
            cpu_other=0.0,
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # by pid: the process we started
            proc.wait()
        errf.close()
        for path in (data, data + ".old"):
            try:
                os.unlink(path)
            except OSError:
                pass
    return res


def run_profctl(args, target, rate, trace=False, env_extra=None):
    """One window inside a profctl capture at `rate` Hz. Returns a dict of figures."""
    duration = args.settle + args.window + args.tail
    outdir = tempfile.mkdtemp(prefix="sampling_bench.")
    argv = args.wrap.split() + [args.profctl, "attach", str(target.pid), "-d", f"{duration:g}s", "--rate",
            f"{rate:g}", "--profiles", args.profiles, "-o", outdir, "-v"]
    env = dict(os.environ, LC_ALL="C", **(env_extra or {}))
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
        cpu0 = task_cpu_seconds(proc.pid)
        if trace:
            perf, data = perf_trace(args.window)
        res.update(throughput(target, args.window))
        cpu1 = task_cpu_seconds(proc.pid)
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
            cpu_main=main_d / args.window,
            cpu_other=other_d / args.window,
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


def cfg_name(cfg):
    return "baseline" if cfg is None else f"{cfg[0]} {cfg[1]:g} Hz"


def progress_line(rep, cfg, r):
    extra = ""
    if cfg is not None and cfg[0] in PROFCTL_ENV:
        extra = (f", pause median {fmt_us(r['pause_med_ns'])} us worst "
                 f"{fmt_us(r['pause_worst_ns'])} us, {r['snapshots']} snapshots, "
                 f"{r['ticks']} ticks, profctl cpu {100 * (r['cpu_main'] + r['cpu_other']):.2f}%")
    elif cfg is not None:
        extra = (f", {r['samples'] if r['samples'] is not None else '?'} samples, "
                 f"perf cpu {100 * r['cpu_main']:.2f}%")
    return (f"  rep {rep + 1} {cfg_name(cfg)}: {r['thr'] / 1e6:.2f} M it/s on {r['cpus']:.2f} "
            f"CPUs{extra}")


def measure_shape(args, target, shape, configs, tools, rates, results, traces):
    """Warm-up, then args.reps rotating rounds of every config. Returns the failures."""
    failures = 0
    # Warm-up: one baseline window and one short run of each tool (page cache, debug info).
    run_baseline(target, 1.0)
    for tool in tools:
        run_tool(args, target, tool, rates[0])
    for rep in range(args.reps):
        k = rep % len(configs)
        order = configs[k:] + configs[:k]
        this = {}
        for cfg in order:
            if not target.alive():
                raise RuntimeError("the target died")
            try:
                r = run_baseline(target, args.window) if cfg is None else \
                    run_tool(args, target, *cfg)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"  rep {rep + 1} {cfg_name(cfg)}: FAILED: {e}")
                failures += 1
                continue
            this[cfg] = r
            log(progress_line(rep, cfg, r))
        base = this.get(None)
        for cfg, r in this.items():
            if base is not None:
                r["ratio"] = r["thr"] / base["thr"]
                if r["cpus"] > 0 and base["cpus"] > 0:
                    r["eff"] = (r["thr"] / r["cpus"]) / (base["thr"] / base["cpus"])
            results.setdefault((shape, cfg), []).append(r)
    # One more capture per profctl tool and rate under perf (not in the medians: perf
    # costs too).
    for tool in [t for t in tools if t in PROFCTL_ENV] if args.trace else []:
        for rate in rates:
            try:
                r = run_profctl(args, target, rate, trace=True, env_extra=PROFCTL_ENV[tool])
                traces[(shape, tool, rate)] = r["trace"]
                log(f"  traced {tool} {rate:g} Hz: {r['trace']['n']} pauses broken down")
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"  traced {tool} {rate:g} Hz: FAILED: {e}")
                failures += 1
    return failures


COLUMNS = ("shape", "tool", "rate", "runs", "throughput M it/s", "vs baseline", "slowdown",
           "target CPUs", "per CPU-s vs baseline", "pause median µs", "pause worst µs",
           "ticks/s", "snapshots/s", "unwound/s", "perf samples/s",
           "tool CPU % (profctl: sampler + unwinder)", "dropped / lost")


def table_row(sname, cfg, rs):
    """One markdown row: the medians over the repetitions `rs` of config `cfg`."""
    dash = "–"
    if not rs:
        tool, rate = ("none (baseline)", "–") if cfg is None else (cfg[0], f"{cfg[1]:g} Hz")
        return f"| {sname} | {tool} | {rate} | 0 |" + " – |" * (len(COLUMNS) - 4)
    thr = med([r["thr"] for r in rs]) / 1e6
    cpus = med([r["cpus"] for r in rs])
    if cfg is None:
        lo = min(r["thr"] for r in rs) / 1e6
        hi = max(r["thr"] for r in rs) / 1e6
        return (f"| {sname} | none (baseline) | – | {len(rs)} | {thr:.2f} ({lo:.2f}–{hi:.2f}) "
                f"| 1 | – | {cpus:.2f} | 1 |" + " – |" * (len(COLUMNS) - 9))
    tool, rate = cfg
    ratio = med([r["ratio"] for r in rs if "ratio" in r])
    cells = [sname, tool, f"{rate:g} Hz", str(len(rs)), f"{thr:.2f}", f"{ratio:.3f}",
             f"{100 * (1 - ratio):.1f}%", f"{cpus:.2f}",
             f"{med([r['eff'] for r in rs if 'eff' in r]):.3f}"]
    cpu_m = med([r["cpu_main"] for r in rs]) * 100
    if tool in PROFCTL_ENV:
        cpu_o = med([r["cpu_other"] for r in rs]) * 100
        cells += [fmt_us(med([r["pause_med_ns"] for r in rs])),
                  fmt_us(med([r["pause_worst_ns"] for r in rs])),
                  f"{med([r['ticks'] / r['duration'] for r in rs]):.0f}",
                  f"{med([r['snapshots'] / r['duration'] for r in rs]):.0f}",
                  f"{med([r['unwound'] / r['unwind_s'] for r in rs if r['unwind_s'] > 0]):.0f}",
                  dash, f"{cpu_m + cpu_o:.2f} ({cpu_m:.2f} + {cpu_o:.2f})",
                  f"{sum(r['dropped'] for r in rs)} / {sum(r['lost'] for r in rs)}"]
    else:
        samples = [r["samples"] / r["duration"] for r in rs if r["samples"] is not None]
        cells += [dash] * 5 + [f"{med(samples):.0f}" if samples else dash, f"{cpu_m:.2f}",
                               dash]
    return "| " + " | ".join(cells) + " |"


def trace_table(traces):
    def q(xs, f):
        xs = sorted(xs)
        return f"{xs[min(len(xs) - 1, int(len(xs) * f))] * 1e6:.0f}" if xs else "–"
    lines = ["", "Pause per thread per sample, broken down (one capture per rate under "
             "`perf record -a`, its window only; median / p90 µs):", "",
             "| shape | tool | rate | pauses | pause (interrupt → resumed) | a. waiting for "
             "a CPU | b. on CPU → stopped | c. stopped → profctl wakes "
             "| d. profctl's work | held (b + c + d) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (shape, tool, rate), tr in traces.items():
        cells = " | ".join(f"{q(tr[k], 0.5)} / {q(tr[k], 0.9)}"
                           for k in ("pause", "a", "b", "c", "d", "hold"))
        lines.append(f"| {shape[0]} busy + {shape[1]} idle | {tool} | {rate:g} Hz "
                     f"| {tr['n']} | {cells} |")
    return lines


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profctl", required=True, help="path to the profctl binary")
    ap.add_argument("--commit", default="",
                    help="the git commit profctl was built from (printed in the header)")
    ap.add_argument("--target", help="sampling_bench_target (default: bench/ in profctl's "
                    "build directory)")
    ap.add_argument("--tools", default="profctl",
                    help="samplers compared in the same rounds, a comma list of "
                    + ", ".join(TOOLS) + " (default profctl)")
    ap.add_argument("--perf", default="perf", help="the perf binary (default: perf in PATH)")
    ap.add_argument("--shapes", default="8x0,8x56", help="BUSYxIDLE,... (default 8x0,8x56)")
    ap.add_argument("--rates", default="19,99,499", help="Hz,... (default 19,99,499)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--window", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds between the tool attaching and the window (its set-up)")
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
                    help="also run one capture per profctl tool and rate under `perf record` "
                    "and break the pause down (needs perf and root)")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in args.tools if t not in TOOLS]
    if bad or not args.tools:
        ap.error(f"--tools: unknown {', '.join(bad) or '(none given)'}; "
                 f"choose from {', '.join(TOOLS)}")
    if any(t in PERF_CALL_GRAPH for t in args.tools) and shutil.which(args.perf) is None:
        ap.error(f"--tools asks for perf but {args.perf!r} is not found: install linux-perf "
                 "or pass --perf PATH")
    return args


def main():
    args = parse_args()
    args.profctl = os.path.abspath(args.profctl)
    target_path = args.target or os.path.join(os.path.dirname(args.profctl), "bench",
                                              "sampling_bench_target")
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    # None: baseline. Tools side by side at each rate, all in the same rotating rounds.
    configs = [None] + [(tool, rate) for rate in rates for tool in args.tools]

    version = subprocess.run([args.profctl, "--version"], capture_output=True,
                             text=True).stdout.strip() or "?"
    perf_version = ""
    if any(t in PERF_CALL_GRAPH for t in args.tools):
        perf_version = subprocess.run([args.perf, "--version"], capture_output=True,
                                      text=True).stdout.strip() or "perf ?"
    load_start = wait_for_quiet(args.max_load, args.load_wait)
    started = datetime.datetime.now().astimezone()

    results = {}  # (shape, config) -> list of per-rep dicts (with "ratio")
    traces = {}  # (shape, tool, rate) -> parse_trace() of one capture under perf
    failures = 0
    for shape in shapes:
        log(f"shape {shape[0]} busy + {shape[1]} idle")
        target = Target(target_path, *shape)
        try:
            failures += measure_shape(args, target, shape, configs, args.tools, rates,
                                      results, traces)
        finally:
            target.kill()
    load_end = loadavg()

    commit = f"commit {args.commit}" if args.commit else "commit not given (--commit)"
    lines = [
        f"Measured {started:%Y-%m-%d %H:%M %Z}; {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), kernel {platform.release()}; "
        f"load average {load_start:.2f} at start, {load_end:.2f} at end.",
        f"profctl {version}, {commit} ({args.profctl})"
        + (f"; {perf_version}" if perf_version else "")
        + f"; {args.reps} repetitions, window {args.window:g} s, `--profiles {args.profiles}`, "
        f"capture `-d {args.settle + args.window + args.tail:g}s`"
        + (f", profctl run under `{args.wrap}`" if args.wrap else "") + ".",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---:|" * (len(COLUMNS) - 3),
    ]
    for shape in shapes:
        sname = f"{shape[0]} busy + {shape[1]} idle"
        lines += [table_row(sname, cfg, results.get((shape, cfg), [])) for cfg in configs]
    if traces:
        lines += trace_table(traces)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
