// The console's experiments panel: every experiment with its cells and guardrails, and for
// one that ran its readout (GET /v1/experiments/{id}/readout): per cell the accounts exposed
// against the share the weights promise, the sample-ratio-mismatch check, and each QoE
// figure with its 95 % interval and its difference from the control. An experiment is
// defined here (or with `livemesh experiments create`), a draft started, a running one
// stopped with a reason.

import { ApiError, esc, field, handleForm } from './api.js';

const STATE = {
  EXPERIMENT_STATE_DRAFT: 'Draft',
  EXPERIMENT_STATE_RUNNING: 'Running',
  EXPERIMENT_STATE_STOPPED: 'Stopped',
};
const METRIC = {
  GUARDRAIL_METRIC_REBUFFER_RATIO: 'rebuffer ratio',
  GUARDRAIL_METRIC_STARTUP_MS: 'startup (ms)',
  GUARDRAIL_METRIC_ERROR_RATE: 'error rate',
};

// proto3 JSON leaves a zero out and writes an infinite interval's end as "Infinity"
function number(value, digits) {
  const n = Number(value ?? 0);
  if (Number.isFinite(n)) return n.toFixed(digits);
  return Number.isNaN(n) ? '–' : `${n < 0 ? '−' : ''}∞`;
}
const share = (value) => `${number((value ?? 0) * 100, 1)} %`;

// A figure, its interval and (not for the control) its difference from the control's.
function estimate(e = {}, digits, control) {
  if (!Number(e.samples || 0)) return '<td>–</td>';
  const delta = control ? '' : `<br><small>Δ ${number(e.delta, digits)} [${number(e.deltaLow, digits)}, ${number(e.deltaHigh, digits)}]</small>`;
  return `<td>${number(e.value, digits)} [${number(e.low, digits)}, ${number(e.high, digits)}]
    <small>n=${esc(e.samples)}</small>${delta}</td>`;
}

function readoutTable(readout) {
  const rows = (readout.cells || []).map((c, i) => `<tr>
    <th scope="row">${esc(c.cell)}${i === 0 ? ' <small>(control)</small>' : ''}</th>
    <td>${esc(c.weight)}</td><td>${share(c.expectedShare)}</td><td>${share(c.observedShare)}</td>
    <td>${esc(c.accounts || 0)}</td><td>${esc(c.exposures || 0)}</td>
    ${estimate(c.rebufferRatio, 4, i === 0)}${estimate(c.startupMs, 0, i === 0)}${estimate(c.errorRate, 4, i === 0)}</tr>`);
  const srm = readout.sampleRatio || {};
  const verdict = srm.mismatch
    ? '<strong class="danger-text">Sample ratio mismatch: the cells did not get the shares the weights promise; do not trust the figures.</strong>'
    : 'No sample ratio mismatch.';
  return `<table class="channels readout"><thead><tr><th scope="col">Cell</th><th scope="col">Weight</th>
      <th scope="col">Expected share</th><th scope="col">Observed share</th><th scope="col">Accounts</th>
      <th scope="col">Exposures</th><th scope="col">Rebuffer ratio [95 % CI]</th>
      <th scope="col">Startup ms [95 % CI]</th><th scope="col">Error rate [95 % CI]</th></tr></thead>
    <tbody>${rows.join('')}</tbody></table>
    <p class="srm">Sample ratio: χ² ${number(srm.chiSquare, 2)}, p ${number(srm.pValue, 3)}. ${verdict}</p>`;
}

function experimentCard(experiment, readout) {
  const id = experiment.name.split('/').pop();
  const cells = (experiment.cells || []).map((c) => `${esc(c.name)} (weight ${esc(c.weight)}): ${esc(c.value)}`).join('; ');
  const guardrails = (experiment.guardrails || [])
    .map((g) => `${esc(METRIC[g.metric] || g.metric)} ≤ ${esc(g.threshold)}`).join('; ') || 'none';
  const state = experiment.state;
  const action = state === 'EXPERIMENT_STATE_DRAFT'
    ? '<button type="button" data-act="start" class="primary">Start</button>'
    : state === 'EXPERIMENT_STATE_RUNNING'
      ? `<form class="stop" novalidate><div class="field"><label for="reason-${esc(id)}">Reason to stop</label>
          <input id="reason-${esc(id)}" name="reason" required maxlength="200" aria-describedby="reason-${esc(id)}-error">
          <p class="field-error" id="reason-${esc(id)}-error" role="alert"></p></div>
          <p class="form-error" role="alert"></p><button type="submit" class="danger">Stop</button></form>`
      : '';
  return `<article class="experiment" data-experiment="${esc(id)}" aria-labelledby="x-${esc(id)}">
    <h2 id="x-${esc(id)}">${esc(experiment.displayName || id)} <small>${esc(id)}</small>
      <span class="badge">${esc(STATE[state] || state)}</span></h2>
    <dl class="facts"><dt>Decision</dt><dd>${esc(experiment.decision)}</dd>
      <dt>Cells</dt><dd>${cells}</dd><dt>Guardrails</dt><dd>${guardrails}</dd>
      ${experiment.stopReason ? `<dt>Stopped</dt><dd>${esc(experiment.stopReason)}</dd>` : ''}</dl>
    ${readout ? readoutTable(readout) : '<p class="empty">Not started: no readout yet.</p>'}
    ${action}<p class="form-error" role="alert"></p></article>`;
}

// "name:weight:value" lines as cells, "metric:threshold" lines as guardrails; a line that
// is neither is refused beside its field before anything is sent.
function parseLines(text, fieldName, shape, make) {
  return String(text || '').split('\n').map((line) => line.trim()).filter(Boolean).map((line) => {
    const parts = line.split(':');
    if (parts.length !== shape.split(':').length) {
      throw new ApiError(400, { message: `${fieldName}: "${line}" is not ${shape}`, field: fieldName });
    }
    return make(parts);
  });
}

function definition(form) {
  return {
    experimentId: form.experimentId,
    experiment: {
      displayName: form.displayName,
      decision: form.decision,
      cells: parseLines(form.cells, 'cells', 'name:weight:value', ([name, weight, value]) => ({ name, weight: Number(weight), value })),
      guardrails: parseLines(form.guardrails, 'guardrails', 'metric:threshold', ([metric, threshold]) => ({
        metric: `GUARDRAIL_METRIC_${metric.toUpperCase()}`, threshold: Number(threshold),
      })),
    },
  };
}

// The server names a cell's or guardrail's field (experiment.cells[1].weight): its textarea.
function asFormError(error) {
  const match = /^experiment\.(cells|guardrails)|^experiment\.(displayName|decision)$/.exec(error.field);
  if (match) error.field = match[1] || match[2];
  return error;
}

const CREATE_FORM = `<form id="create-experiment" novalidate>
  <h2>Define an experiment</h2>
  ${field('experiment-id', 'Experiment id', 'name="experimentId" required pattern="[a-z0-9_\\-]{1,63}"')}
  ${field('experiment-name', 'Display name', 'name="displayName" required maxlength="100"')}
  ${field('experiment-decision', 'Decision', 'name="decision" required value="live-delay"')}
  <div class="field"><label for="experiment-cells">Cells, one per line: name:weight:value (the first is the control)</label>
    <textarea id="experiment-cells" name="cells" required rows="3" aria-describedby="experiment-cells-error">control:1:1000
fast:1:500</textarea>
    <p class="field-error" id="experiment-cells-error" role="alert"></p></div>
  <div class="field"><label for="experiment-guardrails">Guardrails, one per line: metric:ceiling (rebuffer_ratio, startup_ms, error_rate)</label>
    <textarea id="experiment-guardrails" name="guardrails" rows="2" aria-describedby="experiment-guardrails-error">rebuffer_ratio:0.05</textarea>
    <p class="field-error" id="experiment-guardrails-error" role="alert"></p></div>
  <p class="form-error" role="alert"></p>
  <button type="submit" class="primary">Define experiment</button>
</form>`;

export async function renderExperiments({ call, show }) {
  const { experiments = [] } = await call('GET', '/v1/experiments?pageSize=100');
  const readouts = await Promise.all(experiments.map((x) => (x.state === 'EXPERIMENT_STATE_DRAFT'
    ? null : call('GET', `/v1/experiments/${x.name.split('/').pop()}/readout`))));
  show(`<section class="card" aria-labelledby="experiments-title">
    <h1 id="experiments-title" tabindex="-1" data-autofocus>Experiments</h1>
    ${experiments.map((x, i) => experimentCard(x, readouts[i])).join('')
      || '<p class="empty">No experiment yet.</p>'}
    ${CREATE_FORM}
  </section>`);
  const rerender = () => renderExperiments({ call, show });
  handleForm(document.getElementById('create-experiment'), async (form) => {
    const body = definition(form);
    await call('POST', '/v1/experiments', body).catch((error) => {
      throw error instanceof ApiError ? asFormError(error) : error;
    });
    await rerender();
  });
  for (const card of document.querySelectorAll('.experiment')) {
    const id = card.dataset.experiment;
    const start = card.querySelector('[data-act=start]');
    start?.addEventListener('click', () => call('POST', `/v1/experiments/${id}:start`, {}).then(rerender, (error) => {
      if (!(error instanceof ApiError)) throw error;
      card.querySelector(':scope > .form-error').textContent = error.message;
    }));
    const stop = card.querySelector('form.stop');
    if (stop) handleForm(stop, async (body) => { await call('POST', `/v1/experiments/${id}:stop`, body); await rerender(); });
  }
  return () => {};
}
