"""A real JACK server on the dummy backend for tests and benchmarks: a real audio device and real MIDI ports
on a machine with no sound card.

    with JackServer(period=128) as server:      # unique name, sets JACK_DEFAULT_SERVER while running
        ...                                      # server.name, server.rate, server.period

The pytest fixture :func:`jack_server` (registered in tests/conftest.py) starts one per test and skips the
test when ``jackd`` is not installed. ``sounddevice`` enumerates devices when PortAudio initialises, so code
under test must start (or re-initialise) PortAudio after the server is up; :func:`reinit_portaudio` does that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


class JackUnavailable(RuntimeError):
    """jackd is not installed or did not start (the message says which, with its log)."""


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies (a crashed test run leaves none)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _ready(name: str) -> bool:
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    try:
        r = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and b"system:playback_1" in r.stdout


class JackServer:
    """Start ``jackd -n NAME [--realtime] -d dummy -r RATE -p PERIOD``; stop it on exit (and restore env)."""

    def __init__(self, name: str | None = None, rate: int = 44100, period: int = 128,
                 realtime: bool | None = None, timeout: float = 10.0) -> None:
        self.name = name or f"kickit-test-{uuid.uuid4().hex[:8]}"
        self.rate = int(rate)
        self.period = int(period)
        self.realtime = (os.geteuid() == 0) if realtime is None else realtime
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._saved_env: dict[str, str | None] = {}

    def start(self) -> JackServer:
        jackd = shutil.which("jackd")
        if jackd is None:
            raise JackUnavailable("jackd is not installed (apt-get install jackd2)")
        fd, log = tempfile.mkstemp(prefix="jackd-", suffix=".log")
        self._log = Path(log)
        cmd = [jackd, "-n", self.name, *(["--realtime"] if self.realtime else ["--no-realtime"]),
               "-d", "dummy", "-r", str(self.rate), "-p", str(self.period)]
        with os.fdopen(fd, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _ready(self.name):
                for key, value in (("JACK_DEFAULT_SERVER", self.name), ("JACK_NO_START_SERVER", "1")):
                    self._saved_env[key] = os.environ.get(key)
                    os.environ[key] = value
                return self
            time.sleep(0.05)
        text = self._log.read_text(errors="replace")[-2000:]
        self.stop()
        raise JackUnavailable(f"jackd {self.name!r} did not start: {text.strip()}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log and self._log.exists() else ""

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate_portaudio() -> None:
    """Terminate sounddevice's PortAudio instance if it is initialised (a bridge whose audio callback runs in
    a process of its own has already let go of it in this process)."""
    import sounddevice as sd

    while sd._initialized > 0:
        sd._terminate()


def stop_rig(probe: object, bridge: object, server: JackServer) -> None:
    """Tear down an in-process bridge on a test server: the probe client, the bridge, PortAudio (while the
    server still runs: its JACK client must close cleanly), the server; then PortAudio again without it."""
    import sounddevice as sd

    if probe is not None:
        probe.close()  # type: ignore[attr-defined]
    if bridge is not None:
        bridge.stop()  # type: ignore[attr-defined]
    terminate_portaudio()
    server.stop()
    sd._initialize()


def reinit_portaudio() -> None:
    """Make an already imported sounddevice see the devices of the JACK server started after its import."""
    import sounddevice as sd

    terminate_portaudio()
    sd._initialize()


@pytest.fixture
def jack_server() -> Iterator[JackServer]:
    """A fresh JACK dummy server (44.1 kHz, period 128) for one test; skipped when jackd is missing."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed")
    server = JackServer().start()
    try:
        yield server
    finally:
        server.stop()


def start_bridge(model: Path, server: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """``kickit bridge`` as a subprocess on JACK server ``server`` (no MIDI input), OSC on a free UDP port;
    stderr is piped as text. Returns the process and its OSC port."""
    import socket
    import sys

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kickit.cli", "bridge", "--model", str(model), "--midi-in", "none",
         "--osc-port", str(port), *args],
        env=dict(os.environ, JACK_DEFAULT_SERVER=server), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    return proc, port


def stop_bridge(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C a bridge started by :func:`start_bridge`; returns its stderr (killed, and the error re-raised,
    when it does not exit within 30 s)."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return err
