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
    element.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
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
      case "denied": return "Denied by " + decision.reviewer + (decision.comment ? ": " + decision.comment : "");
      case "expired": return "Expired: nobody decided in time";
      case "cancelled": return "Cancelled: " + decision.why;
      default: return decision.outcome;
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
    text(q(".agent"), actor ? actor.id + (actor.kind ? " (" + actor.kind + ")" : "") + (actor.model ? ", model " + actor.model : "") : null);
    text(q(".behalf"), actor ? actor.on_behalf_of : null);
    text(q(".votes"), request.votes.map((v) => v.reviewer + " " + v.vote + (v.comment ? ": " + v.comment : "")).join("; ") || "none yet");
    text(q(".left"), request.state === "pending" ? left(request.seconds_left) : "settled");
    text(q(".id"), request.request_id);
    text(q(".resource"), agent.resource);
    text(q(".reason"), agent.reason);
    const rows = q(".args tbody");
    for (const [name, value] of Object.entries(agent.args || {})) {
      const row = rows.insertRow();
      text(row.insertCell(), name);
      const cell = row.insertCell();
      const redacted = value && typeof value === "object" && !Array.isArray(value)
        && Object.keys(value).length === 1 && "redacted" in value;
      if (redacted) {
        cell.className = "redacted";
        text(cell, "redacted (only its digest is recorded)");
      } else {
        text(cell, JSON.stringify(value));
      }
    }
    if (request.state === "pending") {
      q(".approve").addEventListener("click", () => vote(request.request_id, "approve", null));
      q(".deny").addEventListener("click", () => vote(request.request_id, "deny", q(".comment").value || null));
    } else {
      q(".decide").remove();
    }
    text(q(".outcome"), outcome(request.decision));
    if (!request.decision) q(".outcome").remove();
    return item;
  }

  async function refresh() {
    const list = await call("GET", "requests?state=" + view);
    if (list.status === 401) { show(false); return; }
    if (list.status !== 200) { text($("message"), "Could not load requests (HTTP " + list.status + ")"); return; }
    $("message").textContent = "";
    const requests = $("requests");
    // Keep what the reviewer is typing: rebuild only when the list changed.
    const key = JSON.stringify(list.json.requests.map((r) => [r.request_id, r.votes.length, r.state]));
    if (requests.dataset.key !== key || view === "pending") {
      const typing = {};
      for (const input of requests.querySelectorAll(".comment")) {
        typing[input.closest(".request").dataset.id] = input.value;
      }
      requests.replaceChildren(...list.json.requests.map(render));
      for (const input of requests.querySelectorAll(".comment")) {
        const id = input.closest(".request").dataset.id;
        if (typing[id]) input.value = typing[id];
      }
      requests.dataset.key = key;
    }
    $("empty").hidden = list.json.requests.length > 0;
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

  async function vote(id, choice, comment) {
    const answer = await call("POST", "requests/" + encodeURIComponent(id) + "/votes", { vote: choice, comment });
    if (answer.status !== 200) {
      text($("message"), "Vote not counted: " + ((answer.json && (answer.json.why || answer.json.error)) || "HTTP " + answer.status));
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
