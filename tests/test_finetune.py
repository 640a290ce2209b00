"""Fine-tuning from a checkpoint (``model.init_from``): what is copied, what stays fresh, what is refused."""
import hashlib

import pytest
import torch
import yaml
from conftest import run_tool_here

from reid_htg.checkpoint import CheckpointError, init_from_checkpoint, save_checkpoint
from reid_htg.models import ReIDNet

ARGS = dict(backbone="resnet10t", global_feature=True, keypoint_blocks=(4,), embed_dim=0, bnneck=True, classifier="biasless",
            cosine_scale=16.0, last_stride=2, pretrained_path=None, eval_feature="bn")


def source_checkpoint(path, num_classes=7, **changes):
    """A reid-htg checkpoint of a randomly initialised (and then perturbed) network, BatchNorm buffers included."""
    torch.manual_seed(1)
    args = dict(ARGS, num_classes=num_classes, **changes)
    model = ReIDNet(**args)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.1)  # running statistics too: they must travel with the weights
    save_checkpoint({"model": model.state_dict(), "config": {}, "model_args": args, "data_args": {}}, str(path))
    return model


def test_every_weight_but_the_classifier_is_copied(tmp_path):
    src = source_checkpoint(tmp_path / "last.pt")
    torch.manual_seed(2)
    model = ReIDNet(**ARGS, num_classes=11)  # other identities: another classifier size
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    digest = init_from_checkpoint(model, str(tmp_path / "last.pt"))
    assert digest == hashlib.sha256((tmp_path / "last.pt").read_bytes()).hexdigest()
    got, want = model.state_dict(), src.state_dict()
    copied = [k for k in got if not k.startswith("classifier.")]
    assert any("running_mean" in k for k in copied) and any(k.startswith("neck.") for k in copied)
    for k in copied:
        assert torch.equal(got[k], want[k]), k
        if got[k].is_floating_point() and got[k].numel() > 1:
            assert not torch.equal(got[k], fresh[k]), k  # it really changed
    assert got["classifier.weight"].shape == (11, model.dim)
    assert torch.equal(got["classifier.weight"], fresh["classifier.weight"])  # fresh: new identities


def test_another_architecture_is_refused_naming_the_key(tmp_path):
    source_checkpoint(tmp_path / "last.pt", keypoint_blocks=(3, 4))
    model = ReIDNet(**ARGS, num_classes=5)
    with pytest.raises(CheckpointError, match=r"another architecture: neck\.weight is \(1280,\) there and \(1024,\) here"):
        init_from_checkpoint(model, str(tmp_path / "last.pt"))
    source_checkpoint(tmp_path / "other.pt", backbone="resnet18")
    with pytest.raises(CheckpointError, match=r"backbone\.conv1\.0\.weight is absent there and \(24, 3, 3, 3\) here.*resnet18"):
        init_from_checkpoint(model, str(tmp_path / "other.pt"))


def test_a_file_other_than_its_sha256_is_refused(tmp_path):
    source_checkpoint(tmp_path / "last.pt")
    model = ReIDNet(**ARGS, num_classes=5)
    with pytest.raises(CheckpointError, match="not the 0000000000000000"):
        init_from_checkpoint(model, str(tmp_path / "last.pt"), sha256="0" * 64)
    with pytest.raises(FileNotFoundError):
        init_from_checkpoint(model, str(tmp_path / "missing.pt"))


TINY = ["data.args={num_train_ids: 12, num_test_ids: 6, images_per_cam: 2, num_cams: 2}", "data.height=32", "data.width=16",
        "data.p=4", "data.k=2", "model.backbone=resnet10t", "model.keypoint_blocks=[]", "data.erasing=0", "optim.warmup_epochs=0"]


def test_a_run_records_its_source_and_refuses_a_mismatch(tmp_path):
    src = tmp_path / "src"
    run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", src, "epochs=1", *TINY)
    res = run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", tmp_path / "ft", "epochs=1", *TINY,
                        f"model.init_from={src / 'last.pt'}")
    assert "initialised from" in res.stdout
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["model"]
    assert saved["init_from"] == str(src / "last.pt")
    assert saved["init_sha256"] == hashlib.sha256((src / "last.pt").read_bytes()).hexdigest()
    # resuming the fine-tuned run checks the same source again, and the resolved config matches
    res = run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", tmp_path / "ft", "epochs=2", *TINY,
                        f"model.init_from={src / 'last.pt'}", "--resume")
    assert "resumed from" in res.stdout
    bad = run_tool_here("train_reid.py", "--data-root", tmp_path / "syn", "--output-dir", tmp_path / "bad", "epochs=1", *TINY,
                        "model.keypoint_blocks=[4]", f"model.init_from={src / 'last.pt'}", check=False)
    assert bad.returncode == 2 and "another architecture" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "last.pt").exists()
