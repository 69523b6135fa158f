// Record pages' few live parts.  Record pickers: a <select data-lookup="/accounts/lookup">
// lists a few hundred records; a search box above it asks the server for the records in
// the user's scope whose name, email or phone matches what is typed, and offers those.
// Lists: a box that ticks every row of the page.
"use strict";
(function () {
  const WAIT_MS = 250;

  function option(value, text) {
    const made = document.createElement("option");
    made.value = value;
    made.textContent = text;
    return made;
  }

  function enhance(select) {
    const box = document.createElement("input");
    box.type = "search";
    box.className = "picker-search";
    box.placeholder = select.dataset.placeholder || "";
    box.setAttribute("aria-label", select.dataset.placeholder || "");
    box.setAttribute("aria-controls", select.id);
    select.before(box);
    let timer = 0;
    let asked = 0;
    box.addEventListener("input", () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(async () => {
        const mine = ++asked;
        const url = select.dataset.lookup + "?q=" + encodeURIComponent(box.value.trim());
        let found;
        try {
          const answer = await fetch(url, { credentials: "same-origin",
            headers: { "Accept": "application/json" } });
          if (!answer.ok) return;
          found = await answer.json();
        } catch (err) {
          return;  // offline or signed out: the list stays as it was
        }
        if (mine !== asked) return;  // a later keystroke's answer wins
        const kept = Array.from(select.options).filter((o) => o.value === "" || o.selected);
        const keptValues = new Set(kept.map((o) => o.value));
        select.replaceChildren(...kept,
          ...found.filter((r) => !keptValues.has(String(r.id)))
            .map((r) => option(String(r.id), r.name)));
      }, WAIT_MS);
    });
  }

  document.querySelectorAll("select[data-lookup]").forEach(enhance);

  // A list's "select all" box ticks every row of the page for a bulk action.
  document.querySelectorAll("input[data-select-all]").forEach((all) => {
    const rows = () => all.form ? all.form.querySelectorAll('input[name="id"]') : [];
    all.hidden = false;
    all.addEventListener("change", () => rows().forEach((box) => { box.checked = all.checked; }));
  });
})();
