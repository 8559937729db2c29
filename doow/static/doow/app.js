// Small progressive enhancements; every page works without them.
document.addEventListener("change", (event) => {
  const el = event.target;
  if (el.matches("[data-autosubmit]")) el.form.requestSubmit();
});
document.addEventListener("click", (event) => {
  const el = event.target.closest("[data-confirm]");
  if (el && !window.confirm(el.dataset.confirm)) event.preventDefault();
});
// A select with data-narrows="ID" shows, in the select ID, only the options and groups whose
// data-scope is its value (a budget for a workspace lists workspaces, not keys).
function narrow(select) {
  const target = document.getElementById(select.dataset.narrows);
  if (!target) return;
  for (const part of target.querySelectorAll("[data-scope]")) {
    const shown = part.dataset.scope === select.value;
    part.hidden = part.disabled = !shown;
  }
  const chosen = target.selectedOptions[0];
  if (!chosen || chosen.disabled || chosen.closest("optgroup[disabled]")) {
    const first = target.querySelector("option:not([disabled]):not(optgroup[disabled] option)");
    target.value = first ? first.value : "";
  }
}
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-narrows]")) narrow(event.target);
});
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("select[data-narrows]").forEach(narrow);
});
// A date range form (data-range-form): a preset applies at once and decides the dates; typing a
// date makes the range custom; the form's other selects apply as soon as they change. Without
// JavaScript the server tells the two apart by the dates the form showed (its "shown" field),
// which this script leaves out of the URL since it sends no dates with a preset.
function wireRangeForm(form) {
  const range = form.querySelector("select[name=range]");
  const dates = [form.querySelector("input[name=from]"), form.querySelector("input[name=to]")];
  const shown = form.querySelector("input[name=shown]");
  const presetDecides = () => {
    if (shown) shown.disabled = true;
    if (range.value !== "custom") for (const input of dates) input.disabled = true;
  };
  range.addEventListener("change", () => {
    if (range.value !== "custom") {
      presetDecides();
      form.requestSubmit();
    } else {
      dates[0].focus();
    }
  });
  for (const input of dates) input.addEventListener("change", () => { range.value = "custom"; });
  for (const select of form.querySelectorAll("select:not([name=range])")) {
    select.addEventListener("change", () => {
      presetDecides();
      form.requestSubmit();
    });
  }
  form.addEventListener("submit", presetDecides);
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-range-form]").forEach(wireRangeForm);
});
