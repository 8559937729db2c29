// The live event log asks only for rows newer than the newest it shows.
document.addEventListener("htmx:configRequest", (event) => {
  const body = event.detail.elt;
  if (body.matches && body.matches("[data-live-log]")) event.detail.parameters.after = body.dataset.after || "0";
});
document.addEventListener("htmx:afterRequest", (event) => {
  const body = event.detail.elt;
  if (!body.matches || !body.matches("[data-live-log]")) return;
  const newest = event.detail.xhr.getResponseHeader("X-Newest-Event-Id");
  if (newest) body.dataset.after = newest;
  // The first rows to arrive replace the "no events" message.
  const empty = document.querySelector("[data-testid=no-events]");
  if (empty && body.querySelector("tr")) empty.remove();
});
