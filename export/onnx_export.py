"""Export a generator to one self-contained kickit model file (ONNX + metadata), with a parity self-test.

Steps (``export_generator``):

1. ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch): input ``z`` [B, latent], output
   ``spec`` [B, 2, frames, rows] or ``audio`` [B, 2, N]. Weights inside the file, never external data.
2. Parity self-test: onnxruntime vs torch on 64 seeded N(0, I) latents; a max abs difference over
   ``tolerance`` (1e-4) raises :class:`ExportError` and nothing is written.
3. Metadata (``kickit.*`` keys in ``metadata_props``, see kickit.modelfile.META): format version, contract,
   family, output, latent size, knobs, training summary, parity result, and the sha256 of the serialized graph.
4. VAE families: the encoder (``spec`` -> ``z``, the posterior mean) goes to ``NAME.encoder.onnx`` next to the
   model (``export_encoder``, its own parity self-test), and the model's ``kickit.encoder`` record names it
   with its sha256, so the loader can check the pair belongs together.
5. Written atomically (temp file in the target folder, fsync, rename) only after ``kickit.modelfile.load_model``
   accepted the temp file: a file that the bridge would refuse is never written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from kickit.export.fold import fold_for_export

from kickit import __version__
from kickit.atomic import atomic_write
from kickit.modelfile import (
    ENCODER_INPUTS,
    ENCODER_OUTPUT,
    FAMILIES,
    FORMAT_VERSION,
    INPUT_NAME,
    META,
    OUTPUTS,
    Knob,
    ModelError,
    ModelFile,
    graph_sha256,
    load_model,
    session_options,
)
from kickit.spectral import SpectralContract

OPSET = 17
PARITY_LATENTS = 64
PARITY_TOLERANCE = 1e-4
PARITY_SEED = 1234
FOLDED_GRAPH = ("folded (upsample + conv as transposed conv, PixelNorm means as 1x1 convs, mid/side and output "
                "constants in the last layer)")


class ExportError(RuntimeError):
    """The export failed; nothing was written. The message says why."""


@dataclass
class Parity:
    latents: int
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {"latents": self.latents, "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance,
                "ok": self.ok}


def to_onnx(generator: torch.nn.Module, latent_dim: int, output: str = "spec", opset: int = OPSET) -> bytes:
    """The generator as ONNX bytes (eval mode, CPU, float32, dynamic batch, weights embedded)."""
    if output not in OUTPUTS:
        raise ExportError(f"unknown output kind {output!r} (known: {', '.join(OUTPUTS)})")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; kickit model files need opset >= 17")
    generator = generator.eval().to("cpu", torch.float32)
    buf = io.BytesIO()
    z = torch.zeros(2, latent_dim)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            generator, (z,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=[output],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}}, opset_version=opset,
            do_constant_folding=True, export_params=True,
        )
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def parity_check(generator: torch.nn.Module, data: bytes, latent_dim: int, output: str,
                 latents: int = PARITY_LATENTS, tolerance: float = PARITY_TOLERANCE,
                 seed: int = PARITY_SEED) -> Parity:
    """Max abs difference between onnxruntime (the file's graph) and torch on seeded random latents."""
    z = np.random.default_rng(seed).standard_normal((latents, latent_dim)).astype(np.float32)
    sess = ort.InferenceSession(data, sess_options=session_options(2), providers=["CPUExecutionProvider"])
    (got,) = sess.run([output], {INPUT_NAME: z})
    with torch.no_grad():
        want = generator.eval()(torch.from_numpy(z)).float().numpy()
    if got.shape != want.shape:
        raise ExportError(f"parity self-test failed: onnxruntime output shape {got.shape} != torch {want.shape}")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    worst = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
    return Parity(latents, worst, tolerance)


def with_metadata(data: bytes, props: dict[str, str]) -> bytes:
    """ONNX bytes with ``props`` set in metadata_props (replacing kickit.* keys) and the weights hash added."""
    model = onnx.load_from_string(data)
    keep = [p for p in model.metadata_props if not p.key.startswith("kickit.")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "kickit"
    model.producer_version = __version__
    first = model.SerializeToString()
    digest = graph_sha256(first)
    model.metadata_props.add(key=META["weights_sha256"], value=digest)
    final = model.SerializeToString()
    if graph_sha256(final) != digest:  # the graph bytes must not move when metadata is added
        raise ExportError("internal error: graph bytes changed while adding metadata")
    return final


def metadata(
    contract: SpectralContract,
    *,
    family: str,
    output: str,
    latent_dim: int,
    knobs: Sequence[Knob],
    training: dict[str, Any],
    parity: Parity,
    encoder: dict[str, Any] | None = None,
) -> dict[str, str]:
    if family not in FAMILIES:
        raise ExportError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
    props = {
        META["format"]: str(FORMAT_VERSION),
        META["contract"]: contract.to_json(),
        META["family"]: family,
        META["output"]: output,
        META["latent_dim"]: str(int(latent_dim)),
        META["knobs"]: json.dumps([k.to_dict() for k in knobs]),
        META["training"]: json.dumps(training, sort_keys=True, default=str),
        META["parity"]: json.dumps(parity.to_dict()),
        META["exporter"]: f"kickit {__version__}, torch {torch.__version__}, opset {OPSET}",
    }
    if encoder is not None:
        props[META["encoder"]] = json.dumps(encoder, sort_keys=True)
    return props


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    parity: Parity
    weights_hash: str
    knobs: list[Knob]
    encoder_path: Path | None = None  # the companion encoder file (VAE families)


def export_generator(
    generator: torch.nn.Module,
    contract: SpectralContract,
    out: str | os.PathLike[str],
    *,
    latent_dim: int,
    knobs: Sequence[Knob] | None = None,
    knob_fn: Callable[[torch.nn.Module], list[Knob]] | None = None,
    family: str = "spec-gan",
    output: str = "spec",
    training: dict[str, Any] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = OPSET,
    encoder: dict[str, Any] | None = None,
    fold: bool = True,
) -> ExportResult:
    """Export ``generator`` to ``out``; raises :class:`ExportError` (nothing written) when anything fails.

    ``fold``: write the generator's inference form (:mod:`kickit.export.fold`: upsample + conv blocks as
    the equal transposed convolutions, 2x faster); the parity self-test still compares against ``generator``.

    Knobs: pass ``knobs`` ready-made, or ``knob_fn(generator) -> list[Knob]`` to compute them after the
    parity self-test passed (they are costly), or neither for a model without knobs. ``encoder``: the
    companion-encoder record of VAE families (docs/model-file.md).
    """
    out = Path(out)
    generator = generator.eval().to("cpu", torch.float32)
    try:
        data = to_onnx(fold_for_export(generator, latent_dim) if fold else generator, latent_dim, output, opset)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"torch could not export the generator to ONNX: {str(e).splitlines()[0]}") from e
    parity = parity_check(generator, data, latent_dim, output, tolerance=tolerance)
    if not parity.ok:
        raise ExportError(
            f"parity self-test failed: max |onnxruntime - torch| = {parity.max_abs_diff:.3g} on "
            f"{parity.latents} latents exceeds {tolerance:g}; {out} was not written"
        )
    if knobs is None:
        knobs = knob_fn(generator) if knob_fn is not None else []
    summary = dict(training or {})
    summary.setdefault("exported", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    summary.setdefault("graph", FOLDED_GRAPH if fold else "as trained")
    props = metadata(contract, family=family, output=output, latent_dim=latent_dim, knobs=knobs,
                     training=summary, parity=parity, encoder=encoder)
    final = with_metadata(data, props)
    out.parent.mkdir(parents=True, exist_ok=True)
    loaded: list[ModelFile] = []

    def check(tmp: Path) -> None:
        try:
            loaded.append(load_model(tmp))
        except ModelError as e:
            raise ExportError(f"the exported file fails kickit's own loader ({e.reason}); {out} was not written") \
                from None

    with atomic_write(out, before_replace=check) as fh:
        fh.write(final)
    model = loaded[0]
    return ExportResult(out, len(final), parity, model.weights_hash, list(model.knobs))


# ----- the companion encoder of VAE families ------------------------------------------------------------
def encoder_to_onnx(encoder: torch.nn.Module, contract: SpectralContract, opset: int = OPSET) -> bytes:
    """``encoder(spec (B, channels, frames, rows)) -> z (B, latent)`` as ONNX bytes (dynamic batch)."""
    encoder = encoder.eval().to("cpu", torch.float32)
    buf = io.BytesIO()
    x = torch.zeros(2, *contract.shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder, (x,), buf, dynamo=False, input_names=[ENCODER_INPUTS[0]], output_names=[ENCODER_OUTPUT],
            dynamic_axes={ENCODER_INPUTS[0]: {0: "batch"}, ENCODER_OUTPUT: {0: "batch"}}, opset_version=opset,
            do_constant_folding=True, export_params=True,
        )
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def encoder_parity(encoder: torch.nn.Module, data: bytes, inputs: np.ndarray,
                   tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Max abs difference of the encoder's latents, onnxruntime vs torch, on ``inputs`` (B, *contract.shape)."""
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    sess = ort.InferenceSession(data, sess_options=session_options(2), providers=["CPUExecutionProvider"])
    (got,) = sess.run([ENCODER_OUTPUT], {ENCODER_INPUTS[0]: x})
    with torch.no_grad():
        want = encoder.eval()(torch.from_numpy(x)).float().numpy()
    if got.shape != want.shape:
        raise ExportError(f"encoder parity self-test failed: onnxruntime shape {got.shape} != torch {want.shape}")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return Parity(len(x), float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf"), tolerance)


def encoder_path_for(model_path: str | os.PathLike[str]) -> Path:
    """``NAME.onnx`` -> ``NAME.encoder.onnx`` in the same folder."""
    p = Path(model_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.encoder.onnx")


def export_encoder(
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    contract: SpectralContract,
    model_out: str | os.PathLike[str],
    *,
    latent_dim: int,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Write the encoder (``spec -> z``, the posterior mean) next to ``model_out`` as ``NAME.encoder.onnx``.

    Parity self-test on the decoder's own hits from seeded latents (in-distribution spectrograms) and on
    seeded uniform noise in [-1, 1]; returns the ``kickit.encoder`` record for the model file's metadata
    (file name, sha256 of the file, input kind, parity). Raises :class:`ExportError` (nothing written).
    """
    encoder = encoder.eval().to("cpu", torch.float32)
    try:
        data = encoder_to_onnx(encoder, contract, opset)
    except Exception as e:
        raise ExportError(f"torch could not export the encoder to ONNX: {str(e).splitlines()[0]}") from e
    rng = np.random.default_rng(PARITY_SEED)
    z = rng.standard_normal((PARITY_LATENTS // 2, latent_dim)).astype(np.float32)
    with torch.no_grad():
        hits = decoder.eval()(torch.from_numpy(z)).float().numpy()
    noise = rng.uniform(-1.0, 1.0, (PARITY_LATENTS // 2, *contract.shape)).astype(np.float32)
    parity = encoder_parity(encoder, data, np.concatenate([hits, noise]), tolerance)
    out = encoder_path_for(model_out)
    if not parity.ok:
        raise ExportError(f"encoder parity self-test failed: max |onnxruntime - torch| = {parity.max_abs_diff:.3g} "
                          f"exceeds {tolerance:g}; {out} was not written")
    props = {
        META["format"]: str(FORMAT_VERSION),
        META["contract"]: contract.to_json(),
        META["latent_dim"]: str(int(latent_dim)),
        META["parity"]: json.dumps(parity.to_dict()),
        META["exporter"]: f"kickit {__version__}, torch {torch.__version__}, opset {OPSET}",
        "kickit.role": "encoder",
    }
    final = with_metadata(data, props)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as fh:
        fh.write(final)
    return {"file": out.name, "sha256": hashlib.sha256(final).hexdigest(), "input": ENCODER_INPUTS[0],
            "output": ENCODER_OUTPUT, "parity": parity.to_dict()}
