// SPDX-License-Identifier: MIT
#include "report/flamegraph_page.h"

namespace profctl::report_detail {

// Plain DOM and inline script, no framework: the page must open from disk, offline, in any
// browser, years from now. Boxes are absolutely placed divs with percent widths, drawn from
// one HTML string (one layout for thousands of boxes).
const std::string_view kFlamegraphPage = R"PAGE(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="profctl">
<title>profctl flame graph</title>
<style>
body { margin: 0; font: 13px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1d1d1f; background: #fff; }
header { padding: 8px 12px 6px; border-bottom: 1px solid #ddd; }
h1 { font-size: 15px; margin: 0 0 2px; font-weight: 600; }
#sub, #notes { color: #555; }
#bar { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin-top: 6px; }
#total { font-weight: 600; }
#search { width: 16em; }
#matched { color: #7b1fa2; font-weight: 600; }
#graph { position: relative; margin: 6px 12px 12px; }
.b { position: absolute; height: 17px; box-sizing: border-box; overflow: hidden;
  white-space: nowrap; text-overflow: ellipsis; padding: 0 3px; cursor: pointer;
  border-right: 1px solid #fff; border-bottom: 1px solid #fff;
  font: 11px/17px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; color: #111; }
.b:hover { filter: brightness(0.9); outline: 1px solid #333; z-index: 1; }
.b.i { font-style: italic; background-image: repeating-linear-gradient(135deg,
  rgba(255,255,255,0) 0 5px, rgba(255,255,255,0.45) 5px 8px); }
.b.o { background-color: #d6d6d6 !important; color: #555; }
.b.a { opacity: 0.6; }
.b.m { background-color: #d35bff !important; color: #000; }
.key { display: inline-block; position: static; padding: 0 6px; vertical-align: middle;
  cursor: default; background-color: #e8a070; }
#tip { position: fixed; display: none; pointer-events: none; z-index: 5; max-width: 48em;
  background: #fffffa; border: 1px solid #999; border-radius: 3px; padding: 6px 8px;
  box-shadow: 0 2px 8px rgba(0,0,0,0.2); word-break: break-all; }
#tip b { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
#tip td { padding: 0 8px 0 0; vertical-align: top; }
#notes { margin: 0 12px 12px; font-size: 12px; }
</style>
</head>
<body>
<header>
<h1 id="title">profctl flame graph</h1>
<div id="sub"></div>
<div id="bar">
<span id="total"></span>
<label id="typelabel" hidden>sample type <select id="type"></select></label>
<input id="search" type="search" placeholder="search functions (regex)" aria-label="search">
<span id="matched"></span>
<button id="reset" type="button">reset zoom</button>
</div>
</header>
<div id="graph" role="img" aria-label="flame graph"></div>
<div id="tip"></div>
<div id="notes">Click a box to zoom in, a box above it (or Esc) to zoom out; "/" searches.
<span class="b key i">inlined</span> an inlined call,
<span class="b key o">[other]</span> boxes too narrow to draw, folded.
<span id="folded"></span></div>
<script type="application/json" id="data">@@PROFCTL_DATA@@</script>
<script>
"use strict";
(function () {
  const started = performance.now();
  const D = JSON.parse(document.getElementById("data").textContent);
  const S = D.strings, NT = D.types.length, STRIDE = 7 + NT, ROW = 18;
  const $ = (id) => document.getElementById(id);

  // Nodes come in pre-order, each with its number of children.
  const nodes = [];
  const open = [];
  for (let p = 0; p + STRIDE <= D.nodes.length; p += STRIDE) {
    const A = D.nodes;
    const n = { id: nodes.length, name: S[A[p]], module: S[A[p + 1]], file: S[A[p + 2]],
      line: A[p + 3], lastLine: A[p + 4], flags: A[p + 5], v: A.slice(p + 7, p + 7 + NT),
      self: null, c: [],
      parent: null, depth: 0, match: false };
    while (open.length && open[open.length - 1].left === 0) open.pop();
    if (open.length) {
      const top = open[open.length - 1];
      n.parent = top.n;
      n.depth = top.n.depth + 1;
      top.n.c.push(n);
      top.left--;
    }
    nodes.push(n);
    if (A[p + 6] > 0) open.push({ n: n, left: A[p + 6] });
  }
  for (const n of nodes) {
    n.self = n.v.map((v, t) => Math.max(0, n.c.reduce((s, c) => s - c.v[t], v)));
  }
  const root = nodes[0];
  let type = D.main, zoom = root, query = "", maxDepth = 0;
  for (const n of nodes) maxDepth = Math.max(maxDepth, n.depth);

  // As profctl's text reports print values (report/units.cpp format_value).
  function fmt(v, unit) {
    if (v === 0) return "0";
    const scaled = (names, factors) => {
      const a = Math.abs(v);
      for (let i = names.length - 1; i > 0; --i) {
        if (a >= factors[i]) return (v / factors[i]).toFixed(2) + names[i];
      }
      return String(v) + names[0];
    };
    if (unit === "nanoseconds") return scaled(["ns", "us", "ms", "s"], [1, 1e3, 1e6, 1e9]);
    if (unit === "bytes") {
      return scaled(["B", "KiB", "MiB", "GiB", "TiB"], [1, 1024, 1048576, 1073741824, 1099511627776]);
    }
    if (unit === "count" || unit === "") return String(v);
    return v + " " + unit;
  }
  const pct = (v, total) => (total === 0 ? 0 : (100 * v) / total).toFixed(2) + "%";
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
  const T = () => D.types[type];
  const value = (v) => fmt(v, T().unit);

  // Warm colours as flamegraph.pl's, stable per function name: a function keeps its colour
  // across zooms, sample types and pages.
  function colour(n) {
    let h = 0;
    for (let i = 0; i < n.name.length; ++i) h = (h * 31 + n.name.charCodeAt(i)) >>> 0;
    if (n === root) return "hsl(30,15%,80%)";
    return "hsl(" + (h % 50) + "," + (60 + (h >>> 8) % 30) + "%," + (58 + (h >>> 16) % 16) + "%)";
  }

  function render() {
    const t = type, zt = zoom.v[t], width = $("graph").clientWidth || 1200;
    const out = [];
    let deepest = zoom.depth;
    const box = (n, left, w, cls) => {
      let k = "b";
      if (n.flags & 1) k += " i";
      if (n.flags & 2) k += " o";
      if (n.match) k += " m";
      if (cls) k += cls;
      out.push('<div class="' + k + '" data-i="' + n.id + '" data-name="' + esc(n.name) +
        '" data-total="' + n.v[t] + '" data-self="' + n.self[t] + '" data-share="' +
        pct(n.v[t], root.v[t]) + '" style="left:' +
        left.toFixed(4) + "%;width:" + w.toFixed(4) + "%;top:" + n.depth * ROW +
        "px;background-color:" + colour(n) + '">' + esc(n.name) + "</div>");
      deepest = Math.max(deepest, n.depth);
    };
    for (let a = zoom.parent; a; a = a.parent) box(a, 0, 100, " a");
    const todo = [[zoom, 0]];
    while (todo.length) {
      const [n, left] = todo.pop();
      const w = zt > 0 ? (100 * n.v[t]) / zt : n === zoom ? 100 : 0;
      if (n !== zoom && (w / 100) * width < 0.3) continue;
      box(n, left, w, "");
      let x = left;
      for (const c of n.c) {
        if (c.v[t] > 0) todo.push([c, x]);
        x += zt > 0 ? (100 * c.v[t]) / zt : 0;
      }
    }
    $("graph").innerHTML = out.join("");
    $("graph").style.height = (deepest + 1) * ROW + "px";
    $("total").textContent = "total: " + T().type + " " + value(root.v[t]);
    $("total").dataset.value = root.v[t];
  }

  function search(q) {
    query = q;
    let re = null;
    if (q) {
      try {
        re = new RegExp(q, "i");
      } catch (e) {
        re = new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i");
      }
    }
    for (const n of nodes) n.match = re !== null && n !== root && !(n.flags & 2) && re.test(n.name);
    summarize();
    render();
    remember();
  }

  // A match inside a match is counted once: the sum is of the outermost matches.
  function summarize() {
    const m = $("matched");
    if (!query) {
      m.textContent = "";
      delete m.dataset.value;
      delete m.dataset.percent;
      return;
    }
    let sum = 0;
    const todo = [root];
    while (todo.length) {
      const n = todo.pop();
      if (n.match) sum += n.v[type];
      else for (const c of n.c) todo.push(c);
    }
    m.textContent = "matched " + value(sum) + " (" + pct(sum, root.v[type]) + ")";
    m.dataset.value = sum;
    m.dataset.percent = ((100 * sum) / (root.v[type] || 1)).toFixed(2);
  }

  function remember() {
    const p = new URLSearchParams();
    if (query) p.set("search", query);
    if (type !== D.main) p.set("type", T().type);
    if (zoom !== root) p.set("zoom", zoom.name);
    const h = p.toString();
    if (h !== location.hash.slice(1)) {
      try {
        history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
      } catch (e) { /* file:// pages in some browsers: the state is only a convenience */ }
    }
  }

  function tip(n, ev) {
    const t = type, all = root.v[t], u = $("tip");
    const lines = !n.line ? "" : n.lastLine > n.line ? ":" + n.line + "\u2013" + n.lastLine : ":" + n.line;
    const where = n.file ? esc(n.file) + lines : "<i>unknown</i>";
    let rows = "<tr><td>file</td><td>" + where + "</td></tr>" +
      "<tr><td>module</td><td>" + (n.module ? esc(n.module) : "<i>unknown</i>") + "</td></tr>" +
      "<tr><td>total</td><td>" + value(n.v[t]) + " (" + pct(n.v[t], all) + ")" +
      (zoom !== root && zoom.v[t] ? ", " + pct(n.v[t], zoom.v[t]) + " of the zoomed box" : "") +
      "</td></tr><tr><td>self</td><td>" + value(n.self[t]) + " (" + pct(n.self[t], all) + ")</td></tr>";
    u.innerHTML = "<b>" + esc(n.name) + "</b>" + (n.flags & 1 ? " <i>(inlined)</i>" : "") +
      (n.flags & 2 ? " <i>(boxes too narrow to draw)</i>" : "") + "<table>" + rows + "</table>";
    u.style.display = "block";
    const x = Math.min(ev.clientX + 14, window.innerWidth - u.offsetWidth - 4);
    const y = ev.clientY + 18 + u.offsetHeight > window.innerHeight ? ev.clientY - u.offsetHeight - 8
      : ev.clientY + 18;
    u.style.left = Math.max(0, x) + "px";
    u.style.top = Math.max(0, y) + "px";
  }

  const nodeOf = (ev) => {
    const el = ev.target.closest ? ev.target.closest(".b[data-i]") : null;
    return el ? nodes[+el.dataset.i] : null;
  };
  $("graph").addEventListener("mousemove", (ev) => {
    const n = nodeOf(ev);
    if (n) tip(n, ev);
    else $("tip").style.display = "none";
  });
  $("graph").addEventListener("mouseleave", () => { $("tip").style.display = "none"; });
  $("graph").addEventListener("click", (ev) => {
    const n = nodeOf(ev);
    if (n) {
      zoom = n.flags & 2 && n.parent ? n.parent : n;
      render();
      remember();
    }
  });
  $("reset").addEventListener("click", () => { zoom = root; render(); remember(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { zoom = root; render(); remember(); }
    if (ev.key === "/" && document.activeElement !== $("search")) {
      ev.preventDefault();
      $("search").focus();
    }
  });
  let pending = 0;
  $("search").addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(() => search($("search").value), 120);
  });
  $("type").addEventListener("change", () => {
    type = +$("type").value;
    if (zoom.v[type] === 0) zoom = root;
    summarize();
    render();
    remember();
  });

  document.title = D.title;
  $("title").textContent = D.title;
  $("sub").textContent = D.subtitle;
  if (D.folded > 0) {
    $("folded").textContent = D.folded + " boxes narrower than 1/" + D.min_fraction +
      " of the whole were folded into [other] when the page was written.";
  }
  if (NT > 1) {
    D.types.forEach((st, i) => {
      const o = document.createElement("option");
      o.value = i;
      o.textContent = st.type + " (" + st.unit + ")";
      $("type").appendChild(o);
    });
    $("type").value = type;
    $("typelabel").hidden = false;
  }
  const params = new URLSearchParams(location.hash.slice(1));
  const wanted = D.types.findIndex((st) => st.type === params.get("type"));
  if (wanted >= 0) {
    type = wanted;
    $("type").value = type;
  }
  // A shared link keeps its zoom: the widest box of that name.
  for (const n of nodes) {
    if (params.get("zoom") === n.name && !(n.flags & 2) && (zoom === root || n.v[type] > zoom.v[type])) {
      zoom = n;
    }
  }
  if (params.get("search")) {
    $("search").value = params.get("search");
    search(params.get("search"));
  } else {
    render();
  }
  $("graph").dataset.renderMs = (performance.now() - started).toFixed(1);
  // "#details=NAME": the page opens pointing at the widest box of that name, as if hovered,
  // for a link that shows one function's numbers.
  const pointAt = params.get("details");
  let target = null;
  for (const el of $("graph").querySelectorAll(".b[data-i]")) {
    const n = nodes[+el.dataset.i];
    if (n.name === pointAt && (!target || n.v[type] > nodes[+target.dataset.i].v[type])) target = el;
  }
  if (target) {
    const r = target.getBoundingClientRect();
    target.dispatchEvent(new MouseEvent("mousemove",
      { bubbles: true, clientX: r.left + 2, clientY: r.top + 2 }));
  }
})();
</script>
</body>
</html>
)PAGE";

}  // namespace profctl::report_detail
