"""`leukoflow bench inference`: CPU latency and throughput per architecture vs `model.predict`."""

import logging

log = logging.getLogger(__name__)


def architecture_names(archs: str) -> list[str]:
    """The architectures of a comma-separated list, or every one for "all".

    Raises:
        LeukoflowError: an unknown architecture (from the registry).
    """
    from leukoflow.models.registry import ARCHITECTURES, get_spec

    if archs == "all":
        return list(ARCHITECTURES)
    return [get_spec(name.strip()).name for name in archs.split(",") if name.strip()]


def run(
    archs: str = "all", size: int = 64, calls: int = 30, batch_size: int = 32, naive_calls: int = 10
) -> dict:
    """CPU inference per architecture with random weights, at `size` px.

    Batch-1 latency (median, p95) and batch throughput of the compiled function
    (`leukoflow.evaluate.timing`), against `model.predict` called once per image (the naive path).

    Args:
        archs: comma-separated architectures, or "all".
        size: input side, px (0: each architecture's native size).
        calls: timed batch-1 calls.
        batch_size: the throughput batch.
        naive_calls: timed `model.predict` calls.

    Returns:
        The figures, `<arch>_<figure>` per architecture: latencies, images/s, and the
        ratios to the naive path.
    """
    import keras

    from leukoflow.core.runtime import decide
    from leukoflow.evaluate.timing import measure_compiled, naive_predict_latency
    from leukoflow.models import build_model
    from leukoflow.models.registry import ARCHITECTURES

    figures = {"input_size": size or "native", "batch_size": batch_size, "calls": calls}
    jit = decide({"jit_compile": "auto"}).jit_compile
    for arch in architecture_names(archs):
        side = size or ARCHITECTURES[arch].native_size
        keras.utils.set_random_seed(0)
        model = build_model(arch, side, weights="none")
        record = measure_compiled(model, 3, calls, batch_size, jit)
        naive = naive_predict_latency(model, calls=naive_calls, warmup=2)
        naive_rate = 1000 / naive["median"]
        figures.update(
            {
                f"{arch}_input_size": side,
                f"{arch}_latency_median_ms": record["latency_ms"]["median"],
                f"{arch}_latency_p95_ms": record["latency_ms"]["p95"],
                f"{arch}_batch{batch_size}_images_per_s": record["throughput_images_per_s"],
                f"{arch}_naive_predict_median_ms": naive["median"],
                f"{arch}_naive_predict_images_per_s": naive_rate,
                f"{arch}_latency_vs_naive": naive["median"] / record["latency_ms"]["median"],
                f"{arch}_throughput_vs_naive": record["throughput_images_per_s"] / naive_rate,
            }
        )
        log.info("%s: %s", arch, {k: v for k, v in figures.items() if k.startswith(arch)})
        del model
        keras.backend.clear_session()
    return figures
