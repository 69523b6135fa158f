// The phone in the browser: the screen-pop panel and click-to-dial, over /ws/phone.
// Everything shown is built with textContent: nothing from a caller is parsed as HTML.
"use strict";
(function () {
  const panel = document.getElementById("phone-panel");
  const words = (document.getElementById("phone-words") || {}).dataset || {};
  const canDial = document.body.dataset.canDial === "yes";
  if (!panel) return;
  let socket = null;
  let delay = 1000;
  let current = null; // the call the panel shows

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function show(children) {
    const close = el("button", "×", { type: "button", class: "close", "aria-label": words.close || "Close" });
    close.addEventListener("click", () => { panel.hidden = true; current = null; });
    panel.replaceChildren(close, ...children);
    panel.hidden = false;
  }

  function status(text) {
    let line = panel.querySelector(".status");
    if (!line) { line = el("p", "", { class: "status muted" }); panel.appendChild(line); }
    line.textContent = text;
  }

  function ringing(event) {
    current = event.call;
    const head = el("h2", (words.ringing || "Incoming call") + ": " + (event.number || "?"));
    const parts = [head];
    const where = [event.did && (words.did || "Dialled") + " " + event.did, event.queue && (words.queue || "Queue") + " " + event.queue].filter(Boolean);
    if (where.length) parts.push(el("p", where.join(" · "), { class: "muted" }));
    const list = el("ul", null, { class: "matches" });
    for (const ref of event.records || []) {
      const [kind, id] = ref.split(":");
      const li = el("li");
      li.appendChild(el("a", ref, { href: "/" + plural(kind) + "/" + id }));
      list.appendChild(li);
    }
    parts.push(list, el("p", words.looking || "Looking up…", { class: "status muted" }));
    show(parts);
  }

  function plural(kind) {
    return { lead: "leads", contact: "contacts", account: "accounts", opportunity: "opportunities" }[kind] || kind + "s";
  }

  function identified(event) {
    if (current !== null && event.call !== current) return;
    current = event.call;
    const parts = [el("h2", (words.ringing || "Incoming call") + ": " + (event.number || "?"))];
    if (event.unknown) {
      parts.push(el("p", words.unknown || "Unknown caller"));
      const actions = el("p", null, { class: "toolbar" });
      const phone = encodeURIComponent((event.create && event.create.phone) || event.number || "");
      actions.appendChild(el("a", words.newLead || "New lead", { class: "button", href: "/leads/new?phone=" + phone }));
      actions.appendChild(el("a", words.newContact || "New contact", { class: "button", href: "/contacts/new?phone=" + phone }));
      parts.push(actions);
    }
    for (const match of event.matches || []) {
      const [kind, id] = String(match.record).split(":");
      const card = el("section", null, { class: "card caller" });
      const title = el("h3");
      title.appendChild(el("a", match.name || match.record, { href: "/" + plural(kind) + "/" + id }));
      card.appendChild(title);
      if (match.account) card.appendChild(el("p", match.account.name));
      if (match.owner) card.appendChild(el("p", (words.owner || "Owner") + ": " + match.owner, { class: "muted" }));
      if ((match.opportunities || []).length) {
        const deals = el("ul");
        for (const o of match.opportunities) deals.appendChild(el("li", o.name + (o.stage ? " · " + o.stage : "") + (o.amount ? " · " + o.amount + " " + (o.currency || "") : "")));
        card.append(el("h4", words.deals || "Open deals"), deals);
      }
      if ((match.activities || []).length) {
        const recent = el("ul");
        for (const a of match.activities) recent.appendChild(el("li", a.at.slice(0, 10) + " " + a.subject));
        card.append(el("h4", words.recent || "Recent"), recent);
      }
      parts.push(card);
    }
    show(parts);
  }

  function onEvent(event) {
    switch (event.type) {
      case "CallRinging": ringing(event); break;
      case "CallerIdentified": identified(event); break;
      case "CallAnswered": if (event.call === current) status(words.answered || "Answered"); break;
      case "CallRingEnded": if (event.call === current) status(words.ringEnded || "Stopped ringing"); break;
      case "CallEnded": if (event.call === current) status(words.ended || "Call ended"); break;
      case "dialling": status(words.dialling || "Dialling…"); break;
      case "DialFailed": case "error": if (!panel.hidden) status(event.reason || ""); break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws/phone");
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", (m) => {
      try { onEvent(JSON.parse(m.data)); } catch (e) { /* a frame we cannot read: skip it */ }
    });
    socket.addEventListener("close", () => {
      socket = null;
      setTimeout(connect, delay + Math.random() * delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  document.addEventListener("click", (e) => {
    const link = e.target.closest("[data-dial]");
    if (!link || !canDial || !socket || socket.readyState !== WebSocket.OPEN) return; // tel: link
    e.preventDefault();
    const origin = link.dataset.recordType ? link.dataset.recordType + ":" + link.dataset.recordId : null;
    socket.send(JSON.stringify({ type: "dial", number: link.dataset.dial, origin }));
    show([el("h2", (words.calling || "Calling") + " " + link.dataset.dial), el("p", words.dialling || "Dialling…", { class: "status muted" })]);
  });

  connect();
  window.rapport = window.rapport || {};
  window.rapport.phoneSocket = () => socket;
})();
