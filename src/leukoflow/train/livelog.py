"""Training metrics through DVCLive, epoch by epoch, into the model's folder.

`TrainingLive(folder, history)` opens a DVCLive logger (`dvclive.Live`) in `folder` and
writes what DVCLive's Keras callback would write for each epoch: the summary
`metrics.json` (the last epoch's values and `step`) and one series per metric in
`plots/metrics/<name>.tsv`, under the callback's names (`train/...` for training figures,
`eval/...` for validation ones). `dvc plots show FOLDER/plots/metrics` draws a run in
progress.

The training loop calls `train_on_batch`, not `fit`, so it logs through `Live` directly
instead of driving the callback: the callback is a `tf.keras` class and would tie the
logger to TensorFlow, while training also runs on JAX.

Resume: a resumed training job opens the logger with the checkpoint's history, which
DVCLive writes again from scratch before the next epoch, so a killed run neither loses nor
repeats an epoch in the DVCLive files, whatever it left on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# history.csv column -> DVCLive metric (the names DVCLive's Keras callback gives them)
LIVE_METRICS = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "val_loss": "eval/loss",
    "val_accuracy": "eval/accuracy",
    "val_weighted_f1": "eval/weighted_f1",
    "learning_rate": "train/learning_rate",
    "seconds": "train/epoch_seconds",
}


class TrainingLive:
    """DVCLive's files of one training job (see the module docstring).

    Args:
        folder: the DVCLive folder (rewritten from `history`).
        history: the epochs already trained (rows with the `LIVE_METRICS` keys and
            `epoch`), in order: empty for a new run, the checkpoint's for a resumed one.
    """

    def __init__(self, folder: str | Path, history: Sequence[Mapping] = ()):
        from dvclive import Live

        self.folder = Path(folder)
        # no dvc.yaml of its own (dvc.yaml names what DVC shows), no report, no
        # experiment saved at the end: the workflow's DVC stage versions the files
        self._live = Live(
            str(self.folder), resume=False, report=None, save_dvc_exp=False, dvcyaml=None
        )
        for row in history:
            self.log_epoch(row)
        if history:
            log.info("DVCLive: %d epochs written again to %s", len(history), self.folder)

    def log_epoch(self, row: Mapping) -> None:
        """Log one epoch's figures (a history row) as step `row["epoch"]`."""
        self._live.step = int(row["epoch"])
        for column, name in LIVE_METRICS.items():
            self._live.log_metric(name, float(row[column]))
        self._live.next_step()

    def end(self) -> None:
        """Write the summary a last time and close the logger."""
        self._live.end()


def comparable_summary(summary: Mapping) -> dict:
    """DVCLive's summary without the epoch's wall-clock time, which differs between two
    identical runs (what `dvc metrics diff` should compare).

    Args:
        summary: the summary DVCLive wrote (metrics.json: {"train": {...}, "eval": {...},
            "step": ...}).

    Returns:
        A copy without `LIVE_METRICS["seconds"]`.
    """
    group, name = LIVE_METRICS["seconds"].split("/")
    out = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in summary.items()
    }
    if isinstance(out.get(group), dict):
        out[group].pop(name, None)
    return out
