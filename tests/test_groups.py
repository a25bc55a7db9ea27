"""Pad groups (one model per group of pads), hot swap per group, group presets, and encoding a user's sample
onto a pad over OSC: the pure parts with plain values/bytes, the engine and controller with real model files.

The second "model" is tiny-spec.onnx again rendered with another phase reconstruction (PGHI instead of the
default PGHI+FGLA): a real, different source of hits, so which model rendered a pad is visible in its audio.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kickit.bridge.app import Bridge, BridgeOptions
from kickit.bridge.control import Controller
from kickit.bridge.engine import Engine, EngineConfig
from kickit.bridge.groups import GroupSpec, check_groups, parse_group
from kickit.bridge.oscmap import Action, Dropped, build, parse_datagram
from kickit.bridge.outputs import JACK_CLIENT
from kickit.bridge.pads import PAD_COUNT, PadMap
from kickit.bridge.presets import PresetError, load_preset
from kickit.bridge.source import ModelSource

from kickit.cli import main
from kickit.modelfile import load_model

TIMEOUT = 120.0
GROUP = [4, 5, 6, 7]  # notes 40..43


def other_source(path: Path | str, rate: int | None = None) -> ModelSource:
    return ModelSource(load_model(Path(path), threads=1), rate, "pghi")


def expected(src: ModelSource, engine: Engine, p: int) -> np.ndarray:
    pad = engine.pads[p]
    return src.render(src.apply_knobs(pad.latent, pad.knobs)[None])[0]


@pytest.fixture()
def grouped(tiny_model_path: Path):  # noqa: ANN201
    main_src = ModelSource.open(tiny_model_path)
    e = Engine(main_src, EngineConfig(seed=3))
    snare = other_source(tiny_model_path)
    assert e.add_group("snare", GROUP, snare) == 1
    e.start()
    assert e.wait_ready(TIMEOUT)
    yield e, main_src, snare
    e.stop()


# ----- pure parts ------------------------------------------------------------------------------------------
def test_parse_group_and_check_groups() -> None:
    g = parse_group("snare=models/snare-v1.onnx:40-43")
    assert g == GroupSpec("snare", Path("models/snare-v1.onnx"), (40, 41, 42, 43))
    assert parse_group("hat=C:/kits/hat.onnx:44,46").model == Path("C:/kits/hat.onnx")  # last ':' splits
    for bad, why in [("snare", "NAME=MODEL"), ("snare=x.onnx", "NAME=MODEL"), ("=x.onnx:40", "name"),
                     ("main=x.onnx:40", "name"), ("snare=x.onnx:40-zz", "not a note"),
                     ("2x=x.onnx:40", "name")]:
        with pytest.raises(ValueError, match=why):
            parse_group(bad)
    pm = PadMap()
    assert check_groups([parse_group("a=x:40-43"), parse_group("b=y:44")], pm) == [[4, 5, 6, 7], [8]]
    with pytest.raises(ValueError, match="already in group a"):
        check_groups([parse_group("a=x:40-43"), parse_group("b=y:43")], pm)
    with pytest.raises(ValueError, match="note 60 is not a pad"):
        check_groups([parse_group("a=x:60")], pm)
    with pytest.raises(ValueError, match="given twice"):
        check_groups([parse_group("a=x:40"), parse_group("a=y:41")], pm)


def test_osc_encode_and_group_model_load_from_plain_bytes() -> None:
    assert parse_datagram(build("/kickit/pad/3/encode", "/home/me/kick.wav")) == [
        Action("encode", pad=3, value="/home/me/kick.wav")]
    assert parse_datagram(build("/kickit/model/load", "/m/snare.onnx", 2)) == [
        Action("model_load", index=2, value="/m/snare.onnx")]
    assert parse_datagram(build("/kickit/model/load", "/m/kick.onnx")) == [Action("model_load", value="/m/kick.onnx")]
    for dgram, why in [(build("/kickit/pad/3/encode"), "path"), (build("/kickit/pad/3/encode", 5), "path"),
                       (build("/kickit/pad/16/encode", "/a.wav"), "out of range"),
                       (build("/kickit/pad/3/encode", "/a.wav", "/b.wav"), "path"),
                       (build("/kickit/model/load", "/m.onnx", 99), "group"),
                       (build("/kickit/model/load", "/m.onnx", "snare"), "group"),
                       (build("/kickit/model/load", "/m.onnx", 1.0), "group")]:
        (r,) = parse_datagram(dgram)
        assert isinstance(r, Dropped) and why in r.reason, (dgram, r)


def test_preset_latent_sizes_per_pad(tmp_path: Path) -> None:
    from kickit.bridge.pads import initial_pads
    from kickit.bridge.presets import Preset, PresetGroup, save_preset

    pads = initial_pads(1, 16)
    pads[4:8] = initial_pads(2, 8)[4:8]  # a group whose model has 8 latents
    path = save_preset(tmp_path / "p.json", Preset("h" * 64, "kick.onnx", 1, 0, pads,
                                                    [PresetGroup("snare", "snare.onnx", "s" * 64, "/m/s.onnx", GROUP)]))
    dims = [8 if p in GROUP else 16 for p in range(PAD_COUNT)]
    back = load_preset(path, dims)
    assert [len(p.latent) for p in back.pads] == dims and back.groups[0].model_path == "/m/s.onnx"
    assert load_preset(path, None).groups[0].pads == GROUP
    with pytest.raises(PresetError, match="p.json: pad 4: latent has 8 values; the model needs 16"):
        load_preset(path, 16)


# ----- engine --------------------------------------------------------------------------------------------
def test_group_pads_render_with_their_own_model(grouped) -> None:  # noqa: ANN001
    e, main_src, snare = grouped
    for p in range(PAD_COUNT):
        src = snare if p in GROUP else main_src
        assert e.source_of(p) is src
        np.testing.assert_array_equal(e.ready[p][0], expected(src, e, p))
    # the two models really differ on the same latent (so the check above tells them apart)
    assert not np.array_equal(expected(main_src, e, 4), expected(snare, e, 4))
    s = e.status()
    assert [g["name"] for g in s["groups"]] == ["main", "snare"] and s["groups"][1]["pads"] == GROUP
    assert [p["group"] for p in s["pads"]][3:9] == ["main", "snare", "snare", "snare", "snare", "main"]
    # a knob move on a group pad renders with the group's model and knob directions
    e.select(5)
    e.set_knob(0, 0.7)
    assert e.wait_ready(TIMEOUT)
    np.testing.assert_array_equal(e.ready[5][0], expected(snare, e, 5))
    assert e.pads[5].knobs[0] == 0.7


def test_hot_swap_of_one_group_keeps_the_other_groups(grouped, tiny_model_path: Path) -> None:  # noqa: ANN001
    e, main_src, snare = grouped
    before = list(e.ready)
    latents = [p.latent.copy() for p in e.pads]
    new = ModelSource(load_model(tiny_model_path, threads=1), None, "rtisi-la")
    e.swap_source(new, "snare")
    assert e.group_sources[1] is new and e.source is main_src
    for p in range(PAD_COUNT):
        if p in GROUP:
            assert e.ready[p] is not before[p]
            np.testing.assert_array_equal(e.ready[p][0], expected(new, e, p))
            np.testing.assert_array_equal(e.pads[p].latent, latents[p])  # same latent size: latents kept
        else:
            assert e.ready[p] is before[p]  # untouched, still playing the same arrays
    assert e.note_on(0, 1.0)
    out = np.zeros((256, 2), np.float32)
    e.process(out)
    np.testing.assert_array_equal(out.T, before[0][0][:, :256])
    with pytest.raises(ValueError, match="no pad group 'hat'"):
        e.swap_source(new, "hat")
    with pytest.raises(ValueError, match="exists already"):
        e.add_group("snare", [9], new)


def test_group_preset_round_trip_opens_the_groups_model(grouped, tiny_model_path: Path, tmp_path: Path) -> None:  # noqa: ANN001
    e, _main_src, _snare = grouped
    e.set_knob(1, -0.4, pad=6)
    assert e.wait_ready(TIMEOUT)
    path = e.save_preset(tmp_path / "kit.json")
    doc = json.loads(path.read_text())
    assert doc["groups"] == [{"name": "snare", "model": {"name": "tiny-spec.onnx",
                                                         "weights_sha256": e.group_sources[1].weights_hash,
                                                         "path": str(tiny_model_path.resolve())},
                              "pads": GROUP}]
    fresh = Engine(ModelSource.open(tiny_model_path), EngineConfig(seed=99))
    ctl = Controller(fresh, open_source=other_source)
    ctl.load_preset(str(path), block=True)
    assert ctl.last_error is None and fresh.group_names == ["main", "snare"]
    assert fresh.wait_ready(TIMEOUT)
    for p in range(PAD_COUNT):
        np.testing.assert_array_equal(fresh.pads[p].latent, e.pads[p].latent)
        np.testing.assert_array_equal(fresh.ready[p][0], e.ready[p][0])  # same models, same hits
    # without the controller (kickit render) the group is not opened: said so, its pads play the main model
    plain = Engine(ModelSource.open(tiny_model_path))
    assert any("pad group snare (tiny-spec.onnx) is not loaded here" in w for w in plain.load_preset(path))
    # a preset whose group pads collide is refused with one line naming the file
    doc["groups"].append({"name": "hat", "model": doc["groups"][0]["model"], "pads": [7, 8]})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(PresetError, match="bad.json: group 1 \\(hat\\): a pad is in two groups"):
        load_preset(bad, None)


def test_osc_model_load_per_group_and_bad_file(grouped, tiny_model_path: Path, tmp_path: Path) -> None:  # noqa: ANN001
    e, main_src, snare = grouped
    ctl = Controller(e, open_source=other_source)
    before = list(e.ready)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00" * 64)
    ctl.handle(Action("model_load", index=1, value=str(junk)))
    ctl._loader.join()
    assert ctl.model_errors == 1 and "junk.onnx" in ctl.last_error and "keeping tiny-spec.onnx" in ctl.last_error
    assert e.group_sources[1] is snare and e.ready == before
    ctl.handle(Action("model_load", index=5, value=str(tiny_model_path)))
    ctl._loader.join()
    assert ctl.model_errors == 2 and "no pad group 5" in ctl.last_error
    ctl.handle(Action("model_load", index=1, value=str(tiny_model_path)))
    ctl._loader.join()
    assert ctl.model_loads == 1 and e.group_sources[1] is not snare and e.source is main_src
    assert all(e.ready[p] is before[p] for p in range(PAD_COUNT) if p not in GROUP)
    st = ctl.status()
    assert st["groups"][1]["model"] == "tiny-spec.onnx" and st["model_loads"] == 1


def test_osc_encode_puts_the_samples_latent_on_the_pad(grouped, real_kick_paths, bad_audio_paths) -> None:  # noqa: ANN001
    e, _main_src, snare = grouped
    ctl = Controller(e)
    ctl.encode_budget = 3.0
    e.set_knob(2, 0.5, pad=5)
    assert e.wait_ready(TIMEOUT)
    old_latent, old_hit = e.pads[5].latent.copy(), e.ready[5]
    ctl.handle(Action("encode", pad=5, value=str(bad_audio_paths["garbage"])))
    ctl.encode_pad(5, "/nonexistent/kick.wav", block=True)
    assert ctl.encode_errors == 2 and "no such file" in ctl.last_error and "pad 5" in ctl.last_error
    np.testing.assert_array_equal(e.pads[5].latent, old_latent)
    assert e.ready[5] is old_hit and e.pads[5].knobs[2] == 0.5  # the pad keeps its sound
    ctl.encode_pad(5, str(real_kick_paths[0]), block=True)
    assert ctl.encodes == 1 and ctl.last_encode["pad"] == 5 and ctl.last_encode["method"] == "search"
    assert not np.array_equal(e.pads[5].latent, old_latent) and e.pads[5].knobs == [0.0] * 8
    assert e.wait_ready(TIMEOUT)
    np.testing.assert_array_equal(e.ready[5][0], expected(snare, e, 5))  # rendered by the pad's group model
    st = ctl.status()
    assert st["encodes"] == 1 and st["encode_errors"] == 2 and st["last_encode"]["distance"] > 0


# ----- the bridge and its command line -------------------------------------------------------------------
def test_bridge_with_a_group_from_options(tiny_model_path: Path, tmp_path: Path) -> None:
    bridge = Bridge(BridgeOptions(model=tiny_model_path, midi_in=None, osc_port=None, output="files",
                                  out_dir=tmp_path / "hits",
                                  groups=[GroupSpec("snare", tiny_model_path, (40, 41))], render_processes=0))
    try:
        bridge.start(TIMEOUT)
        s = bridge.status()
        assert s["groups"][1] == {"group": 1, "name": "snare", "model": "tiny-spec.onnx",
                                  "weights_hash": bridge.engine.source.weights_hash, "pads": [4, 5]}
    finally:
        bridge.stop()
    with pytest.raises(ValueError, match="note 70 is not a pad"):
        Bridge(BridgeOptions(model=tiny_model_path, midi_in=None, osc_port=None, output="files",
                             groups=[GroupSpec("snare", tiny_model_path, (70,))], render_processes=0))


def test_bridge_cli_bad_group_is_one_line(capsys) -> None:  # noqa: ANN001
    assert main(["bridge", "--group", "snare=x.onnx", "--files", "--midi-in", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--group" in err[0] and "NAME=MODEL.onnx:NOTES" in err[0]


def test_status_panel_lists_the_groups(grouped) -> None:  # noqa: ANN001
    from kickit.bridge.status import format_panel

    e, _main, _snare = grouped
    lines = format_panel(e.status(), width=200)
    assert lines[2] == "groups main: tiny-spec.onnx pads [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]  " \
                       "snare: tiny-spec.onnx pads [4, 5, 6, 7]"


@pytest.mark.jack
def test_groups_play_and_swap_on_a_real_jack_server(tiny_model_path: Path, data_dir: Path) -> None:
    """End to end: a VAE snare group beside the main model, MIDI in and audio out through a real JACK server
    (dummy backend), then a hot swap of the group over real UDP OSC while the main pads keep their hits."""
    import os

    pytest.importorskip("jack")
    from jackserver import JackServer, reinit_portaudio, stop_rig
    from kickit.bridge.jackprobe import JackProbe
    from test_bridge_jack import COMPARE, osc, played_exactly, wait_for

    vae = data_dir / "models" / "tiny-vae.onnx"
    server = JackServer().start()
    bridge = probe = None
    try:
        reinit_portaudio()
        bridge = Bridge(BridgeOptions(model=tiny_model_path, midi_api="jack", osc_port=0, output="device",
                                      midi_client_name=f"kickit-g{os.getpid()}", render_processes=1,
                                      groups=[GroupSpec("snare", vae, (40, 41, 42, 43))]))
        bridge.start(TIMEOUT)
        probe = JackProbe(server.name, seconds=30)
        outs = probe.find_port(f"{JACK_CLIENT}:", is_output=True)
        midi = probe.find_port(f"kickit-g{os.getpid()}", midi=True, is_input=True)
        probe.activate(outs, midi[0])
        probe.start_capture()
        e = bridge.engine
        assert [g["model"] for g in bridge.status()["groups"]] == ["tiny-spec.onnx", "tiny-vae.onnx"]
        snare_hit, kick_hit = e.ready[4][0], e.ready[0][0]
        main_on_4 = e.source.render(e.source.apply_knobs(e.pads[4].latent, e.pads[4].knobs)[None])[0]
        assert not np.array_equal(snare_hit[:, :COMPARE], main_on_4[:, :COMPARE])  # really the VAE's hit
        assert played_exactly(probe, 40, 127, snare_hit)[0], "note 40 did not play the snare group's hit"
        assert played_exactly(probe, 36, 127, kick_hit)[0], "note 36 did not play the main model's hit"
        osc(bridge.osc.port, "/kickit/model/load", str(tiny_model_path), 1)
        assert wait_for(lambda: bridge.controller.model_loads == 1)
        assert e.ready[0][0] is kick_hit and e.ready[4][0] is not snare_hit
        assert bridge.status()["groups"][1]["model"] == "tiny-spec.onnx"
        assert played_exactly(probe, 40, 127, e.ready[4][0])[0], "note 40 after the group's hot swap"
        assert played_exactly(probe, 36, 127, kick_hit)[0], "note 36 after the other group's swap"
    finally:
        stop_rig(probe, bridge, server)
