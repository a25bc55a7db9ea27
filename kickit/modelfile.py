"""Load and validate a kickit model file (one ONNX file with the spectral contract and knobs inside).

numpy + onnxruntime only: the bridge loads models with this module and never imports torch or onnx.

A model file is a plain ONNX model (opset >= 17) with one float32 input ``z`` ``[batch, latent]`` and one
output, either ``spec`` ``[batch, channels, frames, rows]`` (the contract's scaled log-magnitude; the caller
reconstructs the audio) or ``audio`` ``[batch, channels, n_samples]``. Everything else travels in the ONNX
``metadata_props`` under ``kickit.*`` keys (see :data:`META` and docs/model-file.md).

:func:`load_model` refuses, with one :class:`ModelError` naming the file, anything the bridge must not play:
not ONNX, truncated, external data, missing or unknown format version, bad metadata, wrong input/output
shapes, too large, or an output that is not finite on a probe latent. Loading has no global state: a refused
file leaves every previously loaded :class:`ModelFile` untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from kickit.spectral import SpectralContract

if os.environ.get("ORT_DISABLE_TELEMETRY") == "1":  # set by kickit/__init__.py unless the user chose otherwise
    try:  # onnxruntime imported before kickit (a host program): no events from here on either
        ort.disable_telemetry_events()
    except AttributeError:  # an onnxruntime without telemetry
        pass

FORMAT_VERSION = 1
SUPPORTED_FORMATS = (1,)
MAX_MODEL_BYTES = 200 * 1024 * 1024
DEFAULT_MODEL_NAME = "kick-v1.onnx"
INPUT_NAME = "z"
OUTPUTS = ("spec", "audio")
FAMILIES = ("spec-gan", "wave-gan", "spec-vae", "wave-vae")
ENCODER_INPUTS = ("spec",)  # what a companion encoder reads (the contract's scaled spectrogram)
ENCODER_OUTPUT = "z"  # the encoder's output: the posterior mean [batch, latent]

# metadata_props keys (all values are strings; JSON where structured)
META = {
    "format": "kickit.format",  # "1"
    "contract": "kickit.contract",  # SpectralContract.to_json()
    "family": "kickit.family",  # one of FAMILIES
    "output": "kickit.output",  # "spec" | "audio"
    "latent_dim": "kickit.latent_dim",  # "128"
    "knobs": "kickit.knobs",  # JSON list of knob objects
    "training": "kickit.training",  # JSON: steps, date, data summary, config name
    "weights_sha256": "kickit.weights_sha256",  # sha256 of the serialized ONNX graph (operators + weights)
    "parity": "kickit.parity",  # JSON: export self-test (onnxruntime vs torch)
    "encoder": "kickit.encoder",  # optional JSON: companion encoder file of VAE families
    "exporter": "kickit.exporter",  # free text: kickit/torch versions
}
REQUIRED = ("format", "contract", "family", "output", "latent_dim", "knobs", "weights_sha256")


class ModelError(ValueError):
    """A model file cannot be used; the one-line message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class Knob:
    """A named latent direction. Knob value ``v`` in [-1, 1] moves ``z`` by :meth:`offset` along ``direction``.

    ``lo <= 0 <= hi`` are the offsets (in latent units; z ~ N(0, I)) reached at v = -1 and v = +1, so the
    offset is ``v * hi`` for v >= 0 and ``-v * lo`` for v < 0: piecewise linear, 0 at the centre.
    ``effect`` holds the measured effect (descriptor change per knob step) written by the exporter.
    """

    name: str
    direction: np.ndarray
    lo: float
    hi: float
    effect: dict[str, Any] = field(default_factory=dict, compare=False)

    def offset(self, value: float) -> float:
        v = float(np.clip(value, -1.0, 1.0))
        return v * self.hi if v >= 0.0 else -v * self.lo

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": [float(x) for x in self.direction],
            "lo": float(self.lo),
            "hi": float(self.hi),
            "effect": self.effect,
        }


def apply_knobs(z: np.ndarray, knobs: Sequence[Knob], values: Sequence[float]) -> np.ndarray:
    """z (..., latent) moved along each knob's direction by its offset; returns float32 (a new array)."""
    if len(values) != len(knobs):
        raise ValueError(f"{len(values)} knob values for {len(knobs)} knobs")
    out = np.array(z, dtype=np.float32, copy=True)
    for knob, v in zip(knobs, values, strict=True):
        out += np.float32(knob.offset(v)) * knob.direction
    return out


@dataclass
class ModelFile:
    """A validated model file with its onnxruntime session; ``run(z)`` gives the raw output."""

    path: Path
    contract: SpectralContract
    family: str
    output: str
    latent_dim: int
    knobs: list[Knob]
    metadata: dict[str, str]
    weights_hash: str
    size_bytes: int
    threads: int
    session: ort.InferenceSession = field(repr=False)
    training: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] | None = None
    encoder_path: Path | None = None  # the companion encoder file named by kickit.encoder (VAE families)
    encoder_session: ort.InferenceSession | None = field(default=None, repr=False)
    encoder_problem: str | None = None  # why a named encoder cannot be used (the file is missing)

    @property
    def reexport_of(self) -> tuple[str, ...]:
        """Weights hashes of the earlier exports of this same generator that this file re-exports (the training
        summary's ``reexport_of``, written by ``kickit export --keep-knobs`` after a parity check): files that
        play the same kicks. Non-string entries are ignored."""
        earlier = self.training.get("reexport_of", [])
        return tuple(h for h in earlier if isinstance(h, str)) if isinstance(earlier, list) else ()

    @property
    def can_encode(self) -> bool:
        """True when the model has a loaded, validated companion encoder (``encode_scaled`` works)."""
        return self.encoder_session is not None

    def encode_scaled(self, spec: np.ndarray) -> np.ndarray:
        """Latents (B, latent) float32 of scaled spectrograms (B, channels, frames, rows) or one (channels, frames,
        rows): the encoder's posterior mean. Raises :class:`ModelError` when the model has no usable encoder and
        ValueError (naming the model) for a wrongly shaped or non-finite input."""
        if self.encoder_session is None:
            if self.encoder_problem is not None:
                raise ModelError(self.encoder_path or self.path, self.encoder_problem)
            raise ModelError(self.path, f"a {self.family} model without an encoder cannot encode sounds")
        x = np.asarray(spec, dtype=np.float32)
        if x.ndim == len(self.contract.shape):
            x = x[None]
        if x.shape[1:] != tuple(self.contract.shape):
            raise ValueError(f"{self.path}: spectrograms to encode must be (batch, "
                             f"{', '.join(map(str, self.contract.shape))}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{self.path}: spectrogram to encode is NaN or infinite")
        (z,) = self.encoder_session.run([ENCODER_OUTPUT], {ENCODER_INPUTS[0]: np.ascontiguousarray(x)})
        return z

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one hit's raw output (without the batch axis)."""
        c = self.contract
        return c.shape if self.output == "spec" else (c.channels, c.n_samples)

    def run(self, z: np.ndarray) -> np.ndarray:
        """Raw model output for latents z (B, latent) or (latent,) -> float32 (B, *output_shape)."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None, :]
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{self.path}: latents must be (batch, {self.latent_dim}), got {z.shape}")
        (out,) = self.session.run([self.output], {INPUT_NAME: np.ascontiguousarray(z)})
        return out

    def apply_knobs(self, z: np.ndarray, values: Sequence[float]) -> np.ndarray:
        return apply_knobs(z, self.knobs, values)

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(f"{self.path}: no knob named {name!r} (knobs: {', '.join(k.name for k in self.knobs)})")


# ----- ONNX protobuf walking (just enough of the wire format; no onnx package) -----------------------------

# ModelProto.graph = 7, ModelProto.metadata_props = 14, ModelProto.functions = 25
# GraphProto.node = 1, GraphProto.initializer = 5, GraphProto.sparse_initializer = 15
# NodeProto.attribute = 5; AttributeProto.t = 5, .g = 6, .tensors = 10, .graphs = 11
# FunctionProto.node = 7; TensorProto.external_data = 13, TensorProto.data_location = 14 (1 = EXTERNAL)
# SparseTensorProto.values = 1, .indices = 2


class _WireError(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _WireError("truncated (varint runs past the end)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _WireError("corrupt (varint longer than 10 bytes)")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end | varint value) for each field in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _WireError("corrupt (field number 0)")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wt, value, value
        elif wt == 1:
            if pos + 8 > end:
                raise _WireError("truncated (fixed64 runs past the end)")
            yield num, wt, pos, pos + 8
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _WireError(f"truncated (a field of {n} bytes runs past the end)")
            yield num, wt, pos, pos + n
            pos += n
        elif wt == 5:
            if pos + 4 > end:
                raise _WireError("truncated (fixed32 runs past the end)")
            yield num, wt, pos, pos + 4
            pos += 4
        else:
            raise _WireError(f"corrupt (wire type {wt} is not protobuf)")


def _tensor_is_external(buf: memoryview, start: int, end: int) -> bool:
    for num, wt, a, _b in _fields(buf, start, end):
        if num == 14 and wt == 0 and a == 1:
            return True
        if num == 13 and wt == 2:
            return True
    return False


def _graph_external(buf: memoryview, start: int, end: int, depth: int = 0) -> bool:
    if depth > 16:
        raise _WireError("corrupt (graphs nested more than 16 deep)")
    for num, wt, a, b in _fields(buf, start, end):
        if wt != 2:
            continue
        if num == 5 and _tensor_is_external(buf, a, b):
            return True
        if num == 15:  # sparse initializer: values and indices are tensors
            for n2, w2, a2, b2 in _fields(buf, a, b):
                if n2 in (1, 2) and w2 == 2 and _tensor_is_external(buf, a2, b2):
                    return True
        if num == 1 and _node_external(buf, a, b, depth):
            return True
    return False


def _node_external(buf: memoryview, start: int, end: int, depth: int) -> bool:
    for num, wt, a, b in _fields(buf, start, end):
        if num != 5 or wt != 2:
            continue
        for n2, w2, a2, b2 in _fields(buf, a, b):
            if w2 != 2:
                continue
            if n2 in (5, 10) and _tensor_is_external(buf, a2, b2):
                return True
            if n2 in (6, 11) and _graph_external(buf, a2, b2, depth + 1):
                return True
    return False


@dataclass
class _Scan:
    graph_sha256: str
    external: bool


def _scan_model(data: bytes) -> _Scan:
    """Walk the ModelProto wire format: hash the graph, find tensors stored outside the file."""
    buf = memoryview(data)
    graphs: list[tuple[int, int]] = []
    external = False
    for num, wt, a, b in _fields(buf, 0, len(buf)):
        if num == 7 and wt == 2:
            graphs.append((a, b))
        elif num == 25 and wt == 2:  # model-local functions: their Constant nodes may hold tensors
            for n2, w2, a2, b2 in _fields(buf, a, b):
                if n2 == 7 and w2 == 2 and _node_external(buf, a2, b2, 0):
                    external = True
    if not graphs:
        raise _WireError("not an ONNX model (no graph)")
    h = hashlib.sha256()
    for a, b in graphs:
        h.update(buf[a:b])
        external = external or _graph_external(buf, a, b)
    return _Scan(h.hexdigest(), external)


def graph_sha256(data: bytes) -> str:
    """sha256 of the serialized graph (operators and weights) of ONNX model bytes: the model's weights hash."""
    try:
        return _scan_model(data).graph_sha256
    except _WireError as e:
        raise ValueError(f"not a readable ONNX model: {e}") from None


# ----- loading ---------------------------------------------------------------------------------------------


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Full graph optimisation, ``threads`` intra-op threads, sequential, no spinning worker threads."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _json(path: Path, meta: dict[str, str], key: str, default: Any = None) -> Any:
    raw = meta.get(META[key])
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelError(path, f"metadata {META[key]} is not valid JSON ({e.msg})") from None


def parse_knobs(path: Path, raw: Any, latent_dim: int) -> list[Knob]:
    if not isinstance(raw, list):
        raise ModelError(path, f"metadata {META['knobs']} must be a JSON list")
    knobs: list[Knob] = []
    names: set[str] = set()
    for i, k in enumerate(raw):
        where = f"knob {i + 1}"
        if not isinstance(k, dict) or not {"name", "direction", "lo", "hi"} <= set(k):
            raise ModelError(path, f"{where}: needs name, direction, lo and hi")
        name = k["name"]
        if not isinstance(name, str) or not name.strip() or name in names:
            raise ModelError(path, f"{where}: name {name!r} is empty, not text or repeated")
        names.add(name)
        try:
            d = np.asarray(k["direction"], dtype=np.float32)
            lo, hi = float(k["lo"]), float(k["hi"])
        except (TypeError, ValueError):
            raise ModelError(path, f"knob {name!r}: direction/lo/hi are not numbers") from None
        if d.shape != (latent_dim,) or not np.all(np.isfinite(d)):
            raise ModelError(path, f"knob {name!r}: direction must be {latent_dim} finite numbers, got {d.shape}")
        norm = float(np.linalg.norm(d))
        if abs(norm - 1.0) > 1e-3:
            raise ModelError(path, f"knob {name!r}: direction is not a unit vector (norm {norm:.4f})")
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= 0.0 <= hi and hi > lo):
            raise ModelError(path, f"knob {name!r}: range lo={lo} hi={hi} must satisfy lo <= 0 <= hi, lo < hi")
        d = d / np.float32(norm)
        d.setflags(write=False)
        effect = k.get("effect") or {}
        knobs.append(Knob(name, d, lo, hi, effect if isinstance(effect, dict) else {}))
    return knobs


def _dim_ok(dim: object, expected: int) -> bool:
    return isinstance(dim, int) and dim == expected


def load_model(
    path: str | os.PathLike[str],
    *,
    threads: int = 1,
    max_bytes: int = MAX_MODEL_BYTES,
    probe: bool = True,
    load_encoder: bool = True,
    require_encoder: bool = False,
) -> ModelFile:
    """Load and validate a model file; raises :class:`ModelError` (naming the file) on anything unusable.

    ``load_encoder``: also load the companion encoder that kickit.encoder names (VAE families), so
    ``can_encode``/``encode_scaled`` work; a missing encoder file only disables encoding unless
    ``require_encoder``, a present but wrong one (hash, shapes) is refused with a ModelError naming it.

    ``threads``: onnxruntime intra-op threads (1 by default so the bridge's own threads do not fight).
    ``probe``: run the model on probe latents and refuse non-finite or wrongly shaped output.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ModelError(p, f"cannot read ({e.strerror or e})") from None
    if not p.is_file():
        raise ModelError(p, "not a file")
    if st.st_size == 0:
        raise ModelError(p, "empty file (0 bytes)")
    if st.st_size > max_bytes:
        raise ModelError(p, f"too large ({st.st_size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelError(p, f"cannot read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise ModelError(p, f"too large ({len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB)")

    try:
        scan = _scan_model(data)
    except _WireError as e:
        raise ModelError(p, f"not a valid ONNX model file: {e}") from None
    if scan.external:
        raise ModelError(p, "weights are stored in external data files; a model file must be self-contained "
                            "(re-export it as one file)")
    try:
        session = ort.InferenceSession(data, sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for every parse/graph error
        raise ModelError(p, f"onnxruntime cannot load it as ONNX: {_first_line(e)}") from None

    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = [META[k] for k in REQUIRED if META[k] not in meta]
    if META["format"] not in meta:
        raise ModelError(p, f"no kickit format version (metadata {META['format']} missing): "
                            "not a kickit model file")
    fmt = meta[META["format"]].strip()
    if not fmt.isdigit() or int(fmt) not in SUPPORTED_FORMATS:
        raise ModelError(p, f"unknown kickit format version {fmt!r} (this kickit reads "
                            f"{', '.join(map(str, SUPPORTED_FORMATS))}); update kickit or re-export")
    if missing:
        raise ModelError(p, f"metadata missing: {', '.join(missing)}")
    try:
        contract = SpectralContract.from_json(meta[META["contract"]])
    except (ValueError, TypeError) as e:
        raise ModelError(p, f"bad spectral contract in metadata: {_first_line(e)}") from None
    family = meta[META["family"]]
    if family not in FAMILIES:
        raise ModelError(p, f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    output = meta[META["output"]]
    if output not in OUTPUTS:
        raise ModelError(p, f"unknown output kind {output!r} (known: {', '.join(OUTPUTS)})")
    try:
        latent_dim = int(meta[META["latent_dim"]])
    except ValueError:
        raise ModelError(p, f"latent size {meta[META['latent_dim']]!r} is not an integer") from None
    if not 1 <= latent_dim <= 65536:
        raise ModelError(p, f"latent size {latent_dim} out of range")
    if meta[META["weights_sha256"]] != scan.graph_sha256:
        raise ModelError(p, "weights hash does not match the metadata: the file was modified or corrupted")
    # ----- graph inputs and outputs ------------------------------------------------------------------
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = [i.name for i in inputs]
        raise ModelError(p, f"wrong inputs {names}: expected exactly one input {INPUT_NAME!r}")
    zin = inputs[0]
    if zin.type != "tensor(float)":
        raise ModelError(p, f"input {INPUT_NAME!r} is {zin.type}, expected tensor(float)")
    if len(zin.shape) != 2 or not _dim_ok(zin.shape[1], latent_dim):
        raise ModelError(p, f"input {INPUT_NAME!r} has shape {zin.shape}, expected [batch, {latent_dim}]")
    if isinstance(zin.shape[0], int):
        raise ModelError(p, f"input {INPUT_NAME!r} has a fixed batch size {zin.shape[0]}; it must be dynamic")
    outs = {o.name: o for o in session.get_outputs()}
    if output not in outs:
        raise ModelError(p, f"no output named {output!r} (outputs: {sorted(outs)})")
    o = outs[output]
    expected = contract.shape if output == "spec" else (contract.channels, contract.n_samples)
    if o.type != "tensor(float)":
        raise ModelError(p, f"output {output!r} is {o.type}, expected tensor(float)")
    if len(o.shape) != 1 + len(expected) or any(
        isinstance(d, int) and d != e for d, e in zip(o.shape[1:], expected, strict=False)
    ):
        raise ModelError(p, f"output {output!r} has shape {o.shape}, expected [batch, "
                            f"{', '.join(map(str, expected))}] for this contract")

    knobs = parse_knobs(p, _json(p, meta, "knobs"), latent_dim)
    training = _json(p, meta, "training", {})
    parity = _json(p, meta, "parity", {})
    encoder = _json(p, meta, "encoder", None)
    if encoder is not None and not (isinstance(encoder, dict) and isinstance(encoder.get("file"), str)):
        raise ModelError(p, f"metadata {META['encoder']} must be an object with a 'file' name")

    model = ModelFile(
        path=p, contract=contract, family=family, output=output, latent_dim=latent_dim, knobs=knobs,
        metadata=meta, weights_hash=scan.graph_sha256, size_bytes=len(data), threads=max(1, int(threads)),
        session=session, training=training if isinstance(training, dict) else {},
        parity=parity if isinstance(parity, dict) else {}, encoder=encoder,
    )
    if probe:
        _probe(model)
    if encoder is not None and load_encoder:
        _attach_encoder(model, encoder, max_bytes=max_bytes, require=require_encoder, probe=probe)
    return model


def _attach_encoder(model: ModelFile, record: dict[str, Any], *, max_bytes: int, require: bool,
                    probe: bool) -> None:
    """Load and validate the companion encoder named by kickit.encoder (next to the model file).

    A missing file leaves the model playable (``can_encode`` False, ``encoder_problem`` says why) unless
    ``require``; a file that is there but wrong (hash, graph, shapes, non-finite output) is refused.
    """
    p = model.path
    name = record["file"]
    if not name or name != Path(name).name or name in (".", ".."):
        raise ModelError(p, f"metadata {META['encoder']}: file {name!r} must be a plain file name next to the model")
    ep = p.parent / name
    model.encoder_path = ep
    try:
        size = ep.stat().st_size
    except OSError as e:
        reason = f"encoder file named by {p.name} is missing ({e.strerror or e}); this model cannot encode sounds"
        if require:
            raise ModelError(ep, reason) from None
        model.encoder_problem = reason
        return
    inp = record.get("input", ENCODER_INPUTS[0])
    if inp not in ENCODER_INPUTS:
        raise ModelError(p, f"metadata {META['encoder']}: input {inp!r} is not supported (known: "
                            f"{', '.join(ENCODER_INPUTS)})")
    want_hash = record.get("sha256")
    if not isinstance(want_hash, str) or len(want_hash) != 64:
        raise ModelError(p, f"metadata {META['encoder']}: needs the encoder file's sha256 (64 hex digits)")
    if size > max_bytes:
        raise ModelError(ep, f"encoder too large ({size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB)")
    try:
        data = ep.read_bytes()
    except OSError as e:
        raise ModelError(ep, f"cannot read the encoder ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != want_hash:
        raise ModelError(ep, f"encoder sha256 does not match the one in {p.name}: the encoder was modified or "
                             "belongs to another model")
    try:
        scan = _scan_model(data)
    except _WireError as e:
        raise ModelError(ep, f"encoder is not a valid ONNX model file: {e}") from None
    if scan.external:
        raise ModelError(ep, "encoder weights are stored in external data files; it must be self-contained")
    try:
        session = ort.InferenceSession(data, sess_options=session_options(model.threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for every parse/graph error
        raise ModelError(ep, f"onnxruntime cannot load the encoder: {_first_line(e)}") from None
    ins, outs = session.get_inputs(), session.get_outputs()
    shape = tuple(model.contract.shape)
    if len(ins) != 1 or ins[0].name != inp or ins[0].type != "tensor(float)":
        raise ModelError(ep, f"encoder inputs {[i.name for i in ins]}: expected exactly one float input {inp!r}")
    if len(ins[0].shape) != 1 + len(shape) or isinstance(ins[0].shape[0], int) or any(
            isinstance(d, int) and d != e for d, e in zip(ins[0].shape[1:], shape, strict=True)):
        raise ModelError(ep, f"encoder input {inp!r} has shape {ins[0].shape}, expected [batch, "
                             f"{', '.join(map(str, shape))}] with a dynamic batch")
    zout = {o.name: o for o in outs}.get(ENCODER_OUTPUT)
    if zout is None or len(zout.shape) != 2 or not _dim_ok(zout.shape[1], model.latent_dim):
        raise ModelError(ep, f"encoder output {ENCODER_OUTPUT!r} must be [batch, {model.latent_dim}] "
                             f"(outputs: {[(o.name, o.shape) for o in outs]})")
    model.encoder_session = session
    if probe:  # silence and the decoder's own probe hits must encode to finite latents
        hits = model.run(probe_latents(model.latent_dim))
        if model.output == "audio":
            hits = model.contract.encode(hits)
        x = np.concatenate([np.full((1, *shape), -1.0, np.float32), np.asarray(hits, np.float32)])
        try:
            z = model.encode_scaled(x)
        except Exception as e:
            model.encoder_session = None
            raise ModelError(ep, f"encoder fails on a probe spectrogram: {_first_line(e)}") from None
        if z.shape != (len(x), model.latent_dim) or not np.all(np.isfinite(z)):
            model.encoder_session = None
            raise ModelError(ep, f"encoder gives {z.shape} or non-finite latents on probe spectrograms")


def probe_latents(latent_dim: int) -> np.ndarray:
    """The fixed probe batch: the zero latent and one seeded N(0, I) latent."""
    rng = np.random.default_rng(0x6B69636B)
    return np.stack([np.zeros(latent_dim), rng.standard_normal(latent_dim)]).astype(np.float32)


def _probe(model: ModelFile) -> None:
    z = probe_latents(model.latent_dim)
    try:
        out = model.run(z)
    except Exception as e:
        raise ModelError(model.path, f"fails on a probe latent: {_first_line(e)}") from None
    if out.shape != (len(z), *model.output_shape):
        raise ModelError(model.path, f"output shape {out.shape} on a probe batch of {len(z)}, "
                                     f"expected {(len(z), *model.output_shape)}")
    if not np.all(np.isfinite(out)):
        raise ModelError(model.path, "output is NaN or infinite on a probe latent")


def default_model_path() -> Path | None:
    """The shipped default model (``kickit/models/kick-v1.onnx`` package data), or None when not shipped."""
    try:
        f = resources.files("kickit.models") / DEFAULT_MODEL_NAME
    except ModuleNotFoundError:
        return None
    if not f.is_file():
        return None
    return Path(str(f))
