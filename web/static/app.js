// Rapport's few live parts: the CSRF header on fetch, and links that dial.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  window.rapport = window.rapport || {};
  window.rapport.post = (url, body) =>
    fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), "Accept": "application/json" },
      body: JSON.stringify(body || {}) });
})();
