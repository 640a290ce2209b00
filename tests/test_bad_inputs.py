"""Bad inputs to every tool, table-driven: each ends in one line naming the problem, exit code 2, nothing written or lost.

Each case: the tool, its arguments (``{tmp}`` is the case's folder, prepared by ``setup``), the word the
message must contain, and what must still be there afterwards.
"""
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

from reid_htg.cli import run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name: str):
    """A tool's module, imported from tools/ (in-process: a case costs milliseconds, not a Python start-up)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name[:-3]}", os.path.join(ROOT, "tools", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _embeddings(tmp):
    np.savez(os.path.join(tmp, "emb.npz"), embeddings=np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32),
             path=np.array([f"{i}.jpg" for i in range(50)]), fingerprint=np.array("abc"))


def _keep_folder(tmp):
    os.makedirs(os.path.join(tmp, "precious"))
    with open(os.path.join(tmp, "precious", "notes.txt"), "w") as fh:
        fh.write("keep")
    _embeddings(tmp)


def _finished_run(tmp):
    os.makedirs(os.path.join(tmp, "run"))
    torch.save({"model": {}, "config": {}}, os.path.join(tmp, "run", "last.pt"))


def _gan_checkpoint(tmp):
    torch.save({"kind": "gan", "model": "dcgan", "config": {}, "model_args": {}}, os.path.join(tmp, "gan.pt"))


def _plain_npy(tmp):
    np.save(os.path.join(tmp, "feats.npy"), np.zeros((3, 4), np.float32))


def _empty_gallery(tmp):
    np.savez(os.path.join(tmp, "f.npz"), qf=np.ones((2, 4), np.float32), gf=np.zeros((0, 4), np.float32), q_pids=np.array([1, 2]),
             g_pids=np.zeros(0, np.int64), q_camids=np.array([0, 0]), g_camids=np.zeros(0, np.int64))


def _empty_csv(tmp):
    open(os.path.join(tmp, "empty.csv"), "w").close()
    with open(os.path.join(tmp, "header.csv"), "w") as fh:
        fh.write("path,pid,camid,split\n")


def _wrong_layout(tmp):
    os.makedirs(os.path.join(tmp, "market", "images"))


CASES = [  # id, tool, args, word, setup, must still exist
    ("linear-schedule", "train_reid.py", ["optim.schedule=linear"], "optim.schedule", None, None),
    ("p-of-one", "train_reid.py", ["data.p=1"], "data.p", None, None),
    ("negative-margin", "train_reid.py", ["loss.margin=-0.3"], "loss.margin", None, None),
    ("keypoint-block-5", "train_reid.py", ["model.keypoint_blocks=[5]"], "keypoint_blocks", None, None),
    ("erasing-above-1", "train_reid.py", ["data.erasing=1.5"], "probability", None, None),
    ("unknown-backbone", "train_reid.py", ["model.backbone=vgg16"], "ResNet", None, None),
    ("resume-without-run", "train_reid.py", ["--output-dir", "{tmp}/none", "--resume"], "does not exist", None, None),
    ("rerun-finished", "train_reid.py", ["--output-dir", "{tmp}/run"], "already holds a run", _finished_run, "run/last.pt"),
    ("gan-checkpoint-to-eval", "eval.py", ["--checkpoint", "{tmp}/gan.pt"], "GAN checkpoint", _gan_checkpoint, None),
    ("plain-npy-features", "eval.py", ["--features", "{tmp}/feats.npy"], "plain array", _plain_npy, None),
    ("empty-gallery", "eval.py", ["--features", "{tmp}/f.npz"], "gallery", _empty_gallery, None),
    ("empty-gallery-index", "eval.py", ["--features", "{tmp}/f.npz", "--index", "flat"], "gallery", _empty_gallery, None),
    ("out-over-a-folder", "build_index.py", ["--embeddings", "{tmp}/emb.npz", "--out", "{tmp}/precious"], "not an index folder",
     _keep_folder, "precious/notes.txt"),
    ("unknown-index-param", "build_index.py", ["--embeddings", "{tmp}/emb.npz", "--out", "{tmp}/i", "--index", "ivf", "nlst=4"],
     "unknown index parameter", _embeddings, None),
    ("embed-out-not-npz", "embed.py", ["--checkpoint", "x.pt", "--images", "{tmp}", "--out", "{tmp}/e"], ".npz", None, None),
    ("zero-byte-csv", "check_dataset.py", ["--dataset", "csv", "--data-root", "{tmp}/empty.csv"], "empty", _empty_csv, None),
    ("header-only-csv", "check_dataset.py", ["--dataset", "csv", "--data-root", "{tmp}/header.csv"], "no rows", _empty_csv, None),
    ("wrong-reader", "check_dataset.py", ["--dataset", "market1501", "--data-root", "{tmp}/market"], "bounding_box_train", _wrong_layout, None),
    ("cyclegan-too-small", "train_gan.py", ["--model", "cyclegan", "--dataset", "synthetic", "--data-root", "{tmp}/syn", "--output-dir",
                                            "{tmp}/gan", "height=8", "width=4", "args={{num_train_ids: 4, num_test_ids: 2, images_per_cam: 1, num_cams: 2}}"],
     "CycleGAN cannot work", None, None),
    ("no-cuda", "train_reid.py", ["--device", "cuda"], "cuda", None, None),
    ("no-cuda-eval", "eval.py", ["--checkpoint", "{tmp}/run/last.pt", "--device", "cuda:3"], "CUDA", _finished_run, None),
]


@pytest.mark.parametrize("tool,args,word,setup,keep", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, tool, args, word, setup, keep):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if setup:
        setup(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [tool, *(a.format(tmp=tmp_path) for a in args)])
    code = run_tool(_tool(tool).main)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and word in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error:")
    if keep:
        assert (tmp_path / keep).exists()
    if tool == "train_gan.py":
        assert not (tmp_path / "gan").exists()  # refused before any file was written


def test_bad_embeddings_are_refused_not_scored(tmp_path):
    """Zero-width and all-zero embeddings given to eval.py are refused in one line (they once scored rank-1 2%)."""
    import numpy as np
    from conftest import run_tool_here

    for name, emb in (("zero_width", np.zeros((20, 0), np.float32)), ("all_zero", np.zeros((20, 8), np.float32)),
                      ("nan", np.full((20, 8), np.nan, np.float32))):
        path = tmp_path / f"{name}.npz"
        np.savez(path, embeddings=emb, pid=np.arange(20) % 5, camid=np.arange(20) % 2)
        res = run_tool_here("eval.py", "--query", path, "--gallery", path, check=False)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "rank-1" not in res.stdout, (name, res.stderr)
        assert {"zero_width": "dimension 0", "all_zero": "all zero", "nan": "NaN"}[name] in res.stderr


def test_a_missing_extra_is_one_line_naming_the_wheel_install(monkeypatch, capsys):
    """Every tool runs under run_tool: an optional module that is not installed names its extra as a wheel user installs it."""
    import sys as _sys

    from reid_htg.cli import run_tool

    def needs(module):
        def main():
            raise ModuleNotFoundError(f"No module named '{module}'", name=module)
        return main

    monkeypatch.setattr(_sys, "argv", ["reid-export"])
    for module, extra in (("onnx", "serve"), ("onnxruntime", "serve"), ("pymilvus", "milvus"), ("openvino", "openvino"), ("boxmot", "track")):
        assert run_tool(needs(module)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f'pip install "reid-htg[{extra}]"' in err and module in err, err
    with pytest.raises(ModuleNotFoundError):  # a module of no extra is a real bug: its traceback stays
        run_tool(needs("no_such_module_of_ours"))


def test_search_prints_a_bounded_table_and_keeps_every_cell_in_csv(tmp_path):
    """A 100,000-character metadata value: a line of the terminal table stays short, the CSV holds it whole."""
    import numpy as np
    import pandas as pd
    from conftest import run_tool_here

    rng = np.random.default_rng(0)
    long = "x" * 100_000
    gallery = tmp_path / "g.npz"
    np.savez(gallery, embeddings=rng.standard_normal((5, 8)).astype(np.float32), path=np.array([long] + [f"p{i}" for i in range(4)]),
             note=np.array([long] * 5))
    run_tool_here("build_index.py", "--embeddings", gallery, "--out", tmp_path / "idx")
    res = run_tool_here("search.py", "--index", tmp_path / "idx", "--embeddings", gallery, "--k", "3", "--csv", tmp_path / "top.csv")
    assert len(res.stdout) < 20_000 and max(len(line) for line in res.stdout.splitlines()) < 400
    assert (pd.read_csv(tmp_path / "top.csv")["note"] == long).all()


def test_refusals_come_before_the_work(tmp_path):
    """An opset the exporter cannot write, a --far outside (0, 1) and a --save-threshold folder that is no index are
    refused in one line before any model is loaded or evaluated."""
    from conftest import run_tool_here

    for opset in ("5", "99"):
        res = run_tool_here("export.py", "--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "m.onnx", "--opset", opset, check=False)
        assert res.returncode == 2 and "opsets 7 to 20" in res.stderr and "Traceback" not in res.stderr
    res = run_tool_here("eval.py", "--checkpoint", tmp_path / "missing.pt", "--verify", "--far", "1.5", check=False)
    assert res.returncode == 2 and "--far 1.5" in res.stderr  # named before the checkpoint is looked at
    (tmp_path / "not_an_index").mkdir()
    res = run_tool_here("eval.py", "--checkpoint", tmp_path / "missing.pt", "--verify", "--save-threshold", tmp_path / "not_an_index", check=False)
    assert res.returncode == 2 and "not_an_index" in res.stderr and "missing.pt" not in res.stderr
