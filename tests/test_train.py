"""End-to-end runs of tools/train_reid.py and tools/eval.py on a tiny synthetic set."""
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import run_tool_here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "data.args={num_train_ids: 16, num_test_ids: 10, images_per_cam: 2, num_cams: 3}",
    "data.height=32", "data.width=16", "data.p=4", "data.k=4",
    "model.keypoint_blocks=[]", "optim.warmup_epochs=0.5", "optim.optimizer.args.lr=0.003", "data.erasing=0",
]


def run(tool, *args, check=True):
    """A tool run in this process (tests/conftest.py); the tests that need a process of their own start one."""
    return run_tool_here(tool, *args, check=check)


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
    state = torch.load(out_dir / "last.pt", weights_only=True)
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
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread, as the in-process runs here (conftest): the same arithmetic
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpt = killed / "last.pt"
    deadline = time.time() + 300
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # as soon as epoch 1's checkpoint exists: during its evaluation or epoch 2; its row may not be written yet
    proc.wait()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    res = run("train_reid.py", *args[2:], "--resume")
    assert "resumed" in res.stdout
    a, b = metrics(full), metrics(killed)
    assert [r["epoch"] for r in b] == ["1", "2"]
    assert all(float(a[i]["loss"]) == pytest.approx(float(b[i]["loss"]), rel=1e-4) for i in (0, 1))
    wa = torch.load(full / "last.pt", weights_only=True)["model"]
    wb = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-4) for k in wa)


def test_resume_keeps_one_row_per_saved_epoch(tmp_path):
    """A kill between an epoch's checkpoint and its row (during evaluation) loses no row; rows past the checkpoint go."""
    from reid_htg.runs import MetricsLog, RunFolder

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss,rank1\n1,0.9,\n")
    MetricsLog(str(path), ["epoch", "loss", "rank1"], 2, ["2", "0.8", ""])  # epoch 2 saved, its row never written: restored
    MetricsLog(str(path), ["epoch", "loss", "rank1"], 2, ["2", "0.8", ""])  # a second resume does not repeat it
    assert path.read_text().splitlines() == ["epoch,loss,rank1", "1,0.9,", "2,0.8,"]
    path.write_text("epoch,loss,rank1\n1,0.9,\n2,0.8,0.5\n3,0.7,\n")
    MetricsLog(str(path), ["epoch", "loss", "rank1"], 2, ["2", "0.8", ""])  # the evaluated row is kept, the row past the checkpoint dropped
    assert path.read_text().splitlines() == ["epoch,loss,rank1", "1,0.9,", "2,0.8,0.5"]
    (tmp_path / "last.pt").write_bytes(b"ckpt")
    (tmp_path / "last.pt.tmp123").write_bytes(b"half")
    RunFolder(str(tmp_path), ("last.pt", "metrics.csv"), resume=True).start().release()
    assert not (tmp_path / "last.pt.tmp123").exists() and (tmp_path / "last.pt").exists()


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
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
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
    for key in ("d_auc", "d_id_acc", "g_shift", "emb_norm", "gap_change", "tri_active_all"):
        assert rows[1][key] != "", key
    assert float(rows[1]["emb_norm"]) > 0 and 0.0 <= float(rows[1]["d_auc"]) <= 1.0
    assert [r["htg_on"] for r in rows] == ["0", "1"]
    assert (out_dir / "curves.png").stat().st_size > 1000
    late, res = train(tmp_path, "late", "htg.enabled=true", "htg.warmup_epochs=1", "htg.start_active=0.0", epochs=2)
    assert [r["htg_on"] for r in metrics(late)] == ["0", "0"] and "HTG starts" not in res.stdout  # the active fraction never fell below 0


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


def _image_folder(tmp_path, classes=12, per=6):
    """A tiny class-level set: each class a colour and a stripe pattern, seeded."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for c in range(classes):
        base = rng.integers(0, 256, 3)
        for i in range(per):
            img = np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            img[:, (c % 4) * 8 : (c % 4) * 8 + 4] = 255 - base
            os.makedirs(root / f"class{c:02d}", exist_ok=True)
            Image.fromarray(img).save(root / f"class{c:02d}" / f"{i}.png")
    return root


CLASS_TINY = ["data.dataset=image_folder", "data.height=32", "data.width=32", "data.p=4", "data.k=3", "model.keypoint_blocks=[]",
              "model.backbone=resnet10t", "optim.warmup_epochs=0.5", "optim.optimizer.args.lr=0.003", "data.erasing=0"]


def test_class_level_training_evaluation_and_plot(tmp_path):
    root = _image_folder(tmp_path)
    out = tmp_path / "cls"
    res = run("train_reid.py", "--data-root", str(root), "--output-dir", str(out), "epochs=2", "eval_every=1", *CLASS_TINY)
    assert "Recall@1" in res.stdout and "MAP@R" in res.stdout
    rows = metrics(out)
    assert len(rows) == 2 and all(r["recall@1"] != "" for r in rows)
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_query"] == 36 and ev["num_classes"] == 6 and {"recall@8", "map@r", "nmi"} <= set(ev)
    again = run("eval.py", "--checkpoint", str(out / "last.pt"), "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "r.png"))
    assert json.loads((tmp_path / "e.json").read_text())["recall@1"] == pytest.approx(ev["recall@1"])
    assert "Recall@1" in again.stdout and (tmp_path / "r.png").stat().st_size > 1000
    # the validation split of a class-level set is a test split of held-out training classes
    val = run("train_reid.py", "--data-root", str(root), "--output-dir", str(tmp_path / "val"), "epochs=1", "data.val_ids=2", *CLASS_TINY)
    assert "validation split (2 held-out" in val.stdout and json.loads((tmp_path / "val" / "val.json").read_text())["num_classes"] == 2
    assert metrics(tmp_path / "val")[0]["val_recall@1"] != ""


def test_evaluation_only_set_and_cross_dataset(tmp_path, trained):
    _, out_dir, _ = trained
    root = _image_folder(tmp_path)
    res = run("check_dataset.py", "--dataset", "image_folder", "--data-root", str(root), "--no-decode")
    assert "usable: yes, for training and evaluation" in res.stdout
    # an evaluation-only csv: test split only, no training split
    import pandas as pd

    paths = sorted(str(p) for p in root.rglob("*.png"))
    pd.DataFrame({"path": paths, "pid": [int(os.path.basename(os.path.dirname(p))[5:]) for p in paths], "camid": 0, "split": "test"}).to_csv(
        tmp_path / "eval_only.csv", index=False)
    res = run("check_dataset.py", "--dataset", "csv", "--data-root", str(tmp_path / "eval_only.csv"), "--no-decode")
    assert res.returncode == 0 and "usable: yes, for evaluation" in res.stdout
    res = run("eval.py", "--checkpoint", str(out_dir / "last.pt"), "--dataset", "csv", "--data-root", str(tmp_path / "eval_only.csv"))
    assert "Recall@1" in res.stdout and "72 test" in res.stdout  # a re-ID model scored on class-level data it never saw
    res = run("train_reid.py", "--data-root", str(tmp_path / "eval_only.csv"), "epochs=1", *TINY, "data.dataset=csv", "data.args={}", check=False)
    assert res.returncode != 0 and "evaluation-only" in res.stderr and "Traceback" not in res.stderr


def test_metrics_row_and_checkpoint_survive_a_failed_evaluation(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("features are NaN")

    monkeypatch.setattr("reid_htg.features.evaluate_features", broken)
    out = tmp_path / "r"
    res = run("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(out), "name=r", "epochs=1", *TINY)
    assert res.returncode == 0 and "evaluation skipped: features are NaN" in res.stderr
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert len(metrics(out)) == 1 and metrics(out)[0]["rank1"] == ""


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch, capsys):
    from reid_htg.checkpoint import CheckpointError, load_checkpoint
    from reid_htg.cli import run_tool

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {}, "config": {}, "x": Payload()}, tmp_path / "last.pt")
    from PIL import Image

    Image.new("RGB", (16, 32)).save(tmp_path / "q.png")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(str(tmp_path / "last.pt"))
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import embed
    import eval as eval_tool

    for tool, args in ((eval_tool, ["--checkpoint", str(tmp_path / "last.pt")]),
                       (embed, ["--checkpoint", str(tmp_path / "last.pt"), "--images", str(tmp_path), "--out", str(tmp_path / "q.npz")])):
        monkeypatch.setattr(sys, "argv", ["tool", *args])
        assert run_tool(tool.main) == 2 and "cannot be read safely" in capsys.readouterr().err
    assert not marker.exists()


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    from reid_htg.checkpoint import load_checkpoint

    torch.save({"model": {}, "config": {}, "versions": {"torch": torch.__version__}}, tmp_path / "old.pt")  # a TorchVersion inside
    assert load_checkpoint(str(tmp_path / "old.pt"))["versions"]["torch"] == str(torch.__version__)
