"""Small dataset files written by the data tests (never the real datasets)."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np

from dnupdate.engine.data.cifar import write_cifar_binary
from dnupdate.engine.data.idx import write_idx


def random_images(count: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def write_mnist_split(
    folder: Path, prefix: str, count: int, *, gz: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``{prefix}-images-idx3-ubyte[.gz]`` and the labels file; return what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    images = random_images(count, (28, 28), seed)
    labels = np.arange(count, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


def write_cifar10_folder(folder: Path, per_batch: int = 7, *, test: str = "test_batch.bin"):
    """Five training batches and a test batch of ``per_batch`` records each."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, name in enumerate([*(f"data_batch_{i}.bin" for i in range(1, 6)), test]):
        images = random_images(per_batch, (3, 32, 32), seed=index)
        labels = (np.arange(per_batch) + index) % 10
        write_cifar_binary(folder / name, images, [labels])
        written.append((images, labels))
    return written


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Callable]] = {}

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args):
        pass


def serve_bytes(data: bytes) -> Callable:
    """A route that sends ``data`` with a correct Content-Length."""

    def handler(request):
        request.send_response(200)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    return handler


def serve_truncated(data: bytes, keep: int) -> Callable:
    """A route that promises all of ``data`` but sends ``keep`` bytes and hangs up."""

    def handler(request):
        request.send_response(200)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data[:keep])
        request.wfile.flush()
        request.close_connection = True

    return handler


@contextmanager
def http_server(routes: dict[str, Callable]) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 serving ``routes``; yields its base URL."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def unused_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
