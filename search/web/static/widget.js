/* KB Search ticket-sidebar widget: the host posts the ticket in, suggestions come from /api/suggest, actions go back to the host. */
(function () {
  "use strict";

  var root = document.getElementById("kb-widget");
  var template = document.getElementById("answer-template");
  if (!root || !template) return;

  var SHOWN = 3;              // answers shown (one per article)
  var ASKED = 6;              // answers asked for: the service returns up to two passages per article
  var data = root.dataset;
  var base = data.root || "";
  var allowed = (data.allowedOrigins || "").split(/\s+/).filter(Boolean);
  var embedded = window.parent !== window;
  var statusEl = root.querySelector(".widget-status");
  var confidenceEl = root.querySelector(".widget-confidence");
  var list = root.querySelector(".widget-answers");

  var host = null;            // origin that sent the ticket: the only target of kb:insert and kb:link
  var ticket = null;          // {subject, body, tags, language, ticket_id}
  var apiKey = "";            // X-API-Key, when the host passed one
  var asked = "";             // the request body last sent, so a repeated ticket is not searched again
  var answerId = null;        // answer_id of the last response: what feedback and events refer to (never its text)
  var positions = {};         // article id -> its 1-based position among the response's articles
  var pending = null;         // {controller} of the request in flight; a newer ticket replaces it

  function msg(name) { return data["msg" + name] || ""; }
  function say(element, text) { if (element) element.textContent = text; }
  function text(value) { return typeof value === "string" ? value : ""; }

  // ---- who may talk to the widget -----------------------------------------------------------
  // Exact origins, or CSP-style wildcards (https://*.example.com) as KB_FRAME_ANCESTORS allows them.
  function originAllowed(origin) {
    if (origin === window.location.origin) return true;
    return allowed.some(function (pattern) {
      if (pattern === origin) return true;
      var star = /^(https?:\/\/)\*\.(.+)$/.exec(pattern);
      if (!star || origin.indexOf(star[1]) !== 0) return false;
      var rest = origin.slice(star[1].length), suffix = "." + star[2];
      var label = rest.slice(0, rest.length - suffix.length);
      return rest.length > suffix.length && rest.slice(-suffix.length) === suffix && /^[a-z0-9.-]+$/i.test(label);
    });
  }

  function tell(message) {
    if (embedded && host) window.parent.postMessage(message, host);
  }

  // ---- links ------------------------------------------------------------------------------------
  function pageHref(answer) {  // this service's article page; never the ticket text in its query string
    var path = String(answer.article_id).split("/").map(encodeURIComponent).join("/");
    return base + "/articles/" + path + (answer.anchor ? "#" + encodeURIComponent(answer.anchor) : "");
  }

  function replyUrl(answer) {  // the link pasted into replies: KB_BASE_URL when absolute, else the article page
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(answer.url || "")) return answer.url;
    return window.location.origin + pageHref(answer);
  }

  // ---- clipboard (the async API needs a secure context and the host's permission) ---------------
  function copyText(value) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(value).catch(function () { return legacyCopy(value); });
    }
    return legacyCopy(value);
  }

  function legacyCopy(value) {
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = value;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  // ---- API calls --------------------------------------------------------------------------------
  function post(path, payload, signal) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json", "X-KB-Source": "widget" };
    if (apiKey) headers["X-API-Key"] = apiKey;
    return fetch(base + path, {
      method: "POST", credentials: "same-origin", headers: headers, body: JSON.stringify(payload), signal: signal
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) {
          var error = new Error((body.error && body.error.message) || "HTTP " + response.status);
          error.status = response.status;
          throw error;
        }
        return body;
      });
    });
  }

  function suggest() {
    var payload = { subject: ticket.subject, body: ticket.body, tags: ticket.tags, k: ASKED };
    if (ticket.language) payload.language = ticket.language;
    var key = JSON.stringify(payload) + "\n" + apiKey;
    if (key === asked) return;  // the host sent the same ticket again (both change events fired)
    asked = key;
    if (!(ticket.subject.trim() || ticket.body.trim())) {
      clear();
      say(statusEl, msg("Waiting"));
      return;
    }
    if (pending && pending.controller) pending.controller.abort();
    var mine = { controller: window.AbortController ? new AbortController() : null };
    pending = mine;
    root.setAttribute("aria-busy", "true");
    say(statusEl, msg("Searching"));
    post("/api/suggest", payload, mine.controller && mine.controller.signal).then(function (result) {
      if (pending !== mine) return;
      pending = null;
      show(result);
    }).catch(function (error) {
      if (pending !== mine) return;  // replaced by a newer ticket (or aborted for it)
      pending = null;
      asked = "";  // let the same ticket be tried again
      clear();
      root.removeAttribute("aria-busy");
      say(statusEl, error.status === 401 || error.status === 403 ? msg("ErrorAuth")
        : msg("Error") + " " + error.message);
      statusEl.classList.add("error");
    });
  }

  // What the agent did with an answer, for the analytics event log: no text, only ids and the position.
  function record(kind, answer) {
    var payload = { kind: kind, article_id: answer.article_id, source: "widget" };
    if (answerId) payload.answer_id = answerId;
    if (positions[answer.article_id]) payload.position = positions[answer.article_id];
    post("/api/events", payload).catch(function () { /* recording never bothers the agent */ });
  }

  function clear() {
    list.textContent = "";
    confidenceEl.hidden = true;
    statusEl.classList.remove("error");
  }

  // ---- rendering --------------------------------------------------------------------------------
  function show(result) {
    clear();
    root.removeAttribute("aria-busy");
    answerId = typeof result.answer_id === "string" ? result.answer_id : null;
    positions = {};
    (result.articles || []).forEach(function (article, i) { positions[article.id] = i + 1; });
    var seen = {}, answers = [];
    (result.answers || []).forEach(function (answer) {
      if (!seen[answer.article_id] && answers.length < SHOWN) {
        seen[answer.article_id] = true;
        answers.push(answer);
      }
    });
    if (result.confident === true || result.confident === false) {
      var cue = result.confident ? msg("Good") : msg("NotGood");
      if (typeof result.confidence === "number") {
        cue += " · " + msg("Confidence").replace("{percent}", String(Math.round(result.confidence * 100)));
      }
      if (!result.confident && result.not_covered) {  // why: a product no article mentions (textContent: no markup)
        cue += " · " + msg("NotCovered").replace("{product}", String(result.not_covered));
      }
      confidenceEl.textContent = cue;
      confidenceEl.className = "widget-confidence " + (result.confident ? "good" : "warn");
      confidenceEl.hidden = false;
    }
    answers.forEach(function (answer, i) { list.appendChild(card(answer, i)); });
    say(statusEl, !answers.length ? msg("NoAnswers")
      : answers.length === 1 ? msg("CountOne") : msg("Count").replace("{count}", String(answers.length)));
  }

  // snippet_html is escaped by the service with <mark> around the matching sentences; it is parsed in an inert
  // document and only text and <mark> are copied over. Text long before the first mark is cut, so that the
  // two lines shown hold the match.
  function fillSnippet(target, html) {
    var doc = new DOMParser().parseFromString("<p>" + (html || "") + "</p>", "text/html");
    var nodes = Array.prototype.slice.call(doc.body.firstChild ? doc.body.firstChild.childNodes : []);
    var firstMark = nodes.findIndex(function (node) { return node.nodeName === "MARK"; });
    nodes.forEach(function (node, i) {
      var value = node.textContent;
      if (i === 0 && firstMark > 0 && value.length > 60) value = "… ";
      if (node.nodeName === "MARK") {
        var mark = document.createElement("mark");
        mark.textContent = value;
        target.appendChild(mark);
      } else {
        target.appendChild(document.createTextNode(value));
      }
    });
  }

  function card(answer, index) {
    var node = template.content.firstElementChild.cloneNode(true);
    var link = node.querySelector(".answer-title a");
    var titleId = "answer-title-" + index;
    link.href = pageHref(answer);
    link.textContent = answer.title;
    link.id = titleId;
    link.addEventListener("click", function () { record("open", answer); });
    say(node.querySelector(".answer-section"), (answer.heading_path || []).join(" › "));
    fillSnippet(node.querySelector(".answer-snippet"), answer.snippet_html);
    var status = node.querySelector(".answer-status");
    var url = replyUrl(answer);
    node.querySelectorAll("button").forEach(function (button) {
      button.setAttribute("aria-describedby", titleId);
    });
    var linkButton = node.querySelector("button[data-action=link]");
    linkButton.hidden = !(embedded && host);  // a ticket to link to exists only in a host

    node.querySelector("button[data-action=insert]").addEventListener("click", function () {
      var textToInsert = answer.title + "\n" + url;
      record("insert", answer);
      if (embedded && host) {
        tell({ type: "kb:insert", text: textToInsert, url: url, title: answer.title, article_id: answer.article_id });
        say(status, msg("Inserted"));
        return;
      }
      copyText(textToInsert).then(function () { say(status, msg("CopiedForReply")); },
                                  function () { say(status, msg("CopyFailed")); });
    });
    node.querySelector("button[data-action=copy]").addEventListener("click", function () {
      copyText(url).then(function () { record("copy", answer); say(status, msg("LinkCopied")); },
                         function () { say(status, msg("CopyFailed")); });
    });
    linkButton.addEventListener("click", function () {
      tell({ type: "kb:link", url: url, title: answer.title, article_id: answer.article_id,
             ticket_id: ticket ? ticket.ticket_id : null });
      record("link", answer);
      linkButton.setAttribute("aria-pressed", "true");
      linkButton.disabled = true;
      say(status, msg("Linked"));
    });
    var helpful = node.querySelectorAll("button[data-action=helpful]");
    helpful.forEach(function (button) {
      button.addEventListener("click", function () {
        helpful.forEach(function (b) { b.disabled = true; });
        post("/api/feedback", { answer_id: answerId, article_id: answer.article_id,
                                passage_id: answer.passage_id || null, helpful: button.value === "yes",
                                source: "suggest" }).then(function () {
          button.setAttribute("aria-pressed", "true");
          say(status, msg("Thanks"));
        }).catch(function () {
          helpful.forEach(function (b) { b.disabled = false; });
          say(status, msg("FeedbackFailed"));
        });
      });
    });
    return node;
  }

  // ---- the ticket: from the host (postMessage) or from query parameters -----------------------------
  function receive(message, origin) {
    host = origin;
    if (typeof message.key === "string") apiKey = message.key;
    var tags = Array.isArray(message.tags) ? message.tags.filter(function (t) { return typeof t === "string"; }) : [];
    var id = message.ticket_id;
    ticket = { subject: text(message.subject), body: text(message.body), tags: tags,
               language: text(message.language) || null,
               ticket_id: typeof id === "string" || typeof id === "number" ? id : null };
    suggest();
  }

  window.addEventListener("message", function (event) {
    if (!embedded || event.source !== window.parent || !originAllowed(event.origin)) return;
    var message = event.data;
    if (message && typeof message === "object" && message.type === "kb:ticket") receive(message, event.origin);
  });

  if (data.subject || data.body) {
    ticket = { subject: data.subject || "", body: data.body || "", tags: [], language: null,
               ticket_id: data.ticketId || null };
    suggest();
  }
  if (embedded) window.parent.postMessage({ type: "kb:ready" }, "*");  // carries no data
})();
