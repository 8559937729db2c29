// The detail page's daily chart (its range form is wired by doow/app.js).
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
    // Days OpenRouter has not reported yet (ISO dates compare as text): their labels are greyed.
    const unreported = (i) => data.unreported_from !== null && data.labels[i] >= data.unreported_from;
    // And days OpenRouter never reported to Doow (before its history, or in a gap in it).
    const unknown = new Set(data.unknown_days);
    const greyed = (i) => unreported(i) || unknown.has(data.labels[i]);
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
          x: {
            stacked: true, grid: { display: false },
            ticks: {
              callback: (_v, i) => day(data.labels[i]), maxRotation: 0, autoSkipPadding: 12,
              // A category tick's value is its label's index (ctx.index counts only the ticks left after skipping).
              color: (ctx) => greyed(ctx.tick.value) ? "#adb5bd" : Chart.defaults.color,
            },
          },
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

  drawChart();
})();
