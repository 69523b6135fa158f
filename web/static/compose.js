// The compose page (web/compose.py): choosing a template, or its language, fills the subject
// and body from the server's preview of it for this record.  Without script the page's
// "Preview" button does the same through the form.
"use strict";
(function () {
  const form = document.querySelector("form[data-preview]");
  const template = document.getElementById("f-template");
  const language = document.getElementById("f-language");
  const problem = document.getElementById("error-template");
  if (!form || !template || !language || !problem) return;

  function showProblem(text) {
    problem.textContent = text;
    problem.hidden = !text;
    if (text) {
      template.setAttribute("aria-invalid", "true");
      template.setAttribute("aria-describedby", "error-template");
    } else {
      template.removeAttribute("aria-invalid");
      template.removeAttribute("aria-describedby");
    }
  }

  let asked = 0;
  async function fill() {
    if (!template.value) {
      showProblem("");
      return;
    }
    const mine = ++asked;
    const contacts = Array.from(form.querySelectorAll('input[name="contact"]:checked'),
      (box) => box.value);
    let answer;
    let shown;
    try {
      answer = await window.rapport.post(form.dataset.preview,
        { template: template.value, language: language.value, contacts: contacts });
      shown = await answer.json();
    } catch (err) {
      return;  // offline or signed out: the Preview button still works
    }
    if (mine !== asked) return;  // a later choice's answer wins
    if (!answer.ok) {
      showProblem((shown.errors && Object.values(shown.errors).join(" ")) || "");
      return;
    }
    showProblem("");
    form.elements.namedItem("subject").value = shown.subject || "";
    form.elements.namedItem("text").value = shown.text || "";
    form.elements.namedItem("html").value = shown.html || "";
    const details = form.querySelector("details.html-part");
    if (details && shown.html) details.open = true;
  }

  template.addEventListener("change", fill);
  language.addEventListener("change", fill);
})();
