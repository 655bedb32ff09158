// The operator console: paste an operator credential (`livemesh admin token --role
// operator`; kept in sessionStorage, so it leaves with the tab), then, through the gateway,
// which forwards the credential to the service behind (that checks the operator role):
// list, create, rotate and end channels (#/channels), watch the edges' health, load and
// QoE (#/edges, console-edges.js), read out experiments (#/experiments,
// console-experiments.js), and upload and publish VOD titles (#/vod, console-vod.js).

import { ApiError, api, esc, field, handleForm } from './api.js';
import { renderEdges } from './console-edges.js';
import { renderExperiments } from './console-experiments.js';
import { renderVod } from './console-vod.js';

const view = document.getElementById('view');
const TOKEN = 'livemesh.operator';
let stopPanel = () => {}; // what the panel shown runs (timers), stopped when it goes

function signOut(message = '') {
  stopPanel();
  stopPanel = () => {};
  sessionStorage.removeItem(TOKEN);
  renderLogin(message);
}

async function call(method, path, body) {
  try {
    return await api(method, path, { body, token: sessionStorage.getItem(TOKEN) });
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut(`The operator credential was refused (${error.message}): paste a fresh one.`);
    }
    throw error;
  }
}

function show(html) {
  view.innerHTML = html;
  const signedIn = Boolean(sessionStorage.getItem(TOKEN));
  document.getElementById('operator-nav').hidden = !signedIn;
  for (const link of document.querySelectorAll('#operator-nav a')) {
    if (signedIn && link.hash === `#/${panelName()}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  (view.querySelector('[data-autofocus]') || view).focus();
}

function renderLogin(notice = '') {
  show(`<section class="card narrow">
    <h1>Operator sign-in</h1>
    ${notice ? `<p class="notice" role="status">${esc(notice)}</p>` : ''}
    <form id="login" novalidate>
      <div class="field"><label for="token">Operator token</label>
        <textarea id="token" name="token" required rows="4" data-autofocus aria-describedby="token-error token-help"></textarea>
        <p class="help" id="token-help">Mint one with <code>livemesh admin token --role operator</code>.</p>
        <p class="field-error" id="token-error" role="alert"></p></div>
      <p class="form-error" role="alert"></p>
      <button type="submit" class="primary">Sign in</button>
    </form>
  </section>`);
  handleForm(view.querySelector('#login'), async ({ token }) => {
    sessionStorage.setItem(TOKEN, token);
    await renderPanel();
  });
}

// What ingest is doing with a channel: on air (the live edge's segment; a broadcaster's
// channel stays on air with the slate between broadcasts), waiting for its first
// broadcaster, or ended.
function ingestStatus(channel) {
  if (channel.state === 'CHANNEL_STATE_ENDED') return 'Ended';
  if (!channel.liveStatus) return 'Waiting for a broadcaster';
  return `On air since ${new Date(channel.liveStatus.epochStartTime).toLocaleTimeString()}, segment ${channel.liveStatus.liveSegment || 0}`;
}

function channelRow(channel) {
  const id = channel.name.split('/').pop();
  const live = channel.liveStatus ? '<span class="badge live">LIVE</span>' : '';
  return `<tr data-channel="${esc(id)}">
    <th scope="row">${esc(id)}</th><td>${esc(channel.displayName)} ${live}</td>
    <td>${esc(ingestStatus(channel))}</td>
    <td><button type="button" data-act="rotate">Rotate key</button>
        <button type="button" data-act="end" class="danger">End</button></td></tr>`;
}

// A stream key is shown once: in a live region the operator copies it from.
const showKey = (id, key) => {
  document.getElementById('key').innerHTML = `<p>Stream key for <strong>${esc(id)}</strong> (shown once, copy it now):</p><output>${esc(key)}</output>`;
};

async function renderChannels() {
  const { channels = [] } = await call('GET', '/v1/channels?pageSize=100');
  show(`<section class="card">
    <h1>Channels</h1>
    <div id="key" class="key" role="status" aria-live="polite"></div>
    <table class="channels"><thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Ingest</th><th scope="col">Actions</th></tr></thead>
      <tbody>${channels.map(channelRow).join('') || '<tr><td colspan="4">No channel yet.</td></tr>'}</tbody></table>
    <p class="form-error" id="table-error" role="alert"></p>
    <form id="create" novalidate>
      <h2>Create a channel</h2>
      ${field('channel-id', 'Channel id', 'name="channelId" required pattern="[a-z0-9_\\-]{1,63}" data-autofocus')}
      ${field('channel-name', 'Display name', 'name="channel.displayName" required maxlength="100"')}
      <p class="form-error" role="alert"></p>
      <button type="submit" class="primary">Create channel</button>
    </form>
  </section>`);
  handleForm(view.querySelector('#create'), async (body) => {
    const reply = await call('POST', '/v1/channels', body);
    await renderChannels();
    showKey(body.channelId, reply.streamKey);
  });
  view.querySelector('tbody').addEventListener('click', (event) => {
    const button = event.target.closest('button');
    if (button) act(button).catch((error) => {
      if (!(error instanceof ApiError)) throw error;
      document.getElementById('table-error').textContent = error.message;
    });
  });
}

// A button of a channel's row: rotate its key, or end it (for good: a second press confirms).
async function act(button) {
  const id = button.closest('tr').dataset.channel;
  if (button.dataset.act === 'rotate') {
    showKey(id, (await call('POST', `/v1/channels/${id}:rotateStreamKey`, {})).streamKey);
  } else if (button.dataset.confirm) {
    await call('POST', `/v1/channels/${id}:end`, {});
    await renderChannels();
  } else {
    button.dataset.confirm = 'yes';
    button.textContent = `Confirm: end ${id}`;
  }
}

const PANELS = {
  channels: renderChannels, edges: renderEdges, experiments: renderExperiments, vod: renderVod,
};
const panelName = () => (location.hash.slice(2) in PANELS ? location.hash.slice(2) : 'channels');

// The panel the address names (channels by default), the one shown before stopped first.
async function renderPanel() {
  stopPanel();
  stopPanel = () => {};
  if (!sessionStorage.getItem(TOKEN)) return renderLogin();
  try {
    stopPanel = (await PANELS[panelName()]({ call, show })) || (() => {});
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (sessionStorage.getItem(TOKEN)) show(`<section class="card"><p class="form-error" role="alert">${esc(error.message)}</p></section>`);
  }
}

window.addEventListener('load', renderPanel);
window.addEventListener('hashchange', renderPanel);
document.getElementById('sign-out').addEventListener('click', () => signOut());
