"""The uncertainty columns `leukoflow predict` and `serve` write for a bundle, per cell.

The columns evaluate writes (`leukoflow.evaluate.uncertainty`), by the same definitions:
each member's `tta_spread` when the test-time augmentation has several views; its `mc_std`
when the bundle was evaluated with MC dropout (`evaluation.mc_dropout` passes); for an
ensemble, `member_spread` and the mean over the members of each column every member has
(`ensemble_uncertainty`), so a bundle's CSV has the columns of its evaluation's.

MC dropout runs on either engine: on Keras over the member's `head_pool` features, on ONNX
Runtime over its ONNX file's `features` output with the head bundle.json records
(`leukoflow.deploy.onnx_model.checked_head`); the same numpy head and dropout masks, so the
two engines agree for the same seed. A member whose ONNX file predates that record has no
`mc_std` on ONNX (the reason is logged). An estimate: its value varies with the dropout
draws (seeded per run).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.uncertainty import (
    UNCERTAINTY_COLUMNS,
    Head,
    MCDropout,
    ensemble_uncertainty,
)
from leukoflow.models.inference import tta_views

if TYPE_CHECKING:
    from leukoflow.deploy.bundle import Bundle

log = logging.getLogger(__name__)


def member_dropouts(bundle: Bundle) -> list[MCDropout] | None:
    """Each member's MC dropout on the bundle's engine, or None (with the reason logged)
    when a member has none on ONNX Runtime.

    Raises:
        LeukoflowError: as `MCDropout.of_model`, `Head.from_record` and `onnx_inference`.
    """
    if bundle.engine == "keras":
        return [MCDropout.of_model(member.model) for member in bundle.members]
    from leukoflow.deploy.onnx_model import FEATURES_NAME, onnx_inference

    dropouts = []
    for member, entry in zip(bundle.members, bundle.meta["members"], strict=True):
        record = (entry.get("onnx") or {}).get("head")
        if record is None:
            log.warning(
                "no mc_std on the ONNX engine: the ONNX file of %s has no MC-dropout head "
                "(made before it, or its check failed); rebuild the bundle or use --engine keras",
                member.architecture,
            )
            return None
        features = onnx_inference(member.onnx_file, output=FEATURES_NAME)
        dropouts.append(MCDropout(features, Head.from_record(record)))
    return dropouts


class CellUncertainty:
    """The uncertainty columns of a bundle's predictions (`columns`) and their values.

    Args:
        bundle: the loaded bundle.
        tta: the test-time augmentation predict applies.
        seed: seed of the dropout masks.

    Raises:
        LeukoflowError: as `member_dropouts`.
    """

    def __init__(self, bundle: Bundle, tta: str | int, seed: int = 0):
        self.sizes = [member.input_size for member in bundle.members]
        self.ensemble = len(self.sizes) > 1
        self.passes = int(bundle.meta.get("evaluation", {}).get("mc_dropout") or 0)
        self.spread = len(tta_views(tta)) > 1
        self.dropouts = member_dropouts(bundle) if self.passes else None
        per_member = {"tta_spread": self.spread, "mc_std": self.dropouts is not None}
        self.columns = [
            column
            for column in UNCERTAINTY_COLUMNS
            if per_member.get(column) or (column == "member_spread" and self.ensemble)
        ]
        self.rng = np.random.default_rng(seed)

    def fresh(self, seed: int = 0) -> CellUncertainty:
        """A copy that draws its dropout masks anew from `seed`, sharing the members' models
        (`serve` builds them once and takes one copy per request: predict's values)."""
        again = copy.copy(self)
        again.rng = np.random.default_rng(seed)
        return again

    def __call__(
        self, views: Sequence[np.ndarray], images: Mapping[int, np.ndarray], batch_size: int
    ) -> dict[str, np.ndarray]:
        """{column: (n,)} of one batch.

        Args:
            views: per member, (views, n) its P(all) under each test-time view.
            images: the prepared batch, {input size: uint8 (n, size, size, 3)}.
            batch_size: the rows of each model call (the batch is padded to it).

        Raises:
            LeukoflowError: for views of a member count other than the bundle's.
        """
        if len(views) != len(self.sizes):
            raise LeukoflowError(f"{len(views)} members' views for {len(self.sizes)} members")
        members = []
        for m, member_views in enumerate(views):
            columns = {}
            if self.spread:
                columns["tta_spread"] = member_views.std(axis=0, dtype=np.float64)
            if self.dropouts is not None:
                columns["mc_std"] = self.dropouts[m].std(
                    images[self.sizes[m]], batch_size, self.passes, self.rng
                )
            members.append(columns)
        if not self.ensemble:
            return members[0]
        return ensemble_uncertainty(np.vstack([v.mean(axis=0) for v in views]), members)


def check_referral(rule: Mapping | None, uncertainty: CellUncertainty | None) -> None:
    """Check that the uncertainty a bundle's referral rule refers by is computed.

    Args:
        rule: the bundle's referral rule (`leukoflow.evaluate.referral`), or None.
        uncertainty: what predict computes, or None.

    Raises:
        LeukoflowError: naming the column and the fix, when the rule refers by a column
            `uncertainty` does not compute.
    """
    needs = rule.get("column") if rule and rule.get("by") == "uncertainty" else None
    if needs and needs not in (uncertainty.columns if uncertainty else ()):
        raise LeukoflowError(
            f"the bundle refers cells by their {needs}, which cannot be computed here (a "
            "bundle whose ONNX file predates the head record, or another --tta than the "
            "bundle's): run with --engine keras, or without --tta"
        )
