#!/usr/bin/env bash
# More training audio beside fetch-training-audio.sh's (same folder): many more voices.
#
# Usage: scripts/fetch-extra-audio.sh DATADIR
#   DATADIR: the folder fetch-training-audio.sh filled (its manifest.tsv, src/, debs/).
# Adds DATADIR/src/<package>/ for the packages below, then writes
#   DATADIR/manifest-extra.tsv   their files (scripts/extra_manifest.py says which and why)
#   DATADIR/manifest-all.tsv     manifest.tsv and manifest-extra.tsv together, for make-subset
# Paths in both are relative to DATADIR, as in manifest.tsv. About 270 MB of downloads,
# 4.1 hours of audio (speech 3.4 h: 13 languages of spoken Tux Paint stamp names, two Asterisk
# prompt voices, Warmux's character voices; effects 0.2 h; music 0.45 h), a minute or two here.
# Licences (docs/TRAINING.md lists them): tuxpaint-stamps-default GPL-2, warmux-data GPL-2+,
# asterisk-prompt-es-co GPL-2, asterisk-prompt-fr-armelle GPL-2+; see each package's
# DATADIR/src/*/usr/share/doc/*/copyright. None of them is kept for independent evaluation.
set -euo pipefail
DATA=${1:?usage: fetch-extra-audio.sh DATADIR}
[ -f "$DATA/manifest.tsv" ] || { echo "$DATA/manifest.tsv: run fetch-training-audio.sh first" >&2; exit 1; }
here=$(dirname "$(readlink -f "$0")")
DATA=$(readlink -f "$DATA")
mkdir -p "$DATA/debs" "$DATA/src"
PACKAGES="tuxpaint-stamps-default warmux-data asterisk-prompt-es-co asterisk-prompt-fr-armelle"
(cd "$DATA/debs" && apt-get download $PACKAGES)
for p in $PACKAGES; do [ -d "$DATA/src/$p" ] || dpkg -x "$DATA/debs/${p}"_*.deb "$DATA/src/$p"; done
# Raw GSM 06.10 telephone prompts (8 kHz) -> wav
for p in asterisk-prompt-es-co asterisk-prompt-fr-armelle; do
  find "$DATA/src/$p" -name '*.gsm' | while read -r f; do
    ffmpeg -nostdin -v error -y -f gsm -i "$f" "${f%.gsm}.wav" && rm "$f"; done
done
python3 "$here/extra_manifest.py" "$DATA"
echo "done: $DATA/manifest-all.tsv"
