"""Real-data pipeline: kit parsing, SoundFont rendering, `kickit data fetch` (on locally built .debs, no
download), `kickit data build` on the committed samples, loading, and augmentation."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kickit.training import fetch as fetchlib
from kickit.training import kits
from kickit.training import soundfont as sflib
from kickit.training.augment import AugmentConfig, Augmenter, pitch_shift, set_width
from kickit.training.data import DatasetError, build_dataset, load_dataset, split_by_kit

from kickit.spectral import SpectralContract

# ----- helpers -------------------------------------------------------------------------------------------------
NEW_XML = """<?xml version="1.0" encoding="UTF-8"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit">
 <name>Test Kit</name>
 <license>GPL</license>
 <instrumentList>
  <instrument><id>0</id><name>BassDrum</name>
   <instrumentComponent><component_id>0</component_id>
    <layer><filename>kick-soft.wav</filename><min>0</min><max>0.5</max></layer>
    <layer><filename>kick-hard.wav</filename><min>0.5</min><max>1</max></layer>
   </instrumentComponent>
  </instrument>
  <instrument><id>1</id><name>Snare Rimshot</name>
   <instrumentComponent><layer><filename>snare.wav</filename></layer></instrumentComponent>
  </instrument>
  <instrument><id>2</id><name>Closed HH</name><instrumentComponent>
   <layer><filename>hat.wav</filename></layer></instrumentComponent></instrument>
  <instrument><id>3</id><name>Kick Ghost</name>
   <instrumentComponent><layer><filename>not-there.wav</filename></layer></instrumentComponent>
  </instrument>
  <instrument><id>4</id><name>Kick Room</name><instrumentComponent>
   <layer><filename>kick-soft.wav</filename></layer>
   <layer><filename>kick soft.wav</filename></layer>
   <layer><filename>kick_soft.wav</filename></layer>
  </instrumentComponent></instrument>
 </instrumentList>
</drumkit_info>
"""
OLD_XML = """<drumkit_info><name>Old Kit</name><license>GPL</license><instrumentList>
 <instrument><id>0</id><filename>k.wav</filename><name>Kick 1</name></instrument>
 <instrument><id>1</id><filename>s.wav</filename><name>Snare</name></instrument>
</instrumentList></drumkit_info>
"""
COPYRIGHT = """Format: https-spec-placeholder
Upstream-Name: test

Files: *
Copyright: nobody
License: GPL-2+

Files: drumkits/Test?Kit.h2drumkit
Copyright: somebody
License: CC0-1.0
"""


def _make_kit(folder: Path, xml: str, files: dict[str, Path]) -> Path:
    folder.mkdir(parents=True)
    (folder / "drumkit.xml").write_text(xml)
    for name, src in files.items():
        shutil.copyfile(src, folder / name)
    return folder / "drumkit.xml"


def _sine_kick(f0: float, rate: int = 44100, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + 3 * f0 * 0.02 * (1 - np.exp(-t / 0.02)))
    return (0.9 * np.sin(phase) * np.exp(-t / 0.1)).astype(np.float32)


def write_tiny_sf2(path: Path, samples: list[np.ndarray], presets: list[tuple[str, int, int, int]],
                   keys: tuple[int, int] = (35, 36), rate: int = 44100) -> Path:
    """A minimal valid SoundFont 2: one instrument per sample (on ``keys``), presets (name, program, bank,
    instrument index)."""
    def chunk(cid: bytes, body: bytes) -> bytes:
        return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")

    def lst(kind: bytes, *chunks: bytes) -> bytes:
        return chunk(b"LIST", kind + b"".join(chunks))

    pcm = b""
    shdr = b""
    pos = 0
    for i, s in enumerate(samples):
        data = (np.clip(s, -1, 1) * 32767).astype("<i2")
        pcm += data.tobytes() + b"\0\0" * 46
        shdr += struct.pack("<20sIIIIIBbHH", f"s{i}".encode(), pos, pos + data.size, pos, pos + data.size, rate,
                            keys[1], 0, 0, 1)
        pos += data.size + 46
    shdr += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    inst = b"".join(struct.pack("<20sH", f"i{i}".encode(), i) for i in range(len(samples)))
    inst += struct.pack("<20sH", b"EOI", len(samples))
    ibag = b"".join(struct.pack("<HH", 2 * i, 0) for i in range(len(samples))) + struct.pack("<HH", 2 * len(samples), 0)
    igen = b"".join(struct.pack("<HBB", 43, keys[0], keys[1]) + struct.pack("<HH", 53, i) for i in range(len(samples)))
    igen += struct.pack("<HH", 0, 0)
    phdr = b"".join(struct.pack("<20sHHHIII", n.encode(), prog, bank, i, 0, 0, 0)
                    for i, (n, prog, bank, _) in enumerate(presets))
    phdr += struct.pack("<20sHHHIII", b"EOP", 0, 0, len(presets), 0, 0, 0)
    pbag = b"".join(struct.pack("<HH", i, 0) for i in range(len(presets))) + struct.pack("<HH", len(presets), 0)
    pgen = b"".join(struct.pack("<HH", 41, ins) for *_, ins in presets) + struct.pack("<HH", 0, 0)
    mod = b"\0" * 10
    body = b"sfbk" + lst(b"INFO", chunk(b"ifil", struct.pack("<HH", 2, 1)), chunk(b"isng", b"EMU8000\0"),
                         chunk(b"INAM", b"kickit test\0")) \
        + lst(b"sdta", chunk(b"smpl", pcm)) \
        + lst(b"pdta", chunk(b"phdr", phdr), chunk(b"pbag", pbag), chunk(b"pmod", mod), chunk(b"pgen", pgen),
              chunk(b"inst", inst), chunk(b"ibag", ibag), chunk(b"imod", mod), chunk(b"igen", igen),
              chunk(b"shdr", shdr))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _tiny_sf2(tmp: Path) -> Path:
    return write_tiny_sf2(tmp / "Tiny_GM.sf2", [_sine_kick(55.0), _sine_kick(85.0)], [
        ("Standard", 0, 128, 0), ("Boom", 1, 128, 1), ("Room", 8, 128, 0), ("Piano", 0, 0, 1)])


# ----- kits -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,instrument,expected", [
    ("Kick", "kick", True), ("BassDrum", "kick", True), ("c3 - bass drum 1", "kick", True),
    ('Kick (Tama Superstar 22")', "kick", True), ("VariBreaks Kick 2", "kick", True), ("BD_01", "kick", True),
    ("Djembe1 Bass", "kick", False), ("Snare Jazz", "kick", False), ("Tom Low", "kick", False),
    ("Snare Rimshot", "snare", True), ("SD 2", "snare", True), ("Kick", "snare", False),
    ("Closed HH", "hat", True), ("Hi-Hat Open", "hat", True), ("Sabian Hat Pedal", "hat", True),
    ("Pearl Side Stick", "rim", True), ("Pearl Snare Rimshot", "rim", False),
])
def test_match_instrument(name: str, instrument: str, expected: bool) -> None:
    assert kits.match_instrument(name, instrument) is expected


def test_match_instrument_unknown() -> None:
    with pytest.raises(ValueError, match="unknown instrument 'tuba'"):
        kits.match_instrument("Kick", "tuba")


def test_parse_drumkit_both_formats(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "drumkit.xml").write_text(NEW_XML)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "drumkit.xml").write_text(OLD_XML)
    new = kits.parse_drumkit(tmp_path / "a" / "drumkit.xml")
    assert new.name == "Test Kit" and new.licence == "GPL"
    sel = new.select("kick")
    assert [(i.name, lay.file, lay.min_velocity, lay.max_velocity) for i, lay in sel] == [
        ("BassDrum", "kick-soft.wav", 0.0, 0.5), ("BassDrum", "kick-hard.wav", 0.5, 1.0),
        ("Kick Ghost", "not-there.wav", 0.0, 1.0), ("Kick Room", "kick-soft.wav", 0.0, 1.0),
        ("Kick Room", "kick soft.wav", 0.0, 1.0), ("Kick Room", "kick_soft.wav", 0.0, 1.0)]
    assert [lay.file for _, lay in new.select("snare")] == ["snare.wav"]
    old = kits.parse_drumkit(tmp_path / "b" / "drumkit.xml")
    assert [(i.name, lay.file) for i, lay in old.select("kick")] == [("Kick 1", "k.wav")]
    assert kits.find_drumkits(tmp_path) == [tmp_path / "a" / "drumkit.xml", tmp_path / "b" / "drumkit.xml"]


def test_parse_drumkit_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "drumkit.xml"
    bad.write_text("<drumkit_info><name>x</name")
    with pytest.raises(kits.KitError, match=f"^{bad}: not a readable drumkit.xml"):
        kits.parse_drumkit(bad)
    bad.write_text("<song/>")
    with pytest.raises(kits.KitError, match="not a Hydrogen drumkit"):
        kits.parse_drumkit(bad)


def test_debian_licences(tmp_path: Path) -> None:
    c = tmp_path / "copyright"
    c.write_text(COPYRIGHT)
    lic = kits.debian_licences(c)
    assert lic["*"] == "GPL-2+" and lic["drumkits/Test?Kit.h2drumkit"] == "CC0-1.0"
    assert kits.licence_for("Test Kit", lic) == "CC0-1.0"
    assert kits.licence_for("Other", lic) == "GPL-2+"


# ----- SoundFont ---------------------------------------------------------------------------------------------------
def test_read_presets_of_a_generated_soundfont(tmp_path: Path) -> None:
    sf2 = _tiny_sf2(tmp_path)
    assert [(p.name, p.program, p.bank) for p in sflib.read_presets(sf2)] == [
        ("Standard", 0, 128), ("Boom", 1, 128), ("Room", 8, 128), ("Piano", 0, 0)]
    assert [p.name for p in sflib.drum_presets(sf2)] == ["Standard", "Boom", "Room"]
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(sflib.SoundFontError, match=f"^{bad}: not a SoundFont 2 file"):
        sflib.read_presets(bad)
    cut = tmp_path / "cut.sf2"
    cut.write_bytes(sf2.read_bytes()[:200])
    with pytest.raises(sflib.SoundFontError, match="malformed SoundFont"):
        sflib.read_presets(cut)


def test_drum_midi_timing(tmp_path: Path) -> None:
    import mido

    p = sflib.drum_midi(tmp_path / "k.mid", 25, [(36, 100), (35, 60)], slot=1.5, hold=0.5)
    mid = mido.MidiFile(str(p))
    t = 0.0
    ons = []
    for msg in mid:  # iterating a MidiFile yields times in seconds
        t += msg.time
        if msg.type == "program_change":
            assert msg.channel == 9 and msg.program == 25
        if msg.type == "note_on":
            ons.append((round(t, 4), msg.note, msg.velocity, msg.channel))
    assert ons == [(0.0, 36, 100, 9), (1.5, 35, 60, 9)]
    assert mid.length == pytest.approx(3.0)


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_render_kit_with_fluidsynth(tmp_path: Path) -> None:
    sf2 = _tiny_sf2(tmp_path)
    hits = sflib.render_kit(sf2, 1, [(36, 127), (36, 50), (35, 127)], 44100, slot=1.0)
    assert len(hits) == 3 and all(h.shape == (2, 44100) for h in hits)
    peaks = [float(np.max(np.abs(h))) for h in hits]
    assert all(p > 0.01 for p in peaks) and peaks[1] < 0.7 * peaks[0]  # velocity matters
    for h in hits:
        env = np.max(np.abs(h), axis=0)
        assert np.argmax(env > 0.1 * env.max()) < 0.02 * 44100  # each hit starts at its slot
    # note 36 plays the sample at its root key (85 Hz body); note 35 a semitone lower

    def f0(x: np.ndarray) -> float:
        seg = x.mean(axis=0)[4410:22050]
        spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size), 1 << 17))
        return float(np.fft.rfftfreq(1 << 17, 1 / 44100)[np.argmax(spec)])

    assert f0(hits[0]) == pytest.approx(85.0, rel=0.06)
    assert f0(hits[2]) / f0(hits[0]) == pytest.approx(2 ** (-1 / 12), rel=0.03)


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_collect_soundfont_keeps_distinct_kits_only(tmp_path: Path) -> None:
    sf2 = _tiny_sf2(tmp_path)
    col = fetchlib.Collection(root=tmp_path / "out", instrument="kick")
    fetchlib.collect_soundfont(sf2, "fluid-soundfont-gm", "MIT", col, velocities=(127,))
    assert col.kits == ["Tiny GM Boom", "Tiny GM Standard"]  # "Room" plays Standard's sample
    assert len(col.items) == 4  # 2 kits x notes 35, 36
    assert sum("same sound as kit 'Tiny GM Standard'" in s["reason"] for s in col.skipped) == 2
    for item in col.items:
        info = sf.info(str(col.root / item.file))
        assert info.samplerate == 44100 and info.channels == 2 and info.subtype == "PCM_24"
        assert item.licence == "MIT" and "bank 128 preset" in item.source


# ----- fetch (locally built .debs: no download) --------------------------------------------------------------------
def _build_deb(tmp: Path, package: str, kit_files: dict[str, Path]) -> Path:
    root = tmp / f"pkg-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 0.1\nArchitecture: all\nMaintainer: kickit tests <nobody@localhost>\n"
        "Description: test drum kits\n")
    kits_dir = root / "usr" / "share" / "hydrogen" / "data" / "drumkits"
    _make_kit(kits_dir / "Test Kit", NEW_XML, kit_files)
    _make_kit(kits_dir / "Old Kit", OLD_XML, {"k.wav": kit_files["kick-hard.wav"], "s.wav": kit_files["snare.wav"]})
    doc = root / "usr" / "share" / "doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    debs = tmp / "cache" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / f"{package}_0.1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_fetch_reuses_debs_and_collects_kicks(tmp_path: Path, real_kick_paths: list[Path],
                                              real_snare_paths: list[Path]) -> None:
    files = {"kick-soft.wav": real_kick_paths[0], "kick-hard.wav": real_kick_paths[1],
             "snare.wav": real_snare_paths[0], "hat.wav": real_snare_paths[1],
             "kick soft.wav": real_kick_paths[2], "kick_soft.wav": real_kick_paths[3]}
    _build_deb(tmp_path, "hydrogen-drumkits", files)
    calls: list[list[str]] = []

    def runner(cmd, cwd):  # noqa: ANN001, ANN202 - the real runner, recording what ran
        calls.append(list(cmd))
        return fetchlib._run(cmd, cwd)

    dest = tmp_path / "kicks"
    col = fetchlib.fetch(dest, "kick", cache=tmp_path / "cache", packages=["hydrogen-drumkits"], run=runner)
    assert [Path(c[0]).name for c in calls] == ["dpkg-deb"]  # reused the .deb: no apt-get
    assert col.kits == ["Old Kit", "Test Kit"]
    by_file = {i.file: i for i in col.items}
    # a file played by two instruments is taken once; names that clash once made safe get a suffix
    assert set(by_file) == {"Test_Kit/kick-soft.wav", "Test_Kit/kick-hard.wav", "Test_Kit/kick_soft.wav",
                            "Test_Kit/kick_soft-2.wav", "Old_Kit/k.wav"}
    assert (dest / "Test_Kit" / "kick_soft-2.wav").read_bytes() == real_kick_paths[3].read_bytes()
    assert by_file["Test_Kit/kick-soft.wav"].licence == "CC0-1.0"  # Debian copyright for that kit
    assert by_file["Old_Kit/k.wav"].licence == "GPL-2+"  # the copyright's catch-all paragraph
    assert by_file["Test_Kit/kick-hard.wav"].velocity == "0.5-1"
    assert by_file["Test_Kit/kick-hard.wav"].source == "debian:hydrogen-drumkits:drumkits/Test Kit/kick-hard.wav"
    assert (dest / "Test_Kit" / "kick-hard.wav").read_bytes() == real_kick_paths[1].read_bytes()
    assert [s["reason"] for s in col.skipped] == ["listed in drumkit.xml but missing"]
    meta = json.loads((dest / "sources.json").read_text())
    assert meta["format"] == "kickit-sources-1" and meta["instrument"] == "kick" and len(meta["items"]) == 5
    # a second fetch reuses the unpacked tree as well; snares pick other instruments
    calls.clear()
    snares = fetchlib.fetch(tmp_path / "snares", "snare", cache=tmp_path / "cache",
                            packages=["hydrogen-drumkits"], run=runner)
    assert calls == []
    assert sorted(i.file for i in snares.items) == ["Old_Kit/s.wav", "Test_Kit/snare.wav"]
    # and the collection builds into a dataset with the fetch's kits and licences
    ds = build_dataset(dest, tmp_path / "ds", heldout=0.5)
    assert sorted(ds.kits()) == ["Old Kit", "Test Kit"]
    assert {i["licence"] for i in ds.manifest["items"]} == {"CC0-1.0", "GPL-2+"}
    assert any(s["reason"].startswith("at fetch: listed in drumkit.xml") for s in ds.manifest["skipped"])


def test_fetch_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(fetchlib.FetchError, match="^apt-get not found: kickit data fetch needs Debian's apt-get"):
        fetchlib.fetch(tmp_path / "d", cache=tmp_path / "c", packages=["hydrogen-drumkits"])
    monkeypatch.undo()

    def failing(cmd, cwd):  # noqa: ANN001, ANN202
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package hydrogen-drumkits\n")

    if shutil.which("apt-get"):
        with pytest.raises(fetchlib.FetchError, match="apt-get download hydrogen-drumkits failed .exit 100.: "
                                                      "E: Unable to locate package"):
            fetchlib.fetch(tmp_path / "d2", cache=tmp_path / "c", packages=["hydrogen-drumkits"], run=failing)
    if shutil.which("dpkg-deb"):
        (tmp_path / "c" / "debs").mkdir(parents=True, exist_ok=True)
        (tmp_path / "c" / "debs" / "hydrogen-data_1_all.deb").write_bytes(b"not a deb")
        with pytest.raises(fetchlib.FetchError, match="dpkg-deb -x .*hydrogen-data_1_all.deb failed"):
            fetchlib.fetch(tmp_path / "d3", cache=tmp_path / "c", packages=["hydrogen-data"])
    with pytest.raises(fetchlib.FetchError, match="unknown instrument 'tuba'"):
        fetchlib.fetch(tmp_path / "d4", "tuba", cache=tmp_path / "c")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.wav").write_bytes(b"x")
    with pytest.raises(fetchlib.FetchError, match="not a kickit sample collection"):
        fetchlib.fetch(tmp_path / "mine", cache=tmp_path / "c", packages=[])
    assert (tmp_path / "mine" / "keep.wav").exists()


def test_cli_fetch_error_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path), KICKIT_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "kickit.cli", "data", "fetch", "--dest", str(tmp_path / "d")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("kickit data fetch: apt-get not found")


# ----- build / load -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_tree(tmp_path_factory: pytest.TempPathFactory, real_kicks_dir: Path, data_dir: Path) -> Path:
    """tests/data/kicks plus every bad file and an exact duplicate under another name and kit."""
    root = tmp_path_factory.mktemp("samples") / "kicks"
    shutil.copytree(real_kicks_dir, root)
    for f in (data_dir / "bad").iterdir():
        shutil.copyfile(f, root / "GMRockKit" / f.name)
    (root / "zz_copies").mkdir()  # sorts after the original: the first copy is kept
    shutil.copyfile(real_kicks_dir / "VariBreaks" / "VP_Kick_1.wav", root / "zz_copies" / "zz_same.wav")
    return root


@pytest.fixture(scope="module")
def built(sample_tree: Path, tmp_path_factory: pytest.TempPathFactory, contract: SpectralContract):  # noqa: ANN201
    return build_dataset(sample_tree, tmp_path_factory.mktemp("ds") / "kicks", contract, heldout=0.2, seed=0)


def test_build_manifest_split_and_cache(built, contract: SpectralContract, sample_tree: Path) -> None:  # noqa: ANN001
    m = built.manifest
    assert m["format"] == "kickit-dataset-1" and m["instrument"] == "kick"
    assert SpectralContract.from_dict(m["contract"]) == contract
    items = m["items"]
    assert len(items) == 11  # 11 real kicks; the copy is dropped
    train, held = built.train_items, built.heldout_items
    assert train and held
    assert not set(built.kits("train")) & set(built.kits("heldout"))  # no kit in both
    assert 0.1 <= len(held) / len(items) <= 0.35
    for i in items:
        assert set(i) == {"id", "file", "source", "kit", "licence", "sha256", "duration", "split"}
        assert i["file"] == f"audio/{i['split']}/{i['id']}.wav"
        assert i["licence"] and i["source"].startswith("debian:")  # from tests/data/kicks/sources.json
        assert len(i["sha256"]) == 64 and 0.1 < i["duration"] <= 0.61
        info = sf.info(str(built.root / i["file"]))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            contract.sample_rate, 2, contract.n_samples, "PCM_24")
    assert {i["kit"] for i in items} >= {"GMRockKit", "TR808EmulationKit", "ForzeeStereo"}
    assert built.train_audio.shape == (len(train), 2, contract.n_samples)
    assert built.heldout_audio.shape == (len(held), 2, contract.n_samples)
    assert built.train_spec.shape == (len(train), *contract.shape) and built.train_spec.dtype == np.float32
    assert built.heldout_spec.shape == (len(held), *contract.shape)
    np.testing.assert_allclose(built.train_spec, contract.encode(built.train_audio), atol=1e-6)
    np.testing.assert_allclose(built.heldout_spec, contract.encode(built.heldout_audio), atol=1e-6)
    peaks = np.max(np.abs(np.concatenate([built.train_audio, built.heldout_audio])), axis=(1, 2))
    np.testing.assert_allclose(peaks, 10 ** (-1 / 20), atol=2e-4)


def test_build_skips_and_lists_bad_files_and_duplicates(built, sample_tree: Path) -> None:  # noqa: ANN001
    skipped = {Path(s["path"]).name: s["reason"] for s in built.manifest["skipped"]}
    assert skipped["empty.wav"] == "empty file (0 bytes)"
    assert skipped["truncated.wav"].startswith("not readable as audio")
    assert skipped["truncated_data.wav"].startswith("truncated: the header promises")
    assert skipped["header_only.wav"].startswith("no audio frames")
    assert skipped["garbage.wav"].startswith("not readable as audio")
    assert skipped["nan.wav"] == "contains NaN or infinite samples"
    assert skipped["silent.wav"].startswith("silent")
    assert skipped["notes.txt"].startswith("not an audio file")
    assert skipped["zz_same.wav"] == f"duplicate of {sample_tree / 'VariBreaks' / 'VP_Kick_1.wav'}"
    assert "sources.json" not in skipped


def test_build_is_deterministic_and_seeded(sample_tree: Path, built, tmp_path: Path,  # noqa: ANN001
                                           contract: SpectralContract) -> None:
    again = build_dataset(sample_tree, tmp_path / "again", contract, heldout=0.2, seed=0)
    assert [(i["id"], i["split"], i["sha256"]) for i in again.manifest["items"]] == [
        (i["id"], i["split"], i["sha256"]) for i in built.manifest["items"]]
    np.testing.assert_array_equal(again.train_spec, built.train_spec)
    splits = {tuple(sorted(build_dataset(sample_tree, tmp_path / f"s{s}", contract, seed=s).kits("heldout")))
              for s in (1, 2, 3)}
    assert len(splits) > 1  # the seed picks different held-out kits


def test_load_dataset_round_trip_and_contract_check(built, contract: SpectralContract) -> None:  # noqa: ANN001
    ds = load_dataset(built.root, contract)
    np.testing.assert_array_equal(ds.train_audio, built.train_audio)
    np.testing.assert_array_equal(ds.heldout_spec, built.heldout_spec)
    other = SpectralContract(frames=128)
    with pytest.raises(DatasetError, match=r"built for another spectral contract: frames 256 \(wanted 128\)"):
        load_dataset(built.root, other)
    assert ds.summary()["train"] == len(ds.train_items)


def test_load_dataset_refuses_missing_and_corrupt(built, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a kickit dataset .no manifest.json."):
        load_dataset(tmp_path / "empty")

    def broken(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(built.root, d)
        return d

    d = broken("badjson")
    (d / "manifest.json").write_text("{")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        load_dataset(d)
    d = broken("badformat")
    m = json.loads((d / "manifest.json").read_text())
    m["format"] = "something-else"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="format 'something-else' is not 'kickit-dataset-1'"):
        load_dataset(d)
    d = broken("nospec")
    (d / "spec_train.npy").unlink()
    with pytest.raises(DatasetError, match="spec_train.npy: missing or unreadable"):
        load_dataset(d)
    d = broken("badspec")
    np.save(d / "spec_heldout.npy", np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(DatasetError, match=r"spec_heldout.npy: shape \(1, 2, 3, 4\)"):
        load_dataset(d)
    d = broken("noaudio")
    first = built.manifest["items"][0]["file"]
    (d / first).unlink()
    with pytest.raises(DatasetError, match=f"corrupt dataset: .*{Path(first).name}: no such file"):
        load_dataset(d)
    d = broken("shortaudio")
    sf.write(str(d / first), np.zeros((100, 2), np.float32) + 0.1, 44100, subtype="PCM_24")
    with pytest.raises(DatasetError, match="2 ch x 100 samples at 44100 Hz, the contract wants 2 x 32768"):
        load_dataset(d)


def test_build_errors(tmp_path: Path, data_dir: Path, real_kicks_dir: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        build_dataset(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(DatasetError, match="no usable kick samples"):
        build_dataset(data_dir / "bad", tmp_path / "o")
    with pytest.raises(DatasetError, match="holds kick samples, not snare"):
        build_dataset(real_kicks_dir, tmp_path / "o", instrument="snare")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty and is not a kickit dataset"):
        build_dataset(real_kicks_dir, tmp_path / "busy")
    with pytest.raises(DatasetError, match="held-out fraction"):
        build_dataset(real_kicks_dir, tmp_path / "o", heldout=1.0)


def test_build_into_a_source_folder_and_hidden_files(tmp_path: Path, real_kick_paths: list[Path],
                                                     contract: SpectralContract) -> None:
    src = tmp_path / "Kit"
    src.mkdir()
    for p in real_kick_paths[:2]:
        shutil.copyfile(p, src / p.name)
    (src / "._mac-fork.wav").write_bytes(b"\0\5\26\7")  # AppleDouble file: ignored, not an error
    first = build_dataset(src, src / "ds", contract)
    again = build_dataset(src, src / "ds", contract)  # its own output is not read back in as samples
    assert len(first.train_items) == len(again.train_items) == 2
    assert again.manifest["skipped"] == []


def test_single_kit_goes_to_train(tmp_path: Path, real_kick_paths: list[Path], contract: SpectralContract) -> None:
    one = tmp_path / "MyKicks"
    one.mkdir()
    for p in real_kick_paths[:3]:
        shutil.copyfile(p, one / p.name)
    ds = build_dataset(one, tmp_path / "ds", contract)
    assert ds.kits() == ["MyKicks"] and len(ds.train_items) == 3 and ds.heldout_audio.shape[0] == 0
    assert ds.heldout_spec.shape == (0, *contract.shape)
    assert all(i["licence"] is None for i in ds.manifest["items"])


def test_split_by_kit() -> None:
    sizes = {f"k{i}": 1 + i % 4 for i in range(20)}
    held = split_by_kit(sizes, 0.2, seed=0)
    share = sum(sizes[k] for k in held) / sum(sizes.values())
    assert 0.15 <= share <= 0.25 and held == split_by_kit(sizes, 0.2, seed=0)
    assert split_by_kit(sizes, 0.0, 0) == set()
    assert len(split_by_kit({"a": 10, "b": 10}, 0.2, 0)) == 1  # both splits get a kit
    with pytest.raises(DatasetError):
        split_by_kit(sizes, -0.1, 0)


def test_cli_build(sample_tree: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "kickit.cli", "data", "build", str(sample_tree), "-o",
                        str(tmp_path / "ds"), "--heldout", "0.25", "--seed", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "train hits from" in r.stdout and "held-out hits" in r.stdout
    assert "skipped" in r.stderr and "garbage.wav" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["seed"] == 3
    r = subprocess.run([sys.executable, "-m", "kickit.cli", "data", "build", str(tmp_path / "none"), "-o",
                        str(tmp_path / "ds2")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == f"kickit data build: {tmp_path / 'none'}: no such file or folder"


def test_data_modules_do_not_import_torch() -> None:
    code = ("import sys, kickit.training.data, kickit.training.augment, kickit.training.data_cli, "
            "kickit.training.fetch; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----- augmentation -------------------------------------------------------------------------------------------
def _f0(x: np.ndarray, rate: int) -> float:
    seg = x[0, : rate // 2] * np.hanning(rate // 2)
    spec = np.abs(np.fft.rfft(seg, 1 << 18))
    return float(np.fft.rfftfreq(1 << 18, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("semitones", [-2.0, -0.5, 1.0, 2.0])
def test_pitch_shift_moves_fundamental_by_the_ratio(semitones: float, contract: SpectralContract) -> None:
    t = np.arange(contract.n_samples) / contract.sample_rate
    s = (0.8 * np.sin(2 * np.pi * 60 * t) * np.exp(-t / 0.3)).astype(np.float32)
    x = np.stack([s, s])
    y = pitch_shift(x, semitones, contract)
    assert y.shape == x.shape and y.dtype == np.float32
    ratio = _f0(y, contract.sample_rate) / _f0(x, contract.sample_rate)
    assert ratio == pytest.approx(2 ** (semitones / 12), abs=0.003)


def test_augmenter_deterministic_bounded_and_varied(built, contract: SpectralContract) -> None:  # noqa: ANN001
    x = built.train_audio[:6]
    aug = Augmenter(AugmentConfig(probability=1.0, procedural_share=0.3), contract)
    a = aug(x, np.random.default_rng(5))
    b = aug(x, np.random.default_rng(5))
    c = aug(x, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == x.shape and a.dtype == np.float32 and np.all(np.isfinite(a))
    assert np.max(np.abs(a)) <= 1.0
    assert np.all(np.abs(a[:, :, -1]) < 1e-3)  # still faded out at the end
    np.testing.assert_array_equal(x, built.train_audio[:6])  # input untouched


def test_augmenter_off_is_identity_and_share_one_is_all_procedural(built, contract: SpectralContract) -> None:  # noqa: ANN001
    x = built.train_audio[:4]
    off = Augmenter(AugmentConfig(probability=0.0), contract)
    np.testing.assert_array_equal(off(x, np.random.default_rng(0)), x)
    allsynth = Augmenter(AugmentConfig(probability=0.0, procedural_share=1.0), contract)
    y = allsynth(x, np.random.default_rng(0))
    for k in y:
        assert not any(np.allclose(k, r) for r in x)
        assert 40 <= _f0(k[:, int(0.08 * contract.sample_rate):], contract.sample_rate) <= 120
    with pytest.raises(ValueError, match=r"expected audio \(B, 2, 32768\)"):
        off(x[:, :, :100], np.random.default_rng(0))
    with pytest.raises(ValueError, match="procedural_share"):
        AugmentConfig(procedural_share=1.5)


def test_augmenter_transforms_measured(contract: SpectralContract) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (2, contract.n_samples)).astype(np.float32)
    w = set_width(x, 0.5)
    np.testing.assert_allclose(w[0] + w[1], x[0] + x[1], atol=1e-6)  # mid kept
    np.testing.assert_allclose(w[0] - w[1], 0.5 * (x[0] - x[1]), atol=1e-6)  # side halved
    aug = Augmenter(AugmentConfig(probability=1.0, pitch_semitones=0.0, width=0.0, shift_ms=0.0, gain_db=6.0),
                    contract)
    params = aug.draw(8, np.random.default_rng(1))
    assert np.all(np.abs(params["gain_db"]) <= 6.0) and np.all(params["delay"] == 0)
    y = aug(np.stack([x] * 8) * 0.5, np.random.default_rng(1))
    gains = 20 * np.log10(np.max(np.abs(y), axis=(1, 2)) / np.max(np.abs(x * 0.5)))
    np.testing.assert_allclose(gains, np.minimum(params["gain_db"], 20 * np.log10(1 / np.max(np.abs(x * 0.5)))),
                               atol=1e-3)
