"""Regenerate the small test model files of the other families (next to tiny-spec.onnx):

    .venv/bin/python tests/data/models/make_tiny_families.py

* ``tiny-vae.onnx`` + ``tiny-vae.encoder.onnx``: the ``vae-tiny`` training config (family ``spec-vae``),
  untrained (seeded), decoder output base map set from synthetic kicks; the decoder is the model file, the
  encoder its companion named (with its sha256) in the model's ``kickit.encoder`` metadata.
* ``tiny-wave.onnx``: the ``wavegan-tiny`` config (family ``wave-gan``, output ``audio``), untrained (seeded).

Both go through the real exporter (parity self-tests, metadata, knobs) and kickit's own loader.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from kickit.export.exporter import export_untrained

from kickit.modelfile import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny import synthetic_kicks  # noqa: E402

HERE = Path(__file__).resolve().parent
VAE = HERE / "tiny-vae.onnx"
WAVE = HERE / "tiny-wave.onnx"


def main() -> int:
    torch.set_num_threads(2)
    for config, out in (("vae-tiny", VAE), ("wavegan-tiny", WAVE)):
        path = export_untrained(config, out, seed=0, knobs=True, knob_samples=64, knob_bases=2,
                                base_audio=synthetic_kicks())
        m = load_model(path, require_encoder=config == "vae-tiny")
        files = [path] + ([m.encoder_path] if m.encoder_path else [])
        print(f"wrote {', '.join(f'{f.name} ({f.stat().st_size / 1024:.0f} KiB)' for f in files)}: {m.family}, "
              f"output {m.output}, latent {m.latent_dim}, can_encode {m.can_encode}, "
              f"knobs: {', '.join(k.name for k in m.knobs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
