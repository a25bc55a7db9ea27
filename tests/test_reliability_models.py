"""Reliability of model files in a running bridge (issue #10): truncated, garbage, huge, external-data,
wrong-shape and NaN-producing model files are refused with one clear line naming the file while the old model
keeps playing, and a hot swap under load (notes every 20 ms, an audio thread pulling blocks in real time)
leaves no gap: every note plays a hit of the old or of the new model, no block is silent.

(The loader's own refusals, one per kind, are in tests/test_modelfile.py; here they go through the live path:
OSC/controller -> loader thread -> engine.)"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from kickit.bridge.control import Controller
from kickit.bridge.engine import Engine, EngineConfig
from kickit.bridge.source import ModelSource

from kickit.modelfile import MAX_MODEL_BYTES, META, ModelError, graph_sha256, load_model

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

TIMEOUT = 120.0


def _rehash(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` with its weights hash updated: only the graph is wrong, never the bookkeeping."""
    data = model.SerializeToString()
    for p in model.metadata_props:
        if p.key == META["weights_sha256"]:
            p.value = graph_sha256(data)
    path.write_bytes(model.SerializeToString())
    return path


def _tail(src: Path, dst: Path, make) -> Path:  # noqa: ANN001
    """Append nodes after the generator's output: ``make(graph, "spec_pre")`` adds nodes that end in "spec"."""
    model = onnx.load(str(src))
    g = model.graph
    last = next(n for n in g.node if "spec" in n.output)
    last.output[list(last.output).index("spec")] = "spec_pre"
    make(g, "spec_pre")
    return _rehash(model, dst)


def nan_model(src: Path, dst: Path) -> Path:
    """A model whose output is NaN: 0/0 on every element (a real graph, valid hash and metadata)."""
    def make(g, x):  # noqa: ANN001, ANN202
        g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
        g.node.append(helper.make_node("Mul", [x, "zero"], ["zeroed"]))
        g.node.append(helper.make_node("Div", ["zeroed", "zero"], ["spec"]))
    return _tail(src, dst, make)


def wrong_shape_model(src: Path, dst: Path) -> Path:
    """A model that declares a dynamic output but produces half the contract's rows."""
    def make(g, x):  # noqa: ANN001, ANN202
        for name, v in (("starts", [0]), ("ends", [2**30]), ("axes", [3]), ("steps", [2])):
            g.initializer.append(numpy_helper.from_array(np.array(v, np.int64), name))
        g.node.append(helper.make_node("Slice", [x, "starts", "ends", "axes", "steps"], ["spec"]))
    return _tail(src, dst, make)


def other_weights_model(src: Path, dst: Path) -> Path:
    """The same architecture with different weights (a retrained model): different hits, a valid file."""
    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    w = numpy_helper.to_array(init).copy()
    w *= np.float32(1.25)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return _rehash(model, dst)


@pytest.fixture(scope="module")
def bad_models(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """kind -> (file, words its refusal must contain)."""
    d = tmp_path_factory.mktemp("bad-models")
    data = tiny_model_path.read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (d / "garbage.onnx").write_bytes(np.random.default_rng(30).bytes(8192))
    with open(d / "huge.onnx", "wb") as fh:  # sparse: no disk used, never read
        fh.truncate(MAX_MODEL_BYTES + 1)
    onnx.save_model(onnx.load(str(tiny_model_path)), str(d / "external.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="external.onnx.data", size_threshold=0)
    return {
        "truncated": (d / "truncated.onnx", ""),
        "garbage": (d / "garbage.onnx", "onnx"),
        "huge": (d / "huge.onnx", "too large"),
        "external": (d / "external.onnx", "external data"),
        "wrong_shape": (wrong_shape_model(tiny_model_path, d / "wrong_shape.onnx"), "shape"),
        "nan": (nan_model(tiny_model_path, d / "nan.onnx"), "NaN or infinite"),
        "missing": (d / "missing.onnx", "cannot read"),
    }


def test_every_bad_kind_is_refused_by_the_loader_in_one_line(bad_models: dict[str, tuple[Path, str]]) -> None:
    for kind, (path, words) in bad_models.items():
        with pytest.raises(ModelError) as info:
            load_model(path)
        msg = str(info.value)
        assert str(path) in msg and "\n" not in msg and words.lower() in msg.lower(), (kind, msg)


class Player:
    """Notes every 20 ms on rotating pads while a thread pulls 128-frame blocks at real-time pace (the device
    callback's call); records every block and every played hit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.blocks: list[np.ndarray] = []
        self.played: list[tuple[int, np.ndarray]] = []
        self.refused = 0
        self._stop = threading.Event()
        engine.add_trigger_listener(lambda pad, hit, gain: self.played.append((pad, hit)))
        self._threads = [threading.Thread(target=self._audio, daemon=True),
                         threading.Thread(target=self._notes, daemon=True)]

    def _audio(self) -> None:
        t0, n = time.perf_counter(), 0
        while not self._stop.is_set():
            out = np.zeros((128, 2), dtype=np.float32)
            self.engine.process(out)
            self.blocks.append(out)
            n += 1
            delay = t0 + n * 128 / 44100 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    def _notes(self) -> None:
        k = 0
        while not self._stop.wait(0.02):
            if not self.engine.note_on(k % 16, 1.0):
                self.refused += 1
            k += 1

    def __enter__(self) -> Player:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def silent_blocks_after_first_note(self) -> int:
        peaks = [float(np.abs(b).max()) for b in self.blocks]
        first = next(i for i, p in enumerate(peaks) if p > 0)
        return sum(1 for p in peaks[first:] if p == 0.0)


def test_bad_models_are_refused_live_and_the_old_model_keeps_playing(
        tiny_model_path: Path, bad_models: dict[str, tuple[Path, str]]) -> None:
    engine = Engine(ModelSource.open(tiny_model_path), EngineConfig(seed=4))
    engine.start()
    assert engine.wait_ready(TIMEOUT)
    ctl = Controller(engine)
    before = [r for r in engine.ready]
    try:
        with Player(engine) as player:
            time.sleep(0.3)
            for kind, (path, words) in bad_models.items():
                ctl.load_model(str(path), block=True)
                assert ctl.last_error is not None and str(path) in ctl.last_error, (kind, ctl.last_error)
                assert "keeping tiny-spec.onnx" in ctl.last_error and words.lower() in ctl.last_error.lower()
                assert "\n" not in ctl.last_error
            time.sleep(0.3)
        assert ctl.model_errors == len(bad_models) and ctl.model_loads == 0
        assert engine.source.name == "tiny-spec.onnx"
        assert all(a is b for a, b in zip(engine.ready, before, strict=True))  # not one hit was replaced
        assert player.refused == 0 and player.silent_blocks_after_first_note() == 0
        hits = {id(layer) for r in before for layer in r}
        assert player.played and all(id(h) in hits for _p, h in player.played)
        assert engine.mixer.callback_errors == 0 and engine.ring.dropped == 0
    finally:
        engine.stop()


def test_hot_swap_under_load_leaves_no_gap(tiny_model_path: Path, tmp_path: Path) -> None:
    other = other_weights_model(tiny_model_path, tmp_path / "other.onnx")
    copy = tmp_path / "tiny-copy.onnx"
    shutil.copy(tiny_model_path, copy)
    engine = Engine(ModelSource.open(tiny_model_path), EngineConfig(seed=6))
    engine.start()
    assert engine.wait_ready(TIMEOUT)
    ctl = Controller(engine)
    alive = [list(engine.ready)]  # keeps every model's hits referenced, so their ids stay unique
    sets = [{id(layer) for r in engine.ready for layer in r}]
    try:
        with Player(engine) as player:
            for path in (other, copy, other):
                time.sleep(0.2)
                ctl.load_model(str(path), block=True)
                assert ctl.last_error is None, ctl.last_error
                alive.append(list(engine.ready))
                sets.append({id(layer) for r in engine.ready for layer in r})
                assert engine.wait_ready(TIMEOUT)
            time.sleep(0.3)
        assert ctl.model_loads == 3 and engine.source.name == "other.onnx"
        assert player.refused == 0 and player.silent_blocks_after_first_note() == 0
        known = set().union(*sets)
        assert all(id(h) in known for _p, h in player.played)  # each note: a complete hit of one model
        models_heard = {next(i for i, s in enumerate(sets) if id(h) in s) for _p, h in player.played}
        assert len(models_heard) == 4, models_heard  # notes played with every model in turn
        assert engine.mixer.callback_errors == 0 and engine.ring.dropped == 0 and engine.stats.render_errors == 0
    finally:
        engine.stop()
    assert len(alive) == 4
