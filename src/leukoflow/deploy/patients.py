"""Patient-level calls in `leukoflow predict --patients subject|folder`.

The cells `predict` classified are grouped by the subject id of their C-NMC name
(`leukoflow.data.ingest.parse_name`) or by the folder that holds them, and each group gets the
call the workflow's `patients` step makes (`leukoflow.evaluate.patients.aggregate` with the
aggregator and patient threshold the bundle records, both fitted on validation subjects). The
second CSV, `patients.csv` beside the cells' CSV, says for each group how many cells it had,
how many could not be read, how many were referred, how many are behind the call, and whether
that is below the cells the model needs (`cells_needed`, chosen on validation subjects).
Referred cells are aggregated like every other cell and counted.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from leukoflow.core.atomic import atomic_path
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.ingest import parse_name
from leukoflow.evaluate.patients import aggregate

if TYPE_CHECKING:
    from leukoflow.deploy.predict import Prediction

GROUPINGS = ("subject", "folder")
PATIENTS_FILE = "patients.csv"
NO_SUBJECT = "(no C-NMC subject id)"
COLUMNS = (
    "group",
    "cells",
    "cells_with_errors",
    "referred",
    "cells_used",
    "aggregate",
    "call",
    "cells_needed",
    "below_needed",
)


def patient_fit(meta: Mapping, grouping: str) -> dict:
    """The bundle's patient-level fit (`patients` in bundle.json), checked for `grouping`.

    Raises:
        LeukoflowError: for a grouping outside `GROUPINGS`, or a bundle made without the
            workflow's patients step.
    """
    if grouping not in GROUPINGS:
        raise LeukoflowError(f"--patients must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    fitted = meta.get("patients")
    if not fitted:
        raise LeukoflowError(
            f"the bundle of {meta.get('architecture')} has no patient-level call (`patients` "
            "in bundle.json); rebuild it with `leukoflow bundle --patients patients.json`"
        )
    return dict(fitted)


def patients_csv(out: str | Path) -> Path:
    """`patients.csv` beside the cells' CSV `out`.

    Raises:
        LeukoflowError: when `out` is itself named patients.csv.
    """
    path = Path(out).with_name(PATIENTS_FILE)
    if path.name == Path(out).name:
        raise LeukoflowError(
            f"--out {out}: the patients' CSV is written beside it as {PATIENTS_FILE}; give "
            "the cells' CSV another name"
        )
    return path


def group_of(path: str | Path, grouping: str) -> str:
    """The group of one input file: its C-NMC subject id (`NO_SUBJECT` for a name outside
    the convention) or its folder."""
    if grouping == "folder":
        return str(Path(path).parent)
    try:
        return parse_name(path)[0]
    except ValueError:
        return NO_SUBJECT


def patient_rows(predictions: Sequence[Prediction], grouping: str, fitted: Mapping) -> list[dict]:
    """One row (`COLUMNS`) per group, in the order the groups first appear.

    Args:
        predictions: predict's rows (path, calibrated probability, label, refer, error).
        grouping: `subject` or `folder`.
        fitted: the bundle's patient-level fit (`patient_fit`).

    Returns:
        Rows with the aggregate and call of the cells that were classified; a group with
        none of them, and the files without a subject id, get no aggregate and no call.
    """
    groups: dict[str, list] = {}
    for row in predictions:
        groups.setdefault(group_of(row.path, grouping), []).append(row)
    needed = (fitted.get("cells_needed") or {}).get("n")
    rows = []
    for group, members in groups.items():
        used = [row for row in members if row.error is None]
        value, call = "", ""
        if used and group != NO_SUBJECT:
            value = aggregate(
                [row.probability for row in used],
                [row.label == "all" for row in used],
                fitted["aggregator"],
            )
            call = "all" if value >= float(fitted["threshold"]) else "hem"
        rows.append(
            {
                "group": group,
                "cells": len(members),
                "cells_with_errors": len(members) - len(used),
                "referred": sum(bool(row.refer) for row in used),
                "cells_used": len(used),
                "aggregate": value,
                "call": call,
                "cells_needed": "not reached" if needed is None else needed,
                "below_needed": int(len(used) < needed) if isinstance(needed, int) else "",
            }
        )
    return rows


def write_patients(rows: Sequence[Mapping], path: str | Path) -> None:
    """Write the patients' CSV (`COLUMNS`) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            value = row["aggregate"]
            writer.writerow({**row, "aggregate": repr(value) if value != "" else ""})
