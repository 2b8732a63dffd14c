#!/usr/bin/env python3
"""Writes the manifest of scripts/fetch-extra-audio.sh's packages, and the combined one.

Usage: extra_manifest.py DATADIR

Reads ``DATADIR/src/<package>/``; writes ``DATADIR/manifest-extra.tsv`` (category, source,
path, sample_rate, channels, seconds; paths relative to DATADIR, as the shared
``manifest.tsv``) and ``DATADIR/manifest-all.tsv`` (both manifests' rows under one header).

Why these packages: the training speech of the shared fetch is a handful of speakers (four
Asterisk prompt voices, Czech game voices, a letter-reading voice); the codec has to serve any
voice. Tux Paint's stamps come with their names spoken in 13 languages by volunteers (44.1
kHz, one to a few seconds each, many speakers and microphones); two more Asterisk prompt
voices are telephone-band speech (8 kHz GSM), as many users' recordings are; Warmux adds
character voices, weapon and interface effects and its music. The first matching rule takes
a file.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import soundfile as sf

EXT = (".wav", ".ogg", ".flac")
# (category, source package, pattern searched in the path below the package's folder)
RULES = [
    ("speech", "tuxpaint-stamps-default", r"_desc(_[A-Za-z@]+)?\.ogg$"),
    ("sfx", "tuxpaint-stamps-default", r"/stamps/"),
    ("speech", "asterisk-prompt-es-co", r"\.wav$"),
    ("speech", "asterisk-prompt-fr-armelle", r"\.wav$"),
    ("speech", "warmux-data", r"/sound/default/voices/"),
    ("sfx", "warmux-data", r"/sound/default/(weapons|misc)/"),
    ("music", "warmux-data", r"/music/"),
]
COLUMNS = ["category", "source", "path", "sample_rate", "channels", "seconds"]


def rows(data: Path) -> list[list[str]]:
    """One manifest row per readable audio file that a rule takes."""
    seen: set[Path] = set()
    out = []
    for category, package, pattern in RULES:
        root = data / "src" / package
        for path in sorted(root.rglob("*")):
            if path in seen or path.suffix.lower() not in EXT or path.is_symlink():
                continue
            if not re.search(pattern, "/" + str(path.relative_to(root))):
                continue
            try:
                info = sf.info(str(path))
            except (RuntimeError, sf.LibsndfileError) as exc:
                print(f"skipped {path}: {exc}", file=sys.stderr)
                continue
            if info.frames == 0:
                continue
            seen.add(path)
            seconds = round(info.frames / info.samplerate, 3)
            relative = str(path.relative_to(data))
            out.append([category, package, relative, str(info.samplerate),
                        str(info.channels), str(seconds)])  # fmt: skip
    return out


def write(path: Path, header: list[str], body: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
    tmp.replace(path)


def main() -> None:
    data = Path(sys.argv[1])
    extra = rows(data)
    with open(data / "manifest.tsv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        shared = list(reader)
    if header[: len(COLUMNS)] != COLUMNS:
        sys.exit(f"{data / 'manifest.tsv'}: unexpected columns {header}")
    write(data / "manifest-extra.tsv", COLUMNS, extra)
    write(data / "manifest-all.tsv", COLUMNS, [r[: len(COLUMNS)] for r in shared] + extra)
    totals: dict[tuple[str, str], float] = {}
    for category, source, *_, seconds in extra:
        totals[category, source] = totals.get((category, source), 0.0) + float(seconds)
    for (category, source), seconds in sorted(totals.items()):
        print(f"{category:7} {source:28} {seconds / 3600:6.2f} h")


if __name__ == "__main__":
    main()
