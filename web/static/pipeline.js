// The pipeline board: drag a deal to another stage; a stage that needs fields asks for them.
// Without a script each card's "move to" select posts a plain form instead.
"use strict";
(function () {
  const board = document.getElementById("board");
  if (!board) return;
  const dialog = document.getElementById("stage-fields");
  let dragged = null;

  function inputFor(f, typed) {
    // A select for a choice, else an input; it keeps what was typed before.
    let input;
    if (f.kind === "choice") {
      input = document.createElement("select");
      for (const c of f.choices) input.add(new Option(c, c, false, c === typed));
    } else {
      input = document.createElement("input");
      input.type = f.kind === "date" ? "date" : "text";
      if (f.kind === "money") input.inputMode = "decimal";
      input.value = typed || "";
    }
    input.name = f.name;
    input.required = true;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "error-" + f.name);
    return input;
  }

  function askFor(said, typed) {
    // Resolves with the values typed in, or null when cancelled.
    return new Promise((resolve) => {
      const box = dialog.querySelector(".inputs");
      const elsewhere = dialog.querySelector(".elsewhere");
      box.replaceChildren();
      elsewhere.hidden = true;
      for (const f of said.fields) {
        const label = document.createElement("label");
        label.textContent = f.label;
        if (f.kind === "elsewhere") {
          elsewhere.hidden = false;
          elsewhere.querySelector("a").href = said.edit;
        } else {
          label.appendChild(inputFor(f, typed[f.name]));
        }
        const error = document.createElement("span");
        error.className = "field-error";
        error.id = "error-" + f.name;
        error.textContent = f.error;
        box.append(label, error);
      }
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        if (dialog.returnValue !== "ok") return resolve(null);
        const values = {};
        for (const input of box.querySelectorAll("input, select")) values[input.name] = input.value;
        resolve(values);
      });
      dialog.returnValue = "";
      dialog.showModal();
      const first = box.querySelector("input, select");
      if (first) first.focus();
    });
  }

  async function move(card, column) {
    const body = { opportunity: card.dataset.deal, stage: column.dataset.stage, values: {} };
    for (;;) {
      const answer = await window.rapport.post("/pipeline/move", body);
      if (answer.ok) { location.reload(); return; }
      if (answer.status !== 422) { alert(await answer.text()); return; }
      const values = await askFor(await answer.json(), body.values);
      if (values === null) return;
      body.values = Object.assign(body.values, values);
    }
  }

  board.addEventListener("dragstart", (e) => {
    const card = e.target.closest(".deal");
    if (!card) return;
    dragged = card;
    card.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", card.dataset.deal);
  });
  board.addEventListener("dragend", () => {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
    for (const c of board.querySelectorAll(".column.over")) c.classList.remove("over");
  });
  board.addEventListener("dragover", (e) => {
    const column = e.target.closest(".column");
    if (!column || !dragged) return;
    e.preventDefault();
    column.classList.add("over");
  });
  board.addEventListener("dragleave", (e) => {
    const column = e.target.closest(".column");
    if (column && !column.contains(e.relatedTarget)) column.classList.remove("over");
  });
  board.addEventListener("drop", (e) => {
    const column = e.target.closest(".column");
    if (!column || !dragged) return;
    e.preventDefault();
    column.classList.remove("over");
    const card = dragged;
    if (card.closest(".column") !== column) move(card, column);
  });
})();
