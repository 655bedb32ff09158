// The player view: dash.js plays the session's MPD (hls.js its HLS playlist where only HLS
// plays), the overlay shows latency, bitrate, buffer and stalls, and heartbeats keep the
// playback session alive until the view closes.

const $ = (id) => document.getElementById(id);
const HLS_PLAYLIST = 'master.m3u8'; // live/hls.py's multivariant playlist, beside the MPD

// CTA-5004 CMCD on every request, as one query parameter (headers would cost a CORS
// preflight): the edges send it on as QoE events, and `sid`, the playback session's id,
// is how an experiment's cell finds its players' QoE (the console's Edges panel shows it).
function dashEngine(video, url, cmcd) {
  const player = dashjs.MediaPlayer().create();
  player.updateSettings({
    debug: { logLevel: dashjs.Debug.LOG_LEVEL_ERROR },
    streaming: {
      liveCatchup: { enabled: true },
      applyServiceDescription: true,
      applyProducerReferenceTime: true,
      utcSynchronization: { enabled: true },
      cmcd: { enabled: true, mode: 'query', sid: cmcd.sessionId, cid: cmcd.contentId },
    },
  });
  player.initialize(video, url, true);
  return {
    name: 'dash.js',
    live: () => player.isReady() && player.isDynamic(),
    latency: () => (player.isReady() && player.isDynamic() ? player.getCurrentLiveLatency() : NaN),
    bitrate: () => player.getCurrentRepresentationForType?.('video')?.bandwidth ?? NaN,
    destroy: () => player.destroy(),
  };
}

function hlsEngine(video, url, cmcd) {
  const hls = new Hls({ lowLatencyMode: true, cmcd: { ...cmcd, useHeaders: false } });
  hls.loadSource(url.replace(/manifest\.mpd$/, HLS_PLAYLIST));
  hls.attachMedia(video);
  return {
    name: 'hls.js',
    live: () => Boolean(hls.levels[hls.currentLevel]?.details?.live),
    latency: () => hls.latency,
    bitrate: () => hls.levels[hls.currentLevel]?.bitrate ?? NaN,
    destroy: () => hls.destroy(),
  };
}

// Seconds of media buffered ahead of the playhead.
function bufferAhead(video) {
  const { buffered, currentTime } = video;
  for (let i = 0; i < buffered.length; i += 1) {
    if (buffered.start(i) <= currentTime && currentTime <= buffered.end(i)) return buffered.end(i) - currentTime;
  }
  return 0;
}

const fixed = (value, unit, digits = 1) => (Number.isFinite(value) ? `${value.toFixed(digits)} ${unit}` : '–');

// Plays `session` in `video`; returns what stops it (engine, timers, the session).
export function watch(video, session, call) {
  const url = session.manifestUrls[0].url;
  const cmcd = { sessionId: session.name.split('/').pop(), contentId: session.content };
  const engine = window.dashjs?.supportsMediaSource() || !window.Hls?.isSupported()
    ? dashEngine(video, url, cmcd) : hlsEngine(video, url, cmcd);
  $('stat-engine').textContent = engine.name;
  let stalls = 0;
  let playing = false;
  video.addEventListener('playing', () => { playing = true; video.dataset.playing = 'true'; });
  // a stall is the playhead waiting for data once playback has begun
  video.addEventListener('waiting', () => {
    if (playing) { stalls += 1; $('stat-stalls').textContent = String(stalls); }
  });
  const overlay = setInterval(() => {
    $('stat-latency').textContent = fixed(engine.latency(), 's', 2);
    $('stat-bitrate').textContent = fixed(engine.bitrate() / 1000, 'kb/s', 0);
    $('stat-buffer').textContent = fixed(bufferAhead(video), 's');
    $('live-badge').hidden = !engine.live();
  }, 500);
  const sessionPath = `/v1/playback/${cmcd.sessionId}`;
  const beat = () => call('POST', `${sessionPath}:heartbeat`, {
    positionMs: String(Math.round(video.currentTime * 1000)),
    state: video.paused ? 'SESSION_STATE_PAUSED' : 'SESSION_STATE_PLAYING',
  }).catch(() => {});
  const heartbeat = setInterval(beat, (session.heartbeatIntervalSeconds || 10) * 1000);
  return () => {
    clearInterval(overlay);
    clearInterval(heartbeat);
    engine.destroy();
    call('POST', `${sessionPath}:stop`, {}).catch(() => {});
  };
}
