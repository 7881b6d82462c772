// The care team's dashboard: sign-in, the worklist (live), acting on alerts, the patient view.
import { ApiError, all, api, decodeClaims, session } from "./api.js";
import { chart } from "./charts.js";
import { Feed } from "./feed.js";
import { completeSignIn, startSignIn } from "./oidc.js";

// A token in the address bar (/dashboard/#token=…) is taken and removed from it at once.
const fragment = new URLSearchParams(location.hash.slice(1));
const fragmentToken = fragment.get("token");
if (fragmentToken !== null) {
  history.replaceState(null, "", location.pathname + location.search);
}

const $ = (id) => document.getElementById(id);
const SEVERITIES = ["emergency", "urgent", "routine"];
const RANK = { emergency: 0, urgent: 1, routine: 2 };
const SEVERITY_LABEL = { emergency: "Emergency", urgent: "Urgent", routine: "Routine" };
const STATUS_LABEL = { open: "Open", acknowledged: "Acknowledged", resolved: "Resolved" };
const VITALS = [
  ["temperature_c", "Temperature", "°C"],
  ["systolic_bp", "Systolic blood pressure", "mm Hg"],
  ["diastolic_bp", "Diastolic blood pressure", "mm Hg"],
  ["heart_rate", "Heart rate", "/min"],
  ["spo2", "Oxygen saturation (SpO2)", "%"],
  ["weight_kg", "Weight", "kg"],
];
const BASE_TITLE = document.title;

const state = {
  claims: null,
  feed: null,
  alerts: [],
  seen: new Set(),
  listLoaded: false, // the worklist of these filters has been shown once
  patients: new Map(),
  symptoms: null,
  refreshTimer: null,
  refreshTurn: 0,
  patientTimer: null,
  view: null,
  current: null, // the patient view's {alert, patient}
  resolving: null,
  flashTimer: null,
  alarms: 0,
  alarmed: new Set(), // "<alert id>:<what>": one alarm per alert and change
};

// --- small helpers -----------------------------------------------------------------------

function node(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function duration(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  if (minutes < 1) return "less than a minute";
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function isOverdue(alert) {
  return alert.status !== "resolved" && (Boolean(alert.overdue_at) || new Date(alert.follow_up_due_at) < new Date());
}

function dueText(alert) {
  if (alert.status === "resolved") return `resolved ${new Date(alert.resolved_at).toLocaleString()}`;
  const left = new Date(alert.follow_up_due_at) - new Date();
  return left >= 0 ? `${duration(left)} left` : `overdue by ${duration(left)}`;
}

function severityBadge(severity) {
  return node("span", { class: `sev sev-${severity}` }, SEVERITY_LABEL[severity] || severity);
}

function patientLabel(patientId) {
  const patient = state.patients.get(patientId);
  if (!patient) return "…";
  return patient.display_name || patient.external_id || `Patient ${patientId.slice(0, 8)}`;
}

function showBanner(text, kind = "error") {
  const banner = $("banner");
  banner.className = `banner banner-${kind}`;
  banner.setAttribute("role", kind === "error" ? "alert" : "status");
  $("banner-text").textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function problemText(error) {
  if (error instanceof ApiError) return error.message;
  return "The service did not answer. Check the connection and try again.";
}

// --- sign-in -------------------------------------------------------------------------------

function refuse(message) {
  session.clear();
  stopAll();
  $("session-bar").hidden = true;
  $("worklist").hidden = true;
  $("patient").hidden = true;
  $("signin").hidden = false;
  const error = $("signin-error");
  error.textContent = message;
  error.hidden = !message;
}

// Claims are read only to choose what to show; the API decides what the token may do.
function checkClaims(token) {
  const claims = decodeClaims(token);
  if (claims.role === "patient") {
    throw new Error("This page is for care teams: a patient's token cannot open it.");
  }
  if (claims.role !== "clinician" && claims.role !== "admin") {
    throw new Error("This token has no care-team role (clinician or admin).");
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
    throw new Error("This token has expired. Get a new one and sign in again.");
  }
  return claims;
}

async function signIn(token) {
  let claims;
  try {
    claims = checkClaims(token);
  } catch (error) {
    refuse(error.message);
    return;
  }
  session.set(token);
  try {
    await api("/v1/alerts/summary");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      refuse("The service refused this token (invalid or expired). Sign in again.");
    } else if (error instanceof ApiError && error.status === 403) {
      refuse("This token may not read alerts.");
    } else {
      refuse(problemText(error));
    }
    return;
  }
  state.claims = claims;
  $("signin").hidden = true;
  $("signin-error").hidden = true;
  $("session-bar").hidden = false;
  const teams = Array.isArray(claims.teams) ? claims.teams : [];
  $("who").textContent =
    claims.role === "admin" ? `${claims.sub} (admin)` : `${claims.sub} · ${teams.join(", ")}`;
  const select = $("f-team");
  select.replaceChildren(node("option", { value: "" }, "All my teams"));
  for (const team of teams) select.append(node("option", { value: team }, team));
  startFeed(token);
  route();
}

function stopAll() {
  if (state.feed) state.feed.stop();
  state.feed = null;
  stopFlash();
}

// --- the live feed and the emergency alarm ---------------------------------------------------

function startFeed(token) {
  state.feed = new Feed({
    url: "/v1/alerts/stream",
    token,
    onEvent: (event) => {
      // For people and tests alike: how far the feed has read.
      if (event.id !== null) document.body.dataset.lastEventId = event.id;
      let alert = null;
      try {
        alert = JSON.parse(event.data);
      } catch {
        return;
      }
      const what = { "alert.raised": "raised", "alert.severity_raised": "raised", "alert.escalated": "escalated" }[event.type];
      if (alert.severity === "emergency" && what) alarm(alert, what);
      scheduleRefresh();
      if (state.current && alert.patient_id === state.current.patient.id) schedulePatientRefresh();
    },
    onState: (s, status) => {
      const label = {
        connecting: "Connecting…",
        live: "Live",
        reconnecting: "Reconnecting…",
        refused: "Live feed refused",
      }[s];
      const el = $("live-status");
      el.textContent = label;
      el.dataset.state = s;
      if (s === "refused" && status === 401) refuse("Your sign-in has expired. Sign in again.");
      // After a reconnect the server replays what was missed; refresh anyway for a gap
      // longer than it keeps.
      if (s === "live") scheduleRefresh();
    },
  });
  state.feed.start();
}

function muted() {
  return localStorage.getItem("dashboard.muted") === "1";
}

function showMute() {
  const button = $("mute");
  button.setAttribute("aria-pressed", String(muted()));
  button.textContent = muted() ? "Emergency sound: muted" : "Emergency sound: on";
}

function alarm(alert, what) {
  const key = `${alert.id}:${what}`;
  if (state.alarmed.has(key)) return;
  state.alarmed.add(key);
  state.alarms += 1;
  document.body.dataset.alarms = String(state.alarms);
  if (muted()) return;
  beep();
  stopFlash();
  let on = false;
  const until = Date.now() + 60000;
  state.flashTimer = setInterval(() => {
    on = !on;
    document.title = on ? `EMERGENCY: ${alert.title}` : BASE_TITLE;
    if (Date.now() > until) stopFlash();
  }, 800);
  document.title = `EMERGENCY: ${alert.title}`;
}

function stopFlash() {
  if (state.flashTimer) clearInterval(state.flashTimer);
  state.flashTimer = null;
  document.title = BASE_TITLE;
}

let audio = null;
function beep() {
  try {
    audio = audio || new AudioContext();
    const now = audio.currentTime;
    for (const [i, freq] of [880, 660, 880].entries()) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.15, now + i * 0.25);
      gain.gain.exponentialRampToValueAtTime(0.001, now + i * 0.25 + 0.22);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.25);
      osc.stop(now + i * 0.25 + 0.23);
    }
  } catch {
    // No audio (autoplay policy before any click, or no device): the title still flashes.
  }
}

// --- the worklist --------------------------------------------------------------------------

function triageKey(a) {
  return [RANK[a.severity] ?? 9, a.escalated_at ? 0 : 1, a.follow_up_due_at, a.id];
}

function byTriage(a, b) {
  const ka = triageKey(a);
  const kb = triageKey(b);
  for (let i = 0; i < ka.length; i++) {
    if (ka[i] < kb[i]) return -1;
    if (ka[i] > kb[i]) return 1;
  }
  return 0;
}

function filters() {
  return { severity: $("f-severity").value, status: $("f-status").value, team: $("f-team").value };
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => refreshWorklist().catch(() => {}), 100);
}

async function loadPatients(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.patients.has(id));
  await Promise.all(
    missing.map(async (id) => {
      try {
        state.patients.set(id, await api(`/v1/patients/${id}`));
      } catch {
        // Shown as "…"; the alert row is still usable.
      }
    }),
  );
}

// quiet: a first load or new filters, where nothing is "new" to highlight or sound for.
async function refreshWorklist({ quiet = false } = {}) {
  if (!state.claims) return;
  if (quiet) {
    state.seen.clear();
    state.listLoaded = false;
  }
  // Of overlapping refreshes, only the latest one draws.
  const turn = ++state.refreshTurn;
  const f = filters();
  const params = {};
  if (f.severity) params.severity = f.severity;
  if (f.team) params.team = f.team;
  const statuses = f.status === "active" ? ["open", "acknowledged"] : [f.status];
  try {
    const [pages, summary] = await Promise.all([
      Promise.all(statuses.map((status) => all("/v1/alerts", { ...params, status }, 1000))),
      // The counters follow the team filter, as the list does.
      api(f.team ? `/v1/alerts/summary?${new URLSearchParams({ team: f.team })}` : "/v1/alerts/summary"),
    ]);
    const alerts = pages.flatMap((p) => p.items).sort(byTriage);
    await loadPatients(alerts.map((a) => a.patient_id));
    if (turn !== state.refreshTurn) return;
    state.alerts = alerts;
    renderCounters(summary);
    if (state.listLoaded) {
      // Raised while the feed was away (a reconnect without an event id): sound for it too.
      for (const a of alerts) {
        if (!state.seen.has(a.id) && a.severity === "emergency" && a.status === "open") alarm(a, "raised");
      }
    } else {
      for (const a of alerts) if (a.severity === "emergency") state.alarmed.add(`${a.id}:raised`);
    }
    renderWorklist(alerts, pages.some((p) => p.more));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      refuse("Your sign-in has expired. Sign in again.");
      return;
    }
    showBanner(`The worklist could not be loaded: ${problemText(error)}`);
  }
}

function renderCounters(summary) {
  const list = $("counters");
  list.replaceChildren();
  for (const severity of SEVERITIES) {
    const row = summary.by_severity_and_status[severity] || {};
    const active = (row.open || 0) + (row.acknowledged || 0);
    list.append(
      node(
        "li",
        { class: `counter sev-${severity}`, dataset: { severity, count: String(active) } },
        node("span", { class: "count" }, String(active)),
        ` ${SEVERITY_LABEL[severity]}`,
      ),
    );
  }
  list.append(
    node(
      "li",
      { class: "counter counter-overdue", dataset: { severity: "overdue", count: String(summary.overdue) } },
      node("span", { class: "count" }, String(summary.overdue)),
      " Overdue",
    ),
  );
}

function renderWorklist(alerts, more) {
  // Keep the keyboard focus on the same control across a live re-render.
  const active = document.activeElement;
  const focusKey = active && active.dataset && active.dataset.focusKey;
  const body = $("alerts-body");
  const fresh = state.listLoaded;
  state.listLoaded = true;
  body.replaceChildren(...alerts.map((a) => alertRow(a, fresh && !state.seen.has(a.id))));
  for (const a of alerts) state.seen.add(a.id);
  $("empty").hidden = alerts.length > 0;
  $("list-note").textContent = more
    ? "Showing the first 1000 alerts of each status: narrow the filters to see the rest."
    : `${alerts.length} alert${alerts.length === 1 ? "" : "s"}`;
  if (focusKey) {
    const again = body.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

function marks(alert) {
  const out = [];
  if (alert.escalated_at) out.push(node("span", { class: "mark mark-escalated" }, "Escalated"));
  if (isOverdue(alert)) out.push(node("span", { class: "mark mark-overdue" }, "Overdue"));
  return out;
}

function alertRow(alert, isNew) {
  const row = node("tr", {
    class: `sev-row sev-row-${alert.severity}${isNew ? " new" : ""}`,
    dataset: { alertId: alert.id, severity: alert.severity, status: alert.status },
  });
  const link = node(
    "a",
    { href: `?alert=${alert.id}`, class: "alert-link", dataset: { focusKey: `open:${alert.id}` } },
    alert.title,
  );
  link.addEventListener("click", (event) => {
    event.preventDefault();
    navigate(`?alert=${alert.id}`);
  });
  row.append(
    node("td", {}, severityBadge(alert.severity)),
    node(
      "td",
      {},
      link,
      ...marks(alert),
      alert.occurrences > 1 ? node("span", { class: "hint" }, ` ×${alert.occurrences}`) : null,
      node("div", { class: "hint detail-line" }, alert.detail),
    ),
    node(
      "td",
      {},
      patientLabel(alert.patient_id),
      state.patients.has(alert.patient_id)
        ? node("div", { class: "hint" }, state.patients.get(alert.patient_id).care_team)
        : null,
    ),
    node("td", { class: "status", "data-label": "Status" }, STATUS_LABEL[alert.status] || alert.status),
    node(
      "td",
      {
        class: isOverdue(alert) ? "due due-over" : "due",
        "data-label": "Follow-up",
        title: new Date(alert.follow_up_due_at).toLocaleString(),
      },
      dueText(alert),
    ),
    node("td", {}, node("div", { class: "actions" }, ...actionButtons(alert))),
  );
  return row;
}

function actionButtons(alert) {
  const buttons = [];
  if (alert.status === "open") {
    buttons.push(
      node(
        "button",
        {
          type: "button",
          class: "ack",
          dataset: { focusKey: `ack:${alert.id}` },
          "aria-label": `Acknowledge: ${alert.title}`,
          onclick: () => acknowledge(alert),
        },
        "Acknowledge",
      ),
    );
  }
  if (alert.status !== "resolved") {
    buttons.push(
      node(
        "button",
        {
          type: "button",
          class: "resolve",
          dataset: { focusKey: `resolve:${alert.id}` },
          "aria-label": `Resolve: ${alert.title}`,
          onclick: () => openResolve(alert),
        },
        "Resolve…",
      ),
    );
  }
  return buttons;
}

// --- acting --------------------------------------------------------------------------------

async function conflict(alert, error) {
  let now = null;
  try {
    now = await api(`/v1/alerts/${alert.id}`);
  } catch {
    // The message below still says what happened.
  }
  const who = now && (now.resolved_by || now.acknowledged_by);
  const status = now ? ` It is now ${STATUS_LABEL[now.status] || now.status}${who ? ` (by ${who})` : ""}.` : "";
  showBanner(`Someone else acted on “${alert.title}” first: ${error.message}.${status}`, "error");
}

async function afterAction() {
  await refreshWorklist();
  if (state.current) await renderPatient(state.current.alert.id);
}

async function acknowledge(alert) {
  try {
    await api(`/v1/alerts/${alert.id}/acknowledge`, { method: "POST", body: {} });
    showBanner(`Acknowledged: ${alert.title}`, "ok");
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) await conflict(alert, error);
    else showBanner(`Could not acknowledge: ${problemText(error)}`);
  }
  await afterAction();
}

function openResolve(alert) {
  state.resolving = alert;
  $("resolve-what").textContent = `${SEVERITY_LABEL[alert.severity]}: ${alert.title}`;
  $("resolve-error").hidden = true;
  $("resolve-form").reset();
  $("resolve-dialog").showModal();
  $("resolve-note").focus();
}

async function submitResolve(event) {
  event.preventDefault();
  const alert = state.resolving;
  const note = $("resolve-note").value.trim();
  const outcome = new FormData($("resolve-form")).get("outcome");
  if (!note || !outcome) {
    const error = $("resolve-error");
    error.textContent = "A note and an outcome are both required.";
    error.hidden = false;
    return;
  }
  $("resolve-submit").disabled = true;
  try {
    await api(`/v1/alerts/${alert.id}/resolve`, { method: "POST", body: { note, outcome } });
    $("resolve-dialog").close();
    showBanner(`Resolved: ${alert.title}`, "ok");
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      $("resolve-dialog").close();
      await conflict(alert, error);
    } else {
      const box = $("resolve-error");
      box.textContent = problemText(error);
      box.hidden = false;
    }
  } finally {
    $("resolve-submit").disabled = false;
  }
  await afterAction();
}

// --- the patient view ----------------------------------------------------------------------

function schedulePatientRefresh() {
  clearTimeout(state.patientTimer);
  state.patientTimer = setTimeout(() => {
    if (state.current) renderPatient(state.current.alert.id).catch(() => {});
  }, 300);
}

const OPS = { gte: "≥", gt: ">", lte: "≤", lt: "<", eq: "=", ne: "≠" };

// One finding of the evidence in words: "systolic_bp 96 < 100", then what else it carries.
function finding(item) {
  if (item === null || typeof item !== "object") return String(item);
  const name = item.metric || item.vital || item.symptom || item.code || null;
  const parts = [];
  if (name && "value" in item && "op" in item && "threshold" in item) {
    parts.push(`${name.replace(/_/g, " ")} ${item.value} ${OPS[item.op] || item.op} ${item.threshold}`);
  }
  for (const [key, value] of Object.entries(item)) {
    if (["metric", "vital", "symptom", "code", "value", "op", "threshold"].includes(key) && parts.length) continue;
    if (key === "baseline" && value && typeof value === "object") parts.push(`baseline ${value.words || value.weight_kg}`);
    else if (value !== null && typeof value === "object") parts.push(`${key.replace(/_/g, " ")}: ${JSON.stringify(value)}`);
    else parts.push(`${key.replace(/_/g, " ")}: ${value}`);
  }
  return parts.join("; ");
}

function evidenceList(evidence) {
  const dl = node("dl", { class: "evidence" });
  for (const [key, value] of Object.entries(evidence || {})) {
    let shown;
    if (key === "baseline" && value && typeof value === "object") {
      shown = `${value.weight_kg} kg (${value.source}${value.recorded_at ? `, ${new Date(value.recorded_at).toLocaleDateString()}` : ""}): ${value.words || ""}`;
    } else if (Array.isArray(value)) {
      shown = node("ul", { class: "findings" }, ...value.map((item) => node("li", {}, finding(item))));
    } else if (value !== null && typeof value === "object") {
      shown = finding(value);
    } else {
      shown = String(value);
    }
    dl.append(node("dt", {}, key.replace(/_/g, " ")), node("dd", {}, shown));
  }
  return dl;
}

async function symptomCatalog() {
  if (!state.symptoms) {
    const list = await api("/v1/symptoms");
    state.symptoms = new Map(list.map((s) => [s.code, s]));
  }
  return state.symptoms;
}

function baselineFor(alert, alerts, patient) {
  const withBaseline = [alert, ...alerts].find((a) => a.evidence && a.evidence.baseline);
  if (withBaseline) {
    const b = withBaseline.evidence.baseline;
    return { value: b.weight_kg, label: `Baseline ${b.weight_kg} kg` };
  }
  if (patient.baseline_weight_kg) {
    return { value: patient.baseline_weight_kg, label: `Baseline ${patient.baseline_weight_kg} kg (record)` };
  }
  return null;
}

async function renderPatient(alertId) {
  const alert = await api(`/v1/alerts/${alertId}`);
  const weeks = Number($("timeline-weeks").value);
  const to = new Date();
  const from = new Date(to.getTime() - weeks * 7 * 86400000);
  const [patient, therapies, patientAlerts, reports, events, symptoms] = await Promise.all([
    api(`/v1/patients/${alert.patient_id}`),
    api(`/v1/patients/${alert.patient_id}/therapies`),
    all("/v1/alerts", { patient_id: alert.patient_id }, 1000),
    all(`/v1/patients/${alert.patient_id}/reports`, { since: from.toISOString() }, 5000),
    all(`/v1/alerts/${alertId}/events`, {}, 1000),
    symptomCatalog(),
  ]);
  state.patients.set(patient.id, patient);
  state.current = { alert, patient };

  $("patient-title").textContent = patient.display_name || patient.external_id || `Patient ${patient.id.slice(0, 8)}`;
  $("patient-meta").textContent = [
    `Team ${patient.care_team}`,
    patient.external_id ? `ID ${patient.external_id}` : null,
    patient.baseline_weight_kg ? `baseline weight on record ${patient.baseline_weight_kg} kg` : null,
  ]
    .filter(Boolean)
    .join(" · ");

  $("alert-title").textContent = alert.title;
  const detail = $("alert-detail");
  detail.dataset.alertId = alert.id;
  detail.dataset.status = alert.status;
  detail.replaceChildren(
    ...[
    node(
      "p",
      {},
      severityBadge(alert.severity),
      " ",
      node("span", { class: "status" }, STATUS_LABEL[alert.status]),
      " ",
      ...marks(alert),
    ),
    node("p", { class: "detail" }, alert.detail),
    node(
      "p",
      { class: "hint" },
      `Raised ${new Date(alert.created_at).toLocaleString()} · rule ${alert.rule_id} v${alert.rule_version}` +
        (alert.drug_code ? ` · ${alert.drug_code}` : "") +
        ` · ${alert.occurrences} occurrence${alert.occurrences === 1 ? "" : "s"} · follow-up: ${dueText(alert)}`,
    ),
    node("h4", {}, "Evidence"),
    evidenceList(alert.evidence),
    alert.resolution_note
      ? node("p", {}, `Resolution (${alert.outcome || "no outcome"}): ${alert.resolution_note}`)
      : null,
    ].filter(Boolean),
  );
  $("alert-actions").replaceChildren(...actionButtons(alert));
  $("alert-events").replaceChildren(
    ...events.items.map((e) =>
      node(
        "li",
        {},
        `${new Date(e.at).toLocaleString()}: ${e.action.replace(/_/g, " ")}` +
          (e.actor_sub ? ` by ${e.actor_sub}` : "") +
          (e.note ? `: ${e.note}` : ""),
      ),
    ),
  );

  $("therapies-body").replaceChildren(
    ...therapies.map((t) =>
      node("tr", {}, node("td", {}, t.drug_code), node("td", {}, t.started_on), node("td", {}, t.ended_on || "—"), node("td", {}, t.active ? "yes" : "no")),
    ),
  );
  $("patient-alerts").replaceChildren(
    ...patientAlerts.items.map((a) => {
      const link = node("a", { href: `?alert=${a.id}` }, a.title);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        navigate(`?alert=${a.id}`);
      });
      return node(
        "li",
        { "aria-current": a.id === alert.id ? "true" : null },
        severityBadge(a.severity),
        " ",
        link,
        ` · ${STATUS_LABEL[a.status]} · ${new Date(a.created_at).toLocaleDateString()}`,
      );
    }),
  );

  // An alert is marked when the report that raised it was recorded (else when it was raised).
  const recorded = new Map(reports.items.map((r) => [r.id, r.recorded_at]));
  const markers = patientAlerts.items.map((a) => ({ ...a, at: recorded.get(a.report_id) || a.created_at }));
  renderTimeline(reports.items, markers, symptoms, from, to, baselineFor(alert, patientAlerts.items, patient));
}

function renderTimeline(reports, alerts, symptoms, from, to, baseline) {
  const bySymptom = new Map();
  const byVital = new Map();
  for (const report of reports.slice().reverse()) {
    const t = new Date(report.recorded_at);
    for (const s of report.symptoms) {
      if (!bySymptom.has(s.code)) bySymptom.set(s.code, []);
      bySymptom.get(s.code).push({ t, v: s.grade });
    }
    for (const [name, value] of Object.entries(report.vitals || {})) {
      if (value === null || value === undefined) continue;
      if (!byVital.has(name)) byVital.set(name, []);
      byVital.get(name).push({ t, v: value });
    }
  }
  const box = $("timeline");
  const figures = [];
  const codes = [...bySymptom.keys()].sort((a, b) => {
    const na = (symptoms.get(a) || {}).name || a;
    const nb = (symptoms.get(b) || {}).name || b;
    return na.localeCompare(nb);
  });
  for (const code of codes) {
    const info = symptoms.get(code) || {};
    figures.push(
      chart({
        series: {
          key: `symptom:${code}`,
          label: `${info.name || code}: grade`,
          unit: "",
          grades: true,
          gradeLabels: info.grades,
          points: bySymptom.get(code),
        },
        from,
        to,
        alerts,
      }),
    );
  }
  for (const [name, label, unit] of VITALS) {
    if (!byVital.has(name)) continue;
    figures.push(
      chart({
        series: { key: `vital:${name}`, label, unit, points: byVital.get(name) },
        from,
        to,
        alerts,
        reference: name === "weight_kg" ? baseline : null,
      }),
    );
  }
  box.replaceChildren(
    ...(figures.length ? figures : [node("p", { class: "empty" }, "No reports in this period.")]),
  );
}

// --- views ---------------------------------------------------------------------------------

function navigate(search) {
  history.pushState(null, "", search || location.pathname);
  route();
}

async function route() {
  if (!state.claims) return;
  hideBanner();
  const alertId = new URLSearchParams(location.search).get("alert");
  if (alertId) {
    $("worklist").hidden = true;
    $("patient").hidden = false;
    try {
      await renderPatient(alertId);
      $("patient-title").focus();
    } catch (error) {
      state.current = null;
      $("patient").hidden = true;
      showBanner(
        error instanceof ApiError && error.status === 404
          ? "No such alert in your teams."
          : `The patient could not be loaded: ${problemText(error)}`,
      );
    }
  } else {
    state.current = null;
    $("patient").hidden = true;
    $("worklist").hidden = false;
    await refreshWorklist({ quiet: true });
  }
}

// --- start ---------------------------------------------------------------------------------

function wire() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    $("token-input").value = "";
    signIn(token);
  });
  $("sign-out").addEventListener("click", () => {
    state.claims = null;
    refuse("");
    $("signin-error").hidden = true;
  });
  $("mute").addEventListener("click", () => {
    localStorage.setItem("dashboard.muted", muted() ? "0" : "1");
    showMute();
    if (muted()) stopFlash();
  });
  $("banner-close").addEventListener("click", hideBanner);
  $("filters").addEventListener("change", () => refreshWorklist({ quiet: true }));
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("resolve-form").addEventListener("submit", submitResolve);
  $("resolve-cancel").addEventListener("click", () => $("resolve-dialog").close());
  $("timeline-weeks").addEventListener("change", () => {
    if (state.current) renderPatient(state.current.alert.id).catch((e) => showBanner(problemText(e)));
  });
  for (const id of ["home-link", "back-link"]) {
    $(id).addEventListener("click", (event) => {
      event.preventDefault();
      navigate("");
    });
  }
  window.addEventListener("popstate", route);
  // Any key or click means someone is looking: the title stops flashing.
  for (const type of ["keydown", "pointerdown", "focus"]) {
    window.addEventListener(type, () => state.flashTimer && stopFlash());
  }
  // "Time left" counts down without a reload.
  setInterval(() => {
    if (!$("worklist").hidden && state.alerts.length) renderWorklist(state.alerts, false);
  }, 30000);
  showMute();
}

async function start() {
  wire();
  const config = await fetch("config.json").then((r) => r.json()).catch(() => ({ oidc: null }));
  if (config.oidc) {
    $("oidc-box").hidden = false;
    $("oidc-signin").addEventListener("click", () => startSignIn(config.oidc));
    const token = await completeSignIn(config.oidc).catch((error) => {
      refuse(`Sign-in with the identity provider failed: ${error.message}`);
      return null;
    });
    if (token) return signIn(token);
  }
  const token = fragmentToken || session.token;
  if (token) return signIn(token);
  refuse("");
}

start();
