// The phone in the browser: the screen-pop panel and click-to-dial, over /ws/phone.
// The socket is known by the session cookie (same origin). Everything shown is built
// with textContent and attributes: nothing a caller or a record holds is parsed as HTML.
// The panel's words come translated from base.html (<template id="phone-words">).
"use strict";
(function () {
  const panel = document.getElementById("phone-panel");
  if (!panel) return;
  const words = (document.getElementById("phone-words") || {}).dataset || {};
  const canDial = document.body.dataset.canDial === "yes";
  const lang = document.documentElement.lang || undefined;
  const PAGES = { lead: "leads", contact: "contacts", account: "accounts", opportunity: "opportunities" };
  const FIRST_RETRY_MS = 1000;
  const LAST_RETRY_MS = 30000;
  const SIGNED_OUT = 4401; // the server's close code when it does not know us: retrying won't help
  let socket = null;
  let delay = FIRST_RETRY_MS;
  let current = null; // the call the panel shows
  let dismissed = null; // the call whose panel the user closed: its card does not reopen it
  let said = ""; // what the panel last said about that call (answered, ended…)
  const dials = new Set(); // dial requests made from this tab
  let ring = {}; // the ring's facts (DID, queue): the card that follows does not repeat them
  const phone = (window.rapport = window.rapport || {});
  phone.phoneReady = false;
  phone.phoneSocket = () => socket;

  function word(key, fallback) { return words[key] || fallback; }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function recordHref(ref) {
    const [kind, id] = String(ref).split(":");
    return PAGES[kind] && /^\d+$/.test(id || "") ? "/" + PAGES[kind] + "/" + id : null;
  }

  function link(text, href) {
    return href ? el("a", text, { href }) : el("span", text);
  }

  function show(children) {
    const close = el("button", "×", { type: "button", class: "close", "aria-label": word("close", "Close") });
    close.addEventListener("click", () => { panel.hidden = true; dismissed = current; current = null; });
    panel.replaceChildren(close, ...children);
    panel.hidden = false;
  }

  function status(text) {
    said = text;
    let line = panel.querySelector(".status");
    if (!line) { line = el("p", "", { class: "status muted", role: "status" }); panel.appendChild(line); }
    line.textContent = text;
  }

  function heading(event) {
    return el("h2", word("ringing", "Incoming call") + ": " + (event.number || word("withheld", "withheld number")));
  }

  function where(event) {
    const parts = [];
    if (event.did) parts.push(word("did", "Dialled") + " " + event.did);
    if (event.queue) parts.push(word("queue", "Queue") + " " + event.queue);
    return parts.length ? [el("p", parts.join(" · "), { class: "muted" })] : [];
  }

  function ringing(event) {
    current = event.call;
    said = "";
    ring = event;
    const parts = [heading(event), ...where(event)];
    // The records the number belongs to, as ids, until the card arrives a moment later.
    const known = el("ul", null, { class: "matches" });
    for (const ref of event.records || []) {
      const [kind, id] = String(ref).split(":");
      const li = el("li");
      li.appendChild(link(word(kind, kind) + " " + id, recordHref(ref)));
      known.appendChild(li);
    }
    if (known.childElementCount) parts.push(known);
    parts.push(el("p", word("looking", "Looking up…"), { class: "status muted", role: "status" }));
    show(parts);
  }

  function list(title, items, classes) {
    const ul = el("ul");
    items.forEach((item, i) => {
      const li = el("li", null, classes && classes[i] ? { class: classes[i] } : {});
      li.append(...item);
      ul.appendChild(li);
    });
    return [el("h4", title), ul];
  }

  function when(iso) {
    const at = new Date(iso);
    return at.toLocaleDateString(lang) + " " + at.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
  }

  function card(match) {
    const box = el("section", null, { class: "card caller" });
    const title = el("h3");
    title.appendChild(link(match.name || match.record, recordHref(match.record)));
    box.appendChild(title);
    if (match.account) {
      const line = el("p");
      line.appendChild(link(match.account.name, recordHref("account:" + match.account.id)));
      box.appendChild(line);
    }
    if (match.owner) box.appendChild(el("p", word("owner", "Owner") + ": " + match.owner, { class: "muted" }));
    const deals = (match.opportunities || []).map((o) => {
      const facts = [o.stage, o.amount && o.amount + " " + (o.currency || "")].filter(Boolean);
      return [link(o.name, recordHref("opportunity:" + o.id)), el("span", facts.length ? " · " + facts.join(" · ") : "", { class: "muted" })];
    });
    if (deals.length) box.append(...list(word("deals", "Open deals"), deals));
    // Open tasks, soonest due first: each links to the record's timeline, where it is done.
    const open = match.tasks || [];
    const tasks = open.map((task) => {
      const parts = [link(task.subject, recordHref(match.record))];
      if (task.due) parts.push(el("span", " · " + word("due", "Due") + " " + when(task.due), { class: "muted" }));
      if (task.overdue) parts.push(" ", el("strong", word("overdue", "overdue"), { class: "error" }));
      return parts;
    });
    if (tasks.length) box.append(...list(word("tasks", "Open tasks"), tasks, open.map((t) => (t.overdue ? "overdue" : ""))));
    // The card's activities carry no ids: each links to the record's timeline.
    const recent = (match.activities || []).map((a) => {
      const day = a.at ? new Date(a.at).toLocaleDateString(lang) + " " : "";
      return [el("span", day, { class: "muted" }), link(a.subject, recordHref(match.record))];
    });
    if (recent.length) box.append(...list(word("recent", "Recent"), recent));
    return box;
  }

  function identified(event) {
    if (current !== null && event.call !== current) return; // the panel shows another call
    if (event.call === dismissed) return;
    current = event.call;
    const facts = ring.call === event.call ? Object.assign({}, ring, event) : event;
    const parts = [heading(facts), ...where(facts)];
    if (event.unknown) {
      parts.push(el("p", word("unknown", "Unknown caller")));
      const number = encodeURIComponent((event.create && event.create.phone) || event.number || "");
      const actions = el("p", null, { class: "toolbar" });
      for (const [kind, label] of [["lead", word("newLead", "New lead")], ["contact", word("newContact", "New contact")]]) {
        const button = el("a", label, { class: "button", href: "/" + PAGES[kind] + "/new?phone=" + number });
        button.addEventListener("click", () => remember(kind, event));
        actions.appendChild(button);
      }
      parts.push(actions);
    }
    for (const match of event.matches || []) parts.push(card(match));
    // An answer may come before the card: what was said about the call stays.
    parts.push(el("p", said, { class: "status muted", role: "status" }));
    show(parts);
  }

  // A record made from the pop while the call goes on is tied to the call, so the call is
  // filed on it whatever number it was saved with. The form is another page: the call waits
  // in sessionStorage (this tab only) until the form's save lands on the new record's page.
  const POP_KEY = "rapport.pop";
  const POP_TTL_MS = 15 * 60 * 1000;

  function remember(kind, event) {
    try {
      sessionStorage.setItem(POP_KEY, JSON.stringify({ kind, call: event.call, pbx: event.pbx || null, at: Date.now() }));
    } catch (e) { /* storage refused: the call is filed by its number alone */ }
  }

  function linkMadeRecord() {
    let pending = null;
    try { pending = JSON.parse(sessionStorage.getItem(POP_KEY) || "null"); } catch (e) { return; }
    if (!pending || !PAGES[pending.kind]) return;
    const form = "/" + PAGES[pending.kind] + "/new";
    if (location.pathname === form) return; // still filling it in (or fixing a field)
    sessionStorage.removeItem(POP_KEY);
    const made = location.pathname.match(new RegExp("^/" + PAGES[pending.kind] + "/(\\d+)$"));
    let from = "";
    try { from = new URL(document.referrer).pathname; } catch (e) { /* no referrer */ }
    if (!made || from !== form || Date.now() - pending.at > POP_TTL_MS) return;
    socket.send(JSON.stringify({ type: "link", call: pending.call, pbx: pending.pbx, record: pending.kind + ":" + made[1] }));
  }

  function onEvent(event) {
    const mine = event.call !== undefined && event.call === current;
    switch (event.type) {
      case "ready": phone.phoneReady = true; linkMadeRecord(); break;
      case "linked": phone.linked = event.record; break;
      case "CallRinging": ringing(event); break;
      case "CallerIdentified": identified(event); break;
      case "CallAnswered": if (mine) status(word("answered", "Answered")); break;
      case "CallRingEnded": if (mine) status(word("ringEnded", "Stopped ringing")); break;
      case "CallEnded": if (mine) status(word("ended", "Call ended")); break;
      case "dialling": dials.add(event.request); break;
      // Every tab of the user hears DialStarted: only the one that dialled says so.
      case "DialStarted": if (dials.has(event.request)) status(word("dialStarted", "Your phone rings: pick it up to call.")); break;
      case "DialFailed": status(word("dialFailed", "The call could not be placed.")); break;
      case "error": if (!panel.hidden) status(word("dialFailed", "The call could not be placed.")); break;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws/phone");
    socket.addEventListener("open", () => { delay = FIRST_RETRY_MS; });
    socket.addEventListener("message", (m) => {
      let event;
      try { event = JSON.parse(m.data); } catch (e) { return; } // a frame we cannot read
      onEvent(event);
    });
    socket.addEventListener("close", (e) => {
      socket = null;
      phone.phoneReady = false;
      if (e.code === SIGNED_OUT) return; // signed out elsewhere: the next page asks to sign in
      // Exponential backoff with jitter, so a restarted server is not met by every tab at once.
      setTimeout(connect, delay + Math.random() * delay);
      delay = Math.min(delay * 2, LAST_RETRY_MS);
    });
  }

  // Click-to-dial: a number with data-dial rings the agent's phone, then the customer.
  // Without the right to dial, or without a live socket, the tel: link does its usual thing.
  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target.closest("[data-dial]") : null;
    if (!target || !canDial || !socket || socket.readyState !== WebSocket.OPEN || !phone.phoneReady) return;
    e.preventDefault();
    const number = target.dataset.dial;
    const kind = target.dataset.recordType;
    const origin = kind && target.dataset.recordId ? kind + ":" + target.dataset.recordId : null;
    socket.send(JSON.stringify({ type: "dial", number, origin }));
    current = null;
    said = "";
    show([el("h2", word("calling", "Calling") + " " + number), el("p", word("dialling", "Dialling…"), { class: "status muted", role: "status" })]);
  });

  connect();
})();
