"""kickit.modelfile: loading the shipped-format model file, and refusing every kind of bad file clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kickit.modelfile import (
    MAX_MODEL_BYTES,
    META,
    Knob,
    ModelError,
    apply_knobs,
    default_model_path,
    graph_sha256,
    load_model,
    probe_latents,
)
from kickit.spectral import SpectralContract

onnx = pytest.importorskip("onnx")


def _with_meta(src: Path, dst: Path, **changes: str | None) -> Path:
    """Copy a model file, changing (value) or removing (None) kickit metadata keys; the graph is untouched."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        k = META[key]
        if value is None:
            props.pop(k, None)
        else:
            props[k] = value
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    dst.write_bytes(model.SerializeToString())
    return dst


def _refused(path: Path, *words: str, **kw: object) -> ModelError:
    with pytest.raises(ModelError) as info:
        load_model(path, **kw)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return info.value


# ----- the good file -------------------------------------------------------------------------------------


def test_tiny_model_loads_with_full_metadata(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    assert m.path == tiny_model_path
    assert isinstance(m.contract, SpectralContract)
    assert m.family == "spec-gan" and m.output == "spec"
    assert m.output_shape == m.contract.shape
    assert len(m.knobs) == 8
    assert len({k.name for k in m.knobs}) == 8
    for k in m.knobs:
        assert k.direction.shape == (m.latent_dim,) and k.direction.dtype == np.float32
        assert abs(float(np.linalg.norm(k.direction)) - 1.0) < 1e-5
        assert k.lo < 0 < k.hi
        assert "sound_change_db_per_step" in k.effect
    assert m.weights_hash == graph_sha256(tiny_model_path.read_bytes())
    assert m.parity["ok"] is True and m.parity["max_abs_diff"] <= 1e-4 and m.parity["latents"] == 64
    assert m.training["steps"] >= 0 and "exported" in m.training
    assert m.size_bytes == tiny_model_path.stat().st_size < 1_000_000
    assert m.threads == 1


def test_run_shapes_and_determinism(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    z = np.random.default_rng(3).standard_normal((5, m.latent_dim)).astype(np.float32)
    a = m.run(z)
    assert a.shape == (5, *m.contract.shape) and a.dtype == np.float32
    assert np.array_equal(a, m.run(z))
    np.testing.assert_allclose(m.run(z[0]), a[:1], atol=1e-5)  # a single latent is a batch of one
    assert np.all(np.abs(a) <= 1.0)
    with pytest.raises(ValueError, match="latents must be"):
        m.run(np.zeros((2, m.latent_dim + 1)))


def test_threads_option(tiny_model_path: Path) -> None:
    m1 = load_model(tiny_model_path)
    m2 = load_model(tiny_model_path, threads=2)
    assert m2.threads == 2
    z = probe_latents(m1.latent_dim)
    np.testing.assert_allclose(m1.run(z), m2.run(z), atol=1e-5)


def test_knob_math() -> None:
    d = np.zeros(4, dtype=np.float32)
    d[1] = 1.0
    k = Knob("pitch", d, -1.5, 3.0)
    assert k.offset(0.0) == 0.0
    assert k.offset(1.0) == 3.0 and k.offset(0.5) == 1.5
    assert k.offset(-1.0) == -1.5 and k.offset(-0.5) == -0.75
    assert k.offset(7.0) == 3.0  # clamped to the range
    z = np.ones((2, 4), dtype=np.float32)
    out = apply_knobs(z, [k], [0.5])
    assert np.array_equal(out[:, 1], [2.5, 2.5]) and np.array_equal(out[:, 0], [1.0, 1.0])
    assert np.array_equal(z, np.ones((2, 4)))  # input untouched
    with pytest.raises(ValueError, match="knob values"):
        apply_knobs(z, [k], [0.1, 0.2])


def test_knobs_move_the_output_smoothly(tiny_model_path: Path) -> None:
    m = load_model(tiny_model_path)
    z = probe_latents(m.latent_dim)[1:]
    first = m.knobs[0]
    values = np.linspace(-1, 1, 9)
    outs = np.stack([m.run(apply_knobs(z, [first], [v]))[0] for v in values])
    steps = np.abs(np.diff(outs, axis=0)).mean(axis=(1, 2, 3))
    assert np.all(steps > 0)  # every step changes the hit ...
    assert steps.max() < 4 * steps.mean()  # ... and no single step jumps


def test_refused_load_leaves_a_working_model_alone(tiny_model_path: Path, tmp_path: Path) -> None:
    good = load_model(tiny_model_path)
    z = probe_latents(good.latent_dim)
    before = good.run(z)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_model_path.read_bytes()[:5000])
    _refused(bad)
    assert np.array_equal(good.run(z), before)
    again = load_model(tiny_model_path)
    assert np.array_equal(again.run(z), before)


def test_default_model_path_is_shipped_file_or_none() -> None:
    p = default_model_path()
    assert p is None or (p.name == "kick-v1.onnx" and p.is_file())
    if p is not None:  # the shipped model passes every check and has the full set of knobs
        m = load_model(p)
        assert m.output == "spec" and len(m.knobs) == 8 and m.parity.get("ok") is True
        assert m.training.get("steps", 0) > 0


# ----- every kind of bad file ----------------------------------------------------------------------------


def test_missing_and_empty_and_folder(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.onnx", "cannot read")
    empty = tmp_path / "empty.onnx"
    empty.touch()
    _refused(empty, "empty")
    _refused(tmp_path, "not a file")


def test_garbage_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "garbage.onnx"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    _refused(p, "onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 50)
    _refused(text, "onnx")


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.98, 0.9999])
def test_truncated_is_refused(tiny_model_path: Path, tmp_path: Path, fraction: float) -> None:
    data = tiny_model_path.read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    _refused(p)


def test_external_data_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_model_path))
    p = tmp_path / "ext.onnx"
    onnx.save_model(model, str(p), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    _refused(p, "external data")


def test_unknown_or_missing_format_version(tiny_model_path: Path, tmp_path: Path) -> None:
    _refused(_with_meta(tiny_model_path, tmp_path / "v99.onnx", format="99"), "unknown kickit format version",
             "'99'")
    _refused(_with_meta(tiny_model_path, tmp_path / "v0.onnx", format=None), "no kickit format version")


def test_bad_metadata_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    _refused(_with_meta(tiny_model_path, tmp_path / "a.onnx", contract='{"frames": 3}'), "contract")
    _refused(_with_meta(tiny_model_path, tmp_path / "b.onnx", family="diffusion"), "unknown model family")
    _refused(_with_meta(tiny_model_path, tmp_path / "c.onnx", output="midi"), "unknown output kind")
    _refused(_with_meta(tiny_model_path, tmp_path / "d.onnx", knobs="[{"), "not valid JSON")
    _refused(_with_meta(tiny_model_path, tmp_path / "e.onnx", knobs=None), "metadata missing", META["knobs"])
    _refused(_with_meta(tiny_model_path, tmp_path / "f.onnx", latent_dim="7"), "input 'z' has shape")
    m = load_model(tiny_model_path)
    knobs = [k.to_dict() for k in m.knobs]
    knobs[2]["direction"] = [2.0 * x for x in knobs[2]["direction"]]
    _refused(_with_meta(tiny_model_path, tmp_path / "g.onnx", knobs=json.dumps(knobs)), "not a unit vector")
    knobs = [k.to_dict() for k in m.knobs]
    knobs[1]["name"] = knobs[0]["name"]
    _refused(_with_meta(tiny_model_path, tmp_path / "h.onnx", knobs=json.dumps(knobs)), "repeated")
    # a contract whose shape the graph does not produce
    c = SpectralContract(frames=128).to_json()
    _refused(_with_meta(tiny_model_path, tmp_path / "i.onnx", contract=c), "output 'spec'", "shape")


def test_modified_weights_are_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_model_path))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    raw = bytearray(init.raw_data)
    raw[0] ^= 0x40
    init.raw_data = bytes(raw)
    p = tmp_path / "tampered.onnx"
    p.write_bytes(model.SerializeToString())
    _refused(p, "weights hash does not match")


def test_too_large_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    _refused(tiny_model_path, "too large", max_bytes=1000)
    big = tmp_path / "big.onnx"
    with open(big, "wb") as fh:  # sparse: no disk space used, never read
        fh.truncate(MAX_MODEL_BYTES + 1)
    assert os.path.getsize(big) > MAX_MODEL_BYTES
    _refused(big, "too large", "200 MB")
