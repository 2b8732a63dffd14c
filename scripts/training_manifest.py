#!/usr/bin/env python3
"""Writes manifest.tsv (category, source, path, sample_rate, channels, seconds) for the trees that
fetch-training-audio.sh extracted. Usage: training_manifest.py SRC_DIR OUT_TSV"""

import os
import re
import sys

import soundfile as sf

EXT = (".wav", ".ogg", ".oga", ".flac", ".opus", ".aif", ".aiff", ".mp3")
# (category, source package, path pattern)
RULES = [
    ("speech", "festvox-ru", r"/wav/"),
    ("speech", "fillets-ng-data-cs", r"sound/"),
    ("speech", "klettres-data", r"klettres/"),
    ("speech", "asterisk-core-sounds-en-g722", r"\.wav$"),
    ("speech", "asterisk-core-sounds-es-g722", r"\.wav$"),
    ("speech", "asterisk-core-sounds-fr-g722", r"\.wav$"),
    ("speech", "asterisk-core-sounds-ru-g722", r"\.wav$"),
    ("speech", "0ad-data", r"audio/voice/"),
    ("music", "0ad-data", r"audio/music/"),
    ("music", "ufoai-music", r"\.ogg$"),
    ("music", "warzone2100-music", r"\.opus$"),
    ("music", "widelands-data", r"data/music/"),
    ("music", "supertuxkart-data", r"data/music/"),
    ("music", "supertux-data", r"supertux2/music/"),
    ("music", "freedroidrpg-data", r"sound/music/"),
    ("music", "colobot-common-sounds", r"\.ogg$"),
    ("music", "pushover-data", r"\.ogg$"),
    ("music", "hyperrogue-music", r"\.ogg$"),
    ("music", "hydrogen-drumkits", r"drumkits/"),
    ("music", "lmms-common", r"samples/"),
    ("music", "lomiri-sounds", r"ringtones/"),
    ("sfx", "0ad-data", r"audio/(ambient|actor|attack|resource|interface)/"),
    ("sfx", "supertuxkart-data", r"data/(sfx|tracks)/"),
    ("sfx", "widelands-data", r"data/(sound|world)/"),
    ("sfx", "wesnoth-1.16-data", r"sounds/"),
    ("sfx", "supertux-data", r"supertux2/sounds/"),
    ("sfx", "freedroidrpg-data", r"sound/effects/"),
    ("sfx", "boswars-data", r"\.wav$"),
    ("sfx", "extremetuxracer-data", r"sounds/"),
    ("sfx", "lomiri-sounds", r"notifications/"),
    ("sfx", "deepin-sound-theme", r"\.wav$"),
]


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    seen, rows = set(), []
    for category, package, pattern in RULES:
        for dirpath, _, names in os.walk(os.path.join(src, package)):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                if path in seen or not name.lower().endswith(EXT) or os.path.islink(path):
                    continue
                if not re.search(pattern, path):
                    continue
                try:
                    info = sf.info(path)
                except Exception:
                    continue
                if info.duration >= 0.1:
                    seen.add(path)
                    rows.append(
                        (
                            category,
                            package,
                            path,
                            info.samplerate,
                            info.channels,
                            round(info.duration, 3),
                        )
                    )
    with open(out, "w") as f:
        f.write("category\tsource\tpath\tsample_rate\tchannels\tseconds\n")
        for row in rows:
            f.write("\t".join(map(str, row)) + "\n")
    for category in ("speech", "music", "sfx"):
        hours = sum(r[5] for r in rows if r[0] == category) / 3600
        print(f"{category}: {hours:.1f} h")


if __name__ == "__main__":
    main()
