/* Lumora OTA dashboard: vanilla JS over the management API (/api/v1), authenticated by the
 * HttpOnly session cookie; writes send the session's CSRF token. Views are chosen by the URL
 * hash: #/updates, #/updates/<id>, #/deployments, #/stats. Data refreshes every 30 s.
 * All text goes in through textContent (never innerHTML), so API data cannot inject markup.
 */
"use strict";
(function () {
  const REFRESH_MS = 30000;
  const PAGE_SIZE = 20;
  const state = {
    key: null, csrf: "", projects: [], project: "", channels: [],
    cursors: [null], page: 0, nextCursor: null,
  };
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, options = {}) {
    const method = options.method || "GET";
    const headers = { accept: "application/json" };
    if (options.body !== undefined) headers["content-type"] = "application/json";
    if (method !== "GET") headers["x-csrf-token"] = state.csrf;
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    });
    if (resp.status === 204) return null;
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      if (resp.status === 401 && !path.startsWith("/dashboard/session")) showLogin();
      throw new ApiError(resp.status, data.detail || resp.statusText);
    }
    return data;
  }

  function qs(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    return q.toString();
  }

  function say(message, isError) {
    const status = $("status");
    status.textContent = message;
    status.classList.toggle("error", Boolean(isError));
  }

  // ------------------------------------------------------------------ helpers

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function button(text, className, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (className) b.className = className;
    b.addEventListener("click", onClick);
    return b;
  }

  const HEALTH_LABELS = { ok: "healthy", failing: "failing", insufficientData: "not enough launches" };
  // A newer load of the same view supersedes an older one still in flight (its answer would
  // otherwise overwrite fresher data, e.g. after switching projects quickly).
  const loadTokens = {};
  function latest(view) {
    const token = (loadTokens[view] = (loadTokens[view] || 0) + 1);
    return () => loadTokens[view] === token;
  }

  function fmtTime(iso) { return iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : ""; }
  function fmtRate(r) { return r === null || r === undefined ? "n/a" : (r * 100).toFixed(1) + "%"; }
  function fmtBytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }
  function canWrite() { return state.key && (state.key.role === "publish" || state.key.role === "admin"); }

  function confirmAction(text) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  function fillSelect(select, values, { keep = true, allLabel = null } = {}) {
    const previous = select.value;
    select.textContent = "";
    if (allLabel !== null) select.appendChild(new Option(allLabel, ""));
    for (const v of values) select.appendChild(typeof v === "string" ? new Option(v, v) : new Option(v.label, v.value));
    if (keep && [...select.options].some((o) => o.value === previous)) select.value = previous;
  }

  // ------------------------------------------------------------------ session

  function showLogin() {
    $("login").hidden = false;
    $("app").hidden = true;
    $("session-bar").hidden = true;
    $("api-key").focus();
  }

  async function startSession(session) {
    state.key = session.key;
    state.csrf = session.csrfToken;
    $("login").hidden = true;
    $("app").hidden = false;
    $("session-bar").hidden = false;
    $("key-info").textContent = `${session.key.name || "key"} (${session.key.role})`;
    const projects = await api("/api/v1/projects");
    state.projects = projects.items;
    // The last project used, in any tab or earlier session (not the alphabetically first).
    const remembered = localStorage.getItem("lumora.project");
    state.project = (state.projects.find((p) => p.id === remembered) || state.projects[0] || {}).id || "";
    fillSelect($("project-select"), state.projects.map((p) => ({ value: p.id, label: `${p.name} (${p.slug})` })), { keep: false });
    $("project-select").value = state.project;
    onProjectChanged();
    route();
  }

  function onProjectChanged() {
    const project = state.projects.find((p) => p.id === state.project);
    state.channels = project ? project.channels : [];
    fillSelect($("f-channel"), state.channels, { allLabel: "All" });
    fillSelect($("s-channel"), state.channels, { allLabel: "All" });
    state.cursors = [null];
    state.page = 0;
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const session = await api("/dashboard/session", { method: "POST", body: { apiKey: $("api-key").value } });
      $("api-key").value = "";
      await startSession(session);
    } catch (err) {
      $("login-error").textContent = err.status === 401 ? "That key is unknown, revoked or expired." : err.message;
    }
  });

  $("sign-out").addEventListener("click", async () => {
    await api("/dashboard/session", { method: "DELETE" }).catch(() => null);
    state.key = null;
    showLogin();
  });

  $("project-select").addEventListener("change", () => {
    state.project = $("project-select").value;
    localStorage.setItem("lumora.project", state.project);
    onProjectChanged();
    route();
  });

  // ------------------------------------------------------------------ routing

  const VIEWS = ["updates", "update", "deployments", "stats", "delivery"];

  function currentRoute() {
    const parts = (location.hash || "#/updates").slice(2).split("/");
    if (parts[0] === "updates" && parts[1]) return { view: "update", id: decodeURIComponent(parts[1]) };
    return { view: VIEWS.includes(parts[0]) && parts[0] !== "update" ? parts[0] : "updates" };
  }

  async function route() {
    if (!state.key) return;
    const r = currentRoute();
    for (const v of VIEWS) $("view-" + v).hidden = v !== r.view;
    const tabView = r.view === "update" ? "updates" : r.view;
    for (const tab of document.querySelectorAll("[role=tab]")) {
      const selected = tab.dataset.view === tabView;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
    }
    try {
      if (r.view === "updates") await loadUpdates();
      else if (r.view === "update") await loadUpdate(r.id);
      else if (r.view === "deployments") await loadDeployments();
      else if (r.view === "delivery") await loadDelivery();
      else await loadStats();
      say(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      say(err.message, true);
    }
  }

  window.addEventListener("hashchange", route);
  const tabs = [...document.querySelectorAll("[role=tab]")];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => { location.hash = "#/" + tab.dataset.view; });
    tab.addEventListener("keydown", (ev) => {
      const step = ev.key === "ArrowRight" ? 1 : ev.key === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      next.click();
    });
  });

  // ------------------------------------------------------------------ updates list

  async function loadUpdates() {
    const params = {
      project: state.project, channel: $("f-channel").value, platform: $("f-platform").value,
      runtimeVersion: $("f-runtime").value.trim(), limit: PAGE_SIZE, cursor: state.cursors[state.page],
    };
    const current = latest("updates");
    const data = await api("/api/v1/updates?" + qs(params));
    if (!current()) return;
    state.nextCursor = data.nextCursor;
    const body = $("updates-table").tBodies[0];
    body.textContent = "";
    for (const u of data.items) {
      const row = body.insertRow();
      row.dataset.updateId = u.id;
      cell(row, fmtTime(u.createdAt));
      row.insertCell().appendChild(link("#/updates/" + encodeURIComponent(u.id), u.message || "(no message)"));
      cell(row, u.channel);
      cell(row, u.platform);
      cell(row, u.runtimeVersion);
      cell(row, u.kind === "rollbackToEmbedded" ? "embedded" : u.rollout + "%", "rollout");
      cell(row, u.status, "status-" + u.status);
      cell(row, u.id.slice(0, 8), "mono");
      // Every platform's update of one publish shares a group id (what the CLI accepts).
      const group = cell(row, u.groupId.slice(0, 8), "mono group");
      group.title = u.groupId;
      row.dataset.groupId = u.groupId;
    }
    if (!data.items.length) {
      const row = body.insertRow();
      const td = cell(row, "No updates match these filters.", "muted");
      td.colSpan = 9;
    }
    $("page-prev").disabled = state.page === 0;
    $("page-next").disabled = !state.nextCursor;
    $("page-info").textContent = `Page ${state.page + 1}`;
  }

  $("update-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.cursors = [null];
    state.page = 0;
    loadUpdates().catch((err) => say(err.message, true));
  });
  $("page-next").addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.cursors[state.page + 1] = state.nextCursor;
    state.page += 1;
    loadUpdates().catch((err) => say(err.message, true));
  });
  $("page-prev").addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    loadUpdates().catch((err) => say(err.message, true));
  });

  // ------------------------------------------------------------------ one update

  let shownUpdate = null;
  let shownGroup = null;

  // Delta updates (#10): what a device downloads for the bundle, its patches, and the bytes
  // that patches and compression saved (GET /api/v1/updates/{id}/delta).
  async function deltaFacts(u) {
    if (u.kind !== "update") return [];
    const d = await api(`/api/v1/updates/${encodeURIComponent(u.id)}/delta`).catch(() => null);
    if (!d || !d.launchAsset) return [];
    const sizes = Object.entries(d.launchAsset.sizes).filter(([, n]) => n != null);
    const useful = d.patches.filter((p) => p.useful);
    const saved = d.savings;
    return [
      ["Bundle download", sizes.map(([k, n]) => `${k} ${fmtBytes(n)}`).join(", ")],
      ["Patches", useful.length ? useful.map((p) => fmtBytes(p.size)).join(", ") : "none"],
      ["Saved by patches", `${fmtBytes(saved.patchBytesSaved)} (${saved.patchDownloads} patch downloads)`],
      ["Saved by compression", fmtBytes(saved.compressionBytesSaved)],
    ];
  }

  // Every fetch happens first and the page is drawn in one synchronous step after the last
  // await, and only by the newest load: two loads in flight (a hash change during the first
  // render, the 30 s refresh, a save) can never interleave their DOM writes.
  async function loadUpdate(id) {
    const current = latest("update");
    const u = await api("/api/v1/updates/" + encodeURIComponent(id));
    if (!current()) return;
    const [delta, manifest, stats, group, plan] = await Promise.all([
      deltaFacts(u),
      u.kind === "update"
        ? api("/api/v1/manifests/" + encodeURIComponent(u.id)).catch((e) => ({ error: e.message }))
        : Promise.resolve(null),
      api("/api/v1/stats?" + qs({ project: u.projectId, update: u.id })),
      api("/api/v1/groups/" + encodeURIComponent(u.groupId)).catch(() => null),
      api("/api/v1/updates/" + encodeURIComponent(u.id) + "/rollout-plan").catch(() => ({ items: [] })),
    ]);
    if (!current()) return;
    renderUpdate(u, [...delta, ...planFacts(plan)], manifest, stats, group);
  }

  // The rollout plan (issue 19) as fact rows: current step, next step and when, gate figures.
  function planFacts(plan) {
    const p = plan && plan.items && plan.items[0];
    if (!p) return [];
    const pct = (x) => (x === null || x === undefined ? "-" : (x * 100).toFixed(2) + "%");
    const rows = [
      ["Rollout plan", `${p.status}: step ${p.stepIndex + 1} of ${p.steps.length} (${p.steps.join("% → ")}%)`],
      ["Next step", p.nextStep === null ? "none" : `${p.nextStep}% after ${fmtTime(p.nextStepAt)} if the gate holds`],
      ["Plan gate", `${p.gate.failures} of ${p.gate.launches} launches failed (${pct(p.gate.failureRate)}); ` +
        `max ${pct(p.maxFailureRate)}, at least ${p.minLaunches} launches`],
    ];
    if (p.haltReason) rows.push(["Halted because", p.haltReason]);
    return rows;
  }

  // ------------------------------------------------------------------ devices & webhooks

  async function loadDelivery() {
    const current = latest("delivery");
    const project = encodeURIComponent(state.project);
    const [pins, hooks] = await Promise.all([
      api(`/api/v1/projects/${project}/devices`),
      api(`/api/v1/projects/${project}/webhooks`),
    ]);
    const lists = await Promise.all(hooks.items.map((h) =>
      api(`/api/v1/projects/${project}/webhooks/${encodeURIComponent(h.id)}/deliveries?limit=20`)
        .then((d) => d.items.map((x) => ({ ...x, url: h.url })))));
    if (!current()) return;
    const pinBody = document.createElement("tbody");
    for (const p of pins.items) {
      const row = pinBody.insertRow();
      cell(row, p.deviceId, "mono"); cell(row, p.channel); cell(row, fmtTime(p.createdAt));
    }
    $("pins-table").tBodies[0].replaceWith(pinBody);
    const rows = lists.flat().sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1)).slice(0, 50);
    const body = document.createElement("tbody");
    for (const d of rows) {
      const row = body.insertRow();
      const last = d.attempts[0] || {};
      cell(row, fmtTime(d.createdAt)); cell(row, d.url); cell(row, d.type);
      cell(row, d.status); cell(row, d.attemptCount);
      cell(row, last.statusCode || last.error || "");
    }
    $("deliveries-table").tBodies[0].replaceWith(body);
  }

  function renderUpdate(u, delta, manifest, stats, group) {
    shownUpdate = u;
    shownGroup = group;
    $("update-title").textContent = u.message || `Update ${u.id.slice(0, 8)}`;
    const rows = [
      ["Id", u.id], ["Group", u.groupId], ["Channel", u.channel], ["Platform", u.platform],
      ["Runtime version", u.runtimeVersion], ["Created", fmtTime(u.createdAt)],
      ["Rollout", u.kind === "rollbackToEmbedded" ? "roll back to embedded" : u.rollout + "%"],
      ["Mandatory", u.mandatory ? "yes" : "no"], ["Status", u.status],
    ];
    const facts = document.createDocumentFragment();
    for (const [k, v] of [...rows, ...delta]) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v; dd.dataset.fact = k;
      facts.append(dt, dd);
    }
    const siblings = group ? group.updates.filter((x) => x.id !== u.id) : [];
    if (siblings.length) {
      const dt = document.createElement("dt"); dt.textContent = "Same group";
      const dd = document.createElement("dd"); dd.dataset.fact = "Same group";
      siblings.forEach((x, i) => {
        if (i) dd.append(", ");
        dd.appendChild(link("#/updates/" + encodeURIComponent(x.id), `${x.platform} ${x.id.slice(0, 8)} (${x.rollout}%)`));
      });
      facts.append(dt, dd);
    }
    $("update-facts").replaceChildren(facts);
    $("rollout-group-row").hidden = !siblings.length;
    $("rollout-group-platforms").textContent = group ? group.updates.map((x) => x.platform).join(", ") : "";
    if (document.activeElement !== $("rollout-input")) $("rollout-input").value = u.rollout;
    const writable = canWrite() && u.status === "active";
    for (const id2 of ["rollout-input", "rollout-save", "rollback-button", "promote-channel", "promote-button"]) {
      $(id2).disabled = !writable;
    }
    // No default target: promoting is a production change, the channel is chosen on purpose.
    fillSelect($("promote-channel"), state.channels.filter((c) => c !== u.channel), { allLabel: "Choose a channel…" });

    const assets = document.createElement("tbody");
    for (const a of [u.launchAsset, ...u.assets].filter(Boolean)) {
      const row = assets.insertRow();
      cell(row, a.key + (a === u.launchAsset ? " (launch)" : ""));
      cell(row, a.contentType);
      cell(row, fmtBytes(a.size));
      cell(row, a.sha256.slice(0, 16) + "…", "mono");
    }
    $("assets-table").tBodies[0].replaceWith(assets);
    $("manifest-json").textContent = manifest === null
      ? "(a roll-back-to-embedded marker has no manifest)"
      : JSON.stringify(manifest, null, 2);
    renderTotals($("update-totals"), stats.totals, stats.updates.find((x) => x.updateId === u.id));
    renderChart($("update-chart"), stats.daily, "Statistics of this update per day");
  }

  $("rollout-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = Number($("rollout-input").value);
    const wholeGroup = shownGroup && shownGroup.updates.length > 1 && $("rollout-group").checked;
    try {
      const path = wholeGroup
        ? "/api/v1/groups/" + encodeURIComponent(shownGroup.id)
        : "/api/v1/updates/" + encodeURIComponent(shownUpdate.id);
      await api(path, { method: "PATCH", body: { rollout: value } });
      await loadUpdate(shownUpdate.id);
      say(wholeGroup ? `Rollout of the whole group set to ${value}%.` : `Rollout set to ${value}%.`);
    } catch (err) { say(err.message, true); }
  });

  async function rollBack(update) {
    const ok = await confirmAction(
      `Roll back update ${update.id.slice(0, 8)} on ${update.channel} (${update.platform})? ` +
      "The update served before it is republished as a new update, so devices running " +
      "this one move back (or to the embedded update when there was none).");
    if (!ok) return false;
    await api(`/api/v1/updates/${encodeURIComponent(update.id)}/rollback`, { method: "POST", body: {} });
    return true;
  }

  // Promoting publishes to another channel's devices: always confirmed, never a default.
  async function promote(update, channel) {
    if (!channel) throw new Error("Choose the channel to promote to.");
    const ok = await confirmAction(
      `Promote update ${update.id.slice(0, 8)} (${update.platform}) to ${channel}? ` +
      `Devices on ${channel} get it.`);
    if (!ok) return null;
    return api(`/api/v1/updates/${encodeURIComponent(update.id)}/promote`, { method: "POST", body: { channel } });
  }

  $("rollback-button").addEventListener("click", async () => {
    try {
      if (await rollBack(shownUpdate)) {
        await loadUpdate(shownUpdate.id);
        say(`Update ${shownUpdate.id.slice(0, 8)} rolled back.`);
      }
    } catch (err) { say(err.message, true); }
  });
  $("promote-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const channel = $("promote-channel").value;
    try {
      const copy = await promote(shownUpdate, channel);
      if (copy) say(`Promoted to ${channel} as ${copy.id.slice(0, 8)}.`);
    } catch (err) { say(err.message, true); }
  });

  // ------------------------------------------------------------------ deployments

  async function loadDeployments() {
    const current = latest("deployments");
    const data = await api("/api/v1/deployments?" + qs({ project: state.project }));
    if (!current()) return;
    renderChannelStates(data.items);
    const body = $("deployments-table").tBodies[0];
    body.textContent = "";
    let count = 0;
    for (const dep of data.items) {
      const splits = {};
      for (const entry of dep.serving || []) splits[entry.platform + "\u0000" + entry.runtimeVersion] = entry.split;
      for (const [platform, byRuntime] of Object.entries(dep.current || {})) {
        for (const [runtime, u] of Object.entries(byRuntime)) {
          count += 1;
          const row = body.insertRow();
          row.dataset.channel = dep.name;
          row.dataset.platform = platform;
          row.dataset.runtime = runtime;
          cell(row, dep.name);
          cell(row, platform);
          cell(row, runtime);
          row.insertCell().appendChild(link("#/updates/" + encodeURIComponent(u.id),
            (u.kind === "rollbackToEmbedded" ? "embedded " : "") + (u.message || u.id.slice(0, 8))));
          renderSplit(row.insertCell(), splits[platform + "\u0000" + runtime] || [], dep.paused);
          const rolloutCell = row.insertCell();
          const actions = row.insertCell();
          if (u.kind === "rollbackToEmbedded" || !canWrite()) {
            rolloutCell.textContent = u.kind === "rollbackToEmbedded" ? "—" : u.rollout + "%";
            continue;
          }
          const form = document.createElement("form");
          form.className = "inline";
          const inputId = `rollout-${dep.id}-${platform}-${runtime}`.replace(/[^a-zA-Z0-9_-]/g, "_");
          const label = document.createElement("label");
          label.htmlFor = inputId;
          label.className = "sr-only";
          label.textContent = `Rollout of ${dep.name} ${platform} ${runtime}`;
          const input = document.createElement("input");
          Object.assign(input, { id: inputId, type: "number", min: 0, max: 100, step: 1, value: u.rollout, required: true });
          input.className = "rollout-edit";
          const save = document.createElement("button");
          save.type = "submit";
          save.textContent = "Save";
          form.append(label, input, save);
          form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            try {
              const value = Number(input.value);
              await api("/api/v1/updates/" + encodeURIComponent(u.id), { method: "PATCH", body: { rollout: value } });
              await loadDeployments();
              say(`Rollout of ${dep.name}/${platform} set to ${value}%.`);
            } catch (err) { say(err.message, true); }
          });
          rolloutCell.appendChild(form);
          actions.appendChild(button("Roll back…", "danger", async () => {
            try {
              if (await rollBack({ ...u, channel: dep.name, platform })) {
                await loadDeployments();
                say(`Update ${u.id.slice(0, 8)} rolled back.`);
              }
            } catch (err) { say(err.message, true); }
          }));
          const others = state.channels.filter((c) => c !== dep.name);
          if (others.length) {
            const pf = document.createElement("form");
            pf.className = "inline";
            const sel = document.createElement("select");
            sel.id = inputId + "-promote";
            const pl = document.createElement("label");
            pl.htmlFor = sel.id;
            pl.className = "sr-only";
            pl.textContent = `Promote ${dep.name} ${platform} to channel`;
            fillSelect(sel, others, { allLabel: "Choose a channel…" });
            const go = document.createElement("button");
            go.type = "submit";
            go.textContent = "Promote";
            pf.append(pl, sel, go);
            pf.addEventListener("submit", async (ev) => {
              ev.preventDefault();
              const channel = sel.value;
              try {
                const copy = await promote({ ...u, platform }, channel);
                if (!copy) return;
                await loadDeployments();
                say(`Promoted to ${channel} as ${copy.id.slice(0, 8)}.`);
              } catch (err) { say(err.message, true); }
            });
            actions.appendChild(pf);
          }
        }
      }
    }
    $("deployments-empty").hidden = count > 0;
  }

  // What devices get (GET /deployments: serving[].split, the selection engine's rules): the
  // share of devices on each update, newest first, down to what the rest falls back to.
  function renderSplit(td, split, paused) {
    td.className = "split";
    const list = document.createElement("ul");
    if (paused) {
      const li = document.createElement("li");
      li.className = "paused";
      li.textContent = "Paused: no update";
      list.appendChild(li);
    }
    for (const share of split) {
      const li = document.createElement("li");
      const pct = document.createElement("strong");
      pct.textContent = `${share.share}%`;
      li.append(pct, " ");
      if (share.update) {
        li.dataset.updateId = share.update.id;
        li.appendChild(link("#/updates/" + encodeURIComponent(share.update.id),
          share.update.kind === "rollbackToEmbedded" ? "roll back to embedded" : share.update.id.slice(0, 8)));
        if (share.update.kind !== "rollbackToEmbedded") li.append(` at ${share.update.rollout}%`);
      } else {
        li.append(paused ? "" : "no update (keep what they run)");
        if (paused) continue;
      }
      list.appendChild(li);
    }
    td.appendChild(list);
  }

  function renderChannelStates(items) {
    const list = $("channel-states");
    list.textContent = "";
    for (const dep of items) {
      const li = document.createElement("li");
      li.dataset.channel = dep.name;
      li.dataset.paused = String(Boolean(dep.paused));
      const name = document.createElement("strong");
      name.textContent = dep.name;
      const state = document.createElement("span");
      state.className = dep.paused ? "badge paused" : "badge";
      state.textContent = dep.paused ? "paused: devices get no update" : "serving";
      li.append(name, " ", state);
      if (canWrite()) {
        const action = dep.paused ? "resume" : "pause";
        li.append(" ", button(dep.paused ? "Resume…" : "Pause…", dep.paused ? "secondary" : "danger", async () => {
          const ok = await confirmAction(dep.paused
            ? `Resume channel ${dep.name}? Its devices get its updates again.`
            : `Pause channel ${dep.name}? Its devices get no update until it is resumed.`);
          if (!ok) return;
          try {
            await api(`/api/v1/deployments/${encodeURIComponent(dep.id)}/${action}`, { method: "POST", body: {} });
            await loadDeployments();
            say(`Channel ${dep.name} ${dep.paused ? "resumed" : "paused"}.`);
          } catch (err) { say(err.message, true); }
        }));
      }
      list.appendChild(li);
    }
  }

  // ------------------------------------------------------------------ statistics

  const CHART_SERIES = [
    ["checks", "Checks"], ["downloads", "Downloads"], ["installs", "Installs"],
    ["launchFailures", "Launch failures"], ["uniqueDevices", "Active devices"],
  ];

  function renderChart(container, daily, title) {
    window.LumoraChart.render(container, {
      title,
      labels: daily.map((d) => d.date),
      series: CHART_SERIES.map(([key, name]) => ({ key, name, values: daily.map((d) => d[key]) })),
    });
    showNewestDays(container);
  }

  // On a narrow screen a chart scrolls inside its box: keep the newest days (today) in view,
  // after drawing and whenever the window changes size (a phone turned, a window narrowed).
  function showNewestDays(container) {
    const svg = container.querySelector("svg");
    if (!svg) return;
    const pad = parseFloat(getComputedStyle(container).paddingRight) || 0;
    // Bring the plot's right edge (today) to the box's right edge.
    container.scrollLeft += svg.getBoundingClientRect().right - container.getBoundingClientRect().right + pad;
  }
  window.addEventListener("resize", () => document.querySelectorAll(".chart").forEach(showNewestDays));

  function renderTotals(container, totals, perUpdate) {
    container.textContent = "";
    const items = [
      ["checks", "Checks", totals.checks], ["downloads", "Downloads", totals.downloads],
      ["installs", "Installs", totals.installs], ["uniqueDevices", "Unique devices", totals.uniqueDevices],
      ["active1d", "Active (1 day)", totals.activeDevices["1d"]],
      ["active7d", "Active (7 days)", totals.activeDevices["7d"]],
      ["active30d", "Active (30 days)", totals.activeDevices["30d"]],
      ["launchSuccesses", "Launch successes", totals.launchSuccesses],
      ["launchFailures", "Launch failures", totals.launchFailures],
      ["rollbacks", "Rollbacks", totals.rollbacks],
      ["successRate", "Success rate", fmtRate(totals.successRate)],
      ["failureRate", "Failure rate", fmtRate(totals.failureRate)],
    ];
    if (perUpdate) items.push(["health", "Health", HEALTH_LABELS[perUpdate.health.status] || perUpdate.health.status]);
    for (const [key, label, value] of items) {
      const box = document.createElement("div");
      box.className = "total" + (key === "health" && value === "failing" ? " flagged" : "");
      box.dataset.total = key;
      const v = document.createElement("strong"); v.textContent = String(value);
      const l = document.createElement("span"); l.textContent = label;
      box.append(v, l);
      container.appendChild(box);
    }
  }

  async function loadStats() {
    const days = Number($("s-range").value);
    const until = new Date();
    const since = new Date(until.getTime() - (days - 1) * 86400000);
    const current = latest("stats");
    const data = await api("/api/v1/stats?" + qs({
      project: state.project, channel: $("s-channel").value, update: $("s-update").value.trim(),
      since: since.toISOString().slice(0, 10), until: until.toISOString().slice(0, 10),
    }));
    if (!current()) return;
    renderTotals($("stats-totals"), data.totals, null);
    renderChart($("stats-chart"), data.daily, "Checks, downloads, installs, failures and devices per day");
    $("stats-thresholds").textContent =
      `An update is flagged when more than ${fmtRate(data.thresholds.failureRate)} of at least ` +
      `${data.thresholds.minLaunches} launches fail, from at least ${data.thresholds.minFailures} ` +
      `devices (at most ${data.thresholds.devicesPerSource} per network address count).`;
    const body = $("health-table").tBodies[0];
    body.textContent = "";
    for (const u of data.updates) {
      const row = body.insertRow();
      row.dataset.updateId = u.updateId;
      row.insertCell().appendChild(link("#/updates/" + encodeURIComponent(u.updateId), u.message || u.updateId.slice(0, 8)));
      cell(row, u.channel);
      cell(row, u.platform);
      cell(row, u.rollout + "%");
      cell(row, u.installs);
      cell(row, u.launchFailures);
      cell(row, fmtRate(u.failureRate));
      cell(row, HEALTH_LABELS[u.health.status] || u.health.status, "health-" + u.health.status);
      if (u.health.flagged) row.classList.add("flagged");
    }
    if (!data.updates.length) cell(body.insertRow(), "No update has statistics in this range.", "muted").colSpan = 8;
  }

  $("stats-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadStats().catch((err) => say(err.message, true));
  });

  // ------------------------------------------------------------------ start

  setInterval(() => {
    const busy = $("confirm-dialog").open || (document.activeElement && document.activeElement.matches("input, select"));
    if (state.key && !busy && !document.hidden) route();
  }, REFRESH_MS);

  api("/dashboard/session")
    .then((session) => (session.signedIn ? startSession(session) : showLogin()))
    .catch(() => showLogin());
})();
