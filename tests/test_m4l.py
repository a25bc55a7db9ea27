"""The Max for Live device: built by code, its container, and the checker on good and broken devices."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest
from kickit.max_for_live import amxd, device
from kickit.max_for_live.check import (
    BridgeTable,
    bridge_table,
    check_file,
    check_patcher,
    normalise,
    osc_uses,
)
from kickit.max_for_live.cli import default_output

from kickit.cli import main

NAMES = ["pitch", "decay", "attack", "brightness", "width", "sub", "body", "click"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def doc() -> dict:
    return device.build_patcher(NAMES)


@pytest.fixture()
def built(tmp_path: Path, doc: dict) -> Path:
    return amxd.write(tmp_path / "kickit.amxd", doc)


def boxes(doc: dict) -> list[dict]:
    return [b["box"] for b in doc["patcher"]["boxes"]]


def by_text(doc: dict, text: str) -> dict:
    (box,) = [b for b in boxes(doc) if b.get("text") == text]
    return box


# ----- container ---------------------------------------------------------------------------------------


def test_container_layout(built: Path, doc: dict) -> None:
    data = built.read_bytes()
    assert data[:12] == b"ampf" + struct.pack("<I", 4) + b"iiii"
    assert data[12:24] == b"meta" + struct.pack("<I", 4) + b"\x00\x00\x00\x00"
    assert data[24:28] == b"ptch"
    (n,) = struct.unpack_from("<I", data, 28)
    assert 32 + n == len(data), "ptch length must cover the rest of the file"
    assert data[-1:] == b"\x00"
    assert json.loads(data[32:-1].decode("utf-8")) == doc
    dev = amxd.read(built)
    assert dev.device_type == "iiii" and dev.chunks == ("ampf", "meta", "ptch") and dev.patcher == doc


def test_build_is_deterministic(doc: dict) -> None:
    assert amxd.encode(device.build_patcher(NAMES)) == amxd.encode(doc)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-10], "says"),  # ptch length longer than what follows: truncated
        (lambda d: d[:28] + struct.pack("<I", 5) + d[32:], "bad chunk tag"),  # ptch length too short
        (lambda d: d[:4] + struct.pack("<I", 999_999_999) + d[8:], "says 999999999 bytes"),
        (lambda d: b"RIFF" + d[4:], "bad chunk tag b'RIFF' at byte 0"),
        (lambda d: d[:12] + d[24:] + b"meta" + struct.pack("<I", 4) + bytes(4), "must come before"),
        (lambda d: d[:8] + b"zzzz" + d[12:], "ampf chunk holds"),
        (lambda d: d[:24] + b"ptch" + struct.pack("<I", len(d) - 33) + d[32:-1], "NUL"),
        (lambda d: d[:24] + b"ptch" + struct.pack("<I", 6) + b"{bad\n\x00", "patcher JSON is invalid"),
        (lambda d: d[:24] + b"ptch" + struct.pack("<I", 4) + b"[1]\x00", "must be an object"),
        (lambda d: d[:24] + b"ptch" + struct.pack("<I", 5) + b"mx@c\x00", "frozen"),
        (lambda d: d[:12] + d[24:], "no 'meta' chunk"),
        (lambda d: b"", "empty file"),
        (lambda d: d[:5], "truncated chunk header"),
    ],
)
def test_malformed_container_one_line_error(built: Path, mutate, message: str) -> None:
    bad = built.with_name("bad.amxd")
    bad.write_bytes(mutate(built.read_bytes()))
    with pytest.raises(amxd.AmxdError) as e:
        amxd.read(bad)
    text = str(e.value)
    assert message in text and "\n" not in text and text.startswith(str(bad))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(amxd.AmxdError, match="cannot read"):
        amxd.read(tmp_path / "nope.amxd")


# ----- the device's contents ------------------------------------------------------------------------------


def test_built_device_passes_the_checker(doc: dict) -> None:
    docs = REPO / "docs" / "osc.md"
    assert docs.exists(), "docs/osc.md (the OSC contract) is missing"
    table = bridge_table()
    assert table is not None and table.sends is not None, "kickit.bridge.oscmap must publish SENDS"
    problems, uses = check_patcher(doc, docs_text=docs.read_text(), bridge=table)
    assert problems == []
    sent = {normalise(u.address) for u in uses if u.direction == "out"}
    assert {"/kickit/connect", "/kickit/status", "/kickit/knob/*", "/kickit/pad/*/trigger", "/kickit/pad/*/new",
            "/kickit/pad/*/store", "/kickit/pad/*/mode", "/kickit/pad/*/select"} <= sent
    received = {u.address for u in uses if u.direction == "in"}
    assert {"/kickit/hit/ready", "/kickit/knob/names", "/kickit/model"} <= received


def test_knobs_are_unique_automatable_parameters(doc: dict) -> None:
    dials = [b for b in boxes(doc) if b["maxclass"] == "live.dial"]
    assert len(dials) == device.N_KNOBS
    longs = []
    for dial, name in zip(dials, NAMES, strict=True):
        v = dial["saved_attribute_attributes"]["valueof"]
        assert dial["parameter_enable"] == 1
        assert v["parameter_shortname"] == name and v["parameter_longname"] == f"Knob {len(longs) + 1} {name}"
        assert (v["parameter_mmin"], v["parameter_mmax"], v["parameter_initial"]) == (-1.0, 1.0, [0.0])
        longs.append(v["parameter_longname"])
    params = [b["saved_attribute_attributes"]["valueof"]["parameter_longname"]
              for b in boxes(doc) if b.get("parameter_enable")]
    assert len(set(params)) == len(params)
    menu = next(b for b in boxes(doc) if b["maxclass"] == "live.menu")
    assert menu["saved_attribute_attributes"]["valueof"]["parameter_enum"] == ["hold", "fresh"]
    labels = {b["text"] for b in boxes(doc) if b["maxclass"] == "live.text"}
    assert {"New kick", "Store", "Randomize"} <= labels


def test_patch_wiring(doc: dict) -> None:
    """The signal and message paths the issue asks for exist, cord by cord."""
    ids = {b["id"]: b for b in boxes(doc)}
    cords = {(ln["patchline"]["source"][0], ln["patchline"]["destination"][0]) for ln in doc["patcher"]["lines"]}

    def text(i: str) -> str:
        return ids[i].get("text", ids[i]["maxclass"])

    def after(t: str) -> set[str]:
        return {text(d) for s, d in cords if text(s) == t}

    assert "stripnote" in after("notein")
    assert f"- {device.FIRST_NOTE}" in after("stripnote")
    assert "udpsend 127.0.0.1 9000" in after("fromsymbol")
    assert "t b a" in after("udpreceive 9001")
    for pad in range(device.N_PADS):
        assert f"buffer~ ---kickit_pad{pad}" in after("prepend replace")
        assert f"play~ ---kickit_pad{pad} 2" in after("start")
    players = [i for i in ids if text(i).startswith("play~")]
    assert len(players) == device.N_PADS
    plugout = by_text(doc, "plugout~ 1 2")["id"]
    into_out = [(s, ln["patchline"]["destination"][1]) for ln in doc["patcher"]["lines"]
                for s in [ln["patchline"]["source"][0]] if ln["patchline"]["destination"][0] == plugout]
    assert sorted(i for _, i in into_out) == [0] * device.N_PADS + [1] * device.N_PADS
    assert by_text(doc, "/kickit/connect 9001")
    zeros = {i for i in ids if text(i) == "set 0."}
    assert len(zeros) == device.N_KNOBS
    for z in zeros:  # Store and New kick both set the dial to 0 without sending it
        assert {s for s, d in cords if d == z} == {b["id"] for b in boxes(doc)
                                                   if b["maxclass"] == "newobj" and b["text"] == "t b"} - {
            s for s, d in cords if text(d).startswith("random")}


def test_default_knob_names_without_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import kickit.modelfile as mf

    monkeypatch.setattr(mf, "default_model_path", lambda: None)
    assert device.default_knob_names() == [f"knob {i}" for i in range(1, 9)]
    dials = [b for b in boxes(device.build_patcher()) if b["maxclass"] == "live.dial"]
    assert [d["saved_attribute_attributes"]["valueof"]["parameter_longname"] for d in dials] == [
        f"Knob {i}" for i in range(1, 9)]


def test_default_knob_names_from_a_model(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    import kickit.modelfile as mf

    tiny = data_dir / "models" / "tiny-spec.onnx"
    if not tiny.exists():
        pytest.skip("tests/data/models/tiny-spec.onnx not built")
    monkeypatch.setattr(mf, "default_model_path", lambda: tiny)
    names = [k.name for k in mf.load_model(tiny, probe=False).knobs][:8]
    assert device.default_knob_names()[: len(names)] == names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"knob_names": NAMES[:7]}, "need 8 knob names"),
        ({"knob_names": ["a"] * 8}, "unique"),
        ({"knob_names": [*NAMES[:7], ""]}, "empty"),
        ({"knob_names": [*NAMES[:7], 'a"b']}, "cannot keep"),
        ({"knob_names": NAMES, "device_port": 9000}, "must differ"),
        ({"knob_names": [*NAMES[:7], "Store"]}, "short name 'Store'"),
        ({"knob_names": [*NAMES[:6], "body_brightness_a", "body_brightness_b"]}, "short name .body_brightn."),
        ({"knob_names": NAMES, "bridge_port": 70000}, "not a UDP port"),
    ],
)
def test_build_refuses_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        device.build_patcher(**kwargs)


# ----- the checker on broken devices ------------------------------------------------------------------------


def _problems(doc: dict) -> list[str]:
    return check_patcher(doc)[0]


def test_dangling_patch_cord(doc: dict) -> None:
    bad = copy.deepcopy(doc)
    bad["patcher"]["lines"].append({"patchline": {"source": ["obj-1", 0], "destination": ["obj-9999", 0]}})
    assert _problems(bad) == ["patch cord obj-1:0 -> obj-9999:0: destination box obj-9999 does not exist"]
    bad = copy.deepcopy(doc)
    bad["patcher"]["lines"].append({"patchline": {"source": ["obj-404", 0], "destination": ["obj-1", 0]}})
    assert "source box obj-404 does not exist" in _problems(bad)[0]


def test_subpatcher_cords_are_checked(doc: dict) -> None:
    bad = copy.deepcopy(doc)
    sub = {"boxes": [{"box": {"id": "obj-1", "maxclass": "newobj", "text": "t b", "numinlets": 1,
                              "numoutlets": 1, "outlettype": ["bang"]}}],
           "lines": [{"patchline": {"source": ["obj-1", 0], "destination": ["obj-7", 0]}}]}
    bad["patcher"]["boxes"].append({"box": {"id": "obj-sub", "maxclass": "newobj", "text": "p helper",
                                            "numinlets": 0, "numoutlets": 0, "patcher": sub}})
    assert _problems(bad) == ["in subpatcher obj-sub: patch cord obj-1:0 -> obj-7:0: "
                              "destination box obj-7 does not exist"]


def test_outlet_and_inlet_out_of_range(doc: dict) -> None:
    notein = by_text(doc, "notein")["id"]
    send = by_text(doc, "udpsend 127.0.0.1 9000")["id"]
    bad = copy.deepcopy(doc)
    bad["patcher"]["lines"].append({"patchline": {"source": [notein, 3], "destination": [send, 0]}})
    bad["patcher"]["lines"].append({"patchline": {"source": [notein, 0], "destination": [send, 1]}})
    problems = _problems(bad)
    assert any("has 3 outlets, no outlet 3" in p for p in problems)
    assert any("has 1 inlets, no inlet 1" in p for p in problems)


def test_duplicate_box_ids_and_wrong_counts(doc: dict) -> None:
    bad = copy.deepcopy(doc)
    bad["patcher"]["boxes"].append(copy.deepcopy(bad["patcher"]["boxes"][0]))
    assert any("used twice" in p for p in _problems(bad))
    bad = copy.deepcopy(doc)
    next(b["box"] for b in bad["patcher"]["boxes"] if b["box"].get("text") == "stripnote")["numoutlets"] = 5
    assert any("declares 2 inlets/5 outlets, Max gives it 2/2" in p for p in _problems(bad))


def test_duplicate_parameter_names(doc: dict) -> None:
    bad = copy.deepcopy(doc)
    dials = [b["box"] for b in bad["patcher"]["boxes"] if b["box"]["maxclass"] == "live.dial"]
    first = dials[0]["saved_attribute_attributes"]["valueof"]["parameter_longname"]
    dials[1]["saved_attribute_attributes"]["valueof"]["parameter_longname"] = first
    problems = _problems(bad)
    assert len(problems) == 1 and f"parameter name {first!r} is used by both" in problems[0]
    bad = copy.deepcopy(doc)
    dials = [b["box"] for b in bad["patcher"]["boxes"] if b["box"]["maxclass"] == "live.dial"]
    dials[2]["saved_attribute_attributes"]["valueof"]["parameter_shortname"] = "pitch"
    assert _problems(bad) == [f"parameter short name 'pitch' is used by both {dials[0]['id']} and {dials[2]['id']} "
                              "(names must be unique)"]


def test_bad_parameter_range(doc: dict) -> None:
    bad = copy.deepcopy(doc)
    dial = next(b["box"] for b in bad["patcher"]["boxes"] if b["box"]["maxclass"] == "live.dial")
    dial["saved_attribute_attributes"]["valueof"]["parameter_initial"] = [3.0]
    assert any("initial value [3.0] outside -1.0..1.0" in p for p in _problems(bad))


def _with_message(doc: dict, text: str) -> dict:
    bad = copy.deepcopy(doc)
    send = by_text(bad, "udpsend 127.0.0.1 9000")["id"]
    bad["patcher"]["boxes"].append({"box": {"id": "obj-extra", "maxclass": "message", "numinlets": 2,
                                            "numoutlets": 1, "outlettype": [""], "text": text,
                                            "patching_rect": [0.0, 0.0, 80.0, 22.0]}})
    bad["patcher"]["lines"].append({"patchline": {"source": ["obj-extra", 0], "destination": [send, 0]}})
    return bad


def test_unknown_osc_address_against_docs(doc: dict) -> None:
    docs = "Addresses: `/kickit/knob/<i> f`, `/kickit/pad/<n>/trigger`, `/kickit/connect i`."
    problems, _ = check_patcher(_with_message(doc, "/kickit/explode 1"), docs_text=docs)
    assert "OSC address /kickit/explode (box obj-extra) is not in docs/osc.md" in problems


def test_osc_checked_against_the_bridge(doc: dict) -> None:
    table = bridge_table()
    if table is None:
        pytest.fail("kickit.bridge.oscmap must be importable: the device is checked against the bridge")
    problems, _ = check_patcher(_with_message(doc, "/kickit/explode 1"), bridge=table)
    assert problems == ["OSC message '/kickit/explode 1' (box obj-extra) is dropped by the bridge: unknown address"]
    problems, _ = check_patcher(_with_message(doc, "/kickit/pad/99/new"), bridge=table)
    assert len(problems) == 1 and "pad 99 out of range" in problems[0]


def test_routed_addresses_must_be_sent_by_the_bridge(doc: dict) -> None:
    table = BridgeTable(handles=lambda a, args: None, sends={"/kickit/knob/names", "/kickit/model",
                                                              "/kickit/status"})
    problems, _ = check_patcher(doc, bridge=table)
    assert problems == [f"OSC address /kickit/hit/ready (box {by_text(doc, _inbox_text(doc))['id']}) "
                        "is expected from the bridge, which never sends it"]


def _inbox_text(doc: dict) -> str:
    return next(b["text"] for b in boxes(doc) if b.get("text", "").startswith("route /kickit/"))


def test_osc_uses_types(doc: dict) -> None:
    uses = {(u.direction, u.address): u for u in osc_uses(doc)}
    assert uses[("out", "/kickit/pad/{}/trigger")].args == ("i",)
    assert uses[("out", "/kickit/pad/{}/mode")].args == ("s",)
    assert uses[("out", "/kickit/knob/3")].args == ("f",)
    assert uses[("out", "/kickit/connect")].values == (9001,)
    assert uses[("out", "/kickit/pad/{}/select")].args == ()
    extra = {u.address: u for u in osc_uses(_with_message(doc, "/kickit/pad/$1/trigger $f2, /kickit/seed 7"))}
    assert (extra["/kickit/pad/{}/trigger"].args, extra["/kickit/pad/{}/trigger"].values) == (("f",), (None,))
    assert (extra["/kickit/seed"].args, extra["/kickit/seed"].values) == (("i",), (7,))


# ----- CLI ----------------------------------------------------------------------------------------------------


def test_cli_build_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dev.amxd"
    assert main(["m4l", "build", "-o", str(out), "--knobs", *NAMES, "--device-port", "9123"]) == 0
    assert "knobs: pitch, decay" in capsys.readouterr().out
    assert main(["m4l", "check", str(out)]) == 0
    assert ": ok (" in capsys.readouterr().out
    assert by_text(amxd.read(out).patcher, "/kickit/connect 9123")


def test_cli_check_reports_problems(tmp_path: Path, built: Path, doc: dict,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(doc)
    bad["patcher"]["lines"].append({"patchline": {"source": ["obj-1", 0], "destination": ["obj-9999", 0]}})
    path = amxd.write(tmp_path / "bad.amxd", bad)
    assert main(["m4l", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: patch cord obj-1:0 -> obj-9999:0: destination box obj-9999 does not exist" in err
    broken = tmp_path / "broken.amxd"
    broken.write_bytes(built.read_bytes()[:-100])
    assert main(["m4l", "check", str(broken)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0] and "truncated" in lines[0]


def test_cli_build_refuses_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["m4l", "build", "-o", str(tmp_path / "x.amxd"), "--knobs", *(["same"] * 8)]) == 2
    assert "unique" in capsys.readouterr().err
    assert not (tmp_path / "x.amxd").exists()


def test_committed_device_is_current() -> None:
    """max_for_live/kickit.amxd is what the source builds (rebuild: kickit m4l build)."""
    path = default_output()
    assert path.exists(), "max_for_live/kickit.amxd missing: run kickit m4l build"
    report = check_file(path)
    assert report.problems == []
    committed = amxd.read(path).patcher
    labels = {b["box"]["varname"]: b["box"]["text"] for b in committed["patcher"]["boxes"]
              if b["box"].get("varname", "").startswith("label ")}
    full = [labels[f"label {i + 1}"] for i in range(device.N_KNOBS)]
    assert amxd.encode(device.build_patcher(full)) == path.read_bytes(), \
        "max_for_live/kickit.amxd is out of date with max_for_live/device.py: run kickit m4l build"
