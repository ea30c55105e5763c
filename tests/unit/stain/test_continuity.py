"""The stain estimate is a continuous function of the image: exposure sweeps of every test cell.

Each cell, uniformly darker copies of it (exposure 0.60 to 1.00 in steps of 0.01), normalised
to a reference fitted on its group and to one fitted on itself: no step between neighbouring
exposures above 1 grey level, no copy more than 3 from the normalised cell; the same for a
copy of the cell turned 3 degrees in hue. A stain estimate that flipped between two states
(the order or plane of the stain vectors, a threshold, the degenerate fallback) jumped by
5-24 grey levels here.

Cells: the real C-NMC 2019 cells of `$LEUKOFLOW_REAL_CELLS` (default `../shared/cnmc` beside
the checkout; skipped when absent), the BCCD white cells of tests/data/bccd and synthetic
cells, at 160 px (`leukoflow.bench.stain.sweep_groups`).
"""

import functools

import pytest
from PIL import Image

from leukoflow.bench.stain import (
    REAL_CELLS_VARIABLE,
    real_cells_folder,
    sweep_figures,
    sweep_groups,
)
from leukoflow.data import synth
from leukoflow.stain.normalize import fit_reference, normalize
from leukoflow.stain.reference import SWEEP_FACTORS, exposure_sweep, hue_shifted

MAX_STEP = 1.0  # grey levels between neighbouring exposures
MAX_DISTANCE = 3.0  # grey levels from the normalised cell
HUE_DEGREES = 3.0


@pytest.fixture(scope="module")
def groups():
    return sweep_groups(160)


def test_the_sweep_covers_exposures_060_to_100():
    assert SWEEP_FACTORS[0] == 0.6 and SWEEP_FACTORS[-1] == 1.0 and len(SWEEP_FACTORS) == 41


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
@pytest.mark.parametrize("group", ["cnmc", "bccd", "synthetic"])
def test_exposure_sweeps_are_continuous(groups, group, method):
    if group not in groups:
        pytest.skip(
            f"no real C-NMC cells (*.bmp) in {real_cells_folder()}: set {REAL_CELLS_VARIABLE} "
            "to a folder of them"
        )
    cells = groups[group]
    assert len(cells) >= 3
    trained = fit_reference(list(cells.values()), method)
    failures = []
    for k, (name, image) in enumerate(cells.items()):
        hue = HUE_DEGREES if k % 2 else -HUE_DEGREES
        sweeps = {
            "training": (image, trained),
            "itself": (image, fit_reference([image], method)),
            f"training, hue {hue:+.0f} deg": (hue_shifted(image, hue), trained),
        }
        for label, (cell, reference) in sweeps.items():
            sweep = exposure_sweep(cell, functools.partial(normalize, reference=reference))
            if sweep["step"] > MAX_STEP or sweep["distance"] > MAX_DISTANCE:
                failures.append((name, label, sweep))
    assert not failures, failures


def test_hue_shifted_turns_about_the_grey_axis_and_keeps_the_background(groups):
    image = groups["synthetic"]["synthetic-0"]
    turned = hue_shifted(image, HUE_DEGREES)
    background = image.max(axis=-1) <= 10
    assert not turned[background].any()
    assert abs(int(turned.sum()) - int(image.sum())) < 0.01 * int(image.sum())
    assert 0 < abs(turned.astype(int) - image).mean() < 5
    assert (hue_shifted(image, 0.0) == image).all()


def test_the_real_cells_are_found_where_the_variable_says(tmp_path, monkeypatch):
    for k, image in enumerate(synth.cells(3, 64, seed=1, subjects=1)[0]):
        Image.fromarray(image).save(tmp_path / f"UID_{k}_1_1_all.bmp")
    monkeypatch.setenv(REAL_CELLS_VARIABLE, str(tmp_path))
    assert real_cells_folder() == tmp_path
    cells = sweep_groups(48)["cnmc"]
    assert list(cells) == [f"UID_{k}_1_1_all" for k in range(3)]
    assert {image.shape for image in cells.values()} == {(48, 48, 3)}
    monkeypatch.setenv(REAL_CELLS_VARIABLE, str(tmp_path / "absent"))
    assert set(sweep_groups(48)) == {"bccd", "synthetic"}


def test_bench_sweep_figures_ours_beside_torchstain():
    cells = synth.cells(2, 48, seed=2, subjects=2)[0]
    figures = sweep_figures({"synthetic": dict(enumerate(cells))})
    assert figures["sweep_synthetic_cells"] == 2
    for method in ("macenko", "reinhard", "torchstain_macenko", "torchstain_reinhard"):
        for figure in ("step", "distance"):
            assert figures[f"sweep_{method}_synthetic_{figure}"] >= 0
