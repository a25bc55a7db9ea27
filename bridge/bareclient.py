"""A bare audio client: the benchmarks' control for "xruns caused by the bridge".

``python -m kickit.bridge.bareclient --block 128`` opens the same kind of PortAudio output stream as the bridge
(stereo float32, the default device, ``latency="low"``, the same GIL switch interval) in a process that does
nothing else, and times its callback (which only writes silence) with the bridge's own measure
(:class:`kickit.bridge.outputs.CallbackTiming`). Its overruns are what this machine does to any Python audio
callback: the interpreter, the scheduler, a VM's stolen time. The bridge's overruns in excess of the bare
client's, over the same seconds on the same server, are the ones its own threads cause.

Protocol on stdin/stdout: a JSON line when the stream runs (``{"ready": ...}``), then one JSON line of
counters for every line read; end of input stops it. :class:`BareClient` runs it from a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from time import perf_counter
from typing import Any

from kickit.bridge import memory
from kickit.bridge.outputs import (
    SWITCH_INTERVAL,
    CallbackTiming,
    find_output_device,
    host_wait,
    use_jack_client_name,
)

JACK_NAME = "kickit-bare"  # its client's name on a JACK server (the server's xrun reports name it)


def serve(block: int, device: str | None = None) -> int:
    import sounddevice as sd

    timing = CallbackTiming()
    state: dict[str, Any] = {"stream": None, "callbacks": 0, "xruns": 0, "errors": 0}
    use_jack_client_name(JACK_NAME)
    idx, info = find_output_device(device)
    rate = int(round(info["default_samplerate"]))

    def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        t0 = perf_counter()
        wait = 0.0
        try:
            state["callbacks"] += 1
            if status:
                state["xruns"] += 1
            wait = host_wait(state["stream"], time_info)
            outdata.fill(0.0)
        except Exception:
            state["errors"] += 1
        end = perf_counter()
        timing.record(wait, end - t0, frames / rate, end)

    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))  # as the bridge (DeviceSink.start)
    memory.settle()  # as the bridge's audio process: no full collection of the imports' objects while playing
    stream = sd.OutputStream(device=idx, samplerate=rate, blocksize=block, channels=2, dtype="float32",
                             latency="low", callback=callback)
    state["stream"] = stream
    stream.start()

    def counters() -> str:
        return json.dumps({**timing.counters(), "callbacks": state["callbacks"], "xruns": state["xruns"],
                           "callback_errors": state["errors"]})

    print(json.dumps({"ready": str(info["name"]), "rate": rate, "block": block}), flush=True)
    try:
        for _line in sys.stdin:
            print(counters(), flush=True)
    finally:
        stream.abort()
        stream.close()
    return 0


class BareClient:
    """The bare client as a subprocess on the JACK server named in ``env`` (``JACK_DEFAULT_SERVER``)."""

    def __init__(self, block: int, env: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kickit.bridge.bareclient", "--block", str(block)],
                                     env=env or dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self._readline(timeout)
        if '"ready"' not in line:
            err = self.close()
            raise RuntimeError(f"bare audio client did not start: {(line or err).strip()[-300:]}")

    def _readline(self, timeout: float) -> str:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def counters(self) -> dict[str, Any]:
        """The client's counters now ({} when it does not answer)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            return dict(json.loads(self._readline(5.0)))
        except (OSError, ValueError, AssertionError):
            return {}

    def close(self) -> str:
        """Stop it; returns what it wrote to stderr."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read() if self.proc.stderr is not None else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kickit.bridge.bareclient", description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=128, help="frames per callback (default 128)")
    p.add_argument("--device", default=None, help="output device (default: the default device)")
    args = p.parse_args(argv)
    return serve(args.block, args.device)


if __name__ == "__main__":
    sys.exit(main())
