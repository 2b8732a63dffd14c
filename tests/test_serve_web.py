"""The web page at ``/`` in a real headless browser (Debian's chromium, driven by selenium).

A server process on a loopback port serves the packaged default codec and a tiny random
MusicGen; the browser uploads a clip, compresses it at 6 kbps, plays the original and the
decoded audio side by side and draws their spectrograms, then generates from a prompt. The
screenshots are decoded here (a small PNG reader) and their spectrogram regions must not be
blank. Skipped where chromium, chromedriver or selenium is missing; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DATA
from test_serve import Server

SPEECH = DATA / "speech_24k.flac"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1280, 800
WAIT = 30.0
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--mute-audio",
    "--force-device-scale-factor=1",
    f"--window-size={WIDTH},{HEIGHT}",
)


# --- without a browser -----------------------------------------------------------------------


def test_the_page_and_its_files_need_no_key(tmp_path):
    from fastapi.testclient import TestClient

    from audiotok.serve.app import create_app
    from audiotok.serve.models import ServedModels
    from audiotok.serve.service import ServeSettings

    settings = ServeSettings(state=tmp_path / "state", api_key="s3cret")
    with TestClient(create_app(settings, ServedModels(codecs={}, generators={}))) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            r = client.get(f"/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"], name
            assert f"/static/{name}" in page.text
        # Nothing is fetched from elsewhere.
        for text in (page.text, client.get("/static/app.js").text):
            assert "http://" not in text and "https://" not in text
        assert client.get("/static/nope.js").json()["error"]["code"] == "not_found"
        # The page is open; the API behind it is not.
        assert client.get("/v1/jobs/x").status_code == 401
        key = {"Authorization": "Bearer s3cret"}
        assert client.get("/v1/jobs/x", headers=key).status_code == 404
        assert client.get("/index.html").status_code == 401
        assert "/" not in client.get("/openapi.json").json()["paths"]


# --- a tiny PNG reader -----------------------------------------------------------------------


def read_png(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced RGB or RGBA PNG as ``[H, W, C]`` uint8.

    Rows are unfiltered along anti-diagonals: a pixel needs only its left, upper and
    upper-left neighbours, all on the previous diagonals, so each step is one numpy pass.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, chunks = 8, []
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        at += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8)
    raw = raw.reshape(height, 1 + width * channels)
    kinds = raw[:, 0].astype(np.int32)
    filtered = raw[:, 1:].reshape(height, width, channels).astype(np.int32)
    out = np.zeros((height + 1, width + 1, channels), np.int32)  # a zero row above, column left
    for diagonal in range(height + width - 1):
        rows = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        cols = diagonal - rows
        a, b, c = out[rows + 1, cols], out[rows, cols + 1], out[rows, cols]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        kind = kinds[rows][:, None]
        predictor = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4], [a, b, (a + b) // 2, paeth], 0
        )
        out[rows + 1, cols + 1] = (filtered[rows, cols] + predictor) & 255
    return out[1:, 1:].astype(np.uint8)


def test_read_png_reads_every_filter(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    rows = []
    for y, kind in enumerate([0, 1, 2, 3, 4, 1, 3]):
        row, up = image[y].astype(np.int32), (image[y - 1] if y else image[y] * 0).astype(np.int32)
        left = np.vstack([np.zeros((1, 4), np.int32), row[:-1]])
        upleft = np.vstack([np.zeros((1, 4), np.int32), up[:-1]])
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        predictor = [0 * row, left, up, (left + up) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((row - predictor) & 255).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 7, 8, 6, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    (tmp_path / "t.png").write_bytes(png)
    assert np.array_equal(read_png(tmp_path / "t.png"), image)


# --- the browser -----------------------------------------------------------------------------


def webdriver_or_skip() -> Any:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)")
    return pytest.importorskip("selenium.webdriver", reason="selenium is not installed")


@contextlib.contextmanager
def headless_chromium(folder: Path) -> Iterator[Any]:
    """Debian's chromium driven by selenium, its profile and driver log in ``folder``."""
    webdriver = webdriver_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={folder / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(
        executable_path=str(CHROMEDRIVER), log_output=str(folder / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        # The viewport itself is WIDTH x HEIGHT, whatever the headless window adds around it.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path) -> Iterator[Any]:
    with headless_chromium(tmp_path) as driver:
        yield driver


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    """The server process, started but not yet waited for (:meth:`Server.wait_ready`): a test
    that asks for it before ``browser`` has the browser start beside it."""
    from generate_reference import save_hf, tiny_musicgen

    webdriver_or_skip()  # no server started for a test skipped

    generator = save_hf(tiny_musicgen(seed=7), tmp_path / "tiny")
    server = Server(tmp_path / "state", "--generator", f"tiny={generator}", wait=False)
    yield server
    server.stop()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def region(driver: Any, pixels: np.ndarray, element_id: str) -> np.ndarray:
    """The screenshot's pixels under an element, which must be wholly in the viewport."""
    left, top, width, height = driver.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height];",
        element_id,
    )
    assert width > 100 and height > 100, (element_id, width, height)
    assert left >= 0 and top >= 0 and left + width <= WIDTH and top + height <= HEIGHT, (
        f"{element_id} is not wholly in the {WIDTH}x{HEIGHT} window: {(left, top, width, height)}"
    )
    return pixels[
        round(top) + 2 : round(top + height) - 2, round(left) + 2 : round(left + width) - 2
    ]


def assert_not_blank(driver: Any, pixels: np.ndarray, canvas_id: str) -> None:
    """Drawn, and varied both in the screenshot and in the canvas' own pixels."""
    canvas = driver.find_element("id", canvas_id)
    assert canvas.get_attribute("data-drawn") == "1", canvas_id
    shown = region(driver, pixels, canvas_id)[..., :3].astype(np.float64)
    assert shown.std() > 12, (canvas_id, shown.std())
    assert len(np.unique(shown.reshape(-1, 3), axis=0)) > 64, canvas_id
    own = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let s = 0, s2 = 0, n = 0;"
        "for (let i = 0; i < d.length; i += 4) { s += d[i + 1]; s2 += d[i + 1] ** 2; n++; }"
        "return Math.sqrt(s2 / n - (s / n) ** 2);",
        canvas_id,
    )
    assert own > 12, (canvas_id, own)


def screenshot(driver: Any, path: Path) -> np.ndarray:
    assert driver.save_screenshot(str(path)), path
    pixels = read_png(path)
    assert pixels.shape[:2] == (HEIGHT, WIDTH), pixels.shape
    return pixels


def page_error(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def audio_ready(driver: Any, element_id: str) -> float | None:
    """The duration of a player once its audio's metadata is loaded."""
    return driver.execute_script(
        "const a = document.getElementById(arguments[0]);"
        "return a.readyState >= 1 && isFinite(a.duration) ? a.duration : null;",
        element_id,
    )


def test_compress_compare_and_generate_in_a_browser(server, browser, tmp_path):
    server.wait_ready()
    driver, find = browser, browser.find_element
    driver.get(server.url + "/")
    wait_until(lambda: find("id", "service-status").get_attribute("data-ready"), "/readyz")
    assert "1 generator" in find("id", "status-text").text
    assert find("id", "generate-panel").is_displayed()
    model = find("id", "codec-model").get_attribute("value")
    assert model == "audiotok_24khz"

    # Upload, pick 6 kbps, compress: sizes, both players, both spectrograms.
    find("id", "audio-file").send_keys(str(SPEECH))
    assert SPEECH.name in find("id", "file-name").text
    find("css selector", "label[for='bitrate-6']").click()
    assert find("id", "bitrate-6").is_selected() and not find("id", "bitrate-3").is_selected()
    find("id", "compress-button").click()
    result = find("id", "compress-result")
    state = wait_until(
        lambda: (
            result.get_attribute("data-state") in ("ready", "error")
            and result.get_attribute("data-state")
        ),
        "compression, decoding and both spectrograms",
    )
    assert state == "ready", page_error(driver, "compress-error")
    assert not find("id", "compress-error").is_displayed()

    expected = server.client.post(
        "/v1/compress",
        files={"audio": (SPEECH.name, SPEECH.read_bytes())},
        data={"bitrate": "6", "model": model},
    )
    assert expected.status_code == 200, expected.text
    compressed = find("id", "compressed-size")
    assert compressed.get_attribute("data-bytes") == str(len(expected.content))
    assert f"{len(expected.content):,} bytes" in compressed.text
    original = find("id", "original-size")
    assert original.get_attribute("data-bytes") == str(SPEECH.stat().st_size)
    assert f"{SPEECH.stat().st_size:,} bytes" in original.text
    decoded = server.client.post("/v1/decompress?format=wav", content=expected.content)
    assert find("id", "decoded-meta").get_attribute("data-bytes") == str(len(decoded.content))
    kbps = float(find("id", "kbps").text.split()[0])
    assert 4 < kbps < 7, kbps
    ratio = float(find("id", "ratio").text.split("×")[0])
    assert ratio == pytest.approx(SPEECH.stat().st_size / len(expected.content), rel=0.06)
    link = find("id", "download-atok")
    assert link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download") == "speech_24k.atok"
    durations = [
        wait_until(lambda i=i: audio_ready(driver, i), f"{i}'s metadata")
        for i in ("original-audio", "decoded-audio")
    ]
    assert durations == pytest.approx([2.65, 2.65], abs=0.05)

    driver.execute_script("window.scrollTo(0, 0)")
    pixels = screenshot(driver, tmp_path / "compress.png")
    for canvas in ("original-spectrogram", "decoded-spectrogram"):
        assert_not_blank(driver, pixels, canvas)

    # Generate from a prompt: the progress bar, then a player and a spectrogram.
    find("id", "prompt").send_keys("lo-fi beat")
    duration = find("id", "gen-duration")
    duration.clear()
    duration.send_keys("0.5")
    find("id", "generate-button").click()
    assert find("id", "generate-progress").is_displayed()
    track = find("id", "generated-track")
    state = wait_until(
        lambda: (
            track.get_attribute("data-state") in ("ready", "error")
            and track.get_attribute("data-state")
        ),
        "the generated audio",
    )
    assert state == "ready", page_error(driver, "generate-error")
    assert find("id", "generate-bar").get_attribute("value") == "100"
    assert find("id", "generate-status").text.startswith("Done")
    seconds = wait_until(lambda: audio_ready(driver, "generated-audio"), "the generated audio")
    assert seconds == pytest.approx(0.5, abs=0.05)
    assert find("id", "download-generated").get_attribute("href").startswith("blob:")
    driver.execute_script("document.getElementById('generated-track').scrollIntoView(false)")
    pixels = screenshot(driver, tmp_path / "generate.png")
    assert_not_blank(driver, pixels, "generated-spectrogram")

    # No script error, no refused resource, nothing logged as severe.
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe
