// Rapport's few live parts: the CSRF header on fetch, and links that dial.
"use strict";

// A form marked data-confirm asks before it is sent (deleting for good, revoking a key).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  window.rapport = window.rapport || {};
  window.rapport.post = (url, body) =>
    fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "Accept": "application/json" },
      body: JSON.stringify(body || {}) });
})();

// Reminders: the activities whose reminder has come, polled once a minute, shown until
// dismissed. A dismissal is remembered per reminder moment in this browser, so a reminder
// moved to a new time shows again.
(function () {
  const box = document.getElementById("reminders");
  if (!box || !box.dataset.poll) return;
  const POLL_MS = 60000;
  const KEY = "rapport.dismissedReminders";
  const dismissed = () => { try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; } };
  function show(reminders) {
    const gone = new Set(dismissed());
    const open = reminders.filter((r) => !gone.has(r.key));
    box.replaceChildren();
    box.hidden = open.length === 0;
    if (!open.length) return;
    const title = document.createElement("h2");
    title.textContent = box.dataset.title;
    const list = document.createElement("ul");
    for (const r of open) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = r.url;
      link.textContent = r.subject;
      item.append(link, document.createTextNode(` · ${r.kind} · ${r.at}${r.location ? " · " + r.location : ""}`));
      list.append(item);
    }
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = box.dataset.dismiss;
    button.addEventListener("click", () => {
      const keep = dismissed().concat(open.map((r) => r.key)).slice(-200);
      localStorage.setItem(KEY, JSON.stringify(keep));
      box.hidden = true;
    });
    box.append(title, list, button);
  }
  async function poll() {
    try {
      const answer = await fetch(box.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.ok) show((await answer.json()).reminders || []);
    } catch (e) { /* offline for a moment: the next poll tries again */ }
  }
  poll();
  setInterval(poll, POLL_MS);
})();
