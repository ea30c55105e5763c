"""The models `leukoflow serve` holds, and what it does with them: classify a request's images
by `leukoflow predict`'s code path, and draw a cell's Grad-CAM.

Each bundle is loaded once at start, for the engine `predict` would choose
(`deploy.predict.choose_engine`), with its inference functions (and MC dropout's) built
once. Classifying a request is `deploy.predict.iter_predictions` on its files, so the rows,
their order, their probabilities and the CSV (`deploy.predict.write_predictions`) are those
`leukoflow predict` gives for the same files. Saliency needs the Keras models: on the ONNX
engine they are loaded (safe mode) the first time a saliency map is asked for.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from leukoflow import CLASS_NAMES
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.images import BadImageError
from leukoflow.deploy.bundle import Bundle, load_bundle, read_meta
from leukoflow.deploy.cell_uncertainty import CellUncertainty
from leukoflow.deploy.modelcard import CARD_FILE
from leukoflow.deploy.predict import (
    Prediction,
    choose_engine,
    iter_predictions,
    make_predict_fns,
    prepare_file,
    write_predictions,
)

OVERLAY_SIDE = 256  # pixels: side of the saliency overlay image


@dataclasses.dataclass
class ServedModel:
    """A bundle loaded for serving: its name (the bundle folder's), the bundle, its
    inference functions and uncertainty columns; the Keras models for saliency once asked
    for."""

    name: str
    bundle: Bundle
    predict_fns: list
    uncertainty: CellUncertainty
    _keras: Bundle | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def describe(self) -> dict:
        """What `GET /v1/models` says of it: name, kind, engine, members, threshold,
        temperature, referral band, test metrics and the model card (Markdown)."""
        meta, card = self.bundle.meta, self.bundle.path / CARD_FILE
        return {
            "name": self.name,
            "kind": meta.get("kind", "model"),
            "architecture": self.bundle.architecture,
            "engine": self.bundle.engine,
            "members": [
                {"architecture": m.architecture, "input_size": m.input_size}
                for m in self.bundle.members
            ],
            "threshold": self.bundle.threshold,
            "temperature": self.bundle.temperature,
            "referral": self.bundle.referral,
            "test_metrics": meta.get("test_metrics"),
            "card": card.read_text() if card.is_file() else None,
        }

    def keras_bundle(self) -> Bundle:
        """The bundle with its Keras models (loaded in safe mode on first use for a bundle
        served on ONNX Runtime)."""
        if self.bundle.engine == "keras":
            return self.bundle
        with self._lock:
            if self._keras is None:
                self._keras = load_bundle(self.bundle.path, "keras")
            return self._keras


def load_models(paths: Sequence[str | Path], engine: str = "auto") -> dict[str, ServedModel]:
    """Load each bundle for the engine `predict` would choose; {name: model}, in order.

    Args:
        paths: the bundle folders; each is served under its folder's name.
        engine: "auto", "keras" or "onnx" (`deploy.predict.choose_engine`).

    Raises:
        LeukoflowError: as `load_bundle` (a missing file, a checksum that differs); when two
            bundles have the same folder name.
    """
    models = {}
    for path in map(Path, paths):
        name = path.resolve().name
        if name in models:
            raise LeukoflowError(f"--model: two bundles are named {name} ({path})")
        bundle = load_bundle(path, choose_engine(engine, read_meta(path)))
        uncertainty = CellUncertainty(bundle, bundle.tta)
        models[name] = ServedModel(name, bundle, make_predict_fns(bundle), uncertainty)
    return models


def classify(
    model: ServedModel,
    files: Sequence[tuple[str, Path]],
    max_pixels: int,
    batch_size: int = 32,
    workers: int | None = None,
) -> tuple[list[Prediction], list[str]]:
    """One `Prediction` per file, in order, as `leukoflow predict` makes them: the bundle's
    test-time augmentation, its uncertainty columns, `max_pixels` for the image reader (a
    larger image or a decompression bomb gets its error row).

    Args:
        model: the served model.
        files: (the name the row reports, the file on disk).
        max_pixels: the largest image (width x height) read.
        batch_size: images per model call.
        workers: preparation threads (None: the usable cores).

    Returns:
        (rows, the uncertainty columns the rows carry).
    """
    bundle = model.bundle
    uncertainty = model.uncertainty.fresh()  # per request: predict's seeds
    predictions = iter_predictions(
        bundle,
        [path for _, path in files],
        batch_size=batch_size,
        workers=workers,
        progress=False,
        predict_fns=model.predict_fns,
        max_pixels=max_pixels,
        uncertainty=uncertainty,
    )
    rows = [
        dataclasses.replace(row, path=name)
        for (name, _), row in zip(files, predictions, strict=True)
    ]
    return rows, uncertainty.columns


def predictions_csv(
    rows: Sequence[Prediction], threshold: float, columns: Sequence[str], folder: Path
) -> str:
    """The CSV `leukoflow predict` writes for these rows (written in `folder`, read back)."""
    out = folder / "predictions.csv"
    write_predictions(rows, threshold, out, columns)
    return out.read_bytes().decode()  # as written: csv's \r\n line ends kept


def saliency_png(model: ServedModel, path: Path, max_pixels: int) -> bytes:
    """The Grad-CAM of one cell over the cell as the models see it, as a PNG.

    The cell is prepared as `predict` prepares it (one image per member's input size); each
    member's Grad-CAM explains the bundle's label for the cell, is scaled to [0, 1] and
    resized to `OVERLAY_SIDE`; an ensemble's maps are averaged with the combiner's weights'
    magnitudes. The overlay is the cell in grey with the map in red.

    Raises:
        BadImageError: when the file cannot be read (as `leukoflow predict` says).
    """
    from leukoflow.evaluate.saliency.maps import saliency_maps

    bundle = model.keras_bundle()
    prepared, error = prepare_file(path, bundle.reference, bundle.input_sizes, max_pixels)
    if prepared is None:
        raise BadImageError(path, error)
    (row,), _ = classify(model, [(str(path), path)], max_pixels, batch_size=1, workers=1)
    label = CLASS_NAMES.index(row.label)
    weights = np.abs(np.asarray(bundle.combiner.get("weights") or [1.0] * len(bundle.members)))
    total = np.zeros((OVERLAY_SIDE, OVERLAY_SIDE), np.float32)
    for member, weight in zip(bundle.members, weights, strict=True):
        image = prepared[member.input_size][None].astype(np.float32)
        cam = saliency_maps(member.model, image, [label], ["gradcam"])["gradcam"][0]
        cam = cam / cam.max() if cam.max() > 0 else cam
        resized = Image.fromarray(cam.astype(np.float32), mode="F").resize(
            (OVERLAY_SIDE, OVERLAY_SIDE), Image.Resampling.BILINEAR
        )
        total += weight * np.asarray(resized)
    total = np.clip(total / max(weights.sum(), 1e-12), 0, 1)[..., None]
    cell = Image.fromarray(prepared[max(bundle.input_sizes)]).resize(
        (OVERLAY_SIDE, OVERLAY_SIDE), Image.Resampling.BILINEAR
    )
    grey = np.asarray(cell.convert("L"), np.float32)[..., None].repeat(3, axis=2)
    red = np.array([255.0, 0.0, 0.0], np.float32)
    overlay = (1 - 0.6 * total) * grey + 0.6 * total * red
    buffer = io.BytesIO()
    Image.fromarray(overlay.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
