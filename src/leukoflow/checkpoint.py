"""The training checkpoint: everything a killed training job needs to continue exactly.

`checkpoint/` holds `state.json` (epoch, best score, history, the fingerprint), `model.npz`
(every model variable, the dropout and augmentation generators' states included),
`optimizer.npz` and `best.npz` (the best epoch's variables). It is written atomically after
every epoch (a new folder, renamed into place), so a job killed at any moment finds either
the previous or the new checkpoint; one with another fingerprint (other settings or
inputs) is discarded.
"""

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from leukoflow.atomic import atomic_dir
from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


def _file_identity(path):
    """What identifies an input file cheaply: name, size, modification time."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def fingerprint(arch: str, settings: dict, train_store, val_store, weights_file) -> str:
    """What a checkpoint belongs to, as a sha256 hex digest.

    Args:
        arch: the architecture.
        settings: its merged training settings.
        train_store, val_store: the stores trained and validated on (path, size, time and
            the contents of their index CSVs count).
        weights_file: the initial weights file, or None.

    Returns:
        The digest of those and of the Keras backend.
    """
    import keras

    parts = {
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "settings": settings,
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


def variable_values(variables) -> list:
    """Copies of the current values of Keras variables, as numpy arrays, in order."""
    import keras

    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def assign_values(variables, arrays, what: str) -> None:
    """Assign saved arrays to Keras `variables`, in order.

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


class Checkpoint:
    """The `checkpoint/` folder: `state.json`, `model.npz`, `optimizer.npz`, `best.npz`."""

    def __init__(self, folder, fingerprint_hex):
        self.folder = Path(folder)
        self.fingerprint = fingerprint_hex

    def load(self):
        """The saved state (dict) if the folder exists and has our fingerprint, else None.

        Temporary folders of an interrupted save are removed; if the job died between
        removing the old folder and renaming the new one, the complete new one (its
        `state.json` is written last) takes its place.
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
        partial = sorted(
            self.folder.parent.glob(f".{self.folder.name}.*"), key=lambda p: p.stat().st_mtime
        )
        complete = [p for p in partial if (p / "state.json").is_file()]
        if complete and not self.folder.exists():
            os.replace(complete[-1], self.folder)
            partial.remove(complete[-1])
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)

    def arrays(self, name):
        """The arrays saved in `name`.npz, in order."""
        with np.load(self.folder / f"{name}.npz") as data:
            return [data[f"a{i}"] for i in range(len(data.files))]

    def save(self, state, model, best_changed, best_values):
        """Write the folder atomically; `best.npz` is hard-linked when it did not change."""
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

    def remove(self):
        if self.folder.exists():
            shutil.rmtree(self.folder)


def _save_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **{f"a{i}": a for i, a in enumerate(arrays)})
