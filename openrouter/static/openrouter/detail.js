// Daily usage chart: stacked bars by model, exact figures on hover. Data comes from json_script.
(function () {
  const source = document.getElementById("chart-data");
  const canvas = document.getElementById("usage-chart");
  if (!source || !canvas || !window.Chart) return;
  const data = JSON.parse(source.textContent);
  const palette = ["#3b5bdb", "#12b886", "#f59f00", "#e64980", "#7950f2", "#15aabf", "#adb5bd"];
  const money = data.metric === "spend";
  const format = (v) => money
    ? "$" + Number(v).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 6 })
    : Number(v).toLocaleString();
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: data.series.map((s, i) => ({ label: s.label, data: s.data.map(Number), backgroundColor: palette[i % palette.length] })),
    },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      scales: { x: { stacked: true }, y: { stacked: true, ticks: { callback: (v) => format(v) } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${format(data.series[ctx.datasetIndex].data[ctx.dataIndex])}` } } },
    },
  });
  const range = document.getElementById("f-range");
  if (range) range.addEventListener("change", () => { if (range.value !== "custom") range.form.requestSubmit(); });
})();
