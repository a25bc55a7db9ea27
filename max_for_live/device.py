"""The readable source of the kickit Max for Live instrument.

:func:`build_patcher` lays out the whole device as code; ``kickit m4l build`` wraps its JSON in the .amxd
container (max_for_live/amxd.py). What the device does, section by section:

* **Connection**: ``udpsend <host> <bridge port>`` talks to the bridge, ``udpreceive <device port>`` listens.
  When Live has loaded the device (``live.thisdevice``) it registers its port with ``/kickit/connect i``.
  A ``metro`` pings every 2 s: ``/kickit/status`` while connected, ``/kickit/connect i`` again while not; a
  ``delay`` armed by each ping and cancelled by any message from the bridge flips the status line to
  "not answering", so a bridge started after the device (or restarted) is picked up by itself.
* **MIDI from the track**: ``notein`` -> ``stripnote`` -> pad = note - 36 (pads 0..15, others ignored) ->
  ``/kickit/pad/<n>/trigger <velocity 1..127>`` to the bridge (fresh mode advances there), and the pad's
  ``buffer~`` is played at once, sample-accurate, inside Live: ``play~`` per pad, scaled by velocity,
  summed into ``plugout~``.
* **Hits**: ``/kickit/hit/ready <pad> <path>`` -> ``route`` by pad -> ``replace <path>`` into that pad's
  ``buffer~`` (device-local names ``---kickit_padN``, so two devices in one set do not share buffers).
* **Controls** (all Live parameters, saved with the set and automatable): 8 ``live.dial`` knobs (-1..1,
  each sends ``/kickit/knob/<i> f``), the pad they edit (``live.numbox`` -> ``/kickit/pad/<n>/select``),
  New kick / Store / Randomize buttons (``live.text``), the pad mode menu (``live.menu`` hold/fresh ->
  ``/kickit/pad/<n>/mode s``).
* **Status**: ``/kickit/model s`` and ``/kickit/knob/names`` update the labels; a status line shows the
  connection.

Only the OSC addresses of docs/osc.md are used; ``kickit m4l check`` verifies that against the bridge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kickit.max_for_live.patcher import Box, Patcher

log = logging.getLogger("kickit.m4l")

N_KNOBS = 8
N_PADS = 16
FIRST_NOTE = 36
DEFAULT_BRIDGE_HOST = "127.0.0.1"
DEFAULT_BRIDGE_PORT = 9000
DEFAULT_DEVICE_PORT = 9001
PING_MS = 2000
ANSWER_TIMEOUT_MS = 1500
MODES = ("hold", "fresh")
DEVICE_WIDTH = 470.0


def default_knob_names() -> list[str]:
    """Knob names of the shipped model (its metadata, read without running it), else ``knob 1..8``."""
    names = [f"knob {i + 1}" for i in range(N_KNOBS)]
    try:
        from kickit.modelfile import default_model_path, load_model

        path = default_model_path()
        if path is not None:
            model = load_model(path, probe=False)
            for i, k in enumerate(model.knobs[:N_KNOBS]):
                names[i] = k.name
    except Exception as e:  # noqa: BLE001 - no usable shipped model: keep the generic names, say why
        log.warning("knob names: the shipped model is not usable (%s); using 'knob 1..8'", e)
    return names


def _param(longname: str, shortname: str, ptype: int, **extra: Any) -> dict[str, Any]:
    """Box attributes that make a UI object a Live parameter (saved with the set, automatable)."""
    valueof: dict[str, Any] = {
        "parameter_longname": longname,
        "parameter_shortname": shortname,
        "parameter_type": ptype,  # 0 float, 1 int, 2 enum
    }
    valueof.update(extra)
    return {"parameter_enable": 1, "saved_attribute_attributes": {"valueof": valueof}, "varname": longname}


def _check_names(names: Sequence[str]) -> list[str]:
    out = [str(n).strip() for n in names]
    if len(out) != N_KNOBS:
        raise ValueError(f"need {N_KNOBS} knob names, got {len(out)}")
    for n in out:
        if not n:
            raise ValueError("knob names must not be empty")
        if any(c in n for c in "\"\\;,{}$"):
            raise ValueError(f"knob name {n!r} contains a character Max cannot keep in a parameter name")
    if len(set(out)) != len(out):
        raise ValueError(f"knob names must be unique: {out}")
    return out


def _check_unique_parameters(p: Patcher) -> None:
    for key, what in (("parameter_longname", "name"), ("parameter_shortname", "short name")):
        seen: set[str] = set()
        for b in p.boxes:
            if b["box"].get("parameter_enable"):
                name = b["box"]["saved_attribute_attributes"]["valueof"][key]
                if name in seen:
                    raise ValueError(f"two controls would have the parameter {what} {name!r}: rename the knob")
                seen.add(name)


def build_patcher(
    knob_names: Sequence[str] | None = None,
    *,
    bridge_host: str = DEFAULT_BRIDGE_HOST,
    bridge_port: int = DEFAULT_BRIDGE_PORT,
    device_port: int = DEFAULT_DEVICE_PORT,
    model_name: str = "",
) -> dict[str, Any]:
    """The device's patcher JSON (``{"patcher": {...}}``)."""
    names = _check_names(knob_names if knob_names is not None else default_knob_names())
    for what, port in (("bridge port", bridge_port), ("device port", device_port)):
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"{what} {port} is not a UDP port (1..65535)")
    if bridge_port == device_port:
        raise ValueError(f"the device port must differ from the bridge port ({bridge_port})")
    p = Patcher()
    addr = f"{bridge_host}:{bridge_port}"

    # ----- connection ------------------------------------------------------------------------------------
    send = p.obj(f"udpsend {bridge_host} {bridge_port}")
    recv = p.obj(f"udpreceive {device_port}")
    thisdevice = p.obj("live.thisdevice")
    connect = p.msg(f"/kickit/connect {device_port}")
    status_q = p.msg("/kickit/status")
    p.connect(thisdevice[0], connect)
    p.connect(connect[0], send)
    p.connect(status_q[0], send)
    p.newline()
    metro_on = p.obj("loadmess 1")
    metro = p.obj(f"metro {PING_MS}")
    tick = p.obj("t b b")
    gate_init = p.obj("loadmess 2")
    gate = p.obj("gate 2")  # outlet 0 (state 1, connected): status ping; outlet 1 (state 2): connect again
    timeout = p.obj(f"delay {ANSWER_TIMEOUT_MS}")
    p.connect(metro_on[0], metro)
    p.connect(metro[0], tick)
    p.connect(tick[1], timeout)
    p.connect(tick[0], gate, 1)
    p.connect(gate_init[0], gate, 0)
    p.connect(gate[0], status_q)
    p.connect(gate[1], connect)
    p.newline()
    status_line = p.add("comment", f"kickit: looking for the bridge on {addr}", width=300.0,
                        presentation=[8.0, 148.0, 300.0, 18.0], varname="status line")
    model_line = p.add("comment", "model: (not connected)", width=220.0, presentation=[8.0, 4.0, 300.0, 18.0],
                       varname="model line")
    alive = p.obj("t b a")  # any message from the bridge: it is alive; then route it
    stop = p.msg("stop")
    set_connected = p.msg("1")
    set_lost = p.msg("2")
    connected_text = p.msg(f"set connected to the bridge on {addr}")
    lost_text = p.msg(f"set bridge not answering on {addr} (start: kickit bridge --daw)")
    p.connect(recv[0], alive)
    p.connect(alive[0], stop)
    p.connect(alive[0], set_connected)
    p.connect(alive[0], connected_text)
    p.connect(stop[0], timeout)
    p.connect(set_connected[0], gate, 0)
    p.connect(connected_text[0], status_line)
    p.connect(timeout[0], set_lost)
    p.connect(timeout[0], lost_text)
    p.connect(set_lost[0], gate, 0)
    p.connect(lost_text[0], status_line)
    p.newline()

    # ----- messages from the bridge -----------------------------------------------------------------------
    inbox = p.obj("route /kickit/hit/ready /kickit/knob/names /kickit/model /kickit/status")
    p.connect(alive[1], inbox)
    model_set = p.obj("prepend set model:")
    p.connect(inbox[2], model_set)
    p.connect(model_set[0], model_line)
    names_split = p.obj("unpack " + " ".join(["s"] * N_KNOBS))
    p.connect(inbox[1], names_split)
    by_pad = p.obj("route " + " ".join(str(i) for i in range(N_PADS)))
    p.connect(inbox[0], by_pad)
    p.newline()

    # ----- pads: buffer~ per pad, played on note-on -------------------------------------------------------
    notein = p.obj("notein")
    strip = p.obj("stripnote")
    minus = p.obj(f"- {FIRST_NOTE}")
    in_range = p.obj(f"split 0 {N_PADS - 1}")
    note_pack = p.obj("pack 0 0")
    trigger_fmt = p.obj("sprintf /kickit/pad/%ld/trigger %ld")
    trigger_msg = p.obj("fromsymbol")
    p.connect(notein[0], strip, 0)
    p.connect(notein[1], strip, 1)
    p.connect(strip[0], minus)
    p.connect(strip[1], note_pack, 1)
    p.connect(minus[0], in_range)
    p.connect(in_range[0], note_pack, 0)
    p.connect(note_pack[0], trigger_fmt)
    p.connect(trigger_fmt[0], trigger_msg)
    p.connect(trigger_msg[0], send)
    play_by_pad = p.obj("route " + " ".join(str(i) for i in range(N_PADS)))
    p.connect(note_pack[0], play_by_pad)
    out = p.obj("plugout~ 1 2")
    p.newline()
    for pad in range(N_PADS):
        name = f"---kickit_pad{pad}"
        replace = p.obj("prepend replace")
        buf = p.obj(f"buffer~ {name}")
        p.connect(by_pad[pad], replace)
        p.connect(replace[0], buf)
        gain = p.obj("/ 127.")
        fire = p.obj("t b f")
        start = p.msg("start")
        player = p.obj(f"play~ {name} 2")
        left = p.obj("*~ 0.")
        right = p.obj("*~ 0.")
        p.connect(play_by_pad[pad], gain)
        p.connect(gain[0], fire)
        p.connect(fire[1], left, 1)
        p.connect(fire[1], right, 1)
        p.connect(fire[0], start)
        p.connect(start[0], player)
        p.connect(player[0], left, 0)
        p.connect(player[1], right, 0)
        p.connect(left[0], out, 0)  # signals into one inlet are summed
        p.connect(right[0], out, 1)
        p.newline()

    # ----- the selected pad and its buttons ---------------------------------------------------------------
    pad_box = p.add("live.numbox", width=44.0, height=15.0, presentation=[8.0, 118.0, 44.0, 15.0],
                    **_param("Pad", "Pad", 1, parameter_mmin=0.0, parameter_mmax=float(N_PADS - 1),
                             parameter_initial=[0], parameter_initial_enable=1, parameter_unitstyle=0))
    p.add("comment", "pad", width=40.0, presentation=[8.0, 102.0, 40.0, 18.0])
    pad_hold = p.obj("t i i")
    current_pad = p.obj("i")
    select_fmt = p.obj("sprintf /kickit/pad/%ld/select")
    select_msg = p.obj("fromsymbol")
    p.connect(pad_box[0], pad_hold)
    p.connect(pad_hold[1], current_pad, 1)
    p.connect(pad_hold[0], select_fmt)
    p.connect(select_fmt[0], select_msg)
    p.connect(select_msg[0], send)
    p.newline()

    def pad_button(label: str, longname: str, fmt: str, x: float) -> Box:
        button = p.add("live.text", text=label, width=56.0, height=15.0, presentation=[x, 118.0, 56.0, 15.0],
                       mode=0, **_param(longname, label, 2, parameter_mmax=1.0,
                                        parameter_enum=["off", "on"]))
        bang = p.obj("t b")
        pad_now = p.obj("i")
        fmt_box = p.obj(f"sprintf {fmt}")
        msg = p.obj("fromsymbol")
        p.connect(button[0], bang)
        p.connect(bang[0], pad_now)
        p.connect(pad_hold[1], pad_now, 1)
        p.connect(pad_now[0], fmt_box)
        p.connect(fmt_box[0], msg)
        p.connect(msg[0], send)
        p.newline()
        return bang

    new_kick = pad_button("New kick", "New kick", "/kickit/pad/%ld/new", 60.0)
    store = pad_button("Store", "Store", "/kickit/pad/%ld/store", 122.0)
    randomize = p.add("live.text", text="Randomize", width=64.0, height=15.0,
                      presentation=[184.0, 118.0, 64.0, 15.0], mode=0,
                      **_param("Randomize", "Randomize", 2, parameter_mmax=1.0, parameter_enum=["off", "on"]))
    random_bang = p.obj("t b")
    p.connect(randomize[0], random_bang)

    # pad mode menu: index -> "symbol hold|fresh" into the cold inlet, then the pad number fires
    menu = p.add("live.menu", width=60.0, height=15.0, presentation=[256.0, 118.0, 60.0, 15.0],
                 **_param("Pad mode", "Mode", 2, parameter_mmax=float(len(MODES) - 1),
                          parameter_enum=list(MODES), parameter_initial=[0], parameter_initial_enable=1))
    menu_split = p.obj("t b i")
    which = p.obj("sel " + " ".join(str(i) for i in range(len(MODES))))
    mode_fmt = p.obj("sprintf /kickit/pad/%ld/mode %s")
    mode_msg = p.obj("fromsymbol")
    mode_pad = p.obj("i")
    p.connect(menu[0], menu_split)
    p.connect(menu_split[1], which)
    for i, mode in enumerate(MODES):
        sym = p.msg(f"symbol {mode}")
        p.connect(which[i], sym)
        p.connect(sym[0], mode_fmt, 1)
    p.connect(pad_hold[1], mode_pad, 1)
    p.connect(menu_split[0], mode_pad)
    p.connect(mode_pad[0], mode_fmt, 0)
    p.connect(mode_fmt[0], mode_msg)
    p.connect(mode_msg[0], send)
    p.newline()

    # ----- the 8 knobs -------------------------------------------------------------------------------------
    for i, name in enumerate(names):
        x = 8.0 + i * 56.0
        label = p.add("comment", name, width=54.0, presentation=[x, 24.0, 54.0, 18.0], varname=f"label {i + 1}")
        longname = f"Knob {i + 1}" if name.lower() == f"knob {i + 1}" else f"Knob {i + 1} {name}"
        dial = p.add("live.dial", width=44.0, height=48.0, presentation=[x, 42.0, 44.0, 48.0],
                     **_param(longname, name[:12], 0, parameter_mmin=-1.0, parameter_mmax=1.0,
                              parameter_initial=[0.0], parameter_initial_enable=1, parameter_unitstyle=1))
        send_knob = p.obj(f"prepend /kickit/knob/{i}")
        p.connect(dial[0], send_knob)
        p.connect(send_knob[0], send)
        label_set = p.obj("prepend set")
        p.connect(names_split[i], label_set)
        p.connect(label_set[0], label)
        rnd = p.obj("random 2001")
        scale = p.obj("expr ($i1 - 1000) / 1000.")
        p.connect(random_bang[0], rnd)
        p.connect(rnd[0], scale)
        p.connect(scale[0], dial)
        zero = p.msg("set 0.")  # Store bakes the offsets into the pad, New starts over: the knobs read 0 again
        p.connect(store[0], zero)
        p.connect(new_kick[0], zero)
        p.connect(zero[0], dial)
        p.newline()

    _check_unique_parameters(p)
    parameters = {
        b["box"]["id"]: [
            b["box"]["saved_attribute_attributes"]["valueof"]["parameter_longname"],
            b["box"]["saved_attribute_attributes"]["valueof"]["parameter_shortname"],
            0,
        ]
        for b in p.boxes
        if b["box"].get("parameter_enable")
    }
    parameters["parameterbanks"] = {
        "0": {"index": 0, "name": "Knobs", "parameters": [parameters[b["box"]["id"]][0] for b in p.boxes
                                                           if b["box"]["maxclass"] == "live.dial"]},
    }
    return p.to_dict(
        fileversion=1,
        appversion={"major": 8, "minor": 6, "revision": 0, "architecture": "x64", "modernui": 1},
        classnamespace="box",
        rect=[100.0, 100.0, 1280.0, 900.0],
        openrect=[0.0, 0.0, DEVICE_WIDTH, 169.0],
        openinpresentation=1,
        default_fontsize=10.0,
        default_fontname="Arial Bold",
        gridsize=[8.0, 8.0],
        devicewidth=DEVICE_WIDTH,
        description=f"kickit: neural stereo kicks from the kickit bridge ({addr}); model {model_name or 'any'}",
        latency=0,
        is_mpe=0,
        autosave=0,
        parameters=parameters,
        dependency_cache=[],
    )
