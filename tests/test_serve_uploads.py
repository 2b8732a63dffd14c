"""Upload caps of the service over real HTTP: a body past the cap is cut off as it arrives."""

from __future__ import annotations

import dataclasses
import select
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

MIB = 1 << 20


@pytest.fixture(scope="module")
def small_cap_server(tmp_path_factory):
    """The app with a 2 MiB cap and no models, served by uvicorn on a loopback port."""
    from audiotok.serve.app import create_app
    from audiotok.serve.models import ServedModels
    from audiotok.serve.service import ServeSettings

    settings = ServeSettings(state=tmp_path_factory.mktemp("cap"), max_upload_bytes=2 * MIB)
    app = create_app(settings, ServedModels(codecs={}, generators={}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize(
    ("route", "multipart"),
    [("/v1/compress", True), ("/v1/decompress", True), ("/v1/decompress", False)],
)
def test_a_chunked_body_past_the_cap_is_refused_as_it_arrives(small_cap_server, route, multipart):
    """Without a Content-Length the cap was checked only after Starlette had spooled the whole
    multipart body (2.4 GB past a 2 MiB cap, answered at its end); raw bodies were cut off."""
    kind = "multipart/form-data; boundary=XX" if multipart else "application/octet-stream"
    with socket.create_connection(("127.0.0.1", small_cap_server), timeout=30) as s:
        s.sendall(
            f"POST {route} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: {kind}\r\n\r\n".encode()
        )

        def chunk(data: bytes) -> None:
            s.sendall(b"%x\r\n%s\r\n" % (len(data), data))

        if multipart:
            name = "audio" if route == "/v1/compress" else "file"
            chunk(f'--XX\r\nContent-Disposition: form-data; name="{name}"; filename="a.wav"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())  # fmt: skip
        answer, sent = b"", 0
        try:
            while sent < 64 and not answer:
                chunk(b"\0" * MIB)
                sent += 1
                if select.select([s], [], [], 0.05)[0]:
                    answer = s.recv(4096)
        except OSError:  # the server answered and closed while we sent
            answer = answer or s.recv(4096)
        while b"}}" not in answer:  # the JSON body may come in a later packet
            more = s.recv(4096)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer
    assert sent <= 8, f"{sent} MiB sent before the 413"


def test_audio_longer_than_the_service_codes_is_refused_before_any_work(tmp_path):
    """A few kB of .atok, .ecdc or tokens can stand for hours: an hour under the codec lock."""
    import io
    import json

    import numpy as np
    import soundfile as sf
    from conftest import DATA
    from fastapi.testclient import TestClient
    from test_serve import error_of

    from audiotok import load_codec
    from audiotok.codec.tokens import Tokens
    from audiotok.compression.container.ecdc import HEADER, MAGIC, VERSION
    from audiotok.compression.container.header import PREFIX_SIZE, Header
    from audiotok.compression.container.reader import AtokReader
    from audiotok.compression.files import compress_file
    from audiotok.serve.app import create_app
    from audiotok.serve.models import load_served_models
    from audiotok.serve.service import ServeSettings

    clip = DATA / "speech_24k.flac"  # a few seconds
    codec = load_codec()
    compress_file(clip, tmp_path / "a.atok", codec)
    # The same stream with neither a length nor its index (as a live writer cut off leaves
    # it): measured by its packets, not decoded whole and then refused as truncated (400).
    data = (tmp_path / "a.atok").read_bytes()
    header = Header.from_bytes(data)
    with AtokReader(tmp_path / "a.atok") as reader:
        reader.priors = codec.entropy_priors
        packets = [(at + len(p.to_bytes()), p.num_frames) for at, p in reader.packets()]
    end = max(stop for stop, _ in packets)
    lengthless = dataclasses.replace(header, length=None, original_length=None).to_bytes()
    (tmp_path / "b.atok").write_bytes(lengthless + data[Header.read_size(data[:PREFIX_SIZE]) : end])
    tokens = Tokens(codes=np.zeros((1, 8, 750), np.int64), scales=None, length=240_000,
                    sample_rate=24_000,
                    bandwidth=6.0, model_id="audiotok_24khz")  # fmt: skip
    tokens.save(tmp_path / "t.npz")
    # 1 s by its metadata, over 20 minutes of frames: refused by the codes' declared shape
    # (the metadata's length was all that was checked, after the codes were read).
    liar = Tokens(codes=np.zeros((1, 8, 100_000), np.int64), scales=None, length=24_000,
                  sample_rate=24_000, bandwidth=6.0, model_id="audiotok_24khz")  # fmt: skip
    liar.save(tmp_path / "liar.safetensors")
    lm_coded = json.dumps({"m": "encodec_24khz", "al": 24_000, "nc": 2, "lm": True}).encode()
    ecdc = HEADER.pack(MAGIC, VERSION, len(lm_coded)) + lm_coded + b"\0" * 400
    settings = ServeSettings(state=tmp_path / "state", max_audio_seconds=1.0)
    app = create_app(settings, load_served_models([], [], []))
    with TestClient(app) as client:
        answers = [
            client.post("/v1/compress", files={"audio": ("a.flac", clip.read_bytes())}),
            client.post("/v1/encode", files={"audio": ("a.flac", clip.read_bytes())}),
            client.post("/v1/decompress", content=(tmp_path / "a.atok").read_bytes()),
            client.post("/v1/decompress", content=(tmp_path / "b.atok").read_bytes()),
            client.post("/v1/decode", content=(tmp_path / "t.npz").read_bytes()),
            client.post("/v1/decode", content=(tmp_path / "liar.safetensors").read_bytes()),
        ]
        for answer in answers:
            assert answer.status_code == 413, answer.text
            assert "this service codes at most 1 s" in answer.json()["error"]["message"]
        # An LM-coded .ecdc of a codec not served: 422 before its entropy model is looked for
        # (the answer named the server's cache folders).
        other = client.post("/v1/decompress", content=ecdc)
        # Within the limit, the stream cut off (no index) is refused as the CLI refuses it,
        # in the service's words, and decoded as far as it goes with ?recover=true.
        service = app.state.service
        service.settings = dataclasses.replace(service.settings, max_audio_seconds=60.0)
        cut = (tmp_path / "b.atok").read_bytes()
        refused = client.post("/v1/decompress", content=cut)
        recovered = client.post("/v1/decompress?recover=true", content=cut)
        # What a recovered answer lost is said in its headers (it was silent gaps, no word of
        # them): of a stream whose length is known and whose last third is cut off, and of
        # the whole stream, asked to recover or not.
        cut_at = len(data) * 2 // 3
        cut_end = client.post("/v1/decompress?recover=true", content=data[:cut_at])
        intact = client.post("/v1/decompress?recover=true", content=data)
        plain = client.post("/v1/decompress", content=data)
        documented = client.get("/openapi.json").json()["paths"]["/v1/decompress"]["post"]
    assert other.status_code == 422, other.text
    assert "/" not in other.json()["error"]["message"].replace("/v1", "")
    assert error_of(refused) == (400, "bad_file")
    assert refused.json()["error"]["message"].endswith("; recover=true decodes what is there")
    assert recovered.status_code == 200, recovered.text
    got, want = len(sf.read(io.BytesIO(recovered.content))[0]), sf.info(clip).frames
    assert want <= got < want + codec.hop_length, (got, want)  # whole frames: no length
    # Every packet there, only the index missing: nothing lost, but the truncation is said.
    assert recovered.headers["x-lost-seconds"] == "0.000"
    assert recovered.headers["x-problems"].startswith("truncated: the data after byte ")
    assert recovered.headers["x-problems"].isascii()
    assert cut_end.status_code == 200, cut_end.text
    audio, rate = sf.read(io.BytesIO(cut_end.content), dtype="float32")
    lost = float(cut_end.headers["x-lost-seconds"])
    # The packets the cut reached into, and the answer's silent tail (to a frame: the last
    # one is cut to the signal's length).
    cut_frames = sum(frames for stop, frames in packets if stop > cut_at)
    assert lost > 0 and abs(lost - cut_frames / float(header.frame_rate)) < 1e-3
    silent = (len(audio) - (np.flatnonzero(audio)[-1] + 1)) / rate
    assert abs(lost - silent) <= 1.5 * codec.hop_length / codec.sample_rate, (lost, silent)
    problems = cut_end.headers["x-problems"]
    assert problems.startswith("truncated: ") and f"{lost:.2f} s lost in all" in problems
    assert intact.headers["x-lost-seconds"] == "0.000" and "x-problems" not in intact.headers
    assert plain.status_code == 200 and "x-lost-seconds" not in plain.headers  # not asked
    assert {"X-Lost-Seconds", "X-Problems"} <= set(documented["responses"]["200"]["headers"])


def test_loss_headers_are_printable_ascii_of_bounded_size():
    """A header's value is bytes on one line, and clients cap its size: a reason that quotes
    other characters, or hundreds of damaged stretches, must not break the answer."""
    from audiotok.serve.losses import MAX_PROBLEMS, Loss

    assert Loss().headers() == {"X-Lost-Seconds": "0.000"}
    many = tuple(f"damaged at byte {i}: caf\u00e9\n; 0.01 s concealed" for i in range(100))
    headers = Loss(1.0 / 3, many).headers()
    assert headers["X-Lost-Seconds"] == "0.333"
    problems = headers["X-Problems"]
    assert problems.isascii() and problems.isprintable() and "caf?" in problems
    assert problems.count("damaged at byte") == MAX_PROBLEMS
    assert problems.endswith(f"; and {100 - MAX_PROBLEMS} more")


def test_a_field_sent_twice_is_refused(tmp_path):
    """Two ``audio`` parts: the last one was coded and the first dropped without a word."""
    from conftest import DATA
    from fastapi.testclient import TestClient

    from audiotok.serve.app import create_app
    from audiotok.serve.models import load_served_models
    from audiotok.serve.service import ServeSettings

    clip = DATA / "speech_24k.flac"
    settings = ServeSettings(state=str(tmp_path / "state"))  # a str: TypeError at start-up
    app = create_app(settings, load_served_models([], [], []))
    twice = [("audio", ("a.flac", clip.read_bytes())), ("audio", ("b.flac", clip.read_bytes()))]
    with TestClient(app) as client:
        for route in ("/v1/compress", "/v1/encode", "/v1/decompress", "/v1/decode"):
            answer = client.post(route, files=twice)
            assert answer.status_code == 400, (route, answer.text)
            assert answer.json()["error"]["message"] == "'audio' is sent 2 times; send it once"
        bitrates = client.post("/v1/compress", files=twice[:1], data={"bitrate": ["3", "6"]})
        assert bitrates.status_code == 400 and "'bitrate' is sent 2 times" in bitrates.text
