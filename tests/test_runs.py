"""Run bookkeeping (reid_htg.runs): one process per output folder, nothing of a finished run lost to a mistake."""
import os

import pytest
from conftest import run_tool_here

from reid_htg.runs import MetricsLog, RunFolder, RunFolderError, check_same_config

FILES = ("last.pt", "metrics.csv")
TINY = ["data.args={num_train_ids: 12, num_test_ids: 6, images_per_cam: 2, num_cams: 2}", "data.height=32", "data.width=16",
        "data.p=4", "data.k=2", "model.backbone=resnet10t", "model.keypoint_blocks=[]", "data.erasing=0", "optim.warmup_epochs=0"]


def test_a_folder_is_held_by_one_run_at_a_time(tmp_path):
    first = RunFolder(str(tmp_path / "r"), FILES).start()
    second = RunFolder(str(tmp_path / "r"), FILES)  # the check alone passes: the folder holds no run yet
    with pytest.raises(RunFolderError, match=rf"in use by another run \(process {os.getpid()}\)"):
        second.start()
    first.release()
    second.start().release()  # free once the first ends


def test_checks_come_before_anything_is_written(tmp_path):
    with pytest.raises(RunFolderError, match="does not exist"):
        RunFolder(str(tmp_path / "new"), FILES, resume=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder(str(tmp_path / "file"), FILES)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.csv").write_text("epoch\n")
    with pytest.raises(RunFolderError, match="already holds a run"):
        RunFolder(str(tmp_path / "old"), FILES)
    run = RunFolder(str(tmp_path / "old"), FILES, overwrite=True)
    assert (tmp_path / "old" / "metrics.csv").exists()  # still there until the new run starts
    run.start().release()
    assert not (tmp_path / "old" / "metrics.csv").exists()


def test_resume_checks_the_config_and_the_log_follows_the_checkpoint(tmp_path):
    check_same_config({"a": 1, "epochs": 2}, {"a": 1, "epochs": 5}, "x.pt")  # more epochs: the same run, continued
    with pytest.raises(RunFolderError, match=r"sections \['a'\] differ"):
        check_same_config({"a": 1}, {"a": 2}, "x.pt")
    log = MetricsLog(str(tmp_path / "m.csv"), ["it", "loss"])
    for i in range(1, 5):
        log.append({"it": i, "loss": 1.0 / i})
    MetricsLog(str(tmp_path / "m.csv"), ["it", "loss"], resume_after=2)
    assert (tmp_path / "m.csv").read_text().splitlines() == ["it,loss", "1,1", "2,0.5"]


def test_trainings_into_one_folder_and_overwrite_with_bad_data(tmp_path):
    out = tmp_path / "run"
    run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", out, "epochs=1", *TINY)
    before = {f: (out / f).stat().st_mtime_ns for f in ("last.pt", "metrics.csv", "eval.json", "config.yaml")}
    bad = run_tool_here("train_reid.py", "--data-root", tmp_path / "missing", "--output-dir", out, "epochs=1", *TINY, "data.dataset=cuhk03",
                        "data.args={}", "--overwrite", check=False)
    assert bad.returncode == 2 and "missing" in bad.stderr and "Traceback" not in bad.stderr
    assert {f: (out / f).stat().st_mtime_ns for f in before} == before  # the finished run is untouched
    held = RunFolder(str(out), ("last.pt",), resume=True).start()  # another run holds the folder
    try:
        res = run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", out, "epochs=2", *TINY, "--resume", check=False)
        assert res.returncode == 2 and "in use by another run" in res.stderr
        res = run_tool_here("train_gan.py", "--dataset", "synthetic", "--data-root", tmp_path / "syn", "--output-dir", out, "--overwrite",
                            "height=32", "width=16", "batch_size=4", "iters_per_epoch=1", "epochs=1", check=False)
        assert res.returncode == 2 and "in use by another run" in res.stderr
    finally:
        held.release()
    assert {f: (out / f).stat().st_mtime_ns for f in before} == before


def test_tensorboard_log_holds_every_metrics_column(tmp_path):
    pytest.importorskip("tensorboard")
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", out, "epochs=2", *TINY, "log.tensorboard=true",
                  "htg.enabled=true", "htg.warmup_epochs=1")
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for col in ("loss", "softmax", "triplet", "tri_active_all", "rank1", "g_shift", "d_auc"):
        events = acc.Scalars(col)
        got = {e.step: e.value for e in events}
        want = {int(r["epoch"]): float(r[col]) for r in rows if r[col] != ""}
        assert want and got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-4) for k in want), col
    assert "curves" in acc.Tags()["images"]


def test_resume_from_another_runs_checkpoint_into_a_new_folder(tmp_path):
    run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", tmp_path / "a", "epochs=1", *TINY)
    res = run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", tmp_path / "b", "epochs=2", *TINY,
                        "--resume", tmp_path / "a" / "last.pt")
    assert "resumed from" in res.stdout and (tmp_path / "b" / "last.pt").is_file()
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 2  # the source run is untouched


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path):
    """Every spelling of --resume either continues the run or is refused with the folder's files unchanged."""
    syn, d = tmp_path / "syn", tmp_path / "d"
    run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", d, "epochs=1", *TINY)
    before = _snapshot(d)
    refused = [
        ["--resume", d / "missing.pt"],  # not a checkpoint
        ["--resume", tmp_path / "nowhere"],  # not a folder either
        ["--resume", d / "last.pt", "loss.margin=0.2"],  # another config
    ]
    for extra in refused:
        res = run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", d, "epochs=2", *TINY, *extra, check=False)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (extra, res.stderr)
        assert _snapshot(d) == before, extra
    other = tmp_path / "other"
    run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", other, "epochs=1", *TINY)
    res = run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", d, "epochs=2", *TINY, "--resume", other / "last.pt", check=False)
    assert res.returncode == 2 and "already holds a run" in res.stderr and _snapshot(d) == before  # another run's checkpoint: never over this one
    import torch

    state = torch.load(d / "last.pt", weights_only=True)
    for key in ("optimizer", "scheduler", "aug_rng"):
        trimmed = {k: v for k, v in state.items() if k != key}
        torch.save(trimmed, tmp_path / f"no_{key}.pt")
        res = run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", tmp_path / f"new_{key}", "epochs=2", *TINY,
                            "--resume", tmp_path / f"no_{key}.pt", check=False)
        assert res.returncode == 2 and key in res.stderr and "model.init_from" in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / f"new_{key}").exists()
    for spelling in (d / "last.pt", d):  # this folder's own checkpoint, as a file or as the folder: resumed in place
        res = run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", d, "epochs=2", *TINY, "--resume", spelling)
        assert "resumed from" in res.stdout and "after epoch 1" in res.stdout
        assert (d / "metrics.csv").read_text().count("\n") == 3
        run_tool_here("train_reid.py", "--data-root", syn, "--output-dir", d, "epochs=1", *TINY, "--overwrite")
