// The pipeline board: drag a deal to another stage; a stage that needs fields asks for them.
"use strict";
(function () {
  const board = document.getElementById("board");
  if (!board) return;
  const dialog = document.getElementById("stage-fields");
  let dragged = null;

  function askFor(fields) {
    // Resolves with the values typed in, or null when cancelled.
    return new Promise((resolve) => {
      const box = dialog.querySelector(".inputs");
      box.replaceChildren();
      for (const f of fields) {
        const label = document.createElement("label");
        label.textContent = f.label;
        const input = document.createElement("input");
        input.name = f.name;
        input.required = true;
        input.type = f.kind === "date" ? "date" : "text";
        if (f.kind === "money") input.inputMode = "decimal";
        label.appendChild(input);
        const error = document.createElement("span");
        error.className = "field-error";
        error.textContent = f.error;
        box.append(label, error);
      }
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        if (dialog.returnValue !== "ok") return resolve(null);
        const values = {};
        for (const input of box.querySelectorAll("input")) values[input.name] = input.value;
        resolve(values);
      });
      dialog.showModal();
      const first = box.querySelector("input");
      if (first) first.focus();
    });
  }

  async function move(card, column) {
    const body = { opportunity: card.dataset.deal, stage: column.dataset.stage, values: {} };
    for (;;) {
      const answer = await window.rapport.post("/pipeline/move", body);
      if (answer.ok) { location.reload(); return; }
      if (answer.status !== 422) { alert(await answer.text()); return; }
      const said = await answer.json();
      const values = await askFor(said.fields);
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
    if (dragged.closest(".column") !== column) move(dragged, column);
  });
})();
