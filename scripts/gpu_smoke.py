"""The GPU check (config/gpu-smoke.yaml) on a machine that has JAX but not Snakemake or Keras.

Two steps, one per machine:

1. Here (with pip and the package index): `python scripts/gpu_smoke.py wheels` fills
   `.whl/smoke/` with snakemake 9.27 and keras 3.15 and the dependencies a machine with
   JAX, PyTorch, numpy, pandas, scikit-learn, scikit-image and matplotlib lacks, as wheels
   for CPython 3.12 on manylinux x86-64 (`connection_pool` and `appdirs` exist only as
   source distributions: built here with `pip wheel`, pure Python).
2. There (the repository copied with `.whl/smoke/`): `python3 scripts/gpu_smoke.py run`
   installs the wheels into a folder put first on PYTHONPATH (`--no-deps`; the machine's
   own packages stay as they are), writes a `leukoflow` launcher (it calls `main()` under
   `if __name__ == "__main__":`, since the store builder's spawned worker processes import
   it again), writes `config/gpu-smoke-run.yaml` (gpu-smoke.yaml with the `--archs` asked
   for), samples `nvidia-smi` every second, runs the workflow with
   `--resources gpu=<GPUs>` for at most `--budget-s` seconds and collects into `$OUT`
   (or results/gpu-smoke): `summary.json` (per-rule seconds from `benchmarks/`, each GPU
   job's GPU and compile seconds from its log, GPU utilisation), Table I, the benchmarks,
   the logs and the utilisation samples.

`--config` (one path) replaces gpu-smoke.yaml: the CPU rehearsal runs a tiny variant.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl" / "smoke"
TARGET = ("--python-version", "3.12", "--implementation", "cp", "--abi", "cp312")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# What the machine has already (or does not need): not downloaded.
PRESENT = re.compile(
    r"^(numpy|scipy|pandas|matplotlib|scikit_learn|scikit_image|pillow|jax|jaxlib|"
    r"ml_dtypes|torch|nvidia_.*|triton|networkx|sympy|mpmath|fsspec|filelock|"
    r"setuptools|python_dateutil|pytz|tzdata|six|contourpy|cycler|fonttools|kiwisolver|"
    r"pyparsing|imageio|tifffile|lazy_loader|joblib|threadpoolctl|opt_einsum)-",
    re.IGNORECASE,
)
GPU_RULES = ("train", "evaluate", "timing", "saliency")


def fetch_wheels():
    """Fill WHEELS (see the module docstring); returns the wheel files."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", WHEELS, "connection_pool", "appdirs"], check=True
    )
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [*pip, "download", "-q", "--only-binary=:all:", *TARGET, *platforms,
         "--find-links", WHEELS, "-d", WHEELS,
         "snakemake==9.27.1", "keras==3.15.1", "tqdm", "pyyaml", "jsonschema", "h5py"],
        check=True,
    )  # fmt: skip
    for wheel in WHEELS.glob("*.whl"):
        if PRESENT.match(wheel.name):
            wheel.unlink()
    return sorted(WHEELS.glob("*.whl"))


def install(site):
    """Install the carried wheels into `site` and write the `leukoflow` launcher there."""
    wheels = sorted(map(str, WHEELS.glob("*.whl")))
    if wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
             *wheels],
            check=True,
        )  # fmt: skip
    launcher = Path(site) / "bin" / "leukoflow"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(
        f"#!{sys.executable}\nimport sys\n\nfrom leukoflow.cli import main\n\n"
        'if __name__ == "__main__":\n    sys.exit(main())\n'
    )
    launcher.chmod(0o755)


def run_config(config, archs):
    """config/gpu-smoke-run.yaml: `config` with only the architectures `archs` (all: None)."""
    import yaml  # from the installed wheels on a machine without it

    data = yaml.safe_load(Path(config).read_text())
    if archs:
        data["architectures"] = {a: data["architectures"][a] for a in archs}
    path = REPO / "config" / "gpu-smoke-run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def gpu_count():
    """GPUs nvidia-smi lists (0 without nvidia-smi)."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    except OSError:
        return 0
    return len(re.findall(r"^GPU \d+:", listed, flags=re.MULTILINE))


def sample_utilisation(path):
    """Start nvidia-smi writing utilisation and memory of every GPU each second to `path`."""
    if not shutil.which("nvidia-smi"):
        return None
    query = "timestamp,index,utilization.gpu,memory.used,memory.total"
    with open(path, "w") as handle:
        return subprocess.Popen(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,nounits", "-l", "1"],
            stdout=handle,
        )


def summarise(out, seconds, returncode):
    """summary.json: per-rule seconds, each GPU job's GPU and compile seconds, utilisation."""
    rules = {}
    for tsv in sorted((REPO / "benchmarks").rglob("*.tsv")):
        parts = tsv.relative_to(REPO / "benchmarks").parts
        rule, name = (parts[0] if len(parts) > 1 else tsv.stem), tsv.stem
        lines = tsv.read_text().splitlines()
        rules.setdefault(rule, {})[name] = float(lines[1].split("\t")[0])
    jobs = []
    for rule in GPU_RULES:
        for log in sorted((REPO / "logs" / rule).rglob("*.log")):
            text = log.read_text(errors="replace")
            gpu = re.search(r"GPU lease: (.*)", text)
            compiled = re.search(r"compile seconds: (.*)", text)
            jobs.append(
                {
                    "log": str(log.relative_to(REPO)),
                    "gpu": gpu[1] if gpu else None,
                    "compile": compiled[1] if compiled else None,
                }
            )
    summary = {"wall_s": seconds, "snakemake_returncode": returncode, "rule_seconds": rules}
    summary["gpu_jobs"] = jobs
    samples = out / "gpu_utilisation.csv"
    if samples.is_file():
        values = [
            float(row.split(",")[2])
            for row in samples.read_text().splitlines()[1:]
            if row.count(",") >= 4
        ]
        if values:
            summary["gpu_utilisation"] = {
                "samples": len(values),
                "mean_pct": sum(values) / len(values),
                "busy_share": sum(v > 10 for v in values) / len(values),
            }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args):
    """Step 2 (see the module docstring)."""
    out = Path(os.environ.get("OUT") or REPO / "results" / "gpu-smoke")
    out.mkdir(parents=True, exist_ok=True)
    site = args.site
    install(site)
    sys.path.insert(0, site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "src"), site, env.get("PYTHONPATH")])
    )
    env["PATH"] = f"{site}/bin{os.pathsep}{env['PATH']}"
    config = run_config(args.config, args.archs.split(",") if args.archs else None)
    gpus = gpu_count()
    sampler = sample_utilisation(out / "gpu_utilisation.csv")
    command = [
        "snakemake", "--cores", "all", "--resources", f"gpu={max(1, gpus)}",
        "--configfile", str(config.relative_to(REPO)), "--keep-going", "--rerun-incomplete",
    ]  # fmt: skip
    print(" ".join(command), flush=True)
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
    try:
        returncode = process.wait(timeout=args.budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # snakemake and its jobs
        returncode = process.wait()
    seconds = time.monotonic() - start
    if sampler is not None:
        sampler.terminate()
    for name in ("benchmarks", "logs"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, out / name, dirs_exist_ok=True)
    for table in ("table1.md", "table1.csv"):
        if (REPO / "results" / table).is_file():
            shutil.copy2(REPO / "results" / table, out / table)
    summary = summarise(out, seconds, returncode)
    print(json.dumps(summary, indent=2))
    if (out / "table1.md").is_file():
        print((out / "table1.md").read_text())
    return returncode


def main(argv=None):
    """`wheels` (here) or `run` (on the GPU machine); see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("wheels", help="download the wheels into .whl/smoke/")
    go = sub.add_parser("run", help="install the wheels and run the workflow")
    go.add_argument("--config", default=str(REPO / "config" / "gpu-smoke.yaml"))
    go.add_argument("--archs", default="", help="comma-separated architectures (default: all)")
    go.add_argument("--budget-s", type=float, default=480.0, help="stop the workflow after this")
    go.add_argument("--site", default="/tmp/leukoflow-site", help="folder the wheels go to")
    args = parser.parse_args(argv)
    if args.step == "wheels":
        for wheel in fetch_wheels():
            print(wheel.name)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
