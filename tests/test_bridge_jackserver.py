"""The reusable JACK helper itself (tests/jackserver.py): the fixture gives a running dummy server with a
unique name, sets JACK_DEFAULT_SERVER while it runs and stops it afterwards."""

from __future__ import annotations

import os
import subprocess

import pytest
from jackserver import JackServer

pytestmark = pytest.mark.jack


def ports(name: str) -> str:
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    r = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True, timeout=10)
    return r.stdout if r.returncode == 0 else ""


def test_jack_server_fixture(jack_server: JackServer) -> None:
    assert os.environ["JACK_DEFAULT_SERVER"] == jack_server.name
    assert jack_server.name.startswith("kickit-test-") and jack_server.rate == 44100 and jack_server.period == 128
    assert "system:playback_1" in ports(jack_server.name)


def test_jack_server_stops_and_restores_the_environment() -> None:
    before = os.environ.get("JACK_DEFAULT_SERVER")
    with JackServer(period=256) as server:
        assert "system:capture_2" in ports(server.name)
        proc = server.proc
    assert proc is not None and proc.poll() is not None
    assert os.environ.get("JACK_DEFAULT_SERVER") == before
    assert ports(server.name) == ""
