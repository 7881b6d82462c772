// Time-series charts as SVG drawn in the browser: no library, nothing inline that the
// Content-Security-Policy would refuse (attributes only, no style attributes).

const NS = "http://www.w3.org/2000/svg";
const W = 560;
const H = 170;
const PAD = { left: 46, right: 12, top: 14, bottom: 26 };
const SEVERITY_LETTER = { emergency: "E", urgent: "U", routine: "R" };

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function niceRange(values, extra) {
  const all = values.concat(extra.filter((v) => v !== null && v !== undefined));
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const pad = (hi - lo) * 0.12;
  return [lo - pad, hi + pad];
}

function fmtDay(date) {
  return date.toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

function fmtNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/**
 * One chart: a series of points over [from, to], alert markers, an optional reference line.
 * series: {key, label, unit, points: [{t: Date, v: number}], grades?: boolean}
 */
export function chart({ series, from, to, alerts = [], reference = null }) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.series = series.key;
  const caption = document.createElement("figcaption");
  caption.textContent = series.unit ? `${series.label} (${series.unit})` : series.label;
  figure.append(caption);

  const values = series.points.map((p) => p.v);
  const [lo, hi] = series.grades
    ? [-0.3, 4.3]
    : niceRange(values, [reference ? reference.value : null]);
  const x = (t) =>
    PAD.left + ((t.getTime() - from.getTime()) / (to.getTime() - from.getTime())) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);

  const last = series.points[series.points.length - 1];
  const summary = `${series.label}: ${series.points.length} readings` +
    (last ? `, latest ${fmtNumber(last.v)}${series.unit ? " " + series.unit : ""}` : "");
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart-svg",
    role: "img",
    "aria-label": summary,
    preserveAspectRatio: "xMidYMid meet",
  });

  // Axes and grid.
  const grid = el("g", { class: "grid" });
  const ticks = series.grades ? [0, 1, 2, 3, 4] : [lo + (hi - lo) * 0.12, (lo + hi) / 2, hi - (hi - lo) * 0.12];
  for (const tick of ticks) {
    grid.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(tick), y2: y(tick) }));
    grid.append(el("text", { x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "tick" }, fmtNumber(tick)));
  }
  const days = (to - from) / 86400000;
  const step = days > 35 ? 14 : 7;
  for (let i = 0; i <= days; i += step) {
    const day = new Date(to.getTime() - i * 86400000);
    const px = x(day);
    grid.append(el("line", { x1: px, x2: px, y1: PAD.top, y2: H - PAD.bottom, class: "vgrid" }));
    grid.append(el("text", { x: px, y: H - 8, "text-anchor": i === 0 ? "end" : "middle", class: "tick" }, fmtDay(day)));
  }
  svg.append(grid);

  if (reference) {
    const ry = y(reference.value);
    const ref = el("g", { class: "reference", "data-reference": reference.label });
    ref.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: ry, y2: ry }));
    ref.append(el("text", { x: W - PAD.right - 4, y: ry - 4, "text-anchor": "end", class: "ref-label" }, reference.label));
    svg.append(ref);
  }

  const markers = el("g", { class: "alert-markers" });
  const stacked = new Map(); // labels of alerts at the same place go one under the other
  for (const alert of alerts) {
    const at = new Date(alert.at || alert.created_at);
    if (at < from || at > to) continue;
    const px = x(at);
    const marker = el("g", { class: `alert-marker sev-${alert.severity}`, "data-alert": alert.id });
    marker.append(el("title", {}, `${alert.severity}: ${alert.title} (${at.toLocaleString()})`));
    marker.append(el("line", { x1: px, x2: px, y1: PAD.top, y2: H - PAD.bottom }));
    const slot = Math.round(px / 6);
    const below = stacked.get(slot) || 0;
    stacked.set(slot, below + 1);
    const label = SEVERITY_LETTER[alert.severity] || "?";
    marker.append(el("text", { x: px + 3, y: PAD.top + 9 + below * 11, class: "marker-label" }, label));
    markers.append(marker);
  }
  svg.append(markers);

  const line = el("g", { class: "series", "data-series": series.key });
  const points = series.points.filter((p) => p.t >= from && p.t <= to);
  if (points.length > 1) {
    line.append(el("polyline", { points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ") }));
  }
  for (const p of points) {
    const dot = el("circle", { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 3.5, class: "point" });
    dot.append(el("title", {}, `${p.t.toLocaleString()}: ${fmtNumber(p.v)}${series.unit ? " " + series.unit : ""}`));
    line.append(dot);
  }
  svg.append(line);
  figure.append(svg);

  // The same numbers as a table, for screen readers and for reading exact values.
  const details = document.createElement("details");
  const summaryEl = document.createElement("summary");
  summaryEl.textContent = "Values";
  details.append(summaryEl);
  const table = document.createElement("table");
  table.className = "plain";
  const head = table.createTHead().insertRow();
  for (const label of ["Recorded", series.grades ? "Grade" : "Value"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    head.append(th);
  }
  const body = table.createTBody();
  for (const p of points.slice().reverse()) {
    const row = body.insertRow();
    row.insertCell().textContent = p.t.toLocaleString();
    row.insertCell().textContent = series.grades && series.gradeLabels
      ? `${p.v} ${series.gradeLabels[String(p.v)] || ""}`.trim()
      : `${fmtNumber(p.v)}${series.unit ? " " + series.unit : ""}`;
  }
  details.append(table);
  figure.append(details);
  return figure;
}
