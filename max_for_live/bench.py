"""``kickit bench daw``: how fast a knob move on the Max for Live device comes back as a new hit file.

Runs the bridge in DAW mode in this process (the same assembly as ``kickit bridge --daw``: engine, OSC server
on UDP, the DAW sink writing real files) and a UDP client that sends the knob messages exactly as the patch
builds them (``/kickit/knob/<i> f``, from max_for_live/device.py). Measured per move: knob datagram sent ->
``/kickit/hit/ready`` received (render + 32-bit WAV written atomically + announcement), i.e. when Live can
load the new kick into the pad's ``buffer~``. Moves are sent one at a time (no coalescing).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kickit.benchdoc import write_section


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    parser.add_argument("--moves", type=int, default=60, help="knob moves to time (default %(default)s)")


def _pctl(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def run(args: argparse.Namespace) -> int:
    from kickit.bridge.app import Bridge, BridgeOptions
    from kickit.bridge.oscmap import build
    from kickit.max_for_live import device
    from kickit.max_for_live.simulate import PatchRunner
    from pythonosc.osc_message import OscMessage

    from kickit.modelfile import ModelError, default_model_path

    model = args.model or default_model_path()
    if model is None:
        print("kickit bench daw: no model given and the default model is not installed; pass --model FILE.onnx",
              file=sys.stderr)
        return 2
    if args.moves < 5:
        print("kickit bench daw: --moves must be at least 5", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kickit-bench-daw-") as tmp:
        try:
            bridge = Bridge(BridgeOptions(model=Path(model), midi_in=None, osc_port=0, output="daw",
                                          daw_dir=Path(tmp)))
            bridge.start()
        except (ModelError, OSError, ValueError) as e:
            print(f"kickit bench daw: {e}", file=sys.stderr)
            return 2
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            client.bind(("127.0.0.1", 0))
            assert bridge.osc is not None and bridge.sink is not None
            target = ("127.0.0.1", bridge.osc.port)
            patch = device.build_patcher([f"knob {i + 1}" for i in range(device.N_KNOBS)],
                                         bridge_port=bridge.osc.port, device_port=client.getsockname()[1])
            patcher = PatchRunner(patch)  # the device's own message logic drives the bridge
            patcher.on_send = lambda msg: client.sendto(build(str(msg[0]), *msg[1:]), target)

            def deliver(timeout: float) -> tuple[str, list]:
                client.settimeout(timeout)
                msg = OscMessage(client.recvfrom(65536)[0])
                patcher.receive(msg.address, list(msg.params))
                return msg.address, list(msg.params)

            patcher.load()  # registers with the bridge: knob names, model, all 16 hits come back
            bridge.sink.mode.flush(30.0)  # type: ignore[attr-defined]
            try:
                while True:
                    deliver(0.3)
            except TimeoutError:
                pass
            rng = np.random.default_rng(0)
            times: list[float] = []
            for i in range(args.moves + 3):
                value = float(np.round(rng.uniform(-1.0, 1.0), 4))
                t0 = time.perf_counter()
                patcher.turn(f"Knob {i % device.N_KNOBS + 1}", value)
                while True:  # until the new file is in the pad's buffer~ (as far as the patch goes)
                    address, params = deliver(10.0)
                    if address == "/kickit/hit/ready" and params[0] == bridge.engine.selected:
                        break
                if i >= 3:  # warm-up moves not counted
                    times.append((time.perf_counter() - t0) * 1e3)
            counters = bridge.sink.counters()
            engine_status = bridge.engine.status()
            name = bridge.engine.source.name
        except TimeoutError:
            print("kickit bench daw: no /kickit/hit/ready from the bridge within 10 s", file=sys.stderr)
            return 1
        finally:
            bridge.stop()
            client.close()

    body = (
        f"Model `{name}`; bridge in DAW mode in-process (`kickit bridge --daw` assembly), client = the "
        f"device's patch (simulated message logic) turning its dials, over UDP; {len(times)} moves, one at a time.\n\n"
        "| measure | p50 | p95 | max |\n|---|---|---|---|\n"
        f"| knob OSC -> `/kickit/hit/ready` received (ms) | {_pctl(times, 50):.1f} | {_pctl(times, 95):.1f} "
        f"| {max(times):.1f} |\n\n"
        f"Inside that: the bridge's render per hit p50 {engine_status['render_ms_p50']:.1f} ms and its knob -> "
        f"hit ready p95 {engine_status['knob_ready_ms_p95']:.1f} ms (model inference + phase reconstruction).\n\n"
        f"Hit file write (32-bit float WAV, temp file + rename), p50: {counters['daw_write_ms_p50']:.2f} ms. "
        "For comparison, the bridge's own knob -> hit ready target is 30 ms p95 (`kickit bench latency`); the "
        "DAW mode adds the file write and one UDP hop.\n"
    )
    print(body)
    if not args.no_write:
        print(f"written to {write_section('daw', 'DAW mode: knob move -> new hit in Live', body)}")
    return 0
