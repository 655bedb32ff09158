// livemesh player: dash.js low-latency settings and the measurements the tests read.
//
// dash.js 5 turns low-latency mode on by itself when the MPD's SegmentTemplate says
// availabilityTimeComplete="false" (our chunked segments); the page only sets the target
// delay and the catch-up.  Query string:
//   mpd        the manifest URL (required)
//   liveDelay  target live latency in seconds; unset: the MPD's ServiceDescription Latency@target
//   maxDrift   drift (s) past which dash.js seeks back to the target instead of speeding up
//   minRate, maxRate  catch-up playback rates (e.g. 0.96, 1.04); unset: the MPD's PlaybackRate
//   log        dash.js log level: none|fatal|error|warn|info|debug (default warn)
'use strict';

(function () {
  const params = new URLSearchParams(window.location.search);
  const number = (name) => (params.has(name) ? Number(params.get(name)) : NaN);
  const video = document.getElementById('video');
  const statusBox = document.getElementById('status');

  // Everything measured, in one object the test harness reads with page.evaluate().
  const state = {
    mpd: params.get('mpd'),
    errors: [],          // dash.js ERROR / PLAYBACK_ERROR events and media element errors
    stalls: [],          // {at, duration}: 'waiting' after playback had started, until 'playing'
    seeks: [],           // {at, from, to}: dash.js's own seeks (gap jumps, catch-up past maxDrift)
    samples: [],         // one per SAMPLE_MS: {t, latency, buffer, rate, currentTime}
    playing: false,      // set on the first 'playing' event
    firstPlayingAt: null,
    lowLatency: null,    // dash.js's own view, once a stream is initialised
  };
  const SAMPLE_MS = 250;
  const MAX_SAMPLES = 4 * 60 * 15;  // 15 minutes at 4 Hz
  let stallStart = null;

  if (!state.mpd) {
    state.errors.push({ kind: 'page', message: 'no ?mpd= in the URL' });
    statusBox.textContent = 'usage: index.html?mpd=<url>';
    window.livemesh = { state };
    return;
  }

  // The SourceBuffers dash.js creates, so a hole can be told apart by track: the video
  // element's own buffered ranges are only the intersection of audio and video.
  const sourceBuffers = [];
  const addSourceBuffer = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function (type) {
    const buffer = addSourceBuffer.call(this, type);
    sourceBuffers.push({ type: type.split('/')[0], buffer });
    return buffer;
  };

  const player = dashjs.MediaPlayer().create();
  const delay = number('liveDelay');
  const maxDrift = number('maxDrift');
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
      liveCatchup: {
        enabled: true,
        // The default mode: rate within the MPD's PlaybackRate range, seek past maxDrift.
        mode: 'liveCatchupModeDefault',
        maxDrift: maxDrift,
        playbackRate: { min: rateOffset('minRate'), max: rateOffset('maxRate') },
      },
      // The MPD's ServiceDescription, ProducerReferenceTime and UTCTiming are what make
      // the latency figure comparable with the encoder's clock.
      applyServiceDescription: true,
      applyProducerReferenceTime: true,
      utcSynchronization: { enabled: true },
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
  // The page never seeks, so every seek after playback started is dash.js's: jumping a
  // hole in the buffered media, or back to the target when past maxDrift.
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
    try {
      const level = player.getDashMetrics().getCurrentBufferLevel(type);
      return Number.isFinite(level) ? level : null;
    } catch (_) {
      return null;
    }
  }

  function ranges(timeRanges) {
    const out = [];
    for (let i = 0; i < timeRanges.length; i++) {
      out.push([+timeRanges.start(i).toFixed(3), +timeRanges.end(i).toFixed(3)]);
    }
    return out;
  }

  function snapshot() {
    const latency = player.isReady() ? player.getCurrentLiveLatency() : NaN;
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

  player.initialize(video, state.mpd, true);
})();
