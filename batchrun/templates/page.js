// Draws every chart with vega-embed and wires the table filters. No network: the specs
// carry their data inline, and the page's CSP forbids fetching.
(function () {
  "use strict";
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  var pending = Object.keys(specs).map(function (id) {
    var target = document.getElementById("chart-" + id);
    return vegaEmbed(target, specs[id], { renderer: "svg", actions: false }).then(function () {
      target.setAttribute("data-drawn", "true");
    });
  });
  Promise.all(pending).then(
    function () { document.body.setAttribute("data-charts-drawn", String(pending.length)); },
    function (error) { console.error("chart failed: " + error); document.body.setAttribute("data-charts-drawn", "error"); }
  );

  document.querySelectorAll(".filters").forEach(function (bar) {
    var table = document.getElementById(bar.getAttribute("data-table"));
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var search = bar.querySelector(".filter-search");
    var model = bar.querySelector(".filter-model");
    var kind = bar.querySelector(".filter-kind");
    var count = bar.querySelector(".filter-count");
    function apply() {
      var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      rows.forEach(function (row) {
        var text = row.textContent.toLowerCase();
        var visible = (!model.value || row.getAttribute("data-model") === model.value) &&
          (!kind.value || row.getAttribute("data-kind") === kind.value) &&
          words.every(function (word) { return text.indexOf(word) >= 0; });
        row.hidden = !visible;
        shown += visible ? 1 : 0;
      });
      count.textContent = shown + " of " + rows.length + " rows shown";
    }
    [search, model, kind].forEach(function (input) { input.addEventListener("input", apply); });
    apply();
  });
})();
