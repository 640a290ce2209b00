"""benchmarks/htg_fixed_f.py: the command and JSON keys the HTG issue fixes, on a tiny synthetic checkpoint."""
import importlib.util
import json
import os

from conftest import ROOT, run_tool_here

TINY = ["data.args={num_train_ids: 12, num_test_ids: 6, images_per_cam: 2, num_cams: 2}", "data.height=32", "data.width=16",
        "data.p=4", "data.k=2", "model.backbone=resnet10t", "model.keypoint_blocks=[]", "data.erasing=0", "optim.warmup_epochs=0"]
KEYS = ["real_gap", "gen_gap", "gap_change_rel", "real_violated", "gen_violated", "common_share", "d_real_id_acc", "d_gen_id_acc",
        "ncm_real_id_acc", "ncm_gen_id_acc", "g_shift"]


def test_fixed_f_benchmark_writes_its_keys_and_a_figure(tmp_path):
    run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", tmp_path / "run", "epochs=1", *TINY)
    spec = importlib.util.spec_from_file_location("htg_fixed_f", os.path.join(ROOT, "benchmarks", "htg_fixed_f.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ff.json"
    args = ["--checkpoint", str(tmp_path / "run" / "last.pt"), "--dataset", "synthetic", "--data-root", str(tmp_path / "syn"),
            "--steps", "12", "--seed", "0", "--json", str(out), "--p", "4", "--k", "2", "--cache", str(tmp_path / "cache"),
            "htg.g_center=true", "htg.g_balance=grad_norm"]
    rc = bench.main(args)
    result = json.loads(out.read_text())
    assert all(isinstance(result[k], float) for k in KEYS) and set(result["gate"]) == {"gap", "violated", "common_share", "ncm"}
    assert rc == (0 if result["passed"] else 1) and (tmp_path / "ff.png").is_file()
    assert result["htg"]["g_center"] is True and result["history"][0]["step"] == 0 and result["history"][-1]["step"] == 12
    assert result["history"][0]["g_shift"] == 0.0  # G starts as the identity
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the features were embedded once and kept
    assert bench.main(args) == rc and json.loads(out.read_text())["gen_gap"] == result["gen_gap"]  # same seed, cached features: same figures
