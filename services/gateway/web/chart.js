// A small line chart as inline SVG (no charting library: a few polylines on a time axis).
// Colours come from style.css (.series-N), as the page's CSP allows no inline style; the
// figure's label says what it shows, for a screen reader, beside the table it summarises.

import { esc } from './api.js';

const W = 480;
const H = 160;
const PAD = { left: 48, right: 8, top: 8, bottom: 24 };
export const SERIES_COLOURS = 6; // .series-0 .. .series-5

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

// `series`: [{ name, points: [[timeMs, value], ...] }]; `format(value)` labels the y axis.
export function lineChart(title, series, format, minTop = 0) {
  const points = series.flatMap((s) => s.points);
  if (!points.length) {
    return `<figure class="chart"><figcaption>${esc(title)}</figcaption><p class="empty">No QoE window yet: no player has reported through an edge.</p></figure>`;
  }
  const t0 = Math.min(...points.map(([t]) => t));
  const t1 = Math.max(...points.map(([t]) => t), t0 + 1);
  const top = Math.max(minTop, ...points.map(([, v]) => v)) || 1;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const lines = series.map((s, i) => {
    const path = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    const dots = s.points.map(([t, v]) => `<circle cx="${x(t).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5"/>`).join('');
    return `<g class="series-${i % SERIES_COLOURS}"><polyline points="${path}"/>${dots}</g>`;
  }).join('');
  const axes = `<line class="axis" x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}"/>
    <line class="axis" x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${H - PAD.bottom}"/>
    <text x="${PAD.left - 4}" y="${PAD.top + 8}" text-anchor="end">${esc(format(top))}</text>
    <text x="${PAD.left - 4}" y="${H - PAD.bottom}" text-anchor="end">${esc(format(0))}</text>
    <text x="${PAD.left}" y="${H - 6}">${esc(clock(t0))}</text>
    <text x="${W - PAD.right}" y="${H - 6}" text-anchor="end">${esc(clock(t1))}</text>`;
  const legend = series.map((s, i) => `<li class="series-${i % SERIES_COLOURS}">${esc(s.name)}</li>`).join('');
  const label = `${title}: ${series.map((s) => `${s.name} ${format(s.points.at(-1)?.[1] ?? 0)} now`).join(', ')}`;
  return `<figure class="chart"><figcaption>${esc(title)}</figcaption>
    <svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(label)}">${axes}${lines}</svg>
    <ul class="legend">${legend}</ul></figure>`;
}
