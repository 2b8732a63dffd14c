"""Writes the .atok golden files: run only when the format's version changes.

Each golden file is an .atok stream of real speech (tests/data/speech_24k.flac, or the stereo
music clip for the segmented case) made by a tiny random-weight codec, with its tokens beside it
as a tokens .npz. tests/test_golden.py checks that every committed version still decodes to
its tokens, and that today's writer reproduces today's files byte for byte.

Usage: PYTHONPATH=tests python tests/data/golden/make_golden.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))

from conftest import load_clip, tiny_codec  # noqa: E402

from audiotok.compression.container.header import MAJOR, MINOR  # noqa: E402
from audiotok.compression.encode import compress_to  # noqa: E402

SEGMENTED = dict(sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
                 normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4))  # fmt: skip


def main() -> None:
    version = f"v{MAJOR}.{MINOR}"
    speech = load_clip("speech_24k.flac", 24_000, 1, seconds=2.2)[0]
    music = load_clip("music_48k_stereo.flac", 48_000, 2, seconds=0.35)[0]
    cases = {
        "adaptive": (tiny_codec(), speech, 24_000, 0.6, "adaptive", {"title": "golden"}),
        "raw": (tiny_codec(), speech, 24_000, 0.3, "raw", {}),
        "segmented": (tiny_codec("tiny48", **SEGMENTED), music, 48_000, 2.4, "adaptive", {}),
    }
    for name, (codec, wav, rate, bandwidth, entropy, meta) in cases.items():
        buffer = io.BytesIO()
        tokens = compress_to(buffer, codec, wav, rate, bandwidth, entropy=entropy, metadata=meta)
        (HERE / f"{version}_{name}.atok").write_bytes(buffer.getvalue())
        tokens.save(HERE / f"{version}_{name}.npz", overwrite=True)
        print(f"{version}_{name}.atok: {len(buffer.getvalue())} bytes, {tokens.codes.shape}")


if __name__ == "__main__":
    main()
