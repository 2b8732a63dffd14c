"""Token datasets: ``audiotok encode`` over many files, and ``tokenize_dataset`` / ``TokenDataset``.

Every file's codes in a dataset must equal what ``codec.encode`` gives for that file alone; runs
are interrupted (a writer that raises) and resumed, refused, and fed broken files. Models are
tiny test-made checkpoints, everything is under ``tmp_path`` and downloads are off.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA, load_clip, tiny_codec
from safetensors import safe_open

from audiotok import __version__
from audiotok.audio.read import read_audio
from audiotok.cli import codec_commands
from audiotok.cli.main import cli
from audiotok.codec.tokens import Tokens
from audiotok.dataset.layout import DEFAULT_BATCH_SECONDS, DEFAULT_SHARD_BYTES, DatasetError
from audiotok.dataset.reader import TokenDataset
from audiotok.dataset.shards import ShardWriter
from audiotok.dataset.tokenize import tokenize_dataset
from audiotok.zoo.codec_checkpoints import save_checkpoint

SPEECH = DATA / "speech_24k.flac"
MUSIC = DATA / "music_48k_stereo.flac"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny(tmp_path) -> SimpleNamespace:
    codec = tiny_codec()
    card = save_checkpoint(codec.model, tmp_path / "models" / "tiny.json", name="tiny")
    return SimpleNamespace(codec=codec, card=card)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Seven clips: 1 s of the two real ones, and generated ones of other rates and formats."""
    root = tmp_path / "corpus"
    (root / "nested" / "deeper").mkdir(parents=True)
    for source, target in ((SPEECH, "speech.flac"), (MUSIC, "nested/music.flac")):
        wav, rate = sf.read(source, dtype="float32")
        sf.write(root / target, wav[:rate], rate)  # their first second keeps the tests fast
    rng = np.random.default_rng(0)
    clips = {
        "a_sine.wav": (16_000, 1, 0.4),
        "b_noise.flac": (44_100, 2, 0.7),
        "nested/c_chirp.wav": (24_000, 1, 1.3),
        "nested/deeper/d_tiny.wav": (22_050, 1, 0.01),
        "e_burst.ogg": (32_000, 1, 0.9),
    }
    for name, (rate, channels, seconds) in clips.items():
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.4 * np.sin(2 * np.pi * (220 + 300 * t) * t)
        wav = np.stack([tone + 0.05 * rng.standard_normal(t.size) for _ in range(channels)], 1)
        sf.write(root / name, wav.astype(np.float32), rate)
    (root / "notes.txt").write_text("not audio: not picked up from a directory")
    return root


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="audiotok")


def error_lines(stderr: str) -> list[str]:
    """The ``audiotok: error:`` lines, without the progress bar drawn around them."""
    return re.findall(r"audiotok: error: [^\r\n]*", stderr)


def one_by_one(codec, path: Path, bandwidth: float | None = None) -> Tokens:
    wav, rate = read_audio(path)
    return codec.encode(wav, sample_rate=rate, bandwidth=bandwidth)


def assert_same_tokens(got: Tokens, expected: Tokens) -> None:
    assert torch.equal(got.codes, expected.codes)
    assert got.codes.dtype == torch.int64
    if expected.scales is None:
        assert got.scales is None
    else:
        assert torch.equal(got.scales, expected.scales)
    assert (got.length, got.sample_rate, got.bandwidth, got.model_id) == (
        expected.length,
        expected.sample_rate,
        expected.bandwidth,
        expected.model_id,
    )


def content(root: Path) -> dict[str, tuple]:
    """A dataset's files and their tokens, whatever the shards and order."""
    ds = TokenDataset(root)
    out = {}
    for i, path in enumerate(ds.paths()):
        t = ds[i]
        scales = None if t.scales is None else t.scales.tolist()
        out[path] = (t.codes.tolist(), scales, t.length, t.sample_rate, t.bandwidth, t.model_id)
    return out


def audio_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.suffix in (".wav", ".flac", ".ogg"))


# --- directories and codes ------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal(tmp_path, tiny, corpus, monkeypatch):
    from audiotok.dataset import tokenize

    monkeypatch.setattr(tokenize, "stderr_is_terminal", lambda: True)

    result = run("encode", corpus, "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 0, result.output
    assert "7/7" in result.stderr and "file/s" in result.stderr and "h audio" in result.stderr
    assert " s encoded" not in result.stderr


def test_directory_gives_the_codes_of_one_by_one_encoding(tmp_path, tiny, corpus):
    out = tmp_path / "out"

    result = run("encode", corpus, "-o", out, "-m", tiny.card, "-b", "0.6")

    assert result.exit_code == 0, result.output
    lines = result.stderr.rstrip().splitlines()
    assert "\r" not in result.stderr, "stderr is no terminal: a line per file, no bar"
    assert sorted(line.split(": ")[0] for line in lines[:-1]) == sorted(
        str(path) for path in audio_files(corpus)
    )
    assert all(re.fullmatch(r".*: \d+\.\d\d s encoded", line) for line in lines[:-1])
    assert lines[-1].startswith(f"{out}: 7 files encoded (")
    ds = TokenDataset(out)
    files = audio_files(corpus)
    assert ds.paths() == [str(p) for p in files]
    for i, path in enumerate(files):
        assert_same_tokens(ds[i], one_by_one(tiny.codec, path, 0.6))
    assert ds[0].codes.unique().numel() > 4, "degenerate codes make a weak test"

    info = json.loads((out / "dataset.json").read_text())
    assert info == {
        "format": "audiotok.dataset", "version": 1, "model_id": "tiny",
        "fingerprint": tiny.codec.fingerprint().hex(), "bandwidth": 0.6, "precision": "fp32",
        "num_codebooks": 2,
        "cardinality": 16, "codes_dtype": "int16", "sample_rate": 24_000, "channels": 1,
        "frame_rate": 75.0, "hop_length": 320, "has_scales": False,
        "audiotok_version": __version__,
    }  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json", "index.jsonl", "shard-00000.safetensors",
    ]  # fmt: skip
    lines = (out / "index.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    speech = records[[r["path"] for r in records].index(str(corpus / "speech.flac"))]
    assert speech == {
        "path": str(corpus / "speech.flac"), "shard": "shard-00000.safetensors",
        "frame_offset": speech["frame_offset"], "num_frames": 75, "length": 24_000,
        "sample_rate": 24_000, "source_sample_rate": 24_000, "source_channels": 1,
        "scale_offset": 0, "num_scales": 0,
    }  # fmt: skip
    music = records[[r["path"] for r in records].index(str(corpus / "nested" / "music.flac"))]
    assert (music["source_sample_rate"], music["source_channels"]) == (48_000, 2)
    offsets = [r["frame_offset"] for r in records]
    assert offsets == list(np.cumsum([0] + [r["num_frames"] for r in records])[:-1])
    with safe_open(str(out / "shard-00000.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"codes"}
        codes = f.get_tensor("codes")
        meta = f.metadata()
    assert codes.dtype == torch.int16
    assert list(codes.shape) == [2, sum(r["num_frames"] for r in records)]
    assert meta["fingerprint"] == info["fingerprint"] and meta["model_id"] == "tiny"
    assert (meta["bandwidth"], meta["cardinality"], meta["num_files"]) == ("0.6", "16", "7")


def test_several_files_make_a_dataset_and_duplicates_are_encoded_once(tmp_path, tiny, corpus):
    a, b = corpus / "speech.flac", corpus / "a_sine.wav"

    result = run("encode", a, b, a, "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 0, result.output
    assert "2 files encoded" in result.stderr and "1 already there" in result.stderr
    assert TokenDataset(tmp_path / "out").paths() == [str(a), str(b)]
    # The same file by another name: a path given and a manifest's row relative to its folder.
    manifest = corpus / "list.tsv"
    manifest.write_text("path\nspeech.flac\n")
    result = run("encode", a, "--manifest", manifest, "-o", tmp_path / "twice", "-m", tiny.card)
    assert result.exit_code == 0 and len(TokenDataset(tmp_path / "twice")) == 1, result.output
    for bad in ("nan", "inf"):
        refused = run("encode", a, "-o", tmp_path / "x", "-m", tiny.card, "--shard-size", bad)
        assert refused.exit_code == 2 and "is not a finite number" in refused.stderr


def test_a_file_given_and_in_the_manifest_keeps_the_manifests_columns(tmp_path, tiny, corpus):
    """Named on the command line and in the manifest: encoded once, under the name given
    first, with the manifest's caption (not the sidecar's) and its other columns."""
    a, b = corpus / "speech.flac", corpus / "a_sine.wav"
    (corpus / "speech.txt").write_text("a sidecar's caption\n")
    manifest = corpus / "list.tsv"
    manifest.write_text(
        "path\tdescription\tcategory\nspeech.flac\ta man reading aloud\tspeech\n"
        "a_sine.wav\ta rising sine\tsfx\n"
    )
    result = run("encode", a, "--manifest", manifest, "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 0, result.output
    assert "1 already there" in result.stderr
    ds = TokenDataset(tmp_path / "out")
    assert ds.paths() == [str(a), "a_sine.wav"]
    records = [ds.record(i) for i in range(2)]
    assert [(r["description"], r["category"]) for r in records] == [
        ("a man reading aloud", "speech"),
        ("a rising sine", "sfx"),
    ]
    assert_same_tokens(ds[1], one_by_one(tiny.codec, b))


def test_manifest_paths_are_relative_to_its_folder_and_columns_are_kept(tmp_path, tiny, corpus):
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "manifest.tsv"
    rows = [
        ("speech", "festvox", "../corpus/speech.flac", 24_000, 1, 2.65),
        ("music", "0ad-data", "../corpus/nested/music.flac", 48_000, 2, 2.5),
        ("sfx", "lmms", str(corpus / "b_noise.flac"), 44_100, 2, 0.7),  # absolute paths too
    ]
    header = "category\tsource\tpath\tsample_rate\tchannels\tseconds\n"
    manifest.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    # The working directory is tmp_path: "../corpus" resolves only from the manifest's folder.
    result = run("encode", "--manifest", manifest, "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 0, result.output
    ds = TokenDataset(tmp_path / "out")
    assert ds.paths() == [r[2] for r in rows]
    for i, row in enumerate(rows):
        record = ds.record(i)
        assert (record["category"], record["source"]) == row[:2]
        assert (record["channels"], record["seconds"]) == (str(row[4]), str(row[5]))
        assert record["sample_rate"] == 24_000, "the index's own field, not the manifest's"
        assert record["source_sample_rate"] == row[3]
        assert_same_tokens(ds[i], one_by_one(tiny.codec, lists / row[2]))


def test_manifest_without_a_path_column_is_one_error_line(tmp_path, tiny):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("category\tfile\nspeech\tx.wav\n")

    result = run("encode", "--manifest", manifest, "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"audiotok: error: {manifest}: a manifest is a TSV file whose header has a 'path' column"
    ]


# --- shards ----------------------------------------------------------------------------------


def test_tiny_shard_size_rolls_over_and_keeps_the_content(tmp_path, tiny, corpus):
    assert run("encode", corpus, "-o", tmp_path / "one", "-m", tiny.card).exit_code == 0

    umask = os.umask(0o022)
    try:
        args = ("encode", corpus, "-o", tmp_path / "many", "-m", tiny.card, "--shard-size", 0.0002)
        result = run(*args)
    finally:
        os.umask(umask)

    assert result.exit_code == 0, result.output
    shards = sorted((tmp_path / "many").glob("shard-*.safetensors"))
    assert len(shards) >= 4
    assert {p.stat().st_mode & 0o777 for p in shards} == {0o644}, "readable by a training job"
    assert [p.name for p in shards] == [f"shard-{i:05d}.safetensors" for i in range(len(shards))]
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            nbytes = f.get_slice("codes").get_shape()[1] * 2  # K = 1, int16
            assert nbytes <= 200 or f.metadata()["num_files"] == "1"
    assert content(tmp_path / "many") == content(tmp_path / "one")
    assert len({r["shard"] for r in map(TokenDataset(tmp_path / "many").record, range(7))}) > 1


def test_scales_and_a_segmented_model_round_trip(tmp_path, corpus):
    codec = tiny_codec(
        "tiny48", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4),
    )  # fmt: skip
    files = [corpus / "a_sine.wav", corpus / "b_noise.flac", corpus / "nested/deeper/d_tiny.wav"]

    report = tokenize_dataset(codec, files, tmp_path / "out", shard_bytes=300, progress=False)

    assert (report.encoded, report.skipped, report.failures) == (3, 0, [])
    assert len(report.shards) == 3
    expected = [one_by_one(codec, p) for p in files]
    assert report.audio_seconds == pytest.approx(sum(t.duration for t in expected))
    ds = TokenDataset(tmp_path / "out")
    assert len(ds) == 3 and ds.info["has_scales"] is True
    for got, want in zip(ds, expected, strict=True):
        assert want.scales is not None and want.scales.shape[1] > 0
        assert_same_tokens(got, want)
    assert_same_tokens(ds[-1], expected[-1])
    assert torch.equal(codec.decode(ds[1]), codec.decode(expected[1]))
    copied = copy.deepcopy(ds)  # what DataLoader workers get: no open shards, reopened lazily
    assert copied._shards == {} and torch.equal(copied[2].codes, expected[2].codes)
    with pytest.raises(IndexError):
        ds[3]
    with safe_open(str(tmp_path / "out" / "shard-00000.safetensors"), framework="pt") as f:
        assert f.get_tensor("scales").dtype == torch.float32


def test_codes_are_int32_when_the_codebooks_are_large(tmp_path, corpus):
    codec = tiny_codec("big", bins=65_536)
    files = [corpus / "speech.flac"]

    tokenize_dataset(codec, files, tmp_path / "out", progress=False)

    with safe_open(str(tmp_path / "out" / "shard-00000.safetensors"), framework="pt") as f:
        assert f.get_tensor("codes").dtype == torch.int32
    expected = one_by_one(codec, files[0])
    assert int(expected.codes.max()) > 32767, "codes that don't fit int16 make the test"
    assert_same_tokens(TokenDataset(tmp_path / "out")[0], expected)


@pytest.mark.parametrize("batch_seconds", [0.0, 0.5, 1000.0])
def test_read_ahead_does_not_change_the_codes(tmp_path, tiny, corpus, batch_seconds):
    files = audio_files(corpus)

    tokenize_dataset(
        tiny.codec, files, tmp_path / "out", batch_seconds=batch_seconds, progress=False
    )

    ds = TokenDataset(tmp_path / "out")
    assert ds.paths() == [str(p) for p in files]
    for i, path in enumerate(files):
        assert_same_tokens(ds[i], one_by_one(tiny.codec, path))


# --- resuming --------------------------------------------------------------------------------


def interrupt(monkeypatch, how: str) -> None:
    """Stops the next run on its 6th file: an error, Ctrl-C, or death while writing the index.

    ``killed``: the 2nd index append and every later one fail, as if the process died right
    after writing the 2nd shard, so nothing else reaches the index (or the disk's later state).
    ``ctrl-c-indexing``: Ctrl-C lands in the 3rd append's fsync, its lines already written (the
    run's last flush must not write them again).
    """
    if how in ("killed", "ctrl-c-indexing"):
        append, calls = ShardWriter._append_index, []

        def dying(self, records):
            calls.append(records)
            if how == "killed" and len(calls) >= 2:
                raise RuntimeError("killed")
            append(self, records)
            if how == "ctrl-c-indexing" and len(calls) == 3:
                raise KeyboardInterrupt

        monkeypatch.setattr(ShardWriter, "_append_index", dying)
        return
    add, calls = ShardWriter.add, []
    error = KeyboardInterrupt if how == "ctrl-c" else RuntimeError

    def crashing(self, record, tokens):
        calls.append(record["path"])
        if len(calls) == 6:
            raise error("simulated")
        return add(self, record, tokens)

    monkeypatch.setattr(ShardWriter, "add", crashing)


@pytest.mark.parametrize(
    ("how", "kept"), [("error", 5), ("ctrl-c", 5), ("killed", 2), ("ctrl-c-indexing", 5)]
)
def test_resume_after_an_interruption_gives_the_uninterrupted_content(
    how, kept, tmp_path, tiny, corpus, monkeypatch
):
    # 0.2 kB shards: the 7 files go to 5 shards, the first two files together.
    args = ("encode", corpus, "-m", tiny.card, "--shard-size", 0.0002)
    assert run(*args, "-o", tmp_path / "whole").exit_code == 0
    out = tmp_path / "out"
    interrupt(monkeypatch, how)

    stopped = run(*args, "-o", out)

    if how.startswith("ctrl-c"):
        assert stopped.exit_code == 130 and "audiotok: interrupted" in stopped.stderr
    else:
        assert isinstance(stopped.exception, RuntimeError)
    monkeypatch.undo()
    assert TokenDataset(out).paths() == [str(p) for p in audio_files(corpus)[:kept]]
    shards_before = sorted(p.name for p in out.glob("shard-*.safetensors"))
    if how == "killed":  # written, but never indexed: ignored, and its number not reused
        assert len(shards_before) == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"

    resumed = run(*args, "-o", out)

    assert resumed.exit_code == 0, resumed.output
    assert f"{7 - kept} files encoded" in resumed.stderr
    assert f"{kept} already there" in resumed.stderr
    assert content(out) == content(tmp_path / "whole")
    new = sorted({TokenDataset(out).record(i)["shard"] for i in range(kept, 7)})
    assert new[0] > shards_before[-1], "a resumed run continues with new shard numbers"

    again = run(*args, "-o", out)

    assert again.exit_code == 0 and "0 files encoded" in again.stderr
    assert content(out) == content(tmp_path / "whole")


def test_resume_cuts_a_torn_index_line(tmp_path, tiny, corpus):
    files = audio_files(corpus)
    out = tmp_path / "out"
    tokenize_dataset(tiny.codec, files[:3], out, progress=False)
    index = out / "index.jsonl"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:2]) + lines[2][:25])  # a crash while appending line 3

    assert TokenDataset(out).paths() == [str(p) for p in files[:2]]
    report = tokenize_dataset(tiny.codec, files, out, progress=False)

    assert (report.skipped, report.encoded) == (2, 5)
    ds = TokenDataset(out)
    assert ds.paths() == [str(p) for p in files]
    for i, path in enumerate(ds.paths()):
        assert_same_tokens(ds[i], one_by_one(tiny.codec, Path(path)))


def test_resume_with_another_bandwidth_or_model_is_refused(tmp_path, tiny, corpus):
    out = tmp_path / "out"
    assert run("encode", corpus, "-o", out, "-m", tiny.card, "-b", "0.3").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    result = run("encode", corpus, "-o", out, "-m", tiny.card, "-b", "0.6")

    fingerprint = tiny.codec.fingerprint().hex()[:12]
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"audiotok: error: {out}: holds tokens of tiny (fingerprint {fingerprint}) at 0.3 kbps "
        f"in fp32, this run makes tiny (fingerprint {fingerprint}) at 0.6 kbps in fp32; resume "
        "with the same model, bandwidth and precision, or write to another directory"
    ]
    other = tiny_codec(seed=1)
    card = save_checkpoint(other.model, tmp_path / "models" / "other.json", name="tiny")

    result = run("encode", corpus, "-o", out, "-m", card, "-b", "0.3")

    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 1
    assert other.fingerprint().hex()[:12] in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    result = run("encode", corpus, "-o", out, "-m", tiny.card, "-b", "0.3", "--precision", "bf16")

    assert result.exit_code == 1
    assert "at 0.3 kbps in fp32, this run makes tiny" in result.stderr
    assert "at 0.3 kbps in bf16; resume" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_directory_with_shards_but_no_description_is_refused(tmp_path, tiny, corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "shard-00000.safetensors").write_bytes(b"something else")

    with pytest.raises(DatasetError, match=r"holds shards or an index but no dataset\.json"):
        tokenize_dataset(tiny.codec, audio_files(corpus), out, progress=False)


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, tiny, corpus):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    tokenize_dataset(tiny.codec, audio_files(corpus)[:1], out, progress=False)
    with open(out / "index.jsonl", "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)

        with pytest.raises(DatasetError, match="another run is writing to it"):
            tokenize_dataset(tiny.codec, audio_files(corpus), out, progress=False)


# --- failures --------------------------------------------------------------------------------


def test_bad_files_are_reported_skipped_and_retried(tmp_path, tiny, corpus):
    good = audio_files(corpus)
    garbage, empty = corpus / "garbage.wav", corpus / "nested" / "empty.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    sf.write(empty, np.zeros((0, 1), np.float32), 24_000)
    missing = tmp_path / "missing.flac"
    out = tmp_path / "out"

    result = run("encode", corpus, missing, "-o", out, "-m", tiny.card)

    assert result.exit_code == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 4, result.stderr
    assert lines[0].startswith(f"audiotok: error: {garbage}: cannot read audio: ")
    assert lines[1].startswith(f"audiotok: error: {empty}: contains no audio samples")
    assert lines[2] == f"audiotok: error: {missing}: no such file"
    assert lines[3] == "audiotok: error: 3 of 10 files failed"
    assert "Traceback" not in result.stderr
    assert TokenDataset(out).paths() == [str(p) for p in good]

    again = run("encode", corpus, missing, "-o", out, "-m", tiny.card)

    assert again.exit_code == 1
    assert "0 files encoded" in again.stderr and "7 already there" in again.stderr
    assert error_lines(again.stderr)[-1] == "audiotok: error: 3 of 3 files failed"


def test_report_lists_failures_without_printing_them(tmp_path, tiny, corpus, capsys):
    missing = tmp_path / "missing.wav"

    report = tokenize_dataset(tiny.codec, [missing, corpus / "a_sine.wav"], tmp_path / "out",
                              progress=False)  # fmt: skip

    assert report.failures == [(str(missing), f"{missing}: no such file")]
    assert report.encoded == 1
    assert capsys.readouterr().err == ""


# --- the command line ------------------------------------------------------------------------


def test_one_file_to_a_tokens_file_is_unchanged(tmp_path, tiny):
    out = tmp_path / "speech.npz"

    result = run("encode", SPEECH, "-o", out, "-m", tiny.card)

    assert result.exit_code == 0, result.output
    assert result.stderr == (f"{out}: 1 codebooks x 199 frames, 0.3 kbps, 2.65 s, model tiny\n")
    assert_same_tokens(Tokens.load(out), one_by_one(tiny.codec, SPEECH))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "speech.npz"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{corpus}"], "a dataset needs an output directory: -o OUT_DIR"),
        (["{corpus}", "-o", "t.npz"], "t.npz: a dataset is a directory, not a tokens file"),
        (["{corpus}", "-o", "out", "-f"], "--force does not apply to a dataset"),
        ([str(SPEECH), "-o", "t.npz", "--shard-size", "1"], "--shard-size, --batch-seconds"),
        ([str(SPEECH), "-o", "t.npz", "--batch-seconds", "1"], "apply to datasets"),
        ([str(SPEECH), "-o", "t.npz", "--batch-size", "4"], "apply to datasets"),
        (["{corpus}", "-o", "out", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["{corpus}", "-o", "out", "--shard-size", "0"], "Invalid value for '--shard-size'"),
        ([], "Missing argument 'INPUT'"),
    ],
    ids=[
        "no-output",
        "tokens-file",
        "force",
        "shard-size",
        "batch-seconds",
        "batch-size",
        "zero-batch",
        "zero",
        "nothing",
    ],
)
def test_dataset_usage_errors_exit_2(args, message, tiny, corpus):
    result = run("encode", *(a.format(corpus=corpus) for a in args), "-m", tiny.card)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Usage: audiotok encode ")
    assert message in result.stderr
    assert not Path("out").exists() and not Path("t.npz").exists()


def test_one_file_into_a_directory_makes_a_dataset(tmp_path, tiny):
    result = run("encode", SPEECH, "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 0, result.output
    assert_same_tokens(TokenDataset(tmp_path / "out")[0], one_by_one(tiny.codec, SPEECH))


def test_a_directory_without_audio_is_one_error_line(tmp_path, tiny):
    (tmp_path / "empty").mkdir()

    result = run("encode", tmp_path / "empty", "-o", tmp_path / "out", "-m", tiny.card)

    assert result.exit_code == 1
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "no audio files" in result.stderr and not (tmp_path / "out").exists()


def test_help_states_the_dataset_defaults():
    assert codec_commands.SHARD_MB * 1e6 == DEFAULT_SHARD_BYTES
    assert codec_commands.BATCH_SECONDS == DEFAULT_BATCH_SECONDS
    result = run("encode", "--help")
    assert "[default: 256]" in result.stdout and "[default: 60]" in result.stdout


def test_batched_dataset_equals_one_by_one(tmp_path):
    # The trained default: codes robust to the batch's kernel shapes (see test_batching.py).
    files = []
    for i, seconds in enumerate([0.7, 2.0, 1.3]):
        wav = load_clip("speech_24k.flac", 24_000, 1, seconds=seconds)[0].numpy()
        files.append(tmp_path / f"clip{i}.wav")
        sf.write(files[-1], wav[:, 500 * i :].T, 24_000, subtype="FLOAT")
    result = run("encode", *files, "-o", tmp_path / "batched", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    one = run("encode", *files, "-o", tmp_path / "alone")
    assert one.exit_code == 0, one.output
    batched, alone = TokenDataset(tmp_path / "batched"), TokenDataset(tmp_path / "alone")
    assert len(batched) == len(alone) == 3
    for i in range(3):
        assert torch.equal(batched[i].codes, alone[i].codes)
