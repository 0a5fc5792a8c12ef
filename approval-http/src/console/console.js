// The review console. Every piece of request text is set with textContent
// (never parsed as HTML), so an agent's words show as text and run nothing.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let csrf = null;
  let view = "pending";
  let timer = null;
  // The audit status is a read of the whole log: asked for every 10 s, not
  // on every refresh.
  let statusAt = 0;

  async function call(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await response.json(); } catch (_) { json = null; }
    return { status: response.status, json };
  }

  function show(signedIn, reviewer) {
    $("sign-in").hidden = signedIn;
    $("app").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
    $("who").textContent = signedIn ? "Signed in as api:" + reviewer : "";
    if (timer) { clearInterval(timer); timer = null; }
    if (signedIn) {
      refresh();
      timer = setInterval(refresh, 2000);
    }
  }

  async function start() {
    const session = await call("GET", "console/session");
    if (session.status === 200) {
      csrf = session.json.csrf;
      show(true, session.json.reviewer);
    } else {
      show(false);
    }
  }

  function text(element, value) {
    const shown = value === null || value === undefined || value === "" ? "—" : String(value);
    // Only a change is written: an unchanged page is not redrawn.
    if (element.textContent !== shown) element.textContent = shown;
  }

  // Text the gate did not write (the agent's, a reviewer's) stays on one
  // line: a line break shows as " ↵ ", so it cannot start a line that looks
  // like the gate's own facts. The same rule as approval_core::one_line.
  function oneLine(value) {
    return value === null || value === undefined ? value
      : String(value).replace(/\r\n|[\n\v\f\r\u0085\u2028\u2029]/g, " \u21b5 ");
  }

  function words(element, value) {
    text(element, oneLine(value));
  }

  // The page's one message line; a load error clears once loading works.
  function say(kind, message) {
    $("message").dataset.kind = kind;
    $("message").textContent = message;
  }

  function left(seconds) {
    if (seconds <= 0) return "expired";
    const m = Math.floor(seconds / 60), s = seconds % 60;
    return (m ? m + " min " : "") + s + " s";
  }

  function outcome(decision) {
    if (!decision) return "";
    switch (decision.outcome) {
      case "approved": return "Approved by " + decision.reviewers.join(", ");
      case "denied": return "Denied by " + decision.reviewer + (decision.comment ? ": " + oneLine(decision.comment) : "");
      case "expired": return "Expired: nobody decided in time";
      case "cancelled": return "Cancelled: " + oneLine(decision.why);
      default: return decision.outcome;
    }
  }

  function argumentRows(rows, args) {
    for (const [name, value] of Object.entries(args || {})) {
      const row = rows.insertRow();
      words(row.insertCell(), name);
      const cell = row.insertCell();
      const redacted = value && typeof value === "object" && !Array.isArray(value)
        && Object.keys(value).length === 1 && "redacted" in value;
      if (redacted) {
        cell.className = "redacted";
        text(cell, "redacted (only its digest is recorded)");
      } else {
        words(cell, JSON.stringify(value));
      }
    }
  }

  function render(request) {
    const item = $("request-template").content.firstElementChild.cloneNode(true);
    const q = (selector) => item.querySelector(selector);
    item.dataset.id = request.request_id;
    const gate = request.gate, agent = request.agent;
    text(q(".action"), gate.action);
    const policy = gate.policy;
    const who = policy.approvers.concat(policy.groups).join(", ") || "nobody named";
    text(q(".policy"), policy.name + " · needs " + policy.required + " approval" + (policy.required === 1 ? "" : "s") + " from: " + who);
    const actor = gate.actor;
    words(q(".agent"), actor ? actor.id + (actor.kind ? " (" + actor.kind + ")" : "") + (actor.model ? ", model " + actor.model : "") : null);
    words(q(".behalf"), actor ? actor.on_behalf_of : null);
    text(q(".id"), request.request_id);
    words(q(".resource"), agent.resource);
    words(q(".reason"), agent.reason);
    argumentRows(q(".args tbody"), agent.args);
    if (request.state === "pending") {
      q(".approve").addEventListener("click", () => confirmApproval(request));
      q(".deny").addEventListener("click", () => vote(request.request_id, "deny", q(".comment").value || null));
    } else {
      q(".decide").remove();
    }
    text(q(".outcome"), outcome(request.decision));
    if (!request.decision) q(".outcome").remove();
    update(item, request);
    return item;
  }

  // What changes while a request is open, written in place.
  function update(item, request) {
    const q = (selector) => item.querySelector(selector);
    text(q(".votes"), request.votes.map((v) => v.reviewer + " " + v.vote + (v.comment ? ": " + oneLine(v.comment) : "")).join("; ") || "none yet");
    text(q(".left"), request.state === "pending" ? left(request.seconds_left) : "settled");
    text(q(".may-vote"), request.may_vote.join(", ") || (request.state === "pending" ? "nobody" : "settled"));
  }

  // A request that left the pending list keeps its place (its buttons
  // hidden, not removed), so nothing below it moves under the pointer.
  function settle(item) {
    if (item.classList.contains("settled")) return;
    item.classList.add("settled");
    for (const button of item.querySelectorAll(".decide button, .decide input")) button.disabled = true;
    text(item.querySelector(".left"), "no longer pending: see History");
  }

  // The pending list in a stable order: the requests shown first oldest
  // first, and each new one after them, so a request that arrives never
  // moves what the reviewer is pointing at. Items are updated in place and
  // never rebuilt.
  function showPending(requests) {
    const list = $("requests");
    const shown = new Map([...list.children].map((item) => [item.dataset.id, item]));
    const open = new Set();
    const oldestFirst = [...requests].sort((a, b) => (a.request_id < b.request_id ? -1 : 1));
    for (const request of oldestFirst) {
      open.add(request.request_id);
      const item = shown.get(request.request_id);
      if (item) update(item, request);
      else list.append(render(request));
    }
    for (const [id, item] of shown) if (!open.has(id)) settle(item);
  }

  function showHistory(requests) {
    const list = $("requests");
    const key = JSON.stringify(requests.map((r) => [r.request_id, r.state]));
    if (list.dataset.key === key) return;
    list.replaceChildren(...requests.map(render));
    list.dataset.key = key;
  }

  async function refresh() {
    const list = await call("GET", "requests?state=" + view);
    if (list.status === 401) { show(false); return; }
    if (list.status !== 200) { say("load", "Could not load requests (HTTP " + list.status + ")"); return; }
    if ($("message").dataset.kind === "load") say("", "");
    const requests = $("requests");
    if (requests.dataset.view !== view) {
      requests.replaceChildren();
      requests.dataset.view = view;
      delete requests.dataset.key;
    }
    if (view === "pending") showPending(list.json.requests);
    else showHistory(list.json.requests);
    $("empty").hidden = requests.children.length > 0;
    if (Date.now() - statusAt < 10000) return;
    statusAt = Date.now();
    const status = await call("GET", "console/status");
    const audit = $("audit");
    if (status.status === 200 && status.json.verified) {
      audit.className = "audit ok";
      text(audit, "Audit chain verified: " + status.json.records + " records, head " + status.json.head.slice(0, 16) + "…");
    } else if (status.status === 200) {
      audit.className = "audit bad";
      text(audit, "Audit chain does NOT verify: " + status.json.error);
    }
  }

  // Approving asks once more, naming the action and its arguments; the
  // dialog's Approve button waits a moment, so a double click on the list
  // cannot confirm what the reviewer has not seen.
  let confirming = null;
  let arming = null;
  function confirmApproval(request) {
    const dialog = $("confirm");
    confirming = request.request_id;
    text($("confirm-action"), request.gate.action);
    text($("confirm-id"), request.request_id);
    const rows = $("confirm-args").tBodies[0];
    rows.replaceChildren();
    argumentRows(rows, request.agent.args);
    const approve = $("confirm-approve");
    approve.disabled = true;
    clearTimeout(arming);
    arming = setTimeout(() => { approve.disabled = false; }, 600);
    dialog.returnValue = "";
    dialog.showModal();
  }
  $("confirm").addEventListener("close", () => {
    clearTimeout(arming);
    const id = confirming;
    confirming = null;
    if ($("confirm").returnValue === "approve" && id) vote(id, "approve", null);
  });

  async function vote(id, choice, comment) {
    const answer = await call("POST", "requests/" + encodeURIComponent(id) + "/votes", { vote: choice, comment });
    if (answer.status !== 200) {
      say("vote", "Vote not counted: " + ((answer.json && (answer.json.why || answer.json.error)) || "HTTP " + answer.status));
    } else {
      say("", "");
    }
    refresh();
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await call("POST", "console/session", { token: $("token").value });
    $("token").value = "";
    if (answer.status === 200) {
      csrf = answer.json.csrf;
      $("sign-in-error").textContent = "";
      show(true, answer.json.reviewer);
    } else {
      text($("sign-in-error"), "That token is not a reviewer's.");
    }
  });
  $("sign-out").addEventListener("click", async () => {
    await call("DELETE", "console/session");
    csrf = null;
    show(false);
  });
  $("show-pending").addEventListener("click", () => { view = "pending"; $("show-pending").classList.add("active"); $("show-history").classList.remove("active"); refresh(); });
  $("show-history").addEventListener("click", () => { view = "settled"; $("show-history").classList.add("active"); $("show-pending").classList.remove("active"); refresh(); });
  start();
})();
