"""End-to-end runs of tools/train_reid.py and tools/eval.py on a tiny synthetic set."""
import csv
import json
import os
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "data.args={num_train_ids: 16, num_test_ids: 10, images_per_cam: 2, num_cams: 3}",
    "data.height=32", "data.width=16", "data.p=4", "data.k=4",
    "model.keypoint_blocks=[]", "optim.warmup_epochs=0.5", "optim.optimizer.args.lr=0.003", "data.erasing=0",
]


def run(tool, *args, env=None, check=True):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{tool} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def train(tmp_path, name, *extra, epochs=4):
    out_dir = tmp_path / "runs" / name
    res = run("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(out_dir), f"name={name}", f"epochs={epochs}", *TINY, *extra)
    return out_dir, res


def metrics(out_dir):
    with open(out_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    out_dir, res = train(tmp, "smoke", epochs=8)
    return tmp, out_dir, res


def test_training_learns(trained):
    _, out_dir, res = trained
    rows = metrics(out_dir)
    assert len(rows) == 8
    assert float(rows[-1]["loss"]) < 0.85 * float(rows[0]["loss"])
    ev = json.loads((out_dir / "eval.json").read_text())
    # 10 test identities, 2 x 2 true matches among 40 gallery images: chance rank-1 is about 0.1, mAP about 0.12
    assert ev["rank1"] >= 0.3 and ev["mAP"] > 0.25
    assert "rank-1" in res.stdout
    for f in ("config.yaml", "last.pt", "metrics.csv"):
        assert (out_dir / f).is_file()
    state = torch.load(out_dir / "last.pt", weights_only=False)
    assert state["epoch"] == 8 and "torch" in state["versions"] and state["code_version"]


def test_eval_defaults_to_latest_run(trained):
    tmp, out_dir, _ = trained
    ev = json.loads((out_dir / "eval.json").read_text())
    res = run("eval.py", "--rank1", "--mAP", "--runs-dir", str(tmp / "runs"), "--json", str(tmp / "e.json"))
    again = json.loads((tmp / "e.json").read_text())
    assert again["rank1"] == pytest.approx(ev["rank1"]) and again["mAP"] == pytest.approx(ev["mAP"], abs=1e-6)
    assert "rank-1" in res.stdout and "mAP" in res.stdout


def test_killed_run_resumes_exactly(tmp_path):
    full, _ = train(tmp_path, "full", epochs=2)
    killed = tmp_path / "runs" / "killed"
    args = [sys.executable, os.path.join(ROOT, "tools", "train_reid.py"), "--data-root", str(tmp_path / "syn"),
            "--output-dir", str(killed), "name=killed", "epochs=2", *TINY]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "last.pt"
    deadline = time.time() + 300
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # during the second epoch: the first epoch's checkpoint is all that survives
    proc.wait()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    res = run("train_reid.py", *args[2:], "--resume")
    assert "resumed" in res.stdout
    a, b = metrics(full), metrics(killed)
    assert [r["epoch"] for r in b] == ["1", "2"]
    assert float(a[1]["loss"]) == pytest.approx(float(b[1]["loss"]), rel=1e-4)
    wa = torch.load(full / "last.pt", weights_only=False)["model"]
    wb = torch.load(ckpt, weights_only=False)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-4) for k in wa)


def test_resume_refuses_other_config(tmp_path):
    out, _ = train(tmp_path, "r", epochs=1)
    res = run("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(out), "name=r", "epochs=2", *TINY, "loss.margin=0.5", "--resume", check=False)
    assert res.returncode != 0 and "another config" in res.stderr


def test_misspelled_key_fails_naming_it(tmp_path):
    res = run("train_reid.py", "model.backbon=resnet50", check=False)
    assert res.returncode != 0 and "model.backbon" in res.stderr


def test_two_process_gloo_training_agrees(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out_dir = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        os.path.join(ROOT, "tools", "train_reid.py"), "--device", "cpu", "--data-root", str(tmp_path / "syn"),
        "--output-dir", str(out_dir), "name=ddp", "epochs=2", *TINY, "htg.enabled=true", "htg.warmup_epochs=1",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # G and D start from different seeds on the two ranks: they agree only if broadcast and gradient averaging work
    assert "2 process(es)" in res.stdout and "ranks agree on the weights (F, G and D): True" in res.stdout
    rows = metrics(out_dir)
    assert len(rows) == 2 and float(rows[1]["softmax"]) < float(rows[0]["softmax"])  # "loss" gains the HTG term in epoch 2


def test_htg_run_logs_diagnostics_and_plots(tmp_path):
    out_dir, _ = train(tmp_path, "htg", "htg.enabled=true", "htg.warmup_epochs=1", epochs=2)
    rows = metrics(out_dir)
    assert rows[0]["gen_active"] == "" and rows[1]["gen_active"] != ""  # adversarial steps start after the warm-up
    assert 0.0 <= float(rows[1]["gen_active"]) <= 1.0 and float(rows[1]["d_loss"]) > 0
    assert (out_dir / "curves.png").stat().st_size > 1000


def test_unreadable_training_image_is_named_or_skipped(tmp_path):
    from reid_htg.data.synthetic import read_synthetic

    df = read_synthetic(str(tmp_path / "syn"), num_train_ids=16, num_test_ids=10, images_per_cam=2, num_cams=3)
    bad = df[df.split == "train"].path.iloc[5]
    with open(bad, "wb") as fh:
        fh.write(b"not an image")
    res = run("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(tmp_path / "r"), "epochs=1", *TINY, check=False)
    assert res.returncode != 0 and os.path.basename(bad) in res.stderr and "skip_unreadable" in res.stderr
    ok = run("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(tmp_path / "r"), "epochs=1", *TINY, "data.skip_unreadable=true")
    assert os.path.basename(bad) in ok.stderr and "95 training images" in ok.stdout
