#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Benchmark `profctl stack` against eu-stack and gdb on the same target.

Run by hand (not a test); see bench/README.md. Python 3 standard library only.

For each thread count T, starts bench/stack_bench_target T (T threads x 40 frames,
plus a watchdog thread that measures its own longest pause), then runs every tool N
times, interleaved, and reports medians as a Markdown table:

  * wall: from subprocess start to exit, output captured through a pipe;
  * target pause: the watchdog's longest gap between two clock reads during the run
    (reset just before the run, read just after) -- the stop as the target sees it;
  * vs eu-stack: wall / wall of the like-for-like eu-stack mode;
  * world stopped: profctl's own figure (--format json -> .pause.world_stopped_ns),
    from a JSON run with the same flags right after each text run;
  * complete: how many of the T worker threads were unwound through all of f39..f0;
  * naive stop: bench/naive_stop, the floor of a stop of the world (interrupt, wait,
    registers, one batched stack read, detach, nothing else), its world stopped in the
    same column; each profctl row's world stopped is also given as a ratio to it.

--compare PATH runs a second profctl binary's rows in the same rounds (before/after).
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
import time

DEPTH = 40  # f0..f39 in stack_bench_target.c
TIMEOUT_S = 900  # per tool run; gdb at 512 threads is the slow one
IDLE_S = 0.25  # length of an "idle" interval (no tool) for the noise floor

# Matches a function name f0..f39 as C prints it (tolerating compiler suffixes such as
# f3.isra.0 and a C++-style "()" if a symbolizer adds one).
F_NAME = re.compile(r"^f([0-9]|[1-3][0-9])(?:\.[\w.]+)?(?:\(\))?$")
# "f0" as a whole word in text output: not part of a hex number, a path or a longer name.
F0_WORD = re.compile(r"(?<![\w./])f0(?![\w/])")
# profctl's text header: "... N threads, world stopped 16.39 ms".
TEXT_STOPPED = re.compile(r"world stopped ([0-9.]+) ms")


class Target:
    """stack_bench_target T, spoken to through its stdin/stdout."""

    def __init__(self, path, threads, spin):
        argv = [path, str(threads)] + (["--spin"] if spin else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
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

    def gap_ns(self):
        """The watchdog's longest gap since the last call; resets it."""
        self.proc.stdin.write("gap\n")
        self.proc.stdin.flush()
        return int(self._readline(60))

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)  # by pid: the process we started
        self.proc.wait()


class Tool:
    def __init__(self, name, argv, baseline=None, profctl_json=None, reps=None, naive=False):
        self.name = name
        self.naive = naive  # prints "world_stopped_ns=N ..." (bench/naive_stop)
        self.argv = argv  # function pid -> argv
        self.baseline = baseline  # name of the eu-stack row it is compared with
        self.profctl_json = profctl_json  # function pid -> argv of the JSON companion
        self.reps = reps  # function threads -> reps (None: the default)


def tool_env():
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)  # no network symbol lookups for any tool
    env["LC_ALL"] = "C"
    return env


def timed_run(argv, env):
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, proc


def count_f0_lines(text):
    """Threads unwound through the whole chain, in a text dump: lines naming f0."""
    return sum(1 for line in text.splitlines() if F0_WORD.search(line))


def check_profctl_json(doc, threads):
    """(complete worker threads, worker threads seen) in profctl's JSON."""
    complete = seen = 0
    for thread in doc.get("threads", []):
        if not str(thread.get("name", "")).startswith("worker-"):
            continue
        seen += 1
        found = set()
        for frame in thread.get("frames", []):
            m = F_NAME.match(str(frame.get("function") or ""))
            if m:
                found.add(int(m.group(1)))
        if len(found) == DEPTH and len(thread.get("frames", [])) >= DEPTH:
            complete += 1
    return complete, seen


def numeric_leaves(obj, prefix=""):
    """{"a.b": number} for every number in a JSON object (for the pause breakdown)."""
    out = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = obj
    return out


def median(values):
    return statistics.median(values) if values else None


def fmt_ms(seconds_or_none, scale=1e3):
    if seconds_or_none is None:
        return "—"
    v = seconds_or_none * scale
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def profctl_tools(profctl, label):
    text = lambda extra: (lambda pid: [profctl, "stack", str(pid)] + extra)
    js = lambda extra: (lambda pid: [profctl, "stack", str(pid), "--format", "json"] + extra)
    return [Tool(f"profctl stack{label}", text([]), baseline="eu-stack -i -s",
                 profctl_json=js([])),
            Tool(f"profctl stack --no-inline --no-source{label}",
                 text(["--no-inline", "--no-source"]), baseline="eu-stack",
                 profctl_json=js(["--no-inline", "--no-source"]))]


def make_tools(profctl, with_profctl, gdb_reps_512, naive=None, compare=None, skip=()):
    tools = []
    if with_profctl:
        tools.extend(profctl_tools(profctl, ""))
    if compare:
        tools.extend(profctl_tools(compare, " (compare)"))
    if naive:
        tools.append(Tool("naive stop (bench/naive_stop)", lambda pid: [naive, str(pid)],
                          naive=True))
    tools.append(Tool("eu-stack", lambda pid: ["eu-stack", "-p", str(pid)]))
    tools.append(Tool("eu-stack -i -s", lambda pid: ["eu-stack", "-i", "-s", "-p", str(pid)]))
    tools.append(Tool("gdb thread apply all bt",
                      lambda pid: ["gdb", "-nx", "-batch", "-ex", "thread apply all bt",
                                   "-p", str(pid)],
                      baseline="eu-stack -i -s",
                      reps=lambda t: gdb_reps_512 if t >= 512 else None))
    tools.append(Tool("(idle: no tool)", None))
    return [t for t in tools if t.name not in skip]


def bench_threads(target_path, threads, tools, reps, spin, log):
    env = tool_env()
    results = {tool.name: {"wall": [], "gap": [], "complete": [], "stopped": [],
                           "json_wall": [], "json_gap": [], "pause": [], "text_stopped": [],
                           "errors": []}
               for tool in tools}
    target = Target(target_path, threads, spin)
    try:
        log(f"T={threads}: target pid {target.pid} ready")

        def run_once(tool, record):
            res = results[tool.name]
            if tool.argv is None:  # idle interval: the watchdog's noise floor
                target.gap_ns()
                time.sleep(IDLE_S)
                if record:
                    res["wall"].append(IDLE_S)
                    res["gap"].append(target.gap_ns() / 1e9)
                return
            target.gap_ns()
            wall, proc = timed_run(tool.argv(target.pid), env)
            gap = target.gap_ns() / 1e9
            if not target.alive():
                raise RuntimeError(f"target died during {tool.name}")
            if proc.returncode != 0:
                msg = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
                res["errors"].append(f"exit {proc.returncode}: {' '.join(msg)}")
                log(f"  {tool.name}: exit {proc.returncode} {msg}")
                return
            text = proc.stdout.decode(errors="replace")
            if record:
                res["wall"].append(wall)
                res["gap"].append(gap)
            if tool.naive:
                m = re.search(r"world_stopped_ns=([0-9]+)", text)
                if record and m:
                    res["stopped"].append(int(m.group(1)) / 1e9)
                return
            if tool.profctl_json is None:
                if record:
                    res["complete"].append(count_f0_lines(text))
                return
            m = TEXT_STOPPED.search(text[:4096])
            if record and m:
                res["text_stopped"].append(float(m.group(1)) / 1e3)
            # The JSON companion run: completeness and profctl's own pause figures.
            target.gap_ns()
            jwall, jproc = timed_run(tool.profctl_json(target.pid), env)
            jgap = target.gap_ns() / 1e9
            if jproc.returncode != 0:
                res["errors"].append(f"json exit {jproc.returncode}")
                return
            try:
                doc = json.loads(jproc.stdout)
            except ValueError as e:
                res["errors"].append(f"json: {e}")
                return
            complete, seen = check_profctl_json(doc, threads)
            if seen != threads or complete != threads:
                log(f"  {tool.name}: JSON has {complete} complete of {seen} worker threads"
                    f" (expected {threads})")
            if record:
                res["complete"].append(complete)
                res["json_wall"].append(jwall)
                res["json_gap"].append(jgap)
                pause = doc.get("pause") or {}
                if "world_stopped_ns" in pause:
                    res["stopped"].append(pause["world_stopped_ns"] / 1e9)
                res["pause"].append(numeric_leaves(pause))

        for tool in tools:  # warm-up: page cache, debug info, dentries
            run_once(tool, record=False)
        max_reps = reps
        for rep in range(max_reps):
            for tool in tools:
                n = tool.reps(threads) if tool.reps else None
                if rep >= (n or reps):
                    continue
                run_once(tool, record=True)
            log(f"  rep {rep + 1}/{max_reps} done")
    finally:
        target.kill()
    return results


def render(all_results, tools, reps, spin):
    lines = []
    lines.append("| threads | tool | runs | wall ms (median) | target pause ms (median) "
                 "| vs eu-stack (wall) | world stopped ms (median) | vs naive stop "
                 "| complete threads |")
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    naive_name = next((t.name for t in tools if t.naive), None)
    for threads, results in all_results:
        naive_stopped = median(results[naive_name]["stopped"]) if naive_name else None
        for tool in tools:
            r = results[tool.name]
            wall = median(r["wall"])
            stopped = median(r["stopped"])
            vs_naive = "—"
            if tool.naive and stopped is not None:
                vs_naive = "1.00"
            elif stopped is not None and naive_stopped:
                vs_naive = f"{stopped / naive_stopped:.2f}×"
            ratio = "—"
            if tool.argv is None or tool.naive:
                wall_s = "—"
            else:
                wall_s = fmt_ms(wall)
                if tool.baseline in results:
                    base = median(results[tool.baseline]["wall"])
                    if wall is not None and base:
                        ratio = f"{wall / base:.2f}× `{tool.baseline}`"
                elif tool.name.startswith("eu-stack"):
                    ratio = "1.00"
            complete = "—"
            if r["complete"]:
                lo = min(r["complete"])
                complete = f"{lo}/{threads}" if tool.argv else "—"
            if r["errors"]:
                complete += f" ({len(r['errors'])} failed runs)"
            lines.append(f"| {threads} | {tool.name} | {len(r['wall'])} | {wall_s} | "
                         f"{fmt_ms(median(r['gap']))} | {ratio} | "
                         f"{fmt_ms(stopped)} | {vs_naive} | {complete} |")
    # profctl's own pause breakdown, whatever numeric fields .pause has.
    detail = []
    for threads, results in all_results:
        for tool in tools:
            r = results[tool.name]
            if not r["pause"]:
                continue
            keys = sorted({k for p in r["pause"] for k in p})
            parts = []
            for k in keys:
                vals = [p[k] for p in r["pause"] if k in p]
                m = median(vals)
                if k.endswith("_ns"):
                    parts.append(f"{k[:-3]}={fmt_ms(m / 1e9)} ms")
                else:
                    parts.append(f"{k}={int(m) if m == int(m) else round(m, 1)}")
            detail.append(f"| {threads} | {tool.name} --format json | "
                          f"{fmt_ms(median(r['json_wall']))} | {fmt_ms(median(r['json_gap']))} "
                          f"| {', '.join(parts)} | {fmt_ms(median(r['text_stopped']))} |")
    if detail:
        lines.append("")
        lines.append("profctl JSON companion runs (medians; `.pause` as profctl reports it):")
        lines.append("")
        lines.append("| threads | run | wall ms | target pause ms | .pause "
                     "| world stopped ms in the text runs' header |")
        lines.append("|---:|---|---:|---:|---|---:|")
        lines.extend(detail)
    return "\n".join(lines)


def machine_header(profctl, with_profctl, spin, reps):
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
            return out.strip().splitlines()[0] if out.strip() else "?"
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rev = first_line(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                      "rev-parse", "--short", "HEAD"])
    parts = [
        f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu}, kernel {platform.release()}, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"Tools: {first_line(['eu-stack', '--version'])}; {first_line(['gdb', '--version'])}"
        + (f"; profctl {first_line([profctl, '--version'])} at {profctl}" if with_profctl
           else "; profctl not run") + f" (bench script at git {rev})",
        f"Target: stack_bench_target, workers {'spinning' if spin else 'blocked in read()'}, "
        f"40 frames each + a spinning watchdog thread; {reps} runs per tool (interleaved, "
        f"after one warm-up run), medians.",
    ]
    return "\n".join(f"{p}  " for p in parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profctl", default="./build/profctl", help="profctl binary")
    ap.add_argument("--target", help="stack_bench_target binary (default: "
                    "bench/stack_bench_target in profctl's build directory)")
    ap.add_argument("--threads", default="8,64,512", help="thread counts (default 8,64,512)")
    ap.add_argument("--reps", type=int, default=7, help="runs per tool (default 7)")
    ap.add_argument("--gdb-reps-512", type=int, default=3,
                    help="runs of gdb at 512+ threads (default 3: it is slow)")
    ap.add_argument("--no-profctl", action="store_true",
                    help="only eu-stack and gdb (to try the bench without profctl)")
    ap.add_argument("--spin", action="store_true",
                    help="workers spin instead of blocking in read()")
    ap.add_argument("--out", help="also write the table (with a header) to this file")
    ap.add_argument("--compare", help="a second profctl binary, run in the same rounds "
                    "(rows labelled '(compare)')")
    ap.add_argument("--naive", help="bench/naive_stop binary (default: next to the target; "
                    "'none' to leave it out)")
    ap.add_argument("--skip", default="", help="comma-separated tool names to leave out, "
                    "e.g. 'gdb thread apply all bt,eu-stack -i -s'")
    args = ap.parse_args()

    with_profctl = not args.no_profctl
    if with_profctl and not os.access(args.profctl, os.X_OK):
        sys.exit(f"stack_bench: {args.profctl} is not an executable (build it, pass "
                 f"--profctl PATH, or --no-profctl)")
    target = args.target or os.path.join(os.path.dirname(os.path.abspath(args.profctl)),
                                         "bench", "stack_bench_target")
    if not os.access(target, os.X_OK):
        sys.exit(f"stack_bench: {target} is not an executable (cmake --build BUILD "
                 f"--target stack_bench_target, or --target PATH)")
    for exe in ("eu-stack", "gdb"):
        if shutil.which(exe) is None:
            sys.exit(f"stack_bench: {exe} not found in PATH")

    naive = args.naive or os.path.join(os.path.dirname(target), "naive_stop")
    if naive == "none" or not os.access(naive, os.X_OK):
        if args.naive and args.naive != "none":
            sys.exit(f"stack_bench: {naive} is not an executable")
        naive = None
    compare = os.path.abspath(args.compare) if args.compare else None
    skip = tuple(x.strip() for x in args.skip.split(",") if x.strip())
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    tools = make_tools(os.path.abspath(args.profctl), with_profctl, args.gdb_reps_512,
                       naive=naive, compare=compare, skip=skip)
    header = machine_header(args.profctl, with_profctl, args.spin, args.reps)
    if os.getloadavg()[0] > 0.5:
        log(f"warning: load average {os.getloadavg()[0]:.2f}: other work competes for the "
            f"CPUs, wall times and pauses will be noisy")
    all_results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        all_results.append((threads, bench_threads(target, threads, tools, args.reps,
                                                   args.spin, log)))
    table = render(all_results, tools, args.reps, args.spin)
    header += f"\nLoad average at end: {os.getloadavg()[0]:.2f}  "
    print(header + "\n\n" + table)
    errors = [(t, name, e) for t, res in all_results for name, r in res.items()
              for e in r["errors"]]
    for t, name, e in errors:
        print(f"failed run: T={t} {name}: {e}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(header + "\n\n" + table + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
