"""The terminal status panel: plain ANSI redraws a few times a second on a TTY, plain log lines otherwise.
:func:`format_panel` is pure (a status dict -> lines)."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

log = logging.getLogger("kickit.bridge")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def format_panel(s: dict[str, Any], width: int = 100) -> list[str]:
    pads = s.get("pads", [])
    sel = s.get("selected", 0)
    cells = []
    for i, p in enumerate(pads):
        mark = ">" if i == sel else " "
        mode = "F" if p.get("mode") == "fresh" else "H"
        ready = "" if p.get("ready") else "?"
        cells.append(f"{mark}{i:2d}:{p.get('note', '-')}{mode}{ready}")
    names = s.get("knob_names") or []
    knobs = "  ".join(f"{(names[i] if i < len(names) else f'k{i}')[:10]} {v:+.2f}"
                      for i, v in enumerate(s.get("knobs", [])))
    files = f" (files written {s['files_written']})" if "files_written" in s else ""
    lines = [
        f"kickit bridge  model {s.get('model', '?')} ({str(s.get('weights_hash', ''))[:12]})  "
        f"{s.get('rate', '?')} Hz  output {s.get('output', '?')}",
        f"MIDI {s.get('midi', '-')}   OSC {s.get('osc', '-')}",
        "pads " + " ".join(cells[:8]),
        "     " + " ".join(cells[8:]),
        f"knobs (pad {sel}): {knobs}",
        f"voices {s.get('voices', 0)}/{s.get('max_voices', 0)} (stolen {s.get('stolen', 0)})  notes "
        f"{s.get('notes', 0)}{files}  render {_ms(s.get('render_ms_p50'))}/hit  knob->ready p95 "
        f"{_ms(s.get('knob_ready_ms_p95'))}  note-on p99 {_ms(s.get('note_latency_ms_p99'))}",
        f"xruns {s.get('xruns', 0)}  callback errors {s.get('callback_errors', 0)}  dropped: OSC "
        f"{s.get('osc_dropped', 0)} events {s.get('ring_dropped', 0)}  not ready {s.get('not_ready', 0)}  "
        f"fresh underruns {s.get('fresh_underruns', 0)}",
    ]
    groups = s.get("groups") or []
    if len(groups) > 1:  # pad groups, one model each
        lines.insert(2, "groups " + "  ".join(f"{g.get('name')}: {g.get('model')} pads {g.get('pads')}"
                                                for g in groups))
    if s.get("output_error"):
        lines.append(f"output: {s['output_error']}")
    if s.get("last_error"):
        lines.append(f"last error: {s['last_error']}")
    return [line[:width] for line in lines]


def format_line(s: dict[str, Any]) -> str:
    return (f"voices {s.get('voices', 0)} notes {s.get('notes', 0)} render {_ms(s.get('render_ms_p50'))} "
            f"knob->ready p95 {_ms(s.get('knob_ready_ms_p95'))} xruns {s.get('xruns', 0)} "
            f"OSC dropped {s.get('osc_dropped', 0)} callback errors {s.get('callback_errors', 0)}")


class StatusPanel:
    """Redraws ``get_status()`` at ``hz`` on a TTY; logs a line every ``log_every`` s otherwise."""

    def __init__(self, get_status: Callable[[], dict[str, Any]], stream: TextIO | None = None, hz: float = 4.0,
                 log_every: float = 10.0) -> None:
        self.get_status = get_status
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 1.0 / hz if self.tty else log_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = 0

    def draw(self) -> None:
        s = self.get_status()
        if self.tty:
            lines = format_panel(s, max(40, shutil.get_terminal_size((120, 24)).columns - 1))
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.stream.flush()
            self._drawn = len(lines)
        else:
            log.info("%s", format_line(s))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.draw()
            except Exception as e:  # the panel must never take the bridge down
                log.debug("status panel: %s", e)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kickit-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
