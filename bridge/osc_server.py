"""The OSC server: a UDP socket (127.0.0.1:9000 by default) read by one thread. Every datagram goes through
:func:`kickit.bridge.oscmap.parse_datagram`; drops are counted and logged at a limited rate, and nothing a
client sends can stop the loop. Replies go to the port a client registered with ``/kickit/connect``, else to
the sender.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from kickit.bridge.control import Controller
from kickit.bridge.oscmap import Dropped, build, parse_datagram

log = logging.getLogger("kickit.bridge")

RCVBUF = 1 << 20  # bytes of socket receive buffer asked for


class OscError(RuntimeError):
    pass


class OscServer:
    def __init__(self, controller: Controller, host: str = "127.0.0.1", port: int = 9000) -> None:
        self.controller = controller
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # room for bursts (a flood is read as fast as it comes; the kernel caps this at rmem_max)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise OscError(f"OSC: cannot listen on {host}:{port} ({e.strerror or e})") from None
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.handled = 0
        self.dropped = 0
        self.errors = 0
        self.client: tuple[str, int] | None = None  # registered with /kickit/connect
        self._last_sender: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        controller.send = self.send

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kickit-osc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sock.close()

    def send(self, address: str, *args: Any) -> None:
        target = self.client or self._last_sender
        if target is None:
            return
        try:
            self.sock.sendto(build(address, *args), target)
        except OSError as e:
            log.debug("OSC reply to %s failed: %s", target, e)

    def handle_datagram(self, data: bytes, sender: tuple[str, int] | None = None) -> None:
        stamp = time.perf_counter()
        self.received += 1
        for item in parse_datagram(data):
            if isinstance(item, Dropped):
                self.dropped += 1
                self.controller.log_drop(item.address, item.reason)
                continue
            if sender is not None:
                self._last_sender = sender
            if item.kind == "connect":
                self.client = (sender[0] if sender is not None else "127.0.0.1", item.value)
                self.controller.announce()
            self.handled += 1  # counted first: a /kickit/status reply includes itself
            self.controller.handle(item, stamp)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if self._stop.is_set():
                    return
                self.errors += 1
                log.debug("OSC receive error: %s", e)
                continue
            try:
                self.handle_datagram(data, sender)
            except Exception:  # never let one message stop the server
                self.errors += 1
                log.exception("OSC handling failed")

    def counters(self) -> dict[str, Any]:
        return {"osc_received": self.received, "osc_handled": self.handled, "osc_dropped": self.dropped,
                "osc_errors": self.errors}
