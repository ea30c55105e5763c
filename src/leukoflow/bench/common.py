"""What the benchmark kinds share: the machine line, timers (of a call, of a process tree),
the synthetic dataset, and the tables."""

import fnmatch
import math
import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from leukoflow.core.errors import LeukoflowError


def machine() -> dict:
    """Where and when figures are measured.

    Returns:
        {"cpu_model", "cores", "load_avg_1min", "host", "time_utc"}.
    """
    from leukoflow.core.runtime import cpu_model

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "host": platform.node(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def timed(function: Callable, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Call `function(*args, **kwargs)` once.

    Returns:
        (wall seconds, its result).
    """
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def cpu_seconds(*whos: int) -> float:
    """User + system CPU seconds so far of each `resource.RUSAGE_*` in `whos`, summed
    (RUSAGE_CHILDREN counts only children that have ended and been waited for)."""
    total = 0.0
    for who in whos:
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def ms_per_item(function: Callable, items: Sequence, repeats: int) -> float:
    """Best over `repeats` passes of the mean wall time of `function(item)`, ms per item."""
    best = math.inf
    for _ in range(repeats):
        seconds, _ = timed(lambda: [function(item) for item in items])
        best = min(best, seconds / len(items))
    return 1000 * best


def synthetic_dataset(root: str | Path, images: int, size: int = 450, threads: int = 1) -> int:
    """Write a synthetic dataset in the C-NMC training layout of about `images` cells.

    Subjects of up to 25 images each (at least 6 subjects), no preliminary-test set, seed 0.

    Args:
        root: the dataset folder to write.
        images: about how many images.
        size: image side, px.
        threads: worker processes.

    Returns:
        The number of images written.
    """
    from leukoflow.data.synth import generate_dataset

    per_subject = min(25, max(1, images // 6))
    summary = generate_dataset(
        root,
        subjects=max(6, round(images / per_subject)),
        images_per_subject=per_subject,
        size=size,
        threads=threads,
        prelim_subjects=0,
    )
    return summary["training_images"]


def format_table(kind: str, figures: dict) -> str:
    """The figures of one kind as a two-column text table, headed `bench KIND`."""
    width = max(len(key) for key in figures)
    lines = [f"bench {kind}", "-" * (width + 14)]
    for key, value in figures.items():
        shown = f"{value:12.3f}" if isinstance(value, float) else f"{value!s:>12}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def summary_rows(
    kind: str, figures: dict, patterns: Iterable[str] | None
) -> list[tuple[str, str, Any]]:
    """`(kind, key, value)` for every figure whose key matches one of `patterns` (fnmatch),
    in the figures' order; every figure when `patterns` is None."""
    return [
        (kind, key, value)
        for key, value in figures.items()
        if patterns is None or any(fnmatch.fnmatchcase(key, p) for p in patterns)
    ]


def format_value(value: Any) -> str:
    """A figure as text: floats with 3 significant decimals at most, others as they are."""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def format_summary(rows: Sequence[tuple[str, str, Any]], header: str = "") -> str:
    """The summary rows as one Markdown table (readable as text), `header` above it."""
    kind_w = max([4, *(len(r[0]) for r in rows)])
    key_w = max([6, *(len(r[1]) for r in rows)])
    value_w = max([5, *(len(format_value(r[2])) for r in rows)])
    lines = [header] if header else []
    lines.append(f"| {'kind':<{kind_w}} | {'figure':<{key_w}} | {'value':>{value_w}} |")
    lines.append(f"|{'-' * (kind_w + 2)}|{'-' * (key_w + 2)}|{'-' * (value_w + 1)}:|")
    for kind, key, value in rows:
        lines.append(f"| {kind:<{kind_w}} | {key:<{key_w}} | {format_value(value):>{value_w}} |")
    return "\n".join(lines)


def _peak_rss_bytes(pid: int) -> int:
    """The peak resident memory (VmHWM) of process `pid` so far, bytes; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(root: int) -> tuple[int, int]:
    """Memory of process `root` and all its descendants, from /proc (Linux).

    Returns:
        (their current resident memory summed, the largest peak resident memory among
        them), bytes.
    """
    parent_of, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/statm") as handle:
                rss[int(entry.name)] = int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        parent_of[int(entry.name)] = int(fields[1])
    children = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    total, largest, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        largest = max(largest, _peak_rss_bytes(pid))
        todo.extend(children.get(pid, []))
    return total, largest


def run_measured(
    command: Sequence[str],
    log_path: str | Path,
    env: dict | None = None,
    cwd: str | Path | None = None,
    interval: float = 0.1,
) -> dict:
    """Run `command` in a subprocess and measure it: time, CPU and memory of its whole tree.

    Memory is sampled from /proc every `interval` s (rusage's maxrss would include the
    parent's memory at fork); CPU time comes from `wait4`, so it counts every descendant
    that was waited for (worker processes included).

    Args:
        command: the command line.
        log_path: file that receives its stdout and stderr.
        env: its environment (default: this one).
        cwd: its working folder (default: this one).
        interval: seconds between memory samples.

    Returns:
        {"s": wall seconds, "cpu_s": user + system seconds, "max_rss_mb": the largest peak
        of one process, "peak_tree_mb": the peak of the whole tree}.

    Raises:
        LeukoflowError: the command failed; the message holds the tail of its output.
    """
    with open(log_path, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        peaks, done = [0, 0], threading.Event()

        def sample():
            while not done.wait(interval):
                total, largest = tree_memory(process.pid)
                peaks[:] = max(peaks[0], total), max(peaks[1], largest)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = Path(log_path).read_text()[-2000:]
        raise LeukoflowError(f"{' '.join(command)} failed ({process.returncode}):\n{tail}")
    return {
        "s": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": peaks[1] / 2**20,
        "peak_tree_mb": max(peaks) / 2**20,
    }
