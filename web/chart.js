// SVG charts drawn by our own code: a line chart (with an optional min–max band) and a bar
// chart over time. Sized by the viewBox, so they scale to the container; every bar and point
// carries a <title> for hover and screen readers.
const NS = 'http://www.w3.org/2000/svg';
const W = 720;
const H = 240;
const PAD = { l: 52, r: 12, t: 12, b: 28 };

function s(tag, attrs = {}, ...kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}

/** Round step for about `n` ticks over `span`. */
function step(span, n) {
  const raw = span / n;
  const p = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 5, 10].map((m) => m * p).find((x) => x >= raw) || p;
}

function frame(title, points, maxV, unit, fmtT) {
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, class: 'chart' });
  svg.append(s('title', {}, title));
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t2;
  const x = (t) => PAD.l + ((t - t0) / Math.max(1, t1 - t0)) * (W - PAD.l - PAD.r);
  const top = maxV > 0 ? maxV * 1.08 : 1;
  const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);
  const st = step(top, 4);
  for (let v = 0; v <= top; v += st) {
    svg.append(s('line', { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: 'grid-line' }));
    svg.append(s('text', { x: PAD.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, `${+v.toPrecision(3)}`));
  }
  svg.append(s('text', { x: 4, y: PAD.t + 4, class: 'axis unit' }, unit));
  const n = Math.min(6, points.length);
  for (let i = 0; i < n; i += 1) {
    const p = points[Math.round((i * (points.length - 1)) / Math.max(1, n - 1))];
    svg.append(s('text', { x: x(p.t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle', class: 'axis' }, fmtT(p.t)));
  }
  return { svg, x, y };
}

/** Bars of `points` [{t, t2, v}] (t2 = end of the period). */
export function barChart(title, points, unit, fmtT, fmtV) {
  if (!points.length) return null;
  const max = Math.max(...points.map((p) => p.v || 0));
  const { svg, x, y } = frame(title, points, max, unit, fmtT);
  for (const p of points) {
    const x0 = x(p.t);
    const w = Math.max(1, x(p.t2) - x0 - 1);
    const v = p.v || 0;
    svg.append(s('rect', { x: x0, y: y(v), width: w, height: Math.max(0, y(0) - y(v)), class: 'bar' },
      s('title', {}, `${fmtT(p.t)}: ${fmtV(p.v)}`)));
  }
  return svg;
}

/** A line through `points` [{t, t2, v, lo, hi}], with the lo–hi band shaded. */
export function lineChart(title, points, unit, fmtT, fmtV) {
  if (!points.length) return null;
  const max = Math.max(...points.map((p) => Math.max(p.hi ?? 0, p.v ?? 0)));
  const { svg, x, y } = frame(title, points, max, unit, fmtT);
  const mid = (p) => x((p.t + p.t2) / 2);
  const have = points.filter((p) => p.v !== null && p.v !== undefined);
  const band = have.filter((p) => p.lo !== null && p.lo !== undefined && p.hi !== null && p.hi !== undefined);
  if (band.length > 1) {
    const d = band.map((p, i) => `${i ? 'L' : 'M'}${mid(p).toFixed(1)},${y(p.hi).toFixed(1)}`).join('')
      + band.slice().reverse().map((p) => `L${mid(p).toFixed(1)},${y(p.lo).toFixed(1)}`).join('') + 'Z';
    svg.append(s('path', { d, class: 'band' }));
  }
  if (have.length) {
    svg.append(s('path', { d: have.map((p, i) => `${i ? 'L' : 'M'}${mid(p).toFixed(1)},${y(p.v).toFixed(1)}`).join(''), class: 'line' }));
  }
  for (const p of have) {
    svg.append(s('circle', { cx: mid(p), cy: y(p.v), r: have.length > 120 ? 0 : 2.5, class: 'dot' }, s('title', {}, `${fmtT(p.t)}: ${fmtV(p.v)}`)));
  }
  return svg;
}
