"""The leaderboard's stylesheet and script, inlined into every page (no file, server or network needed).

The script sorts the index when a column header is clicked (numbers best-first on the first click, missing values
always last), filters it by the ``<select data-filter>`` menus, and applies the same from the page's query string
on load: ``?sort=robust`` (ascending), ``?sort=-robust`` (descending), ``?dataset=fashion-mnist&norm=Linf``.
The table records what it shows in ``data-sorted`` and ``data-shown``, so a DOM dump shows the result.
"""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1900px;
padding:0 1em;color:#1b1b1b;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em}
a{color:#0b5cad}p.lead{max-width:60em;color:#333}
table{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums}
th,td{padding:.3em .55em;border-bottom:1px solid #e2e2e2;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f4f6f8;position:sticky;top:0;white-space:nowrap}
td.num,th.num{text-align:right}
#board th[data-key]{cursor:pointer;user-select:none}
#board th[data-key]:hover{background:#e6ecf2}
#board th[aria-sort=ascending]::after{content:" \\25B2";font-size:.75em}
#board th[aria-sort=descending]::after{content:" \\25BC";font-size:.75em}
#board tbody tr:hover{background:#f9fbfd}
.ci{color:#6a6a6a;font-size:.85em;white-space:nowrap}
.flag{display:inline-block;font-size:.75em;padding:0 .35em;border-radius:.6em;background:#fde9c8;color:#7a4b00;
margin-left:.3em}
.filters{display:flex;gap:1.2em;align-items:center;flex-wrap:wrap;margin:.8em 0}
.filters select{font:inherit;padding:.1em .3em}
.muted{color:#6a6a6a}dl.card{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dl.card dt{font-weight:600}dl.card dd{margin:0}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
img.curves{max-width:100%;border:1px solid #e2e2e2}
.scroll{overflow-x:auto}
"""

JS = """
"use strict";
(function () {
  var table = document.getElementById("board");
  if (!table) { return; }
  var body = table.tBodies[0];
  var all = Array.prototype.slice.call(body.rows);
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function value(row, key, num) {
    var cell = row.querySelector('[data-key="' + key + '"]');
    var v = cell ? cell.getAttribute("data-sort") : null;
    if (v === null || v === "") { return null; }
    return num ? parseFloat(v) : v.toLowerCase();
  }
  function sortBy(key, dir) {
    var th = table.querySelector('th[data-key="' + key + '"]');
    if (!th) { return false; }
    var num = th.getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, key, num), y = value(b, key, num);
      if (x === null || y === null) { return (x === null ? 1 : 0) - (y === null ? 1 : 0); }
      return (x < y ? -1 : (x > y ? 1 : 0)) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    table.setAttribute("data-sorted", (dir > 0 ? "" : "-") + key);
    return true;
  }
  heads.forEach(function (th) {
    if (!th.hasAttribute("data-key")) { return; }
    th.tabIndex = 0;
    function toggle() {
      var cur = th.getAttribute("aria-sort");
      var first = th.getAttribute("data-first") === "asc" ? 1 : (th.getAttribute("data-type") === "num" ? -1 : 1);
      sortBy(th.getAttribute("data-key"), cur ? (cur === "ascending" ? -1 : 1) : first);
    }
    th.addEventListener("click", toggle);
    th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { toggle(); } });
  });
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  function filter() {
    var shown = 0;
    all.forEach(function (row) {
      var ok = selects.every(function (s) {
        return s.value === "" || row.getAttribute("data-" + s.getAttribute("data-filter")) === s.value;
      });
      row.hidden = !ok;
      shown += ok ? 1 : 0;
    });
    table.setAttribute("data-shown", String(shown));
    var out = document.getElementById("shown");
    if (out) { out.textContent = shown + " of " + all.length + " entries shown"; }
  }
  var query = new URLSearchParams(window.location.search);
  selects.forEach(function (s) {
    var want = query.get(s.getAttribute("data-filter"));
    if (want !== null && Array.prototype.some.call(s.options, function (o) { return o.value === want; })) {
      s.value = want;
    }
    s.addEventListener("change", filter);
  });
  var sort = query.get("sort");
  if (sort) { sortBy(sort.replace(/^-/, ""), sort.charAt(0) === "-" ? -1 : 1); }
  filter();
})();
"""
