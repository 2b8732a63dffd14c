// audiotok's web page: compress and compare, generate with progress.
// Plain JavaScript; the only network traffic is to this service's own API.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "audiotok.apiKey";
  const POLL_MS = 250;
  const TERMINAL = new Set(["done", "failed", "cancelled", "expired"]);

  const objectUrls = {};

  // --- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function storedKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  const apiKey = () => $("api-key").value.trim();

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = apiKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (e) {
      throw new ApiError(0, "network", `the service can't be reached (${e.message})`);
    }
    if (!response.ok) {
      let code = `http_${response.status}`;
      let message = response.statusText || "the request failed";
      try {
        const body = await response.json();
        if (body && body.error) {
          code = body.error.code || code;
          message = body.error.message || message;
        }
      } catch (e) {
        // not JSON: keep the status line
      }
      throw new ApiError(response.status, code, message);
    }
    return response;
  }

  // Shows `error` in an alert box: a title, the message, and the API's status and code.
  function showError(element, error, title) {
    element.replaceChildren();
    const isApi = error instanceof ApiError;
    const message = error instanceof Error ? error.message : String(error);
    if (title) {
      const strong = document.createElement("strong");
      strong.textContent = `${title}: `;
      element.append(strong);
    }
    const text = title ? message : message.charAt(0).toUpperCase() + message.slice(1);
    element.append(text);
    if (isApi && error.status === 401) {
      element.append(" — enter the service's API key at the top right.");
    }
    if (isApi && error.code) {
      const code = document.createElement("code");
      code.textContent = error.status ? `${error.status} ${error.code}` : error.code;
      element.append(code);
    }
    element.dataset.code = isApi ? error.code : "client";
    element.hidden = false;
  }

  function hideError(element) {
    element.hidden = true;
    element.replaceChildren();
  }

  // --- formatting ------------------------------------------------------------------------

  function formatBytes(n) {
    if (n < 1000) return `${n} B`;
    if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
    return `${(n / 1e6).toFixed(2)} MB`;
  }

  function exactBytes(n) {
    return `${n.toLocaleString("en-US")} bytes`;
  }

  function setValue(element, main, sub) {
    element.replaceChildren(document.createTextNode(main));
    if (sub) {
      const span = document.createElement("span");
      span.className = "sub";
      span.textContent = sub;
      element.append(span);
    }
  }

  function setUrl(name, blob) {
    if (objectUrls[name]) URL.revokeObjectURL(objectUrls[name]);
    objectUrls[name] = URL.createObjectURL(blob);
    return objectUrls[name];
  }

  function setBusy(button, busy, label) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.disabled = busy;
    button.replaceChildren();
    if (busy) {
      const spinner = document.createElement("span");
      spinner.className = "spinner";
      spinner.setAttribute("aria-hidden", "true");
      button.append(spinner, label);
    } else {
      button.append(button.dataset.label);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // The sample rate a WAV file declares (null for anything else).
  function wavRate(buffer) {
    const view = new DataView(buffer);
    const tag = (at) => String.fromCharCode(...new Uint8Array(buffer, at, 4));
    if (buffer.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") return null;
    let at = 12;
    while (at + 8 <= buffer.byteLength) {
      const size = view.getUint32(at + 4, true);
      if (tag(at) === "fmt " && at + 16 <= buffer.byteLength) return view.getUint32(at + 12, true);
      at += 8 + size + (size % 2);
    }
    return null;
  }

  // --- spectrograms ----------------------------------------------------------------------

  const FFT_SIZE = 1024;
  const DYNAMIC_RANGE_DB = 80;

  // An in-place iterative radix-2 FFT of size n (a power of two).
  function makeFft(n) {
    const levels = Math.log2(n);
    const reverse = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      let r = 0;
      for (let b = 0; b < levels; b++) r |= ((i >>> b) & 1) << (levels - 1 - b);
      reverse[i] = r;
    }
    const cos = new Float64Array(n / 2);
    const sin = new Float64Array(n / 2);
    for (let i = 0; i < n / 2; i++) {
      cos[i] = Math.cos((2 * Math.PI * i) / n);
      sin[i] = Math.sin((2 * Math.PI * i) / n);
    }
    return (re, im) => {
      for (let i = 0; i < n; i++) {
        const j = reverse[i];
        if (j > i) {
          [re[i], re[j]] = [re[j], re[i]];
          [im[i], im[j]] = [im[j], im[i]];
        }
      }
      for (let size = 2; size <= n; size *= 2) {
        const half = size / 2;
        const step = n / size;
        for (let start = 0; start < n; start += size) {
          for (let k = 0; k < half; k++) {
            const a = start + k;
            const b = a + half;
            const wr = cos[k * step];
            const wi = -sin[k * step];
            const tr = re[b] * wr - im[b] * wi;
            const ti = re[b] * wi + im[b] * wr;
            re[b] = re[a] - tr;
            im[b] = im[a] - ti;
            re[a] += tr;
            im[a] += ti;
          }
        }
      }
    };
  }

  const fft = makeFft(FFT_SIZE);
  const hann = Float64Array.from(
    { length: FFT_SIZE },
    (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / FFT_SIZE),
  );

  // Power in dB of `columns` frames centred evenly over the signal: [column][bin].
  function stft(samples, columns) {
    const bins = FFT_SIZE / 2;
    const out = new Float32Array(columns * bins);
    const re = new Float64Array(FFT_SIZE);
    const im = new Float64Array(FFT_SIZE);
    for (let c = 0; c < columns; c++) {
      const centre = Math.floor(((c + 0.5) * samples.length) / columns);
      const start = centre - FFT_SIZE / 2;
      for (let i = 0; i < FFT_SIZE; i++) {
        const at = start + i;
        re[i] = at >= 0 && at < samples.length ? samples[at] * hann[i] : 0;
        im[i] = 0;
      }
      fft(re, im);
      for (let k = 0; k < bins; k++) {
        out[c * bins + k] = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-12);
      }
    }
    return out;
  }

  // Matplotlib's "inferno", sampled at nine points and interpolated into 256 colours.
  const COLOURS = (() => {
    const stops = [
      [0, 0, 4], [22, 11, 57], [66, 10, 104], [106, 23, 110], [147, 38, 103],
      [188, 55, 84], [221, 81, 58], [243, 120, 25], [252, 165, 10], [252, 255, 164],
    ];
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * (stops.length - 1);
      const lo = Math.min(Math.floor(x), stops.length - 2);
      const t = x - lo;
      for (let c = 0; c < 3; c++) {
        table[i * 3 + c] = stops[lo][c] + (stops[lo + 1][c] - stops[lo][c]) * t;
      }
    }
    return table;
  })();

  const mel = (f) => 2595 * Math.log10(1 + f / 700);
  const hz = (m) => 700 * (10 ** (m / 2595) - 1);

  async function decodeMono(buffer, rate) {
    const context = new OfflineAudioContext(1, 1, rate);
    const audio = await context.decodeAudioData(buffer.slice(0));
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const channel = audio.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / audio.numberOfChannels;
    }
    return { samples: mono, rate: audio.sampleRate, duration: audio.duration };
  }

  // Draws the log-power spectrogram of an audio file (mel-spaced frequency axis) on `canvas`.
  async function drawSpectrogram(canvas, buffer, rate) {
    canvas.dataset.drawn = "";
    const { samples, duration } = await decodeMono(buffer, rate);
    const ratio = window.devicePixelRatio || 1;
    const box = canvas.getBoundingClientRect();
    canvas.width = Math.max(200, Math.round(box.width * ratio));
    canvas.height = Math.max(100, Math.round(box.height * ratio));
    const g = canvas.getContext("2d");
    const font = Math.round(10.5 * ratio);
    const left = Math.round(44 * ratio);
    const bottom = Math.round(20 * ratio);
    const top = Math.round(8 * ratio);
    const right = Math.round(10 * ratio);
    const width = canvas.width - left - right;
    const height = canvas.height - top - bottom;

    const bins = FFT_SIZE / 2;
    const power = stft(samples, width);
    let peak = -Infinity;
    for (const v of power) if (v > peak) peak = v;
    const floor = peak - DYNAMIC_RANGE_DB;
    const nyquist = rate / 2;
    const melTop = mel(nyquist);
    const image = g.createImageData(width, height);
    const rowBin = new Float32Array(height);
    for (let y = 0; y < height; y++) {
      const f = hz((melTop * (height - 1 - y)) / (height - 1));
      rowBin[y] = Math.min(bins - 1, (f / nyquist) * bins);
    }
    for (let x = 0; x < width; x++) {
      for (let y = 0; y < height; y++) {
        const b = rowBin[y];
        const lo = Math.floor(b);
        const hi = Math.min(bins - 1, lo + 1);
        const t = b - lo;
        const v = power[x * bins + lo] * (1 - t) + power[x * bins + hi] * t;
        const scaled = Math.round(((v - floor) / DYNAMIC_RANGE_DB) * 255);
        const level = Math.max(0, Math.min(255, scaled));
        const at = (y * width + x) * 4;
        image.data[at] = COLOURS[level * 3];
        image.data[at + 1] = COLOURS[level * 3 + 1];
        image.data[at + 2] = COLOURS[level * 3 + 2];
        image.data[at + 3] = 255;
      }
    }
    g.fillStyle = "#0d1117";
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.putImageData(image, left, top);

    // Axes: frequency (kHz, on the mel scale) and time (s).
    g.fillStyle = "#9aa4b2";
    g.strokeStyle = "rgba(154, 164, 178, 0.6)";
    g.lineWidth = ratio;
    g.font = `${font}px system-ui, sans-serif`;
    g.textAlign = "right";
    g.textBaseline = "middle";
    const ticks = [0, 500, 1000, 2000, 4000, 8000, 16000, 32000].filter((f) => f <= nyquist);
    for (const f of ticks) {
      const y = top + (height - 1) * (1 - mel(f) / melTop);
      g.beginPath();
      g.moveTo(left - 4 * ratio, y);
      g.lineTo(left, y);
      g.stroke();
      g.fillText(f >= 1000 ? `${f / 1000}k` : `${f}`, left - 6 * ratio, y);
    }
    g.save();
    g.translate(10 * ratio, top + height / 2);
    g.rotate(-Math.PI / 2);
    g.textAlign = "center";
    g.fillText("Hz", 0, 0);
    g.restore();
    g.textAlign = "center";
    g.textBaseline = "top";
    const step = [0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300].find(
      (s) => duration / s <= 8,
    ) || 600;
    for (let t = 0; t <= duration + 1e-9; t += step) {
      const x = left + (width * t) / duration;
      g.beginPath();
      g.moveTo(x, top + height);
      g.lineTo(x, top + height + 4 * ratio);
      g.stroke();
      const text = `${Number(t.toFixed(2))}s`;
      const clamped = Math.min(Math.max(x, left + 10 * ratio), left + width - 10 * ratio);
      g.fillText(text, clamped, top + height + 5 * ratio);
    }
    canvas.dataset.drawn = "1";
    return duration;
  }

  async function spectrogramOrNote(canvas, buffer, rate, errorBox) {
    try {
      return await drawSpectrogram(canvas, buffer, rate);
    } catch (e) {
      const why = `this browser can't decode the audio for a spectrogram (${e.message})`;
      showError(errorBox, new Error(why), "No spectrogram");
      return null;
    }
  }

  // --- the service's models --------------------------------------------------------------

  function fillSelect(select, names) {
    const previous = select.value;
    select.replaceChildren(
      ...names.map((name) => {
        const option = document.createElement("option");
        option.value = option.textContent = name;
        return option;
      }),
    );
    if (names.includes(previous)) select.value = previous;
    select.disabled = names.length === 0;
  }

  function preferredCodec(names) {
    return names.find((n) => n.includes("24khz")) || names[0];
  }

  async function loadReadiness() {
    const box = $("service-status");
    const text = $("status-text");
    try {
      const response = await fetch("/readyz");
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      fillSelect($("codec-model"), body.codecs);
      if (body.codecs.length) $("codec-model").value = preferredCodec(body.codecs);
      fillSelect($("generator-model"), body.generators);
      $("generate-panel").hidden = body.generators.length === 0;
      const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
      text.textContent = `Ready · ${plural(body.codecs.length, "codec")} · ${plural(
        body.generators.length,
        "generator",
      )}`;
      box.className = "service-status ready";
      box.dataset.ready = "1";
      return true;
    } catch (e) {
      text.textContent = "Not ready — retrying";
      box.className = "service-status waiting";
      return false;
    }
  }

  async function loadVersion() {
    try {
      const body = await (await fetch("/healthz")).json();
      if (body.version) $("version").textContent = `v${body.version}`;
    } catch (e) {
      // the version is decoration
    }
  }

  // --- compression -----------------------------------------------------------------------

  let chosenFile = null;

  function chooseFile(file) {
    chosenFile = file || null;
    const zone = $("dropzone");
    zone.classList.toggle("has-file", Boolean(file));
    $("file-name").textContent = file
      ? `${file.name} · ${formatBytes(file.size)}`
      : "Choose a file or drop it here";
  }

  async function compress(event) {
    event.preventDefault();
    const button = $("compress-button");
    const errorBox = $("compress-error");
    const result = $("compress-result");
    hideError(errorBox);
    if (!chosenFile) {
      showError(errorBox, new Error("choose an audio file first"));
      return;
    }
    const file = chosenFile;
    const bitrate = document.querySelector('input[name="bitrate"]:checked').value;
    const model = $("codec-model").value;
    result.dataset.state = "working";
    setBusy(button, true, "Compressing…");
    try {
      const form = new FormData();
      form.append("audio", file, file.name);
      form.append("bitrate", bitrate);
      if (model) form.append("model", model);
      const compressed = await api("/v1/compress", { method: "POST", body: form });
      const atok = await compressed.arrayBuffer();
      const seconds = parseFloat(compressed.headers.get("X-Audio-Seconds")) || 0;

      setValue($("original-size"), formatBytes(file.size), exactBytes(file.size));
      setValue($("compressed-size"), formatBytes(atok.byteLength), exactBytes(atok.byteLength));
      $("compressed-size").dataset.bytes = String(atok.byteLength);
      $("original-size").dataset.bytes = String(file.size);
      const ratio = file.size / atok.byteLength;
      setValue($("ratio"), `${ratio >= 100 ? ratio.toFixed(0) : ratio.toFixed(1)}×`, "smaller");
      const kbps = seconds ? (atok.byteLength * 8) / seconds / 1000 : 0;
      setValue($("kbps"), `${kbps.toFixed(2)} kbps`, `target ${bitrate} kbps`);
      setValue($("duration-shown"), `${seconds.toFixed(2)} s`, compressed.headers.get("X-Model"));
      const download = $("download-atok");
      download.href = setUrl("atok", new Blob([atok], { type: "application/octet-stream" }));
      download.download = `${file.name.replace(/\.[^.]*$/, "") || "audio"}.atok`;

      setBusy(button, true, "Decoding…");
      const decompressed = await api("/v1/decompress?format=wav", {
        method: "POST",
        body: atok,
        headers: { "Content-Type": "application/octet-stream" },
      });
      const wav = await decompressed.arrayBuffer();
      const rate = parseInt(decompressed.headers.get("X-Sample-Rate"), 10) || wavRate(wav);
      const original = await file.arrayBuffer();

      $("original-audio").src = setUrl("original", file);
      $("decoded-audio").src = setUrl("decoded", new Blob([wav], { type: "audio/wav" }));
      $("original-meta").textContent = `${formatBytes(file.size)} · ${file.name}`;
      $("decoded-meta").textContent = `${formatBytes(wav.byteLength)} · WAV, ${rate / 1000} kHz`;
      $("decoded-meta").dataset.bytes = String(wav.byteLength);
      result.hidden = false;

      setBusy(button, true, "Drawing…");
      await Promise.all([
        spectrogramOrNote($("original-spectrogram"), original, rate, errorBox),
        spectrogramOrNote($("decoded-spectrogram"), wav, rate, errorBox),
      ]);
      result.dataset.state = "ready";
    } catch (e) {
      result.dataset.state = "error";
      result.hidden = true;
      showError(errorBox, e, "Compression failed");
    } finally {
      setBusy(button, false);
    }
  }

  // --- generation ------------------------------------------------------------------------

  function showProgress(job) {
    const percent = Math.round((job.progress || 0) * 100);
    $("generate-bar").value = job.status === "done" ? 100 : percent;
    const words = {
      queued: "Queued…",
      running: `Generating… ${percent}%`,
      done: job.cache_hit ? "Done (from the cache)" : "Done",
      failed: "Failed",
      cancelled: "Cancelled",
      expired: "Expired",
    };
    $("generate-status").textContent = words[job.status] || job.status;
  }

  async function generate(event) {
    event.preventDefault();
    const button = $("generate-button");
    const errorBox = $("generate-error");
    const track = $("generated-track");
    hideError(errorBox);
    const duration = parseFloat($("gen-duration").value);
    if (!(duration > 0)) {
      showError(errorBox, new Error("the duration must be a positive number of seconds"));
      return;
    }
    const body = { prompt: $("prompt").value.trim() || null, duration };
    if ($("generator-model").value) body.model = $("generator-model").value;
    track.dataset.state = "working";
    setBusy(button, true, "Generating…");
    $("generate-progress").hidden = false;
    showProgress({ status: "queued", progress: 0 });
    try {
      const submitted = await api("/v1/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const { id } = await submitted.json();
      let job;
      for (;;) {
        job = await (await api(`/v1/jobs/${encodeURIComponent(id)}`)).json();
        showProgress(job);
        if (TERMINAL.has(job.status)) break;
        await sleep(POLL_MS);
      }
      if (job.status !== "done") {
        const error = job.error || { code: job.status, message: `the job is ${job.status}` };
        throw new ApiError(0, error.code, error.message);
      }
      const audio = await api(job.result_url);
      const type = audio.headers.get("Content-Type") || "audio/wav";
      const buffer = await audio.arrayBuffer();
      const format = (job.request && job.request.format) || "wav";
      const rate = wavRate(buffer) || 32000;
      $("generated-audio").src = setUrl("generated", new Blob([buffer], { type }));
      const download = $("download-generated");
      download.href = objectUrls.generated;
      download.download = `${id}.${format}`;
      track.hidden = false;
      const seconds = await spectrogramOrNote($("generated-spectrogram"), buffer, rate, errorBox);
      const parts = [formatBytes(buffer.byteLength), format.toUpperCase()];
      if (seconds) parts.push(`${seconds.toFixed(2)} s`);
      const run = job.timings && job.timings.run;
      if (run != null) parts.push(`made in ${run.toFixed(1)} s`);
      $("generated-meta").textContent = parts.join(" · ");
      track.dataset.state = "ready";
    } catch (e) {
      track.dataset.state = "error";
      showError(errorBox, e, "Generation failed");
    } finally {
      setBusy(button, false);
    }
  }

  // --- start-up --------------------------------------------------------------------------

  function setUp() {
    const keyInput = $("api-key");
    keyInput.value = storedKey();
    keyInput.addEventListener("input", () => {
      try {
        if (keyInput.value) localStorage.setItem(KEY_STORAGE, keyInput.value);
        else localStorage.removeItem(KEY_STORAGE);
      } catch (e) {
        // storage refused (private mode): the key then lasts as long as the page
      }
    });

    const input = $("audio-file");
    input.addEventListener("change", () => chooseFile(input.files[0]));
    const zone = $("dropzone");
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (e) => {
        e.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      zone.addEventListener(name, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
    });

    $("compress-form").addEventListener("submit", compress);
    $("generate-form").addEventListener("submit", generate);

    loadVersion();
    (async () => {
      while (!(await loadReadiness())) await sleep(2000);
    })();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
