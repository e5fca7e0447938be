#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every allocation of real programs, profctl beside heaptrack.

Runs each deterministic workload under `heaptrack` and under
`profctl run --profiles heap --mem-rate 1`, and compares what they saw: the number of calls
to allocation functions and the bytes they asked for (heaptrack's data file, read record by
record: heaptrack_print gives no byte total; profctl's sampled allocations, which at rate 1
are all of them), the peak heap in use, and the top allocation sites: the five functions
that call the allocator most often in heaptrack's data, each with its count in both tools.
Both tools record from before the first constructor, so the counts should agree to within a
few calls (the issue asks 0.5%).

Workloads: CPython building and sorting a dict (python3.11 itself, not a wrapper script:
heaptrack follows one process), sqlite3 inserting rows, sort(1) of a generated file, and
cc1 (the C compiler proper) on a generated source file.

    python3 bench/real_heap.py --profctl build/profctl [--out FILE]

Needs heaptrack, heaptrack_print, zstd, python3.11, sqlite3, gcc (cc1). Prints two tables.
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
    data = os.path.join(tmp, files[0])
    text = subprocess.run(["heaptrack_print", data], capture_output=True, text=True).stdout
    calls = int(re.search(r"^calls to allocation functions: (\d+)", text, re.M).group(1))
    m = re.search(r"^peak heap memory consumption: ([\d.]+)([KMGB]?)", text, re.M)
    scale = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
    records, total, sites = heaptrack_records(data)
    if records != calls:
        raise RuntimeError(f"heaptrack data: {records} allocations read, heaptrack_print says {calls}")
    return calls, float(m.group(1)) * scale, total, sites


def heaptrack_records(path):
    """(allocations, bytes, {site: calls}) from heaptrack's interpreted data file.

    Lines (numbers in hex, indices 1-based into the earlier lines of their kind): `s LEN TEXT`
    a string; `i IP MODULE [FUNCTION FILE LINE]...` an instruction pointer with its module
    and its (inlined) functions; `t IP PARENT` a trace; `a SIZE TRACE` an allocation kind;
    `+ KIND` an allocation (0-based into the `a` lines). A trace's first ip is the
    allocator's caller: the site.
    """
    text = subprocess.run(["zstdcat", "-f", path], capture_output=True, text=True,
                          errors="replace").stdout
    strings, ips, traces, kinds = [None], [None], [None], []
    calls, total, by_kind = 0, 0, {}  # by_kind: allocations of each kind
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "+":
            k = int(rest, 16)
            calls += 1
            total += kinds[k][0]
            by_kind[k] = by_kind.get(k, 0) + 1
        elif tag == "a":
            size, trace = rest.split()
            kinds.append((int(size, 16), int(trace, 16)))
        elif tag == "t":
            ip, _parent = rest.split()
            traces.append(int(ip, 16))
        elif tag == "i":
            f = rest.split()
            ips.append((int(f[1], 16), int(f[2], 16) if len(f) > 2 else 0))
        elif tag == "s":
            strings.append(rest.partition(" ")[2])
    sites = {}
    for k, n in by_kind.items():
        trace = kinds[k][1]
        module, function = ips[traces[trace]] if trace > 0 else (0, 0)
        key = (module_name(strings[module]), strings[function] if function else None)
        calls_bytes = sites.get(key, (0, 0))
        sites[key] = (calls_bytes[0] + n, calls_bytes[1] + n * kinds[k][0])
    return calls, total, sites


def profctl_site(sample):
    """(module basename, names) of the allocator's caller: the frames after the first (the
    allocation function itself) that share the caller's pc (inlined functions and the one
    they are inlined into)."""
    frames = sample["frames"]
    if len(frames) < 2:
        return ("?", frozenset())
    pc = frames[1]["pc"]
    names = frozenset(f["function"] for f in frames[1:] if f["pc"] == pc and f["function"])
    return (module_name(frames[1].get("module")), names)


def module_name(path):
    """A module's file name without its version (heaptrack names the soname link,
    libsqlite3.so.0, profctl the file, libsqlite3.so.0.8.6)."""
    return re.sub(r"\.so(\.\d+)*$", ".so", os.path.basename(path or "?"))


def plain(name):
    """A function's name without glibc's internal-alias prefixes (`__GI___strdup` and
    `strdup` are one function, named from different symbols by the two tools)."""
    if name.startswith("__GI_"):
        name = name[len("__GI_"):]
    return name.lstrip("_")


def top_sites(h_sites, samples, n=5):
    """heaptrack's top n sites by calls, each with profctl's count for the same site: the
    same module, and the same function where heaptrack names one. heaptrack's unnamed sites
    of a module (no symbols it could read) are one site: profctl's sites of that module
    whose names heaptrack never gave."""
    p_sites = {}
    for s in samples:
        module, names = profctl_site(s)
        key = (module, frozenset(plain(x) for x in names))
        p_sites[key] = p_sites.get(key, 0) + s["raw_values"][0]
    named = {}
    for module, function in h_sites:
        if function:
            named.setdefault(module, set()).add(plain(function))
    out = []
    for (module, function), (h_calls, _) in sorted(h_sites.items(), key=lambda kv: -kv[1][0])[:n]:
        if function:
            p_calls = sum(c for (m, names), c in p_sites.items()
                          if m == module and plain(function) in names)
        else:
            p_calls = sum(c for (m, names), c in p_sites.items()
                          if m == module and not names & named.get(module, set()))
        out.append((f"{function or '?'} ({module})", h_calls, p_calls))
    return out


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
    total = sum(s["raw_values"][1] for s in heap["samples"])
    peak = heap.get("peak", {}).get("raw_bytes", 0)
    m = re.search(r"(\d+) stacks walked in the target .*?(\d+) copied for profctl", r.stderr)
    walked = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    mapped = {module_name(m.get("path")) for m in cap.get("modules", [])}
    return (calls, total, peak, heap["counters"].get("ring_dropped", 0), walked, heap["samples"],
            mapped)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profctl", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows, site_rows = [], []
    with tempfile.TemporaryDirectory(prefix="real-heap-") as tmp:
        for name, argv, stdin_path in workloads(tmp):
            print(name, "...", file=sys.stderr)
            h_calls, h_peak, h_total, h_sites = heaptrack(argv, stdin_path, tmp)
            p_calls, p_total, p_peak, dropped, (walked, copied), samples, mapped = profctl(
                a.profctl, argv, stdin_path, tmp)
            # heaptrack's own libraries allocate in the program too (its preload library pulls
            # in libstdc++, whose constructor allocates a 72,704-byte exception pool): sites
            # in modules the program never mapped are heaptrack's, left out of both columns.
            own = {k: v for k, v in h_sites.items() if k[0] not in mapped}
            h_sites = {k: v for k, v in h_sites.items() if k[0] in mapped}
            h_calls -= sum(v[0] for v in own.values())
            h_total -= sum(v[1] for v in own.values())
            pct = lambda p, h: (p - h) / h * 100 if h else 0.0
            rows.append(f"| {name} | {h_calls} | {p_calls} | {pct(p_calls, h_calls):+.2f}% | "
                        f"{h_total} | {p_total} | {pct(p_total, h_total):+.2f}% | "
                        f"{h_peak / 1e6:.2f} MB | {p_peak / 1e6:.2f} MB | {dropped} | "
                        f"{walked} / {copied} |")
            for rank, (site, h, p) in enumerate(top_sites(h_sites, samples), 1):
                site_rows.append(f"| {name if rank == 1 else ''} | {rank} | `{site}` | {h} | {p} | "
                                 f"{pct(p, h):+.2f}% |")
    head = ("| workload | heaptrack calls | profctl calls | difference | heaptrack bytes | "
            "profctl bytes | difference | heaptrack peak | profctl peak | profctl dropped | "
            "stacks walked / copied |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    site_head = ("| workload | rank | allocator's caller (heaptrack's top 5 by calls) | "
                 "heaptrack calls | profctl calls | difference |\n|---|---:|---|---:|---:|---:|")
    table = head + "\n" + "\n".join(rows) + "\n\n" + site_head + "\n" + "\n".join(site_rows)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")

if __name__ == "__main__":
    main()
