"""`leukoflow serve` as a user meets it: a real server on a loopback port, its API against
`leukoflow predict`, the refusals, overload, and the page in headless Chromium."""

import concurrent.futures
import csv
import io
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from leukoflow.bench.serve import load_test, running_server
from leukoflow.cli import main

pytestmark = pytest.mark.slow  # a server subprocess and Keras models
TOKEN = "s3cret-token"
MAX_IMAGES = 8
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(models_tree, tmp_path_factory):
    """A server of the bundles A and Duo (token, data root, 1 MB / 8 images / 1 Mpx limits,
    one request waiting at most); yields {"url", "data", "cells"}."""
    work = tmp_path_factory.mktemp("serve")
    data = work / "data"
    shutil.copytree(models_tree["cells"], data / "cells")
    secret = work / "secret.bmp"
    shutil.copyfile(data / "cells" / "cell0.bmp", secret)
    (data / "escape.bmp").symlink_to(secret)  # a link out of the data root
    (work / "token").write_text(TOKEN + "\n")
    models = models_tree["models"]
    options = ["--model", str(models / "A"), "--model", str(models / "Duo"), "--engine", "onnx",
               "--data-root", str(data), "--token-file", str(work / "token"),
               "--max-request-mb", "1", "--max-images", str(MAX_IMAGES),
               "--max-pixels", "1000000", "--queue", "1"]  # fmt: skip
    with running_server(options, work / "serve.log") as url:
        yield {"url": url, "data": data, "cells": sorted((data / "cells").glob("*.bmp"))}


def client(server, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server["url"], headers=headers, timeout=120)


def predict_csv(bundle, inputs, cwd, tmp_path, monkeypatch):
    """What `leukoflow predict` writes for `inputs` (paths relative to `cwd`)."""
    monkeypatch.chdir(cwd)
    out = tmp_path / "predict.csv"
    assert main(["--quiet", "predict", "--model", str(bundle), "--out", str(out),
                 *map(str, inputs)]) == 0  # fmt: skip
    return out.read_bytes().decode()


def uploads(files, names=None):
    names = names or [Path(f).name for f in files]
    return [("images", (n, Path(f).read_bytes())) for n, f in zip(names, files, strict=True)]


def test_the_api_answers_as_predict_does(server, models_tree, tmp_path, monkeypatch):
    cells, duo = server["cells"], models_tree["models"] / "Duo"
    with client(server) as http:
        assert http.get("/healthz").json()["models"] == ["A", "Duo"]
        listed = http.get("/v1/models").json()
        assert [m["name"] for m in listed["models"]] == ["A", "Duo"]
        assert "# leukoflow ensemble Duo" in listed["models"][1]["card"]
        assert listed["limits"]["max_images"] == MAX_IMAGES
        answer = http.post("/v1/predict?csv=true", files=uploads(cells), data={"model": "Duo"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        by_paths = http.post("/v1/predict?csv=true", json={"model": "Duo", "paths": ["cells"]})
        assert by_paths.status_code == 200, by_paths.text
        docs = http.get("/docs").text
        assert "swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert http.get("/swagger/swagger-ui-bundle.js").status_code == 200
        assert "/v1/predict" in http.get("/openapi.json").json()["paths"]
    names = [f.name for f in cells]
    assert [row["path"] for row in body["images"]] == names
    assert body["csv"] == predict_csv(duo, names, cells[0].parent, tmp_path, monkeypatch)
    band, threshold = body["referral"], body["images"][0]["threshold"]
    for row in body["images"]:
        p = row["calibrated_probability_all"]
        assert row["label"] == ("all" if p >= threshold else "hem")
        assert row["refer"] == (band["lo"] <= p < band["hi"])
    assert sorted(row["label"] for row in body["images"]) == ["all"] * 4 + ["hem"] * 4
    assert sum(row["refer"] for row in body["images"]) == 3
    folder_csv = predict_csv(duo, ["cells"], server["data"], tmp_path, monkeypatch)
    assert by_paths.json()["csv"] == folder_csv


def test_patient_calls_are_predicts(server, models_tree, tmp_path, monkeypatch):
    cells = server["cells"]
    smears = {f"smear{i // 4}/{cell.name}": cell for i, cell in enumerate(cells)}
    for name, cell in smears.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(cell, tmp_path / name)
    with client(server) as http:
        answer = http.post("/v1/predict?patients=folder", data={"model": "Duo"},
                           files=uploads(list(smears.values()), list(smears)))  # fmt: skip
        assert answer.status_code == 200, answer.text
        refused = http.post("/v1/predict?patients=folder", files=uploads(cells[:1]))
        assert refused.status_code == 422 and "no patient-level call" in refused.json()["detail"]
        assert http.post("/v1/predict?patients=ward", files=uploads(cells[:1])).status_code == 422
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cells.csv"
    argv = ["--quiet", "predict", "--model", str(models_tree["models"] / "Duo"), "--out", str(out)]
    assert main([*argv, "--patients", "folder", "smear0", "smear1"]) == 0
    with open(tmp_path / "patients.csv", newline="") as handle:
        expected = list(csv.DictReader(handle))
    groups = answer.json()["patients"]
    assert (
        [g["group"] for g in groups] == [row["group"] for row in expected] == ["smear0", "smear1"]
    )
    for group, row in zip(groups, expected, strict=True):
        assert {k: str(v) for k, v in group.items()} == row


def test_bad_requests_are_refused_clearly(server):
    cell = server["cells"][0]
    with client(server) as http, client(server, None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        refused = anonymous.get("/v1/models")
        assert refused.status_code == 401 and "bearer token" in refused.json()["detail"]
        assert refused.headers["www-authenticate"] == "Bearer"
        with client(server, "wrong") as wrong:
            assert wrong.post("/v1/predict", files=uploads([cell])).status_code == 401
        oversize = [("images", ("big.bmp", b"\0" * (1024 * 1024 + 1)))]
        answer = http.post("/v1/predict", files=oversize)
        assert answer.status_code == 413 and "over the server's limit" in answer.json()["detail"]
        answer = http.post("/v1/predict", files=uploads([cell] * (MAX_IMAGES + 1), ["x"] * 9))
        assert answer.status_code == 413 and "at most 8" in answer.json()["detail"]
        chunked = http.post("/v1/predict", content=iter([b"{}"]))
        assert chunked.status_code == 411
        for path in ("../secret.bmp", "escape.bmp", str(cell.parent.parent.parent / "secret.bmp")):
            answer = http.post("/v1/predict", json={"paths": [path]})
            assert answer.status_code == 403 and "outside" in answer.json()["detail"], path
        answer = http.post("/v1/predict", files=uploads([cell]), data={"model": "Nope"})
        assert answer.status_code == 404 and "served: A, Duo" in answer.json()["detail"]
        bomb = io.BytesIO()
        Image.fromarray(np.zeros((1200, 1200, 3), np.uint8)).save(bomb, format="PNG")
        garbage = [
            ("images", ("notes.png", b"not an image")),
            ("images", ("big.png", bomb.getvalue())),
        ]
        answer = http.post("/v1/predict", files=garbage)
        assert answer.status_code == 422
        notes, big = answer.json()["detail"]["images"]
        assert "not an image" in notes["error"] and "max_pixels" in big["error"]
        mixed = http.post("/v1/predict", files=[*garbage[:1], *uploads([cell])])
        assert mixed.status_code == 200
        assert [row["error"] is None for row in mixed.json()["images"]] == [False, True]


def test_overload_answers_503_with_retry_after_and_loses_no_image(server):
    cell = server["cells"][0]

    def saliency():  # the first one loads the Keras models: seconds on the model thread
        with client(server) as http:
            return http.post("/v1/saliency", files={"image": ("c.bmp", cell.read_bytes())})

    slow = threading.Thread(target=saliency)
    slow.start()
    time.sleep(0.5)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client(server).post(
            "/v1/predict", files=uploads(server["cells"])), range(4)))  # fmt: skip
    slow.join()
    busy = [a for a in answers if a.status_code == 503]
    assert busy and all(int(a.headers["retry-after"]) >= 1 for a in busy)
    assert "busy" in busy[0].json()["detail"]
    assert all(a.status_code in (200, 503) for a in answers)
    figures = load_test(server["url"], server["cells"], clients=1, requests=3, per_request=8,
                        model="Duo", token=TOKEN)  # fmt: skip
    assert figures["errors"] == 0 and figures["lost_images"] == 0 and figures["status_200"] == 3


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromium-driver are not installed (tests/setup-system.sh)",
)
def test_the_page_in_chromium(server, models_tree, tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    wait = WebDriverWait(driver, 60)
    try:
        driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.get(server["url"] + "/")
        driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)
        wait.until(lambda d: "Duo" in d.find_element(By.ID, "model").text)
        driver.find_element(By.CSS_SELECTOR, "#model option[value=Duo]").click()
        driver.find_element(By.CSS_SELECTOR, "#patients option[value=folder]").click()
        cells = server["cells"]
        driver.find_element(By.ID, "files").send_keys("\n".join(map(str, cells)))
        wait.until(lambda d: "images:" in d.find_element(By.ID, "status").text)
        rows = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        expected = predict_csv(models_tree["models"] / "Duo", [c.name for c in cells],
                               cells[0].parent, tmp_path, monkeypatch)  # fmt: skip
        lines = [line.split(",") for line in expected.splitlines()[1:]]
        assert len(rows) == len(lines) == len(cells)
        for row, line in zip(rows, lines, strict=True):
            texts = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            assert texts[1:3] == [line[0], line[2]]
            assert float(texts[3]) == pytest.approx(float(line[1]), abs=5e-5)
            assert ("referred" in row.get_attribute("class")) == (line[4] == "1")
        duo, names = models_tree["models"] / "Duo", [c.name for c in cells]
        argv = ["--quiet", "predict", "--model", str(duo), "--out", str(tmp_path / "p.csv"),
                "--patients", "folder", *names]  # fmt: skip
        assert main(argv) == 0  # run in the cells' folder: one group, "."
        with open(tmp_path / "patients.csv", newline="") as handle:
            (group,) = csv.DictReader(handle)
        (patient,) = driver.find_elements(By.CSS_SELECTOR, "#patient-table tbody tr")
        texts = [td.text for td in patient.find_elements(By.TAG_NAME, "td")]
        assert texts[:2] == [".", "8"] and texts[6] == group["call"] != ""
        assert float(texts[5]) == pytest.approx(float(group["aggregate"]), abs=5e-5)
        driver.find_element(By.ID, "download").click()
        wait.until(lambda d: (downloads / "predictions.csv").is_file())
        assert (downloads / "predictions.csv").read_bytes().decode() == expected
        rows[0].click()
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#saliency img'); return i.complete && i.naturalWidth"
        ) == 256)  # fmt: skip
        driver.get(server["url"] + "/docs")  # Swagger UI renders offline from the package
        title = "const t = document.querySelector('.swagger-ui .info .title');"
        title += " return t && t.textContent"
        wait.until(lambda d: "leukoflow" in (d.execute_script(title) or ""))
    finally:
        driver.quit()
