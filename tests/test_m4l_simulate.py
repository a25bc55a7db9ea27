"""The patch simulator's Max semantics, on small hand-made patches (the device itself runs in test_daw_e2e)."""

from __future__ import annotations

import pytest
from kickit.max_for_live.patcher import Patcher
from kickit.max_for_live.simulate import PatchRunner, SimError


def runner_for(build) -> PatchRunner:  # noqa: ANN001 - a function filling a Patcher
    p = Patcher()
    build(p)
    return PatchRunner(p.to_dict())


def test_trigger_fires_right_to_left_and_cold_inlets_store() -> None:
    def build(p: Patcher) -> None:
        load = p.obj("loadmess 7")
        t = p.obj("t i i")
        minus = p.obj("- 0")
        send = p.obj("udpsend 127.0.0.1 9")
        p.connect(load[0], t)
        p.connect(t[1], minus, 1)  # fires first: sets the right operand
        p.connect(t[0], minus, 0)  # then the hot inlet: 7 - 7
        p.connect(minus[0], send)

    r = runner_for(build)
    r.load()
    assert r.sent == [[0]]


def test_route_sprintf_fromsymbol_prepend() -> None:
    def build(p: Patcher) -> None:
        recv = p.obj("udpreceive 9001")
        route = p.obj("route /a /b")
        fmt = p.obj("sprintf /x/%ld/y %s")
        sym = p.obj("fromsymbol")
        pre = p.obj("prepend /other")
        send = p.obj("udpsend 127.0.0.1 9")
        p.connect(recv[0], route)
        p.connect(route[0], fmt)
        p.connect(fmt[0], sym)
        p.connect(sym[0], send)
        p.connect(route[2], pre)
        p.connect(pre[0], send)

    r = runner_for(build)
    r.receive("/a", [3, "hold"])
    r.receive("/b", [1])  # matched, but outlet 1 goes nowhere
    r.receive("/c", [1.5])
    assert r.sent == [["/x/3/y", "hold"], ["/other", "/c", 1.5]]


def test_message_box_dollar_args_and_set() -> None:
    def build(p: Patcher) -> None:
        recv = p.obj("udpreceive 9001")
        m = p.msg("/k $1 $2, /j 1")
        send = p.obj("udpsend 127.0.0.1 9")
        p.connect(recv[0], m)
        p.connect(m[0], send)

    r = runner_for(build)
    r.receive("a", [2.5])
    assert r.sent == [["/k", "a", 2.5], ["/j", 1]]


def test_unknown_object_and_feedback_loop() -> None:
    r = runner_for(lambda p: p.connect(p.obj("loadmess 1")[0], p.obj("udpsend 127.0.0.1 9")))
    r.objs["obj-2"].words = ["coll"]
    with pytest.raises(SimError, match="'coll' is not simulated"):
        r.load()

    def loop(p: Patcher) -> None:
        load = p.obj("loadmess 1")
        t = p.obj("t b")
        m = p.msg("1")
        p.connect(load[0], t)
        p.connect(t[0], m)
        p.connect(m[0], t)

    with pytest.raises(SimError, match="feedback loop"):
        runner_for(loop).load()
