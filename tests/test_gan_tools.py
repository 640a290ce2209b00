"""tools/train_gan.py end to end, GAN images in re-ID training, and FGSM robustness in tools/eval.py."""
import json

import pytest
import torch
from test_train import TINY, run

GAN_TINY = ["args={num_train_ids: 16, num_test_ids: 10, images_per_cam: 2, num_cams: 3}", "height=32", "width=16",
            "batch_size=8", "iters_per_epoch=4", "sample_every=2", "log_every=1"]


def train_gan(tmp, out, *extra):
    return run("train_gan.py", "--dataset", "synthetic", "--data-root", str(tmp / "syn"), "--output-dir", str(tmp / out), *GAN_TINY, *extra)


@pytest.fixture(scope="module")
def gans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gan")
    train_gan(tmp, "dcgan", "--model", "dcgan", "epochs=2", "ngf=8", "ndf=8", "nz=16")
    train_gan(tmp, "cyclegan", "--model", "cyclegan", "epochs=1", "ngf=8", "ndf=8", "n_res=1", "d_layers=2", "camera_a=0", "camera_b=1")
    return tmp


def test_train_gan_writes_grids_checkpoints_and_losses(gans):
    for name, grids in (("dcgan", ["iter_000001", "iter_000002", "iter_000004", "iter_000006", "iter_000008", "epoch_001", "epoch_002"]),
                        ("cyclegan", ["iter_000001", "iter_000002", "iter_000004", "epoch_001"])):  # a first grid after iteration 1
        out = gans / name
        assert sorted(p.stem for p in (out / "samples").glob("*.png")) == sorted(grids)
        assert (out / "losses.png").is_file() and (out / "config.yaml").is_file()
        lines = (out / "losses.csv").read_text().splitlines()
        assert len(lines) == 1 + (8 if name == "dcgan" else 4)
        state = torch.load(out / "last.pt", weights_only=True)
        assert state["kind"] == "gan" and state["model"] == name and state["train_seconds"] > 0
    assert list(torch.load(gans / "cyclegan" / "last.pt", weights_only=True)["cameras"]) == [0, 1]


def test_train_gan_resume_continues_exactly(gans):
    train_gan(gans, "dc_resumed", "--model", "dcgan", "epochs=1", "ngf=8", "ndf=8", "nz=16")
    res = train_gan(gans, "dc_resumed", "--model", "dcgan", "epochs=2", "ngf=8", "ndf=8", "nz=16", "--resume")
    assert "resumed from" in res.stdout
    a = torch.load(gans / "dcgan" / "last.pt", weights_only=True)["model_state"]
    b = torch.load(gans / "dc_resumed" / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((gans / "dc_resumed" / "losses.csv").read_text().splitlines()) == 1 + 8


def test_train_gan_clear_errors(gans):
    res = run("train_gan.py", "--model", "cyclegan", "--dataset", "synthetic", "--data-root", str(gans / "syn"), "--output-dir",
              str(gans / "bad"), *GAN_TINY, "d_layers=2", check=False)
    assert res.returncode != 0 and "camera_a=" in res.stderr
    res = run("train_gan.py", "--model", "dcgan", "--dataset", "synthetic", "--data-root", str(gans / "syn"), "--output-dir",
              str(gans / "bad"), *GAN_TINY, "height=48", check=False)
    assert res.returncode != 0 and "H = 2W" in res.stderr


def test_reid_training_with_every_augmenter_and_fgsm_robustness(gans):
    out = gans / "runs" / "aug"
    run("train_reid.py", "--data-root", str(gans / "syn"), "--output-dir", str(out), "epochs=3", *TINY,
        f"augmenters.lsro_checkpoint={gans / 'dcgan'}", "augmenters.lsro_ratio=0.25",
        f"augmenters.camstyle_checkpoint={gans / 'cyclegan'}", "augmenters.camstyle_ratio=0.25",
        "augmenters.fgsm_eps=0.03", "augmenters.fgsm_ratio=0.25")
    clean = json.loads((out / "eval.json").read_text())
    res = run("eval.py", "--checkpoint", str(out / "last.pt"), "--fgsm", "0", "0.05", "--json", str(gans / "fgsm.json"))
    assert "FGSM" in res.stdout
    rows = json.loads((gans / "fgsm.json").read_text())["fgsm"]
    assert [r["eps"] for r in rows] == [0.0, 0.05]
    assert rows[0]["rank1"] == pytest.approx(clean["rank1"]) and rows[0]["mAP"] == pytest.approx(clean["mAP"], abs=1e-6)
    assert rows[1]["mAP"] != rows[0]["mAP"]  # the attacked queries are other features
    # what FGSM optimises: each query's mean cosine distance to its true matches grows (rank metrics of this tiny,
    # near-chance model need not follow, and at times did not)
    from reid_htg.augmenters.fgsm import metric_attack_loss
    from reid_htg.augmenters.robustness import attacked_query_features
    from reid_htg.features import checkpoint_test_sets, extract_features

    model, split, _ = checkpoint_test_sets(str(out / "last.pt"), protocol="reid")
    q, g = split.sets["query"], split.sets["gallery"]
    gf = extract_features(model, g, progress=False)
    positives = (q.labels[:, None] == g.labels[None]) & (q.camids[:, None] != g.camids[None])
    loss = {eps: float(metric_attack_loss(attacked_query_features(model, q, gf, g.labels.numpy(), g.camids.numpy(), eps, progress=False),
                                          gf, positives)) for eps in (0.0, 0.05)}
    assert loss[0.05] > loss[0.0] * 1.05, loss


def test_reid_training_refuses_bad_augmenter_settings(gans):
    args = ["--data-root", str(gans / "syn"), "--output-dir", str(gans / "runs" / "bad"), "epochs=1", *TINY]
    res = run("train_reid.py", *args, "augmenters.lsro_ratio=0.5", check=False)
    assert res.returncode != 0 and "lsro_checkpoint" in res.stderr
    res = run("train_reid.py", *args, "augmenters.lsro_ratio=0.5", f"augmenters.lsro_checkpoint={gans / 'cyclegan'}", check=False)
    assert res.returncode != 0 and "holds a cyclegan" in res.stderr
    res = run("eval.py", "--features", str(gans / "nothing.npz"), "--fgsm", "0.01", check=False)
    assert res.returncode != 0 and "needs a model" in res.stderr
