/* KB Search agent pages: "/" focuses the search box, copy buttons, feedback and copies posted as JSON. Pages work without it. */
(function () {
  "use strict";

  // "/" focuses the query box unless the agent is typing somewhere already.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    var box = document.getElementById("q");
    if (!box) return;
    event.preventDefault();
    box.focus();
    box.select();
  });

  function say(element, text) {
    if (element) element.textContent = text;
  }

  // Clipboard: the async API needs a secure context (https or localhost); fall back to a hidden textarea.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.top = "-1000px";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  // What the agent did with the article (the analytics event log): the page says which answer it was opened
  // from (data-answer-id, data-position: its ?from=&pos= link); no text is sent.
  var doc = document.querySelector("article.doc[data-events]");
  function recordEvent(kind) {
    if (!doc || !window.fetch) return;
    var payload = { kind: kind, article_id: doc.getAttribute("data-article-id"), source: "page" };
    var answer = doc.getAttribute("data-answer-id"), position = doc.getAttribute("data-position");
    if (answer) payload.answer_id = answer;
    if (position) payload.position = parseInt(position, 10);
    fetch(doc.getAttribute("data-events"), {
      method: "POST", keepalive: true, body: JSON.stringify(payload),
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-KB-Source": "page" }
    }).catch(function () { /* recording never bothers the agent */ });
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    var status = button.parentNode.querySelector(".copy-status");
    button.addEventListener("click", function () {
      copyText(button.getAttribute("data-copy")).then(function () {
        recordEvent("copy");
        say(status, button.getAttribute("data-copied"));
        button.classList.add("copied");
        setTimeout(function () { say(status, ""); button.classList.remove("copied"); }, 2500);
      }, function () {
        say(status, button.getAttribute("data-failed"));
      });
    });
  });

  // Feedback: JSON to /api/feedback; the form itself posts to /feedback when this script does not run.
  document.querySelectorAll("form.feedback").forEach(function (form) {
    var status = form.querySelector(".feedback-status");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var submitter = event.submitter || document.activeElement;
      var payload = {  // search pages send the agent's own words; suggestions only the answer id
        query: form.elements.query ? form.elements.query.value : "",
        article_id: form.elements.article_id.value,
        source: form.elements.source.value,
        helpful: !!(submitter && submitter.value === "yes")
      };
      if (form.elements.answer_id) payload.answer_id = form.elements.answer_id.value;
      var buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      fetch(form.getAttribute("data-api"), {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "X-KB-Source": "page" },
        body: JSON.stringify(payload)
      }).then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        say(status, form.getAttribute("data-thanks"));
        if (submitter && submitter.setAttribute) submitter.setAttribute("aria-pressed", "true");
      }).catch(function () {
        say(status, form.getAttribute("data-failed"));
        buttons.forEach(function (b) { b.disabled = false; });
      });
    });
  });
})();
