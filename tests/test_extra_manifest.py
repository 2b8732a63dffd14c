"""scripts/extra_manifest.py: which extra files train as what, and the combined manifest."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from audiotok.train.data import read_manifest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "extra_manifest.py"


def load_script():
    spec = importlib.util.spec_from_file_location("extra_manifest", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tone(path: Path, rate: int, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), rate)


def test_rules_and_combined_manifest(tmp_path, monkeypatch):
    stamps = tmp_path / "src/tuxpaint-stamps-default/usr/share/tuxpaint/stamps/animals"
    tone(stamps / "dog_desc_fr.ogg", 44_100, 1.0)
    tone(stamps / "dog_desc.ogg", 44_100, 0.5)
    tone(stamps / "dog.ogg", 22_050, 0.25)
    tone(tmp_path / "src/asterisk-prompt-es-co/usr/share/asterisk/sounds/es_CO/hola.wav", 8000, 2)
    warmux = tmp_path / "src/warmux-data/usr/share/games/warmux"
    tone(warmux / "sound/default/voices/Jazz/pain.ogg", 44_100, 0.5)
    tone(warmux / "sound/default/weapons/bazooka.ogg", 44_100, 0.5)
    tone(warmux / "music/ingame/circux.ogg", 44_100, 3.0)
    tone(warmux / "sound/unlisted/other.ogg", 44_100, 0.5)  # no rule takes it
    (stamps / "dog.png").write_bytes(b"not audio")
    shared = tmp_path / "manifest.tsv"
    shared.write_text(
        "category\tsource\tpath\tsample_rate\tchannels\tseconds\n"
        "speech\tfestvox-ru\tsrc/festvox-ru/ru_0001.wav\t16000\t1\t16.08\n"
    )
    monkeypatch.setattr(sys, "argv", ["extra_manifest.py", str(tmp_path)])
    load_script().main()
    with open(tmp_path / "manifest-extra.tsv", newline="", encoding="utf-8") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f, delimiter="\t")}
    categories = {name: (r["category"], r["source"]) for name, r in rows.items()}
    assert categories == {
        "dog_desc_fr.ogg": ("speech", "tuxpaint-stamps-default"),
        "dog_desc.ogg": ("speech", "tuxpaint-stamps-default"),
        "dog.ogg": ("sfx", "tuxpaint-stamps-default"),
        "hola.wav": ("speech", "asterisk-prompt-es-co"),
        "pain.ogg": ("speech", "warmux-data"),
        "bazooka.ogg": ("sfx", "warmux-data"),
        "circux.ogg": ("music", "warmux-data"),
    }
    assert rows["hola.wav"]["sample_rate"] == "8000" and rows["hola.wav"]["seconds"] == "2.0"
    items = read_manifest(tmp_path / "manifest-all.tsv")
    assert len(items) == 8 and items[0].source == "festvox-ru"
    assert all(item.path.is_relative_to(tmp_path) for item in items)
