"""Dask worker preload of a local sweep cluster (``LocalCluster(preload=[this module])``):
the worker process ignores SIGINT. A terminal's Ctrl-C reaches the whole foreground process
group; the sweep's own process asks the variants to checkpoint and stop (a Dask ``Event``),
so a worker that died of KeyboardInterrupt would lose the variant it runs instead.
"""

from __future__ import annotations

import signal
from contextlib import suppress


def dask_setup(worker) -> None:
    """Called by Dask in the worker process before it takes tasks."""
    with suppress(ValueError):  # not in the process's main thread: not ours to change
        signal.signal(signal.SIGINT, signal.SIG_IGN)
