"""``kickit data fetch``: a real sample collection from Debian packages of free drum kits, without root.

Packages are fetched with ``apt-get download`` into ``<cache>/debs`` (already-downloaded ``.deb`` files are
reused) and unpacked with ``dpkg-deb -x`` into ``<cache>/unpacked/<package>``. Then:

* ``hydrogen-drumkits``, ``hydrogen-data``: every kit's ``drumkit.xml`` is read; the instruments whose name
  matches the wanted instrument (kick: "Kick", "BassDrum", "bass drum 1", ...) are kept with all their velocity
  layers, copied unchanged. Kit name from the XML; licence from the package's Debian copyright file for that kit
  (more precise than the XML's "GPL"), else the XML's.
* ``fluid-soundfont-gm``: each General MIDI drum preset (bank 128) counts as a kit; its GM notes for the
  instrument (kick: 35, 36) are rendered at a few velocities with ``fluidsynth`` (when installed). A preset
  whose render is the same sound as an earlier preset's (FluidR3's "Room 5" plays "Standard"'s kick) is left
  out, so one recording never lands in two kits.

The destination gets one folder per kit and ``sources.json`` (format ``kickit-sources-1``): for every file its
kit, licence and origin, plus the skipped files with the reason; ``kickit data build`` reads it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from kickit.training import kits as kitlib
from kickit.training import soundfont as sflib

log = logging.getLogger(__name__)

SOURCES_FILE = "sources.json"
SOURCES_FORMAT = "kickit-sources-1"
HYDROGEN_PACKAGES = ("hydrogen-drumkits", "hydrogen-data")
SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
PACKAGES = (*HYDROGEN_PACKAGES, SOUNDFONT_PACKAGE)
FLUID_VELOCITIES = (70, 127)
SAME_SOUND = 0.97  # peak normalised cross-correlation above which two renders are one recording (FluidR3: 0.989 for a shared kick, < 0.89 otherwise)
RENDER_RATE = 44100


class FetchError(RuntimeError):
    """Fetching failed; the one-line message says what and how to fix it."""


@dataclass
class SourceItem:
    file: str  # relative to the collection folder
    kit: str
    licence: str | None
    source: str  # where it came from (package, path inside it / preset and note)
    instrument: str  # the kit's instrument name
    velocity: str | None = None


@dataclass
class Collection:
    root: Path
    instrument: str
    items: list[SourceItem] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def kits(self) -> list[str]:
        return sorted({i.kit for i in self.items})

    def write(self) -> Path:
        data = {"format": SOURCES_FORMAT, "instrument": self.instrument,
                "items": [asdict(i) for i in self.items], "skipped": self.skipped}
        path = self.root / SOURCES_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def default_cache() -> Path:
    env = os.environ.get("KICKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kickit"


def safe_name(name: str) -> str:
    """A folder/file name from a kit or instrument name (spaces and odd characters to ``_``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "unnamed"


# ----- Debian packages -----------------------------------------------------------------------------------------
Runner = Callable[[Sequence[str], Path], subprocess.CompletedProcess]


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=3600,
                          stdin=subprocess.DEVNULL)


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise FetchError(f"{name} not found: kickit data fetch needs Debian's apt-get and dpkg-deb "
                         f"(or put the .deb files of {', '.join(PACKAGES)} in the cache's debs/ folder)")
    return exe


def find_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def download_deb(package: str, debs: Path, run: Runner = _run) -> Path:
    """The package's .deb in ``debs`` (reused when there, else ``apt-get download``)."""
    debs.mkdir(parents=True, exist_ok=True)
    have = find_deb(debs, package)
    if have is not None:
        log.info("%s: reusing %s", package, have)
        return have
    apt = _tool("apt-get")
    log.info("%s: apt-get download ...", package)
    r = run([apt, "download", package], debs)
    have = find_deb(debs, package)
    if r.returncode != 0 or have is None:
        msg = " ".join((r.stderr or r.stdout or "").split())[-300:]
        raise FetchError(f"apt-get download {package} failed (exit {r.returncode}): {msg or 'no .deb written'}")
    return have


def unpack_deb(deb: Path, dest: Path, run: Runner = _run) -> Path:
    """``dpkg-deb -x`` into ``dest`` (once: a ``.unpacked`` marker records the .deb it came from)."""
    marker = dest / ".unpacked"
    if marker.is_file() and marker.read_text().strip() == deb.name:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        r = run([_tool("dpkg-deb"), "-x", str(deb), str(tmp)], dest.parent)
        if r.returncode != 0:
            msg = " ".join((r.stderr or r.stdout or "").split())[-300:]
            raise FetchError(f"dpkg-deb -x {deb} failed (exit {r.returncode}): {msg}")
        (tmp / ".unpacked").write_text(deb.name + "\n")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----- Hydrogen kits ----------------------------------------------------------------------------------------------
def collect_hydrogen(unpacked: Path, package: str, out: Collection) -> None:
    """Copy the wanted instrument's layers of every kit under ``unpacked`` into the collection."""
    copyright_file = unpacked / "usr" / "share" / "doc" / package / "copyright"
    licences = kitlib.debian_licences(copyright_file) if copyright_file.is_file() else {}
    kits_root = unpacked / "usr" / "share" / "hydrogen" / "data" / "drumkits"
    search = kits_root if kits_root.is_dir() else unpacked
    for xml in kitlib.find_drumkits(search):
        try:
            kit = kitlib.parse_drumkit(xml)
        except kitlib.KitError as e:
            out.skipped.append({"path": str(xml), "reason": str(e)})
            log.warning("skipping %s", e)
            continue
        licence = kitlib.licence_for(xml.parent.name, licences) or kit.licence
        folder = safe_name(kit.name)
        copied: set[Path] = set()
        for ins, layer in kit.select(out.instrument):
            src = kit.folder / layer.file
            rel_in_pkg = f"{xml.parent.name}/{layer.file}"
            if not src.is_file():
                out.skipped.append({"path": str(src), "reason": f"listed in {xml.name} but missing"})
                continue
            if src in copied:  # two instruments/layers of the kit play the same file
                continue
            copied.add(src)
            dst_rel = _unique(out.root, f"{folder}/{safe_name(Path(layer.file).name)}")
            dst = out.root / dst_rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            out.items.append(SourceItem(
                file=dst_rel, kit=kit.name, licence=licence, source=f"debian:{package}:drumkits/{rel_in_pkg}",
                instrument=ins.name, velocity=f"{layer.min_velocity:g}-{layer.max_velocity:g}",
            ))


def _unique(root: Path, rel: str) -> str:
    """``rel``, or ``stem-2.ext``, ``stem-3.ext``... when a file of that name is already in the collection."""
    p = Path(rel)
    k = 1
    while (root / rel).exists():
        k += 1
        rel = str(p.with_name(f"{p.stem}-{k}{p.suffix}"))
    return rel


# ----- SoundFont drum kits ------------------------------------------------------------------------------------
def soundfont_licence(unpacked: Path, package: str) -> str | None:
    c = unpacked / "usr" / "share" / "doc" / package / "copyright"
    if not c.is_file():
        return None
    text = c.read_text(encoding="utf-8", errors="replace")
    lic = kitlib.debian_licences(c).get("*")
    if lic:
        return lic
    return "MIT" if re.search(r"\bMIT licen[cs]e\b", text, re.IGNORECASE) else None


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of the mono sums (1 = same sound at any delay)."""
    x, y = a.mean(axis=0), b.mean(axis=0)
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 or ny == 0.0:
        return 0.0
    n = 1 << int(np.ceil(np.log2(x.size + y.size)))
    c = np.fft.irfft(np.fft.rfft(x / nx, n) * np.conj(np.fft.rfft(y / ny, n)), n)
    return float(c.max())


def collect_soundfont(sf2: Path, package: str, licence: str | None, out: Collection,
                      velocities: Sequence[int] = FLUID_VELOCITIES, rate: int = RENDER_RATE) -> None:
    """Render the instrument's GM notes of every drum preset of ``sf2`` into the collection."""
    from kickit.audio import peak_normalise, write_wav

    notes = sflib.GM_NOTES.get(out.instrument)
    if not notes:
        log.info("%s: no General MIDI note for %r, skipping the SoundFont", sf2.name, out.instrument)
        return
    hits = [(n, v) for n in notes for v in velocities]
    kept: dict[tuple[int, int], list[tuple[str, np.ndarray]]] = {h: [] for h in hits}
    base = sf2.stem.replace("_", " ")
    for preset in sflib.drum_presets(sf2):
        kit = f"{base} {preset.name}"
        renders = sflib.render_kit(sf2, preset.program, hits, rate)
        for (note, vel), audio in zip(hits, renders, strict=True):
            where = f"debian:{package}:{sf2.name} bank {preset.bank} preset {preset.program} note {note} velocity {vel}"
            peak = float(np.max(np.abs(audio)))
            if peak < 1e-4:
                out.skipped.append({"path": where, "reason": "preset has no sound on this note"})
                continue
            twin = next((k for k, a in kept[(note, vel)] if _similarity(audio, a) > SAME_SOUND), None)
            if twin is not None:
                out.skipped.append({"path": where, "reason": f"same sound as kit {twin!r}"})
                continue
            kept[(note, vel)].append((kit, audio))
            if peak > 0.999:
                audio = peak_normalise(audio, -0.1)
            rel = f"{safe_name(kit)}/note{note}_vel{vel}.wav"
            write_wav(out.root / rel, audio, rate)
            out.items.append(SourceItem(file=rel, kit=kit, licence=licence, source=where,
                                        instrument=f"GM note {note}", velocity=str(vel)))


# ----- the whole fetch ---------------------------------------------------------------------------------------------
def fetch(dest: Path | None = None, instrument: str = "kick", cache: Path | None = None,
          packages: Sequence[str] = PACKAGES, soundfont: bool = True, run: Runner = _run) -> Collection:
    """Download (or reuse), unpack and collect; writes ``dest/sources.json`` and returns the collection."""
    if instrument not in kitlib.INSTRUMENTS:
        raise FetchError(f"unknown instrument {instrument!r} (known: {', '.join(kitlib.instruments())})")
    cache = (cache or default_cache()).expanduser()
    dest = (dest or cache / "samples" / instrument).expanduser()
    if dest.exists() and any(dest.iterdir()) and not (dest / SOURCES_FILE).is_file():
        raise FetchError(f"{dest}: exists and is not a kickit sample collection (no {SOURCES_FILE}); "
                         "pick an empty or new --dest")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    out = Collection(root=dest, instrument=instrument)
    for package in packages:
        deb = download_deb(package, cache / "debs", run)
        unpacked = unpack_deb(deb, cache / "unpacked" / package, run)
        if package == SOUNDFONT_PACKAGE or package.endswith("soundfont-gm"):
            if not soundfont:
                continue
            if sflib.fluidsynth_path() is None:
                log.warning("fluidsynth is not installed: skipping the General MIDI kits of %s", package)
                out.skipped.append({"path": package, "reason": "fluidsynth not installed"})
                continue
            lic = soundfont_licence(unpacked, package)
            for sf2 in sorted(unpacked.rglob("*.sf2")):
                collect_soundfont(sf2, package, lic, out)
        else:
            collect_hydrogen(unpacked, package, out)
    out.write()
    return out
