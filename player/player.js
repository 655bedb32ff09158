// livemesh player: dash.js, Shaka Player or hls.js in low-latency mode, and the
// measurements the tests read (the same for every player).
//
// dash.js 5 turns low-latency mode on by itself when the MPD's SegmentTemplate says
// availabilityTimeComplete="false" (our chunked segments); the page sets the target
// delay and the catch-up, and does its seek back to the target.  Shaka and hls.js are
// told low-latency mode; their target comes from the MPD's ServiceDescription or the
// playlist's PART-HOLD-BACK.  Query string:
//   src        the manifest URL: an MPD, or an LL-HLS multivariant playlist (required;
//              also read as mpd)
//   player     dashjs (default), shaka or hlsjs
//   liveDelay  target live latency in seconds; unset: the manifest's
//   maxDrift   drift (s) past which dash.js is seeked back to its target instead of speeding
//              up; unset: Latency@max - Latency@target
//   minRate, maxRate  catch-up playback rates (e.g. 0.96, 1.04); unset: the MPD's PlaybackRate
//   log        dash.js log level: none|fatal|error|warn|info|debug (default warn)
//   sid        the livemesh playback session id, sent as CMCD sid (per-cell QoE joins on
//              it); unset: each player makes up its own
'use strict';

(function () {
  const params = new URLSearchParams(window.location.search);
  const number = (name) => (params.has(name) ? Number(params.get(name)) : NaN);
  const video = document.getElementById('video');
  const statusBox = document.getElementById('status');

  // Everything measured, in one object the test harness reads with page.evaluate().
  const state = {
    mpd: params.get('src') || params.get('mpd'),
    player: params.get('player') || 'dashjs',
    errors: [],          // the player's error events and media element errors
    stalls: [],          // {at, duration}: 'waiting' after playback had started, until 'playing'
    seeks: [],           // {at, from, to}: gap jumps, and seeks back to the target past maxDrift
    samples: [],         // one per SAMPLE_MS: {t, latency, buffer, rate, currentTime}
    playing: false,      // set on the first 'playing' event
    firstPlayingAt: null,
    lowLatency: null,    // the player's own view, once a stream is initialised
  };
  const SAMPLE_MS = 250;
  const MAX_SAMPLES = 4 * 60 * 15;  // 15 minutes at 4 Hz
  let stallStart = null;

  if (!state.mpd) {
    state.errors.push({ kind: 'page', message: 'no ?src= in the URL' });
    statusBox.textContent = 'usage: index.html?src=<url>[&player=dashjs|shaka|hlsjs]';
    window.livemesh = { state };
    return;
  }

  // The SourceBuffers the player creates, so a hole can be told apart by track: the video
  // element's own buffered ranges are only the intersection of audio and video.
  const sourceBuffers = [];
  const addSourceBuffer = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function (type) {
    const buffer = addSourceBuffer.call(this, type);
    sourceBuffers.push({ type: type.split('/')[0], buffer });
    return buffer;
  };

  function dashjsAdapter() {
    const player = dashjs.MediaPlayer().create();
    // dash.js takes the catch-up range as offsets from 1 (the MPD gives rates).
    const rateOffset = (name) => (params.has(name) ? number(name) - 1 : NaN);
    const logLevels = {
      none: dashjs.Debug.LOG_LEVEL_NONE,
      fatal: dashjs.Debug.LOG_LEVEL_FATAL,
      error: dashjs.Debug.LOG_LEVEL_ERROR,
      warn: dashjs.Debug.LOG_LEVEL_WARNING,
      info: dashjs.Debug.LOG_LEVEL_INFO,
      debug: dashjs.Debug.LOG_LEVEL_DEBUG,
    };
    player.updateSettings({
      debug: { logLevel: logLevels[params.get('log') || 'warn'] },
      streaming: {
        // NaN leaves the MPD's ServiceDescription (Latency@target) in charge.
        delay: { liveDelay: delay },
        // A failed segment is retried on the next BaseURL (the next edge) after 100 ms, not
        // dash.js's 1 s default: a low-latency buffer holds about a second.
        retryIntervals: { MediaSegment: 100, InitializationSegment: 100 },
        liveCatchup: {
          enabled: true,
          // The default mode: rate within the MPD's PlaybackRate range. Its own seek past
          // maxDrift is off (0): the page seeks instead (seekBackToTarget, below).
          mode: 'liveCatchupModeDefault',
          maxDrift: 0,
          playbackRate: { min: rateOffset('minRate'), max: rateOffset('maxRate') },
        },
        // The MPD's ServiceDescription, ProducerReferenceTime and UTCTiming are what make
        // the latency figure comparable with the encoder's clock.
        applyServiceDescription: true,
        applyProducerReferenceTime: true,
        utcSynchronization: { enabled: true },
        // CTA-5004 Common Media Client Data on every request, as one CMCD query parameter:
        // the edges keep it out of the cache key and send it on as QoE events.
        cmcd: { enabled: true, mode: 'query', sid: params.get('sid') },
        // CTA-5006 Common Media Server Data from the edges (CMSD-Static, CMSD-Dynamic, exposed
        // by their CORS): parsed and kept with each request's metrics. The edges' etp is a
        // floor (their egress per open connection), so ABR does not weigh it over its own
        // measure, and the edges send no mb.
        cmsd: { enabled: true, abr: { applyMb: false, etpWeightRatio: 0 } },
      },
    });

    const events = dashjs.MediaPlayer.events;
    const errorOf = (e) => {
      const err = e.error || e;
      return {
        kind: e.type,
        code: err && err.code !== undefined ? err.code : null,
        message: String((err && err.message) || err || ''),
        at: performance.now(),
      };
    };
    player.on(events.ERROR, (e) => state.errors.push(errorOf(e)));
    player.on(events.PLAYBACK_ERROR, (e) => state.errors.push(errorOf(e)));
    player.on(events.STREAM_INITIALIZED, () => {
      state.lowLatency = player.getLowLatencyModeEnabled();
    });
    seekBackToTarget(player);
    const bufferOf = (type) => {
      try {
        return player.getDashMetrics().getCurrentBufferLevel(type);
      } catch (_) {
        return NaN;
      }
    };
    return {
      player,
      latency: () => (player.isReady() ? player.getCurrentLiveLatency() : NaN),
      buffer: bufferOf,
      start: () => player.initialize(video, state.mpd, true),
    };
  }

  // dash.js's own seek past maxDrift (CatchupController: seekToCurrentLive with
  // stickToBuffered) clamps a target outside the buffered media to the nearest buffered
  // end: after an outage, where playback stopped; once the live segment is appended it
  // moves to that segment's start, up to a segment behind the target, which PlaybackRate@max
  // (4 %) takes a minute to make up. And it looks only on timeupdate and progress, which a
  // player stalled on a segment Redis lost (404) does not get. So the page seeks itself,
  // unclamped, as for Shaka: further behind its target than maxDrift (unset: the MPD's
  // Latency@max less Latency@target), it puts the playhead at its target; dash.js then
  // loads the segment holding it, whose chunks up to the live edge come at once. Checked
  // on a timer, as a stall has no event; a seek that waits for its media that long (the
  // origin is down, or dash.js is stuck retrying a segment that failed) is made again. A
  // seek made while the origin is down lands once it is back, where the target was when
  // it began: landed more than STALE_SEEK_S behind, it is made again, up to FOLLOW_UPS
  // times, now that the media flows.
  function seekBackToTarget(player) {
    const CHECK_MS = 250;
    const STALE_SEEK_S = 0.5;
    const FOLLOW_UPS = 2;
    const maxDrift = number('maxDrift');
    let followUps = 0;
    const allowedDrift = () => {
      if (Number.isFinite(maxDrift)) return maxDrift;
      const manifest = player.getManifest();
      const service = manifest && manifest.ServiceDescription && manifest.ServiceDescription[0];
      const latency = service && service.Latency;
      return latency ? (Number(latency.max) - Number(latency.target)) / 1000 : NaN;
    };
    // Whether it seeked: further than `allowed` behind its target, to its target.
    const seekPast = (allowed) => {
      const drift = player.getCurrentLiveLatency() - player.getTargetLiveDelay();
      if (!(drift > allowed)) return false;
      video.currentTime += drift;
      return true;
    };
    setInterval(() => {
      if (state.playing && player.isReady() && seekPast(allowedDrift())) {
        followUps = FOLLOW_UPS;
      }
    }, CHECK_MS);
    video.addEventListener('seeked', () => {
      if (followUps > 0) followUps = seekPast(STALE_SEEK_S) ? followUps - 1 : 0;
    });
  }

  // Shaka Player: low-latency mode on; the target is the MPD's ServiceDescription.
  function shakaAdapter() {
    shaka.polyfill.installAll();
    const player = new shaka.Player();
    const config = { streaming: { lowLatencyMode: true } };
    // CMCD as query parameters, as dash.js sends it ('': Shaka makes up the sid)
    config.cmcd = { enabled: true, useHeaders: false, sessionId: params.get('sid') || '' };
    if (Number.isFinite(delay)) {
      config.streaming.liveSync = { enabled: true, targetLatency: delay };
    }
    player.configure(config);
    const errorOf = (kind, e) => ({
      kind, code: e && e.code !== undefined ? e.code : null, message: String(e), at: performance.now(),
    });
    player.addEventListener('error', (e) => state.errors.push(errorOf('error', e.detail)));
    player.addEventListener('loaded', () => {
      state.lowLatency = player.getConfiguration().streaming.lowLatencyMode;
    });
    const latency = () => {
      const at = player.getPlayheadTimeAsDate();
      return at ? (Date.now() - at.getTime()) / 1000 : NaN;
    };
    // Shaka's liveSync only changes the playback rate, never seeks: seconds behind after an
    // origin outage, it would take minutes to catch up. Further behind its target than the
    // MPD's Latency@max is behind Latency@target, it seeks back to its target, as dash.js
    // does past its maximum drift.
    video.addEventListener('timeupdate', () => {
      const manifest = player.getManifest();
      const service = manifest && manifest.serviceDescription;
      if (!service || !service.maxLatency || !service.targetLatency || video.seeking) return;
      const target = Number.isFinite(delay) ? delay : service.targetLatency;
      const behind = latency();
      if (behind > target + service.maxLatency - service.targetLatency) {
        video.currentTime += behind - target;
      }
    });
    return {
      player,
      latency,
      buffer: mediaBuffer,
      start: () => player.attach(video)
        .then(() => player.load(state.mpd))
        .then(() => video.play())
        .catch((e) => state.errors.push(errorOf('load', e))),
    };
  }

  // hls.js: low-latency mode (parts, blocking reloads); the target is PART-HOLD-BACK.
  function hlsjsAdapter() {
    // A playlist carries no catch-up rates: hls.js is held to the MPD's (PlaybackRate@max),
    // so the three players keep to one rule; hls.js's default (1) never catches up.
    const maxRate = number('maxRate');
    // A failed part, segment or playlist is retried once after 100 ms (as dash.js is
    // told), then hls.js tries another rendition and, when all of the edge's fail, the next
    // Pathway (edge) of the multivariant playlist: its defaults (up to six retries a second
    // or more apart) outlast a low-latency buffer. Timeouts keep hls.js's own rule.
    const quickRetry = { maxNumRetry: 1, retryDelayMs: 100, maxRetryDelayMs: 200 };
    const policy = (maxLoadTimeMs, timeoutRetries) => ({
      default: {
        maxTimeToFirstByteMs: 10000,
        maxLoadTimeMs,
        timeoutRetry: { maxNumRetry: timeoutRetries, retryDelayMs: 0, maxRetryDelayMs: 0 },
        errorRetry: quickRetry,
      },
    });
    const config = {
      lowLatencyMode: true,
      maxLiveSyncPlaybackRate: Number.isFinite(maxRate) ? maxRate : 1.04,
      // CMCD as query parameters, as dash.js sends it (no sid: hls.js makes one up)
      cmcd: { useHeaders: false, sessionId: params.get('sid') || undefined },
      // The target stays PART-HOLD-BACK after a stall (hls.js adds a second per stall, up
      // to a target duration), as dash.js and Shaka keep theirs: a stall from an origin
      // outage would otherwise leave the viewer seconds behind for good.
      liveSyncOnStallIncrease: 0,
      debug: params.get('log') === 'debug',
      fragLoadPolicy: policy(120000, 4),
      playlistLoadPolicy: policy(20000, 2),
    };
    if (Number.isFinite(delay)) config.liveSyncDuration = delay;
    const player = new Hls(config);
    // When every rendition and Pathway failed (an origin whose state store is down answers
    // 503 for seconds), hls.js stops loading for good: it is started again after a pause
    // that doubles up to half a second, as an application should (the origin's Retry-After
    // says 2 s, but a viewer must play again within 2 s of its return: an hls.js restart
    // runs through every rendition before it is fatal again, about a second in all).
    const RESTART_FIRST_MS = 250;
    const RESTART_MAX_MS = 500;
    let restartMs = RESTART_FIRST_MS;
    player.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) {
        state.errors.push({
          kind: data.type, code: data.details, message: String(data.reason || data.details),
          at: performance.now(),
        });
        if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
          setTimeout(() => player.startLoad(), restartMs * (0.5 + Math.random() / 2));
          restartMs = Math.min(RESTART_MAX_MS, restartMs * 2);
        }
      }
    });
    player.on(Hls.Events.FRAG_BUFFERED, () => { restartMs = RESTART_FIRST_MS; });
    player.on(Hls.Events.LEVEL_LOADED, (_event, data) => {
      const details = data.details;
      state.lowLatency = player.lowLatencyMode && Boolean(details.partList);
      // hls.js seeks back to its target only past liveMaxLatencyDuration (by default never):
      // one segment past its target, as the MPD's Latency@max. Set from the first playlist
      // (PART-HOLD-BACK is the target unless liveDelay is); read at each playlist update.
      if (player.config.liveMaxLatencyDuration === undefined && details.partHoldBack) {
        const target = Number.isFinite(delay) ? delay : details.partHoldBack;
        player.config.liveMaxLatencyDuration = target + details.targetduration;
      }
    });
    return {
      player,
      latency: () => player.latency,
      buffer: mediaBuffer,
      start: () => {
        player.loadSource(state.mpd);
        player.attachMedia(video);
        video.play().catch(() => {});
      },
    };
  }

  // Seconds of media buffered ahead of the playhead (for players without a per-track figure).
  function mediaBuffer() {
    const buffered = video.buffered;
    for (let i = 0; i < buffered.length; i++) {
      if (buffered.start(i) <= video.currentTime + 0.05 && video.currentTime <= buffered.end(i)) {
        return buffered.end(i) - video.currentTime;
      }
    }
    return 0;
  }

  const adapters = { dashjs: dashjsAdapter, shaka: shakaAdapter, hlsjs: hlsjsAdapter };
  if (!(state.player in adapters)) {
    state.errors.push({ kind: 'page', message: `unknown player ${state.player}` });
    window.livemesh = { state };
    return;
  }
  const delay = number('liveDelay');
  const adapter = adapters[state.player]();
  const player = adapter.player;

  video.addEventListener('playing', () => {
    if (!state.playing) {
      state.playing = true;
      state.firstPlayingAt = performance.now();
    }
    if (stallStart !== null) {
      state.stalls.push({ at: stallStart, duration: (performance.now() - stallStart) / 1000 });
      stallStart = null;
    }
  });
  // Every seek after playback started is a player's jump over a hole in the buffered media,
  // or a seek back to the target when past maxDrift (the page's, for dash.js and Shaka).
  let lastTime = 0;
  video.addEventListener('timeupdate', () => {
    if (!video.seeking) lastTime = video.currentTime;
  });
  video.addEventListener('seeking', () => {
    if (state.playing) {
      state.seeks.push({ at: performance.now(), from: lastTime, to: video.currentTime });
    }
  });
  video.addEventListener('waiting', () => {
    if (state.playing && stallStart === null) {
      stallStart = performance.now();
    }
  });
  video.addEventListener('error', () => {
    const err = video.error;
    state.errors.push({
      kind: 'video',
      code: err ? err.code : null,
      message: err ? err.message : 'media element error',
      at: performance.now(),
    });
  });

  function bufferLevel(type) {
    const level = adapter.buffer(type);
    return Number.isFinite(level) ? level : null;
  }

  function ranges(timeRanges) {
    const out = [];
    for (let i = 0; i < timeRanges.length; i++) {
      out.push([+timeRanges.start(i).toFixed(3), +timeRanges.end(i).toFixed(3)]);
    }
    return out;
  }

  function snapshot() {
    const latency = adapter.latency();
    return {
      t: performance.now(),
      latency: Number.isFinite(latency) ? latency : null,
      buffer: bufferLevel('video'),
      audioBuffer: bufferLevel('audio'),
      rate: video.playbackRate,
      currentTime: video.currentTime,
      width: video.videoWidth,
      height: video.videoHeight,
      stalled: stallStart !== null,
      readyState: video.readyState,
      buffered: ranges(video.buffered),  // holes here are holes in the media timeline
    };
  }

  // Buffered ranges per track (kept out of the 4 Hz samples: they grow with the run).
  function tracks() {
    const out = {};
    for (const { type, buffer } of sourceBuffers) {
      try {
        out[type] = ranges(buffer.buffered);
      } catch (_) {
        out[type] = null;  // removed from its MediaSource
      }
    }
    return out;
  }

  setInterval(() => {
    if (!state.playing) return;
    const s = snapshot();
    delete s.buffered;
    state.samples.push(s);
    if (state.samples.length > MAX_SAMPLES) state.samples.shift();
    statusBox.textContent =
      `latency ${s.latency === null ? '-' : s.latency.toFixed(3)} s  ` +
      `buffer ${s.buffer === null ? '-' : s.buffer.toFixed(3)} s  rate ${s.rate.toFixed(3)}  ` +
      `${s.width}x${s.height}  stalls ${state.stalls.length}  errors ${state.errors.length}`;
  }, SAMPLE_MS);

  window.livemesh = {
    player,
    state,
    snapshot,
    tracks,
    // Stalls including one still open, with its duration so far.
    stalls() {
      const open = stallStart === null ? [] : [{
        at: stallStart, duration: (performance.now() - stallStart) / 1000, open: true,
      }];
      return state.stalls.concat(open);
    },
  };

  adapter.start();
})();
