"""A model bundle may refer to its trained model's file, an ensemble bundle to its members'
bundles in results/models/ (each model stored once); `leukoflow export` writes a
self-contained copy; both forms predict the same and refuse a changed model file."""

import shutil
import subprocess

import pytest

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.deploy.bundle import file_sha256, load_bundle, read_meta

pytestmark = pytest.mark.slow  # Keras models and ONNX files (~15 s for the shared tree)


def predict_csv(bundle, cells, out, engine):
    assert main(["--quiet", "predict", "--model", str(bundle), "--out", str(out),
                 "--engine", engine, str(cells)]) == 0  # fmt: skip
    return out.read_text()


def test_an_ensemble_beside_its_members_refers_to_their_files(models_tree):
    models = models_tree["models"]
    duo = models / "Duo"
    assert not (duo / "members").exists()  # no copies
    members = read_meta(duo)["members"]
    # A's bundle refers to its trained model (../../A.keras from results/models/A), and so
    # does the ensemble; B's bundle holds a copy
    keras_files = {"A": ("../../../A.keras", models_tree["root"] / "A.keras"),
                   "B": ("../B/model.keras", models / "B" / "model.keras")}  # fmt: skip
    for entry, name in zip(members, ("A", "B"), strict=True):
        assert entry["file"] == keras_files[name][0]
        assert entry["onnx"]["file"] == f"../{name}/model.onnx"
        assert entry["sha256"] == file_sha256(keras_files[name][1])
        assert entry["onnx"]["sha256"] == file_sha256(models / name / "model.onnx")
    model = read_meta(models / "A")["members"][0]  # a model bundle records its checksums too
    assert model["file"] == "../../../A.keras" and not (models / "A" / "model.keras").exists()
    assert model["sha256"] == file_sha256(models_tree["root"] / "A.keras")
    bundle = load_bundle(duo, "onnx")
    assert [m.onnx_file.resolve() for m in bundle.members] == [
        (models / name / "model.onnx").resolve() for name in ("A", "B")
    ]


def test_export_is_self_contained_and_predicts_identically(models_tree, tmp_path):
    models, cells = models_tree["models"], models_tree["cells"]
    out = tmp_path / "moved" / "Duo"
    assert main(["export", str(models / "Duo"), str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md", "SHA256SUMS", "bundle.json", "members/A.keras", "members/A.onnx",
        "members/B.keras", "members/B.onnx",
    ]  # fmt: skip
    assert (out / "members/A.keras").read_bytes() == (models_tree["root"] / "A.keras").read_bytes()
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert checked.returncode == 0 and checked.stdout.count(": OK") == 6, checked.stdout
    meta = read_meta(out)
    assert [m["file"] for m in meta["members"]] == ["members/A.keras", "members/B.keras"]
    assert "members/B.onnx" in (out / "README.md").read_text()
    for engine in ("onnx", "keras"):
        referred = predict_csv(models / "Duo", cells, tmp_path / f"r_{engine}.csv", engine)
        exported = predict_csv(out, cells, tmp_path / f"e_{engine}.csv", engine)
        assert referred == exported and referred.count("\n") == 9
    # a model bundle exports under its own names
    assert main(["export", str(models / "A"), str(tmp_path / "A")]) == 0
    assert (tmp_path / "A/model.onnx").is_file() and (tmp_path / "A/SHA256SUMS").is_file()
    trained = (models_tree["root"] / "A.keras").read_bytes()
    assert (tmp_path / "A/model.keras").read_bytes() == trained
    assert read_meta(tmp_path / "A")["members"][0]["file"] == "model.keras"
    assert main(["export", str(models / "A"), str(models / "A" / "inside")]) == 2


def test_a_changed_member_file_is_refused_naming_it(models_tree, tmp_path, capsys):
    shutil.copytree(models_tree["root"], tmp_path / "root")
    tree = tmp_path / "root" / "results" / "models"
    onnx = tree / "B" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")  # one byte changed
    with pytest.raises(LeukoflowError, match=r"B/model\.onnx: its sha256 differs .* rebuild"):
        load_bundle(tree / "Duo", "onnx")
    load_bundle(tree / "Duo", "keras")  # the Keras files are intact
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(tree / "Duo"), "--out", str(out), "--engine", "onnx"]
    assert main([*argv, str(models_tree["cells"])]) == 2
    assert "model.onnx: its sha256 differs" in capsys.readouterr().err
    assert main(["export", str(tree / "Duo"), str(tmp_path / "copy")]) == 2
    assert not (tmp_path / "copy").exists()
    keras_file = tmp_path / "root" / "A.keras"  # the trained model A's bundle refers to
    keras_file.write_bytes(keras_file.read_bytes() + b"\x00")
    with pytest.raises(LeukoflowError, match=r"A\.keras: its sha256 differs"):
        load_bundle(tree / "A", "keras")
