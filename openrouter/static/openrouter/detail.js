// The detail page's enhancements: the daily chart, and a date range form that applies itself.
// Without JavaScript the page still works: the server treats edited From/To dates as a custom range.
(function () {
  "use strict";

  function drawChart() {
    const source = document.getElementById("chart-data");
    const canvas = document.getElementById("usage-chart");
    if (!source || !canvas || !window.Chart) return;
    const data = JSON.parse(source.textContent);
    const palette = ["#3b5bdb", "#12b886", "#f59f00", "#e64980", "#7950f2", "#15aabf", "#adb5bd"];
    const money = data.metric === "spend";
    const exact = (v) => money
      ? "$" + Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 })
      : Number(v).toLocaleString("en-US");
    const short = (v) => money
      ? "$" + Number(v).toLocaleString("en-US", { maximumFractionDigits: 2 })
      : Intl.NumberFormat("en-US", { notation: "compact" }).format(v);
    const day = (iso) => new Date(iso + "T00:00:00Z").toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
    const chart = new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.series.map((s, i) => ({
          label: s.label,
          data: s.data.map(Number),
          backgroundColor: s.label === "other" ? "#ced4da" : palette[i % palette.length],
          borderRadius: 2,
        })),
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false }, ticks: { callback: (_v, i) => day(data.labels[i]), maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => short(v) } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12 } },
          tooltip: {
            // Exact figures from the server's decimal strings, not the float the bar was drawn with.
            filter: (item) => Number(data.series[item.datasetIndex].data[item.dataIndex]) !== 0,
            callbacks: {
              title: (items) => items.length ? day(data.labels[items[0].dataIndex]) + " (UTC)" : "",
              label: (ctx) => `${ctx.dataset.label}: ${exact(data.series[ctx.datasetIndex].data[ctx.dataIndex])}`,
              footer: (items) => {
                if (!items.length) return "";
                const i = items[0].dataIndex;
                const total = data.series.reduce((sum, s) => sum + Number(s.data[i]), 0);
                return "Total: " + exact(total);
              },
            },
          },
        },
      },
    });
    canvas.dataset.ready = "true";
    window.doowChart = chart;
  }

  function wireRangeForm() {
    const form = document.getElementById("filters");
    if (!form) return;
    const range = form.querySelector("#f-range");
    const from = form.querySelector("#f-from");
    const to = form.querySelector("#f-to");
    // A preset applies at once; picking "Custom" waits for the dates.
    range.addEventListener("change", () => {
      if (range.value !== "custom") {
        from.disabled = to.disabled = true; // the preset decides the dates
        form.requestSubmit();
      } else {
        from.focus();
      }
    });
    // Typing a date means a custom range.
    for (const input of [from, to]) {
      input.addEventListener("change", () => { range.value = "custom"; });
    }
    // The other filters apply as soon as they change.
    for (const select of form.querySelectorAll("select:not(#f-range)")) {
      select.addEventListener("change", () => {
        if (range.value !== "custom") from.disabled = to.disabled = true;
        form.requestSubmit();
      });
    }
    form.addEventListener("submit", () => {
      if (range.value !== "custom") from.disabled = to.disabled = true;
    });
  }

  drawChart();
  wireRangeForm();
})();
