// Admin pages (a form's data-confirm is app.js's, on every page).
// A button marked data-copy copies the text of the element it names (a key, a snippet).
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-copy]") : null;
  const source = button && document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = "value" in source ? source.value : source.textContent;
  if ("select" in source) source.select(); // shown selected: Ctrl+C works where the clipboard API does not
  if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
});
