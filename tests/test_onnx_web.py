"""The ONNX graphs in a browser: onnxruntime-web (WebAssembly) in Debian's headless chromium.

The packaged default's export is served from a loopback HTTP server with onnxruntime-web's
files and a page (below) that encodes a clip of real speech with ``encoder.onnx``, decodes the
6 kbps codes with ``decoder.onnx``, and encodes the clip again frame by frame with the
streaming graphs (``encoder_start`` then ``encoder_step``, the state passed by hand). Its
codes must equal onnxruntime's in Python (rounding may tip a near tie: at least 99.9 %), the
streamed ones the browser's offline ones, and the decoded audio Python's within 1e-4. A tiny
48 kHz-style model's segment graphs also run there on segments shorter than their reflect
padding (format 3 gathers the padding by index: ``Range``, ``Mod``, ``Gather``, ``Where``),
giving Python's codes, scales and audio.

onnxruntime-web comes from npm: ``.ci/run`` unpacks it into ``.ci/node/onnxruntime-web``
(``AUDIOTOK_ORT_WEB`` names another ``dist`` folder). Skipped where it, chromium or selenium
is missing, except in CI for onnxruntime-web.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import load_clip
from test_serve_web import headless_chromium

pytest.importorskip("onnxruntime")

from audiotok.codec.onnx_runtime import OnnxCodec

ROOT = Path(__file__).parent.parent
ORT_WEB_VERSION = "1.31.1"
WAIT = 60.0

PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="ort.wasm.min.js"></script>
<script>
ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation headers
ort.env.wasm.wasmPaths = "./";
const load = (name) => ort.InferenceSession.create(name, {executionProviders: ["wasm"]});
async function main() {
  const card = await (await fetch("model.json")).json();
  const audio = new Float32Array(await (await fetch("clip.f32")).arrayBuffer());
  const hop = card.hop_length, k = card.bandwidths["6"], nq = card.n_q;
  const encoder = await load("encoder.onnx"), decoder = await load("decoder.onnx");
  const input = new ort.Tensor("float32", audio, [1, 1, audio.length]);
  const codes = (await encoder.run({audio: input})).codes;          // [1, n_q, F] int64
  const frames = codes.dims[2];
  const first = codes.data.slice(0, k * frames);                    // the first K rows
  const decoded = (await decoder.run({codes: new ort.Tensor("int64", first, [1, k, frames])}));
  // Streaming: the start graph on the first frames, then one frame per step.
  const start = await load("encoder_start.onnx"), step = await load("encoder_step.onnx");
  const n0 = card.streaming.start_samples;
  let out = await start.run({audio: new ort.Tensor("float32", audio.slice(0, n0), [1, 1, n0])});
  const streamed = [out.codes];
  for (let i = n0; i < audio.length; i += hop) {
    const piece = audio.slice(i, Math.min(i + hop, audio.length));
    const feeds = {audio: new ort.Tensor("float32", piece, [1, 1, piece.length])};
    for (const name of step.inputNames.slice(1)) feeds[name] = out["next_" + name];
    out = await step.run(feeds);
    streamed.push(out.codes);
  }
  const rows = [];  // streamed codes [n_q, F], row by row
  for (let q = 0; q < nq; q++)
    for (const part of streamed)
      for (let f = 0; f < part.dims[2]; f++) rows.push(Number(part.data[q * part.dims[2] + f]));
  window.result = {frames, codes: Array.from(codes.data, Number), streamed: rows,
                   audio: Array.from(decoded.audio.data)};
}
main().catch((e) => { window.result = {error: String(e && e.stack || e)}; });
</script>
"""

SEGMENT_PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="ort.wasm.min.js"></script>
<script>
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = "./";
const load = (name) => ort.InferenceSession.create(name, {executionProviders: ["wasm"]});
async function main() {
  const card = await (await fetch("model.json")).json();
  const clip = new Float32Array(await (await fetch("clip.f32")).arrayBuffer());  // [C, N]
  const c = card.channels, total = clip.length / c;
  const encoder = await load(card.graphs.encoder.file);
  const decoder = await load(card.graphs.decoder.file);
  const segments = [];
  for (const n of LENGTHS) {  // the first n samples of each channel: one segment [1, C, n]
    const data = new Float32Array(c * n);
    for (let ch = 0; ch < c; ch++) data.set(clip.subarray(ch * total, ch * total + n), ch * n);
    const enc = await encoder.run({audio: new ort.Tensor("float32", data, [1, c, n])});
    const dec = await decoder.run({codes: enc.codes, scale: enc.scale});
    segments.push({codes: Array.from(enc.codes.data, Number), scale: Array.from(enc.scale.data),
                   audio: Array.from(dec.audio.data)});
  }
  window.result = {segments};
}
main().catch((e) => { window.result = {error: String(e && e.stack || e)}; });
</script>
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    """One headless chromium for the module's pages (each on a server of its own)."""
    with headless_chromium(tmp_path_factory.mktemp("browser")) as driver:
        yield driver


@pytest.fixture
def ort_web() -> Path:
    dist = Path(os.environ.get("AUDIOTOK_ORT_WEB", ROOT / ".ci/node/onnxruntime-web/dist"))
    if not (dist / "ort.wasm.min.js").is_file():
        why = f"onnxruntime-web is not in {dist} (npm pack onnxruntime-web@{ORT_WEB_VERSION})"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return dist


def serve(folder: Path) -> http.server.ThreadingHTTPServer:
    """A static server of ``folder`` on a free loopback port, in a thread."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map: ClassVar[dict[str, str]] = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".wasm": "application/wasm",
            ".mjs": "text/javascript",
            ".js": "text/javascript",
        }

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_page(site: Path, ort_web: Path, page: str, browser: Any) -> dict:
    """Serves ``site`` with onnxruntime-web's files and ``page`` as its index; the page's
    ``window.result`` once it is set (asserted: set in time, no error)."""
    for name in ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"):
        shutil.copy(ort_web / name, site / name)
    (site / "index.html").write_text(page)
    server = serve(site)
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        deadline, result = time.monotonic() + WAIT, None
        while result is None and time.monotonic() < deadline:
            result = browser.execute_script("return window.result || null")
            if result is None:
                time.sleep(0.2)
    finally:
        server.shutdown()
    assert result is not None, "the page gave no result in time"
    assert "error" not in result, result["error"]
    return result


def test_the_default_codec_runs_in_a_browser(
    tmp_path,
    ort_web,
    browser,
    default_onnx,
):
    site = tmp_path / "site"
    shutil.copytree(default_onnx, site)
    clip = load_clip("speech_24k.flac", 24_000, 1, seconds=1.0)[..., :23_900]  # [1, 1, T]
    clip.numpy().astype("<f4").tofile(site / "clip.f32")
    result = run_page(site, ort_web, PAGE, browser)
    onnx_codec = OnnxCodec(site)
    meta = json.loads((site / "model.json").read_text())
    frames, n_q, k = result["frames"], meta["n_q"], meta["bandwidths"]["6"]
    expected = onnx_codec._run_encoder(clip.numpy())[0][0]  # [n_q, F], onnxruntime in Python
    web = np.array(result["codes"]).reshape(n_q, frames)
    assert web.shape == expected.shape
    assert (web == expected).mean() >= 0.999
    streamed = np.array(result["streamed"]).reshape(n_q, frames)
    assert np.array_equal(streamed, web)
    audio = np.array(result["audio"], dtype=np.float32)
    decoded = onnx_codec._run_decoder(web[None, :k].astype(np.int64), None)[0, 0]
    assert audio.shape == decoded.shape
    assert np.abs(audio - decoded).max() <= 1e-4


def test_short_segments_run_in_a_browser(
    tmp_path,
    ort_web,
    browser,
    segmented_onnx,
):
    site = shutil.copytree(segmented_onnx, tmp_path / "site")
    onnx_codec = OnnxCodec(site)
    clip = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.1)[0]  # [2, 4800]
    clip.numpy().astype("<f4").tofile(site / "clip.f32")
    lengths = [4800, 480, 1]  # a whole 0.1 s segment; shorter than the 961-sample padding
    page = SEGMENT_PAGE.replace("LENGTHS", json.dumps(lengths))
    result = run_page(site, ort_web, page, browser)
    for n, web in zip(lengths, result["segments"], strict=True):
        codes, scale = onnx_codec._run_encoder(clip[None, :, :n].numpy())
        assert np.array_equal(np.array(web["codes"]).reshape(codes.shape), codes), n
        np.testing.assert_allclose(web["scale"], scale, rtol=1e-5)
        audio = onnx_codec._run_decoder(codes, scale)
        assert np.abs(np.array(web["audio"]).reshape(audio.shape) - audio).max() <= 1e-4, n
