#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every allocation of real programs, profctl beside heaptrack.

Runs each deterministic workload under `heaptrack` and under
`profctl run --profiles heap --mem-rate 1`, and compares what they saw: the number of calls
to allocation functions (heaptrack_print's summary; profctl's sampled allocations, which at
rate 1 are all of them) and the peak heap in use. Both tools record from before the first
constructor, so the counts should agree to within a few calls (the issue asks 0.5%).

Workloads: CPython building and sorting a dict (python3.11 itself, not a wrapper script:
heaptrack follows one process), sqlite3 inserting rows, sort(1) of a generated file, and
cc1 (the C compiler proper) on a generated source file.

    python3 bench/real_heap.py --profctl build/profctl [--out FILE]

Needs heaptrack, heaptrack_print, python3.11, sqlite3, gcc (cc1). Prints a table.
"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile


def workloads(tmp):
    random.seed(7)
    sort_in = os.path.join(tmp, "sort.txt")
    with open(sort_in, "w") as f:
        for _ in range(200000):
            f.write("%08x %s\n" % (random.getrandbits(32), "x" * random.randint(1, 40)))
    py = os.path.join(tmp, "work.py")
    with open(py, "w") as f:
        f.write("d = {}\nfor i in range(200000):\n    d['k%d' % i] = [i, str(i), (i, i * 2)]\n"
                "items = sorted(d.items(), key=lambda kv: kv[1][1])\nprint(len(items))\n")
    sql = os.path.join(tmp, "work.sql")
    with open(sql, "w") as f:
        f.write("CREATE TABLE t(a INTEGER, b TEXT);\nBEGIN;\n")
        for i in range(20000):
            f.write("INSERT INTO t VALUES(%d, '%s');\n" % (i, "v%d" % (i * 7919 % 10007)))
        f.write("COMMIT;\nCREATE INDEX ib ON t(b);\nSELECT count(*), max(b) FROM t;\n")
    src = os.path.join(tmp, "work.c")
    with open(src, "w") as f:
        for i in range(400):
            f.write("static int f%d(int x) { return x * %d + (x >> 3); }\n" % (i, i))
        f.write("int main(void) { int s = 0;\n")
        for i in range(400):
            f.write("  s += f%d(s);\n" % i)
        f.write("  return s & 1; }\n")
    cc1 = subprocess.run(["gcc", "-print-prog-name=cc1"], capture_output=True, text=True).stdout.strip()
    return [
        ("CPython: build and sort a 200k dict", ["/usr/bin/python3.11", py], None),
        ("sqlite3: 20k inserts, an index", ["/usr/bin/sqlite3", ":memory:"], sql),
        ("sort: 200k lines", ["/usr/bin/sort", sort_in], None),
        ("cc1: 400 functions at -O2", [cc1, "-quiet", "-O2", src, "-o", os.path.join(tmp, "w.s")], None),
    ]


def run(argv, stdin_path, env=None):
    stdin = open(stdin_path) if stdin_path else subprocess.DEVNULL
    try:
        return subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=600)
    finally:
        if stdin_path:
            stdin.close()


def heaptrack(argv, stdin_path, tmp):
    out = os.path.join(tmp, "ht")
    for f in os.listdir(tmp):
        if f.startswith("ht."):
            os.unlink(os.path.join(tmp, f))
    r = run(["heaptrack", "-o", out] + argv, stdin_path)
    files = [f for f in os.listdir(tmp) if f.startswith("ht.")]
    if not files:
        raise RuntimeError("heaptrack wrote nothing: " + r.stderr[-300:])
    text = subprocess.run(["heaptrack_print", os.path.join(tmp, files[0])], capture_output=True,
                          text=True).stdout
    calls = int(re.search(r"^calls to allocation functions: (\d+)", text, re.M).group(1))
    m = re.search(r"^peak heap memory consumption: ([\d.]+)([KMGB]?)", text, re.M)
    scale = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
    return calls, float(m.group(1)) * scale


def profctl(binary, argv, stdin_path, tmp):
    out = os.path.join(tmp, "pc")
    shutil.rmtree(out, ignore_errors=True)
    r = run([binary, "run", "--profiles", "heap", "--mem-rate", "1", "-v", "--format", "json",
             "-o", out, "--"] + argv, stdin_path)
    with open(os.path.join(out, "capture.json")) as f:
        cap = json.load(f)
    profiles = cap["profiles"]
    heap = next(p for p in profiles if p.get("kind") == "heap") if isinstance(profiles, list) \
        else profiles["heap"]
    calls = sum(s["raw_values"][0] for s in heap["samples"])
    peak = heap.get("peak", {}).get("raw_bytes", 0)
    m = re.search(r"(\d+) stacks walked in the target .*?(\d+) copied for profctl", r.stderr)
    walked = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return calls, peak, heap["counters"].get("ring_dropped", 0), walked


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profctl", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="real-heap-") as tmp:
        for name, argv, stdin_path in workloads(tmp):
            print(name, "...", file=sys.stderr)
            h_calls, h_peak = heaptrack(argv, stdin_path, tmp)
            p_calls, p_peak, dropped, (walked, copied) = profctl(a.profctl, argv, stdin_path, tmp)
            diff = (p_calls - h_calls) / h_calls * 100 if h_calls else 0.0
            rows.append(f"| {name} | {h_calls} | {p_calls} | {diff:+.2f}% | {h_peak / 1e6:.2f} MB | "
                        f"{p_peak / 1e6:.2f} MB | {dropped} | {walked} / {copied} |")
    head = ("| workload | heaptrack calls | profctl calls | difference | heaptrack peak | "
            "profctl peak | profctl dropped | stacks walked / copied |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|")
    table = head + "\n" + "\n".join(rows)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
