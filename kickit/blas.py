"""numpy's BLAS kept to one thread wherever kickit renders hits.

The only BLAS call on the render path is the spectral contract's unpooling (one small matrix product per hit,
:meth:`kickit.spectral.SpectralContract.unpool_db`). OpenBLAS would run it on every core with spinning worker
threads; on 2 cores that already carry the audio thread, a render process and onnxruntime, those threads wait
on each other and one decode measured 30 ms instead of 1 ms (docs/benchmarks.md, render). One thread per
renderer, and as many renderers as cores, is both faster and steadier.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_limited = False


def single_threaded() -> None:
    """Limit numpy's BLAS to one thread in this process (idempotent; the process keeps the limit)."""
    global _limited
    with _lock:
        if _limited:
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _limited = True
