// normbench leaderboard site: sort any table by a header click, filter rows by dtype / device / variant.
// Plain script, no dependencies, no network: works from file:// and from any static host.
(function () {
  "use strict";

  function sortKey(cell) {
    var raw = cell.getAttribute("data-sort");
    var text = raw !== null ? raw : cell.textContent.trim();
    var num = parseFloat(text);
    return { empty: text === "", num: isNaN(num) || !/^[-+0-9.eE]+$/.test(text) ? null : num, text: text };
  }

  function compare(a, b) {
    if (a.empty !== b.empty) { return a.empty ? 1 : -1; }  // empty cells last, whatever the direction
    if (a.num !== null && b.num !== null) { return a.num - b.num; }
    if (a.num !== null) { return -1; }
    if (b.num !== null) { return 1; }
    return a.text.localeCompare(b.text, undefined, { numeric: true });
  }

  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var descending = th.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) { return { row: row, key: sortKey(row.cells[index]), i: i }; });
    keyed.sort(function (x, y) {
      var emptyOrder = x.key.empty !== y.key.empty;
      var c = compare(x.key, y.key);
      if (descending && !emptyOrder) { c = -c; }
      return c || x.i - y.i;  // stable
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
  }

  function applyFilters() {
    var active = {};
    document.querySelectorAll("select[data-filter]").forEach(function (sel) {
      if (sel.value) { active[sel.getAttribute("data-filter")] = sel.value; }
    });
    document.querySelectorAll("table.sortable tbody tr").forEach(function (row) {
      var shown = Object.keys(active).every(function (name) {
        var value = row.getAttribute("data-" + name);
        return value === null || value === active[name];  // a row without that column is not filtered
      });
      row.hidden = !shown;
    });
    document.querySelectorAll("table.sortable").forEach(function (table) {
      var count = table.parentNode.querySelector(".row-count");
      if (count) {
        var visible = table.querySelectorAll("tbody tr:not([hidden])").length;
        var total = table.tBodies[0].rows.length;
        count.textContent = visible + " of " + total + (total === 1 ? " row" : " rows");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
        th.setAttribute("tabindex", "0");
        th.title = "sort by " + th.textContent.trim();
        th.addEventListener("click", function () { sortBy(table, index, th); });
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, index, th); }
        });
      });
    });
    document.querySelectorAll("select[data-filter]").forEach(function (sel) {
      sel.addEventListener("change", applyFilters);
    });
    applyFilters();
  });
})();
