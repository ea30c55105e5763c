"""GPU jobs of the shared finished run (`finished`, two fake GPUs): one GPU per job.

Every GPU job logs the GPU it leased (`CUDA_VISIBLE_DEVICES`) with the time, and how long it
held it when it ended. Read from the jobs' logs: two GPU jobs ran at the same time, and no
two jobs that overlapped had the same GPU.
"""

import re
from datetime import datetime
from itertools import combinations

import pytest
from wf import GPU_RULES

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO leukoflow\.core\.gpus: "


def gpu_leases(workdir):
    """(log, GPU, start, end) of every GPU job of the run, from the lease lines of its log."""
    leases = []
    for rule in GPU_RULES:
        for log in sorted((workdir / "logs" / rule).rglob("*.log")):
            text = log.read_text()
            got = re.search(STAMP + r"GPU lease: GPU (\S+) \(CUDA_VISIBLE_DEVICES=(\S+),", text)
            ended = re.search(STAMP + r"GPU lease ends: (\S+) held", text)
            assert got and ended, f"{log}: no lease lines\n{text[-2000:]}"
            assert got[2] == got[3] == ended[2]
            start, end = (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f") for m in (got, ended))
            leases.append((log.relative_to(workdir), got[2], start, end))
    return leases


def test_every_gpu_job_leases_one_gpu_and_overlapping_jobs_never_share_one(finished):
    leases = gpu_leases(finished)
    # each GPU rule for both architectures, and SimpleNet's ablation train and evaluate
    assert len(leases) == 2 * len(GPU_RULES) + 2
    assert {gpu for _, gpu, _, _ in leases} == {"0", "1"}
    overlapping = [(a, b) for a, b in combinations(leases, 2) if a[2] < b[3] and b[2] < a[3]]
    assert overlapping, "no two GPU jobs ran at the same time"
    for a, b in overlapping:
        assert a[1] != b[1], f"{a[0]} and {b[0]} overlapped on GPU {a[1]}"


def test_gpu_jobs_share_the_compile_cache_and_log_compile_seconds(finished):
    for log in (finished / "logs" / "train").rglob("*.log"):
        text = log.read_text()
        assert f"compile cache: {finished / '.cache' / 'xla'}" in text
        assert "compile seconds: " in text
