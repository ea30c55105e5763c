"""`leukoflow bench serve`: a bounded load test of `leukoflow serve` on the loopback interface.

A bundle of a randomly initialised SimpleNet and synthetic 450 px BMP cells are written to a
temporary folder; `leukoflow predict`'s own throughput on those files is timed first
(`iter_predictions`, the code path the server uses); then a real server (`leukoflow serve`
in a subprocess, uvicorn on 127.0.0.1) answers `clients` concurrent clients, each sending
`requests` multipart requests of `per_request` images one after the other. Every answer is
checked: status 200, one row per image sent, in order, named as sent, with a probability:
an image missing from an answer counts as lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(options: Sequence[str], log_file: Path, timeout: float = 120) -> Iterator[str]:
    """Run `leukoflow serve OPTIONS --port P` in a subprocess until the block ends.

    Args:
        options: its options (without `--port`).
        log_file: where its output goes.
        timeout: seconds to wait for `GET /healthz`.

    Yields:
        Its base URL, `http://127.0.0.1:P`.

    Raises:
        LeukoflowError: when it exits or does not answer in time (its log's end quoted).
    """
    import httpx

    port = free_port()
    command = [shutil.which("leukoflow") or "leukoflow", "serve", *options, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with open(log_file, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = Path(log_file).read_text()[-2000:]
                raise LeukoflowError(f"leukoflow serve did not start ({log_file}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load_test(
    url: str,
    files: Sequence[Path],
    clients: int,
    requests: int,
    per_request: int,
    model: str | None = None,
    token: str | None = None,
) -> dict:
    """`clients` threads, each sending `requests` requests of `per_request` of `files`.

    Returns:
        requests, images sent, wall seconds, images/s, latency p50/p95/max (ms), answers
        by status (`status_200`, `status_503`, ...), `errors` (answers other than 200 or
        failed connections), `lost_images` (images sent in a request answered 200 but missing
        or without a probability in its answer).
    """
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies, statuses, lost, failures = [], {}, [0], [0]
    lock = threading.Lock()
    payloads = [
        [files[(k * per_request + i) % len(files)] for i in range(per_request)]
        for k in range(clients * requests)
    ]
    contents = {path: Path(path).read_bytes() for path in set(files)}

    form = {"model": model or ""}

    def client(c):
        with httpx.Client(base_url=url, headers=headers, timeout=300) as session:
            for r in range(requests):
                batch = payloads[c * requests + r]
                names = [f"c{c}/r{r}/{i}/{Path(p).name}" for i, p in enumerate(batch)]
                upload = [("images", (n, contents[p])) for n, p in zip(names, batch, strict=True)]
                start = time.perf_counter()
                try:
                    response = session.post("/v1/predict", files=upload, data=form)
                except httpx.HTTPError:
                    with lock:
                        failures[0] += 1
                    continue
                elapsed = time.perf_counter() - start
                rows = response.json().get("images", []) if response.status_code == 200 else None
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if rows is not None:
                        probability = "calibrated_probability_all"
                        answered = {row["path"] for row in rows if row[probability] is not None}
                        lost[0] += sum(name not in answered for name in names)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    sent = clients * requests * per_request
    ms = 1000 * np.array(latencies or [np.nan])
    figures = {
        "requests": clients * requests,
        "images_sent": sent,
        "wall_s": wall,
        "images_per_s": statuses.get(200, 0) * per_request / wall,
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
        "latency_max_ms": float(ms.max()),
        "errors": failures[0] + sum(n for status, n in statuses.items() if status != 200),
        "lost_images": lost[0],
    }
    figures.update({f"status_{status}": n for status, n in sorted(statuses.items())})
    return figures


def run(
    clients: int = 32,
    requests: int = 20,
    per_request: int = 4,
    cells: int = 64,
    size: int = 128,
    threads: int | None = None,
) -> dict:
    """The load test's figures beside `leukoflow predict`'s throughput on the same machine.

    Args:
        clients: concurrent clients.
        requests: requests per client.
        per_request: images per request.
        cells: distinct synthetic 450 px cells (sent round robin).
        size: SimpleNet's input side, px.
        threads: the server's and predict's preparation threads (default: the cores).

    Returns:
        `serve_*` figures (`load_test`'s), `predict_images_per_s` over as many images as the
        load test sends, and `serve_vs_predict` (images/s of the server over predict's).

    Raises:
        LeukoflowError: when the server does not start.
    """
    from PIL import Image

    from leukoflow.bench.predict import make_bundle
    from leukoflow.data import synth
    from leukoflow.deploy.bundle import load_bundle
    from leukoflow.deploy.predict import iter_predictions, make_predict_fns
    from leukoflow.stain.normalize import fit_reference

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        images, _, _ = synth.cells(cells, 450, seed=0, subjects=4)
        files = []
        for i, image in enumerate(images):
            files.append(tmp / f"cell{i}.bmp")
            Image.fromarray(image).save(files[-1])
        bundle_dir = tmp / "models" / "SimpleNet"
        make_bundle("SimpleNet", size, fit_reference(images[:8], "macenko"), bundle_dir)
        bundle = load_bundle(bundle_dir, "onnx")  # the engine `predict` chooses on a CPU
        sent = [files[i % len(files)] for i in range(clients * requests * per_request)]
        fns = make_predict_fns(bundle)
        options = {"workers": threads, "progress": False, "predict_fns": fns}
        list(iter_predictions(bundle, sent[:64], **options))  # warm up
        start = time.perf_counter()
        rows = list(iter_predictions(bundle, sent, **options))
        predict_s = time.perf_counter() - start
        if any(row.error for row in rows):
            raise LeukoflowError("predict could not classify the benchmark's cells")
        options = ["--model", str(bundle_dir), "--engine", "onnx", "--queue", str(clients)]
        options += ["--threads", str(threads)] if threads else []
        with running_server(options, tmp / "serve.log") as url:
            figures = load_test(url, files, clients, requests, per_request)
    result = {
        "clients": clients,
        "requests_per_client": requests,
        "images_per_request": per_request,
        "input_size": size,
        "cores": len(os.sched_getaffinity(0)),
        **{f"serve_{key}": value for key, value in figures.items()},
        "predict_images": len(sent),
        "predict_images_per_s": len(sent) / predict_s,
    }
    result["serve_vs_predict"] = result["serve_images_per_s"] / result["predict_images_per_s"]
    return result
