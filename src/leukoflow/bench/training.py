"""What training consumes: images/s of a compiled training step, the rate a loader must beat.

Not a `leukoflow bench` kind of its own: the loader test compares the loader with it, and
`scripts/gpu_throughput.py` measures the same step on a GPU.
"""

import time

import numpy as np


def consumption_images_per_second(
    arch: str, size: int, batch_size: int, steps: int = 10, settings: dict | None = None
) -> float:
    """Images/s one training step of `arch` consumes, on random uint8 data.

    The model is compiled as `leukoflow.train.job` compiles it, with the precision and XLA
    that `leukoflow.core.runtime.decide` gives `settings` on this machine (what `train` would
    use); one warm-up step, then `steps` timed steps on the same batch.

    Args:
        arch: the architecture (random weights).
        size: input side, px.
        batch_size: images per step.
        steps: timed steps.
        settings: `mixed_precision` / `jit_compile` (default: both "auto").

    Returns:
        Images per second over the timed steps.
    """
    import keras

    from leukoflow.core import runtime
    from leukoflow.models import build_model
    from leukoflow.train.schedule import compile_model

    decided = runtime.decide(settings or {"mixed_precision": "auto", "jit_compile": "auto"})
    runtime.apply(decided)
    try:
        model = compile_model(build_model(arch, size), 1e-4, 1000, 1e-4, decided.jit_compile)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 2, batch_size).astype(np.float32)
        model.train_on_batch(images, labels)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(images, labels)
        return steps * batch_size / (time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy("float32")
