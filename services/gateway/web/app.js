// The viewer app: sign up or in, pick a profile, browse rows, search as you type, open a
// title and press play. Hash routes (#/home, #/title/ID, #/watch/titles/ID) keep it one
// page the gateway serves at `/`, with no build step.

import { ApiError, api, esc, field, handleForm } from './api.js';
import { watch } from './watch.js';

const view = document.getElementById('view');
const SESSION = 'livemesh.session';
const PROFILE = 'livemesh.profile';
const EXPIRED = 'Your session expired: sign in again.';
let stopPlayback = null; // the player view's clean-up, when one is open

const session = () => JSON.parse(localStorage.getItem(SESSION) || 'null');
const profile = () => JSON.parse(localStorage.getItem(PROFILE) || 'null');
const profileId = () => profile().name.split('/').pop();
const titleId = (name) => name.split('/').pop();

function signOut(message = '') {
  localStorage.removeItem(SESSION);
  localStorage.removeItem(PROFILE);
  sessionStorage.setItem('livemesh.notice', message);
  go('#/signin');
}

// Every signed-in call: an expired or refused session goes back to sign-in.
async function call(method, path, body) {
  // (calls made together sign out once: the first that finds the session over)
  const current = session();
  if (!current) throw new ApiError(401, { message: 'signed out' });
  if (Date.parse(current.expireTime) <= Date.now()) {
    signOut(EXPIRED);
    throw new ApiError(401, { message: 'session expired' });
  }
  try {
    return await api(method, path, { body, token: current.accessToken });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && session()) signOut(EXPIRED);
    throw error;
  }
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function show(html, title) {
  view.innerHTML = html;
  document.title = `${title} · livemesh`;
  const signedIn = Boolean(session() && profile());
  document.getElementById('search-form').hidden = !signedIn;
  document.getElementById('account-nav').hidden = !session();
  document.getElementById('who').textContent = profile() ? profile().displayName : '';
  // typing in the search box keeps its focus while the results change under it
  if (document.activeElement?.id !== 'search') (view.querySelector('[data-autofocus]') || view).focus();
}

// -- sign up / sign in ------------------------------------------------------------------

function renderAuth(mode) {
  const up = mode === 'signup';
  const notice = sessionStorage.getItem('livemesh.notice') || '';
  sessionStorage.removeItem('livemesh.notice');
  show(`<section class="card narrow">
    <h1>${up ? 'Create your account' : 'Sign in'}</h1>
    ${notice ? `<p class="notice" role="status">${esc(notice)}</p>` : ''}
    <form id="auth" novalidate>
      ${up ? field('displayName', 'Your name', 'name="displayName" autocomplete="name" maxlength="100"') : ''}
      ${field('email', 'Email', 'name="email" type="email" required autocomplete="email" data-autofocus')}
      ${field('password', 'Password', `name="password" type="password" required ${up ? 'minlength="8" autocomplete="new-password"' : 'autocomplete="current-password"'}`)}
      <p class="form-error" role="alert"></p>
      <button type="submit" class="primary">${up ? 'Create account' : 'Sign in'}</button>
    </form>
    <p>${up ? 'Have an account? <a href="#/signin">Sign in</a>' : 'New here? <a href="#/signup">Create an account</a>'}</p>
  </section>`, up ? 'Sign up' : 'Sign in');
  handleForm(view.querySelector('#auth'), async (body) => {
    const reply = await api('POST', up ? '/v1/accounts:signUp' : '/v1/accounts:signIn', { body });
    localStorage.setItem(SESSION, JSON.stringify(reply));
    go('#/profiles');
  });
}

// -- profiles ---------------------------------------------------------------------------

async function renderProfiles() {
  const { profiles = [] } = await call('GET', '/v1/profiles');
  show(`<section class="card">
    <h1>Who's watching?</h1>
    <ul class="profiles">${profiles.map((p, i) => `<li><button type="button" class="profile" data-i="${i}">${esc(p.displayName)}</button></li>`).join('')}</ul>
    <form id="new-profile" novalidate>
      <h2>Add a profile</h2>
      ${field('profile-name', 'Profile name', `name="profile.displayName" required maxlength="50" ${profiles.length ? '' : 'data-autofocus'}`)}
      <p class="form-error" role="alert"></p>
      <button type="submit">Add profile</button>
    </form>
  </section>`, 'Profiles');
  const pick = (p) => { localStorage.setItem(PROFILE, JSON.stringify(p)); go('#/home'); };
  for (const button of view.querySelectorAll('button.profile')) {
    button.addEventListener('click', () => pick(profiles[Number(button.dataset.i)]));
  }
  handleForm(view.querySelector('#new-profile'), async (body) => {
    pick((await call('POST', '/v1/profiles', body)).profile);
  });
}

// -- home, search, title ----------------------------------------------------------------

const card = (id, label, extra = '') =>
  `<li><a class="tile" href="#/title/${esc(id)}">${esc(label)}${extra}</a></li>`;

function row(heading, items, empty) {
  return `<section class="row" aria-labelledby="h-${heading.replace(/\W/g, '')}">
    <h2 id="h-${heading.replace(/\W/g, '')}">${heading}</h2>
    ${items.length ? `<ul class="tiles">${items.join('')}</ul>` : `<p class="empty">${empty}</p>`}
  </section>`;
}

// Rows name titles (`titles/ID`): the catalog's display title for each, in one batch call
// (a call per title is a burst a loaded catalog sheds), the ID where the catalog has none.
async function displayTitles(names) {
  const unique = [...new Set(names)].slice(0, 100);
  const query = unique.map((name) => `names=${encodeURIComponent(name)}`).join('&');
  const { titles = [] } = unique.length
    ? await api('GET', `/v1/titles:batchGet?${query}`).catch(() => ({}))
    : {};
  const found = new Map(titles.map((t) => [t.name, t.displayTitle]));
  return new Map(unique.map((name) => [name, found.get(name) || titleId(name)]));
}

async function renderHome() {
  const base = `/v1/profiles/${profileId()}`;
  const [recs, views, live] = await Promise.all([
    call('GET', `${base}/recommendations?pageSize=10`),
    call('GET', `${base}/views?pageSize=10`),
    api('GET', '/v1/channels?pageSize=20'),
  ]);
  const watching = [...new Set((views.views || []).map((v) => v.title))];
  const recommended = (recs.recommendations || []).map((r) => r.title);
  const names = await displayTitles([...watching, ...recommended]);
  const tile = (name) => card(titleId(name), names.get(name));
  show(`<h1 class="visually-hidden">Home</h1>
    ${row('Continue watching', watching.map(tile), 'Nothing yet: press play on something.')}
    ${row('Live now', (live.channels || []).map((c) => `<li><a class="tile" href="#/watch/channels/${esc(titleId(c.name))}">${esc(c.displayName)} <span class="badge">LIVE</span></a></li>`), 'No channel is live.')}
    ${row('Recommended for you', recommended.map(tile), 'No recommendations yet.')}`,
  'Home');
}

async function renderSearch(query) {
  const { results = [] } = query ? await api('GET', `/v1/search?q=${encodeURIComponent(query)}&pageSize=20`) : {};
  show(`<h1>Results for “${esc(query)}”</h1>
    <ul class="results" aria-live="polite">${results.map((r) => card(titleId(r.title), r.displayTitle, r.snippet ? `<small>${esc(r.snippet)}</small>` : '')).join('') || '<li class="empty">No title matches.</li>'}</ul>`,
  'Search');
}

async function renderTitle(id) {
  const { title } = await api('GET', `/v1/titles/${encodeURIComponent(id)}`);
  const facts = [title.releaseYear, title.maturityRating, (title.genres || []).join(', ')].filter(Boolean);
  show(`<article class="card title">
    <h1>${esc(title.displayTitle)}</h1>
    <p class="facts">${facts.map(esc).join(' · ')}</p>
    <p>${esc(title.synopsis)}</p>
    <a class="button primary" href="#/watch/titles/${esc(id)}" data-autofocus>▶ Play</a>
  </article>`, title.displayTitle);
}

async function renderWatch(kind, id) {
  show(`<section class="watch">
    <h1 class="visually-hidden">Now playing</h1>
    <div class="stage">
      <video id="video" controls muted playsinline aria-label="Player"></video>
      <span id="live-badge" class="badge live" hidden>LIVE</span>
      <dl id="overlay" class="overlay" aria-label="Playback statistics">
        <dt>Latency</dt><dd id="stat-latency">–</dd>
        <dt>Bitrate</dt><dd id="stat-bitrate">–</dd>
        <dt>Buffer</dt><dd id="stat-buffer">–</dd>
        <dt>Stalls</dt><dd id="stat-stalls">0</dd>
        <dt>Engine</dt><dd id="stat-engine">–</dd>
      </dl>
    </div>
    <p class="form-error" id="watch-error" role="alert"></p>
    <a href="#/title/${esc(id)}">Back</a>
  </section>`, 'Watching');
  const content = `${kind}/${id}`;
  const { session: playback } = await call('POST', '/v1/playback:start', { content, profile: profile().name });
  // the player starts first: the history's record is not on the way to the first frame
  stopPlayback = watch(document.getElementById('video'), playback, call);
  if (kind === 'titles') {
    await call('POST', `/v1/profiles/${profileId()}/views`, { view: { title: content } });
  }
}

// -- routing ----------------------------------------------------------------------------

async function render() {
  if (stopPlayback) { stopPlayback(); stopPlayback = null; }
  const [, page, ...rest] = (location.hash || '#/home').split('/');
  try {
    if (page === 'signin' || page === 'signup') return renderAuth(page);
    if (!session()) return go('#/signin');
    if (page === 'profiles' || !profile()) return await renderProfiles();
    if (page === 'search') return await renderSearch(decodeURIComponent(rest.join('/')));
    if (page === 'title') return await renderTitle(decodeURIComponent(rest[0]));
    if (page === 'watch') return await renderWatch(rest[0], decodeURIComponent(rest[1]));
    return await renderHome();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status !== 401) show(`<p class="form-error" role="alert">${esc(error.message)}</p>`, 'Error');
  }
}

// search as you type: a pause of 250 ms, then the results page (replaced, not stacked)
let typing = 0;
const search = document.getElementById('search');
search.addEventListener('input', () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    const q = search.value.trim();
    if (q) location.replace(`#/search/${encodeURIComponent(q)}`);
  }, 250);
});
document.getElementById('search-form').addEventListener('submit', (e) => e.preventDefault());
document.getElementById('sign-out').addEventListener('click', () => signOut());
document.getElementById('switch-profile').addEventListener('click', () => go('#/profiles'));
window.addEventListener('hashchange', render);
window.addEventListener('load', render); // after the deferred player libraries
