// The console's VOD uploads panel: choose a video file and name its title; the file goes
// through the gateway into the object store (POST /v1/vodUploads), the catalog publishes it
// (POST /v1/vodPublications: analysis, per-title ladder, encode, packaging, upload) and the
// panel follows the publication (GET /v1/vodPublications/{id}, polled) through its stages
// to the title, listed once published. A refusal lands beside the field it names.

import { ApiError, esc, field, handleForm } from './api.js';

const POLL_MS = 500;
const STAGE = {
  VOD_PUBLICATION_STAGE_QUEUED: 'Waiting for an encoder',
  VOD_PUBLICATION_STAGE_FETCH: 'Reading the source',
  VOD_PUBLICATION_STAGE_ANALYSIS: 'Choosing the ladder (per-title analysis)',
  VOD_PUBLICATION_STAGE_ENCODE: 'Encoding and packaging',
  VOD_PUBLICATION_STAGE_UPLOAD: 'Storing the packaged title',
  VOD_PUBLICATION_STAGE_CATALOG: 'Adding it to the catalog',
  VOD_PUBLICATION_STAGE_DONE: 'Published',
  VOD_PUBLICATION_STAGE_FAILED: 'Failed',
};
const ENDED = new Set(['VOD_PUBLICATION_STAGE_DONE', 'VOD_PUBLICATION_STAGE_FAILED']);
const published = []; // the titles published from this tab, newest first

const titleItem = (title) => {
  const id = title.name.split('/').pop();
  return `<li><a href="/#/title/${esc(id)}">${esc(title.displayTitle)}</a>
    <small>${esc(id)}, ${esc(title.durationSeconds || 0)} s</small></li>`;
};

function showProgress(stage, fraction) {
  const percent = Math.floor((fraction || 0) * 100);
  document.getElementById('vod-progress').value = fraction || 0;
  document.getElementById('vod-stage').textContent = STAGE[stage] || stage;
  document.getElementById('vod-percent').textContent = `${percent} %`;
}

const pause = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Shows the panel in `view` (through `show`); returns what stops its polling.
export async function renderVod({ call, show }) {
  let stopped = false;
  show(`<section class="card" aria-labelledby="vod-title">
    <h1 id="vod-title">VOD uploads</h1>
    <form id="vod-form" novalidate>
      ${field('vod-file', 'Video file', 'name="body" type="file" accept="video/*" required data-autofocus')}
      ${field('vod-id', 'Title id', 'name="titleId" required pattern="[a-z0-9][a-z0-9_\\-]{0,62}"')}
      ${field('vod-display', 'Display title', 'name="displayTitle" required maxlength="200"')}
      <p class="form-error" role="alert"></p>
      <button type="submit" class="primary">Upload and publish</button>
    </form>
    <div class="publication" aria-live="polite">
      <p><span id="vod-stage">Nothing uploaded yet</span>: <output id="vod-percent">0 %</output></p>
      <progress id="vod-progress" max="1" value="0" aria-labelledby="vod-stage"></progress>
      <p class="form-error" id="vod-poll-error"></p>
    </div>
    <h2 id="vod-published">Published titles</h2>
    <ul class="published" aria-labelledby="vod-published">${published.map(titleItem).join('') || '<li class="empty">None from this console yet.</li>'}</ul>
  </section>`);
  const form = document.getElementById('vod-form');

  // The publication polled until it ends (or the panel goes away). A poll the gateway
  // could not answer (429, 5xx) is said and tried again: the publication runs on.
  async function follow(publication) {
    let now = publication;
    while (!ENDED.has(now.stage) && !stopped) {
      showProgress(now.stage, now.fractionDone);
      await pause(POLL_MS);
      if (stopped) break;
      try {
        now = (await call('GET', `/v1/${now.name}`)).publication;
        document.getElementById('vod-poll-error').textContent = '';
      } catch (error) {
        if (!(error instanceof ApiError) || error.status < 429) throw error;
        document.getElementById('vod-poll-error').textContent = `Not refreshed: ${error.message}`;
      }
    }
    return now;
  }

  async function publish() {
    const file = form.elements.body.files[0];
    showProgress('Uploading the file', 0);
    const { sourceObject } = await call('POST', '/v1/vodUploads', file);
    const body = {
      titleId: form.elements.titleId.value.trim(),
      displayTitle: form.elements.displayTitle.value.trim(),
      sourceObject,
    };
    const ended = await follow((await call('POST', '/v1/vodPublications', body)).publication);
    if (stopped) return;
    showProgress(ended.stage, ended.fractionDone);
    if (ended.stage !== 'VOD_PUBLICATION_STAGE_DONE') {
      throw new ApiError(400, { message: ended.errorMessage || ended.errorCode });
    }
    published.unshift(ended.title);
    document.querySelector('.published').innerHTML = published.map(titleItem).join('');
    form.reset();
  }

  // the form's own fields are read in publish(): the file is no JSON value
  handleForm(form, publish);
  return () => { stopped = true; };
}
