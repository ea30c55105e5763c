"""The training checkpoint: everything a killed training job needs to continue exactly.

`checkpoint/` holds `state.json` (epoch, best score, history, the fingerprint), `model.npz`
(every model variable, the dropout and augmentation generators' states included),
`optimizer.npz` and `best.npz` (the best epoch's variables). It is written atomically after
every epoch (a new folder, renamed into place), so a job killed at any moment finds either
the previous or the new checkpoint; one with another fingerprint (other settings or
inputs) is discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core.atomic import atomic_dir
from leukoflow.core.errors import LeukoflowError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


def _file_identity(path):
    """What identifies an input file cheaply: name, size, modification time."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def fingerprint(
    arch: str,
    settings: dict,
    train_store: str | Path,
    val_store: str | Path,
    weights_file: str | Path | None,
) -> str:
    """What a checkpoint belongs to, as a sha256 hex digest.

    Args:
        arch: the architecture.
        settings: its merged training settings.
        train_store: the store trained on (its path, size, modification time and the
            contents of its index CSV count).
        val_store: the store validated on (counted the same way).
        weights_file: the initial weights file (path, size and time count), or None.

    Returns:
        The digest of those and of the Keras backend. The number of devices does not count:
        a checkpoint written on N devices resumes on M.
    """
    import keras

    parts = {
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "settings": {key: value for key, value in settings.items() if key != "devices"},
        "backend": keras.backend.backend(),
        "inputs": [],
    }
    for store in (train_store, val_store):
        csv = Path(store).with_suffix(".csv")
        digest = hashlib.sha256(csv.read_bytes()).hexdigest() if csv.is_file() else None
        parts["inputs"].append([_file_identity(store), digest])
    if weights_file:
        parts["inputs"].append(_file_identity(weights_file))
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def variable_values(variables: Sequence[keras.Variable]) -> list[np.ndarray]:
    """Copies of the current values of Keras variables, as numpy arrays, in order."""
    return [np.array(v.numpy()) for v in variables]  # numpy(): mirrored variables too


def assign_values(
    variables: Sequence[keras.Variable], arrays: Sequence[np.ndarray], what: str
) -> None:
    """Assign saved arrays to Keras `variables`, in order.

    Args:
        variables: the model's (or optimizer's) variables.
        arrays: one array per variable, of its shape.
        what: what they are, for the error message (e.g. "optimizer variables").

    Raises:
        LeukoflowError: naming `what` when the number or the shapes do not match.
    """
    if len(variables) != len(arrays):
        raise LeukoflowError(
            f"checkpoint {what} do not match the model: "
            f"{len(arrays)} saved, {len(variables)} expected"
        )
    for variable, array in zip(variables, arrays, strict=True):
        if array.shape != tuple(variable.shape):
            raise LeukoflowError(f"checkpoint {what} do not match the model ({variable.path})")
        variable.assign(array)


def initial_state() -> dict:
    """The training state before the first epoch (what `Checkpoint.save` writes after each)."""
    return {
        "epochs_done": 0,
        "best_score": -1.0,
        "best_epoch": -1,
        "stale": 0,
        "stopped": False,
        "history": [],
        "best_val_probabilities": [],
    }


class Checkpoint:
    """The `checkpoint/` folder: `state.json`, `model.npz`, `optimizer.npz`, `best.npz`.

    Args:
        folder: the checkpoint folder (need not exist).
        fingerprint_hex: what the checkpoint must belong to (`fingerprint`).
    """

    def __init__(self, folder: str | Path, fingerprint_hex: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint_hex

    def load(self) -> dict | None:
        """The saved state if the folder exists and has our fingerprint, else None.

        Temporary folders of an interrupted save are removed; if the job died between
        removing the old folder and renaming the new one, the complete new one (its
        `state.json` is written last) takes its place. A checkpoint with another
        fingerprint (or an unreadable `state.json`) is deleted.
        """
        self._recover()
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return None
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError:
            state = {}
        if state.get("fingerprint") != self.fingerprint:
            log.warning("discarding checkpoint %s: other settings or inputs", self.folder)
            shutil.rmtree(self.folder)
            return None
        return state

    def _recover(self):
        """Finish or clean up an interrupted save (see `load`)."""
        partial = sorted(
            self.folder.parent.glob(f".{self.folder.name}.*"), key=lambda p: p.stat().st_mtime
        )
        complete = [p for p in partial if (p / "state.json").is_file()]
        if complete and not self.folder.exists():
            os.replace(complete[-1], self.folder)
            partial.remove(complete[-1])
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)

    def arrays(self, name: str) -> list[np.ndarray]:
        """The arrays saved in `name`.npz (`model`, `optimizer` or `best`), in order."""
        with np.load(self.folder / f"{name}.npz") as data:
            return [data[f"a{i}"] for i in range(len(data.files))]

    def save(
        self,
        state: dict,
        model: keras.Model,
        best_changed: bool,
        best_values: Sequence[np.ndarray],
    ) -> None:
        """Write the folder atomically.

        Args:
            state: the JSON-able training state (the fingerprint is added).
            model: the compiled model; its variables and its optimizer's are saved.
            best_changed: whether `best_values` changed since the last save; if not,
                `best.npz` is hard-linked from the previous folder.
            best_values: the best epoch's model variables.
        """
        state = dict(state, fingerprint=self.fingerprint)
        with atomic_dir(self.folder) as tmp:
            _save_npz(tmp / "model.npz", variable_values(model.variables))
            _save_npz(tmp / "optimizer.npz", variable_values(model.optimizer.variables))
            previous = self.folder / "best.npz"
            if best_changed or not previous.is_file():
                _save_npz(tmp / "best.npz", best_values)
            else:
                os.link(previous, tmp / "best.npz")
            (tmp / "state.json").write_text(json.dumps(state))

    def remove(self) -> None:
        """Delete the folder, if there is one."""
        if self.folder.exists():
            shutil.rmtree(self.folder)


def _save_npz(path, arrays):
    """Save `arrays` in one .npz file as `a0`, `a1`, ... (their order is kept)."""
    with open(path, "wb") as f:
        np.savez(f, **{f"a{i}": a for i, a in enumerate(arrays)})
