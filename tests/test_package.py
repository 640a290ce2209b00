"""The package installs without the repository: a wheel with the recipes and the console scripts, used from an empty folder."""
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["reid-train", "reid-train-gan", "reid-eval", "reid-check", "reid-check-model", "reid-embed", "reid-index", "reid-search", "reid-export", "reid-serve"]


def test_every_subpackage_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads(open(os.path.join(ROOT, "pyproject.toml")).read())["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "reid_htg")) if "__init__.py" in files}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), ROOT],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (path,) = [os.path.join(out, f) for f in os.listdir(out) if f.endswith(".whl")]
    return path


def test_the_wheel_holds_the_recipes_and_the_scripts(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "reid_htg/recipes/cuhk03_cpu.yaml" in names and "reid_htg/recipes/arms/htg.yaml" in names
    assert "reid_htg/commands/train_reid.py" in names and not any(n.startswith(("tests/", "tools/", "benchmarks/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert all(f"{s} = reid_htg.commands." in entry_points for s in SCRIPTS)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    torch_req = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: torch")]
    assert torch_req and not any("<" in line for line in torch_req)  # no upper bound: the machine's cap is not the package's


def test_installed_from_the_wheel_it_trains_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    # the environment's torch and friends are reused; the package itself comes from the wheel alone
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "-q", wheel], check=True, timeout=300)
    work = tmp_path / "empty"
    work.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    where = subprocess.run([py, "-c", "import reid_htg, reid_htg.config as c; print(reid_htg.__file__); print(c.load_config(path='cuhk03_cpu').epochs)"],
                           cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert where.returncode == 0 and str(venv) in where.stdout.splitlines()[0] and where.stdout.splitlines()[1] == "8", where.stdout + where.stderr
    res = subprocess.run([str(venv / "bin" / "reid-train"), "epochs=1", "data.height=32", "data.width=16", "data.p=4", "data.k=2",
                          "data.args={num_train_ids: 8, num_test_ids: 4, images_per_cam: 2, num_cams: 2}", "model.backbone=resnet10t",
                          "--output-dir", "run"], cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "rank-1" in res.stdout and (work / "run" / "last.pt").is_file() and (work / "data" / "synthetic").is_dir()
    res = subprocess.run([str(venv / "bin" / "reid-eval"), "--checkpoint", "run/last.pt", "--rank1"], cwd=work, capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0 and "rank-1" in res.stdout, res.stderr[-2000:]
