// The console's edges panel: each edge's health and load (its registry record, from its
// heartbeats), its players' QoE in the QoE processor's last window and what steering does
// about it, and charts of rebuffer ratio and startup over the windows the processor keeps
// (GET /v1/edges, playback's ListEdges). Refreshed every few seconds while it is shown.

import { esc } from './api.js';
import { lineChart } from './chart.js';

const REFRESH_MS = 5000;
const HEALTH = { HEALTH_SERVING: 'Serving', HEALTH_NOT_SERVING: 'Not serving' };
const QOE_STATE = {
  QOE_STATE_HEALTHY: 'Ranked as usual',
  QOE_STATE_DEMOTED: 'Demoted: ranked last, off steering',
  QOE_STATE_PROBATION: 'On probation: off steering',
};

const percent = (value, digits = 0) => `${((value ?? 0) * 100).toFixed(digits)} %`;
const ms = (value) => `${Math.round(value ?? 0)} ms`;
const ago = (time) => `${Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000))} s ago`;

function qoeCells(edge) {
  const last = (edge.qoeWindows || []).at(-1);
  if (!last) return '<td colspan="4" class="empty">No players reported</td>';
  return `<td>${(last.score ?? 0).toFixed(2)}</td><td>${percent(last.rebufferRatio, 1)}</td>
    <td>${ms(last.startupMs)}</td><td>${esc(last.requests)}</td>`;
}

function edgeRow(edge) {
  const { instance } = edge;
  const connections = instance.labels?.connections;
  return `<tr data-edge="${esc(instance.instanceId)}">
    <th scope="row">${esc(instance.instanceId)}</th>
    <td>${esc(instance.address)}</td><td>${esc(instance.region)}</td>
    <td>${esc(HEALTH[instance.health] || 'Unknown')}</td>
    <td>${percent(instance.load)}${connections ? ` (${esc(connections)} conn.)` : ''}</td>
    ${qoeCells(edge)}
    <td>${esc(QOE_STATE[edge.qoeState] || 'Unknown')}</td>
    <td>${instance.heartbeatTime ? ago(instance.heartbeatTime) : '–'}</td></tr>`;
}

function series(edges, figure) {
  return edges.map((edge) => ({
    name: edge.instance.instanceId,
    points: (edge.qoeWindows || []).map((w) => [Date.parse(w.startTime), w[figure] ?? 0]),
  }));
}

function body(edges) {
  const rows = edges.map(edgeRow).join('') || '<tr><td colspan="11">No edge is registered.</td></tr>';
  const seconds = edges.flatMap((e) => e.qoeWindows || []).at(0)?.seconds;
  return `<table class="channels edges" aria-describedby="edges-help"><thead><tr>
      <th scope="col">Edge</th><th scope="col">Address</th><th scope="col">Region</th>
      <th scope="col">Health</th><th scope="col">Load</th><th scope="col">QoE score</th>
      <th scope="col">Rebuffer ratio</th><th scope="col">Startup</th><th scope="col">Requests</th>
      <th scope="col">Steering</th><th scope="col">Heartbeat</th></tr></thead>
    <tbody>${rows}</tbody></table>
    <p class="help" id="edges-help">QoE: the players' CMCD through each edge, in the QoE processor's
      last${seconds ? ` ${seconds} s` : ''} window; an edge scoring under 0.6 is demoted.</p>
    <section aria-labelledby="qoe-charts"><h2 id="qoe-charts">QoE over the last minutes</h2>
      <div class="charts">
        ${lineChart('Rebuffer ratio', series(edges, 'rebufferRatio'), (v) => percent(v, 1), 0.05)}
        ${lineChart('Startup time to first byte', series(edges, 'startupMs'), ms, 100)}
      </div></section>`;
}

// Shows the panel in `view` (through `show`); returns what stops its refreshes.
export async function renderEdges({ call, show }) {
  const { edges = [] } = await call('GET', '/v1/edges');
  show(`<section class="card" aria-labelledby="edges-title">
    <h1 id="edges-title" tabindex="-1" data-autofocus>Edges</h1>
    <div id="edges-body">${body(edges)}</div>
    <p class="form-error" id="edges-error" role="alert"></p></section>`);
  const timer = setInterval(async () => {
    try {
      const fresh = await call('GET', '/v1/edges');
      document.getElementById('edges-body').innerHTML = body(fresh.edges || []);
      document.getElementById('edges-error').textContent = '';
    } catch (error) {
      const slot = document.getElementById('edges-error');
      if (slot) slot.textContent = `Not refreshed: ${error.message}`;
    }
  }, REFRESH_MS);
  return () => clearInterval(timer);
}
