"""Training health: dead filters and silent channels counted right, subnormals flushed, the metrics log and check_model."""
import csv
import json

import pytest
import torch
from conftest import run_tool_here

from reid_htg.device import flush_denormal
from reid_htg.models import ReIDNet
from reid_htg.models.health import dead_filters, health_columns, health_row, silent_channels

TINY = [
    "data.args={num_train_ids: 16, num_test_ids: 10, images_per_cam: 2, num_cams: 3}",
    "data.height=32", "data.width=16", "data.p=4", "data.k=4", "model.keypoint_blocks=[]", "optim.warmup_epochs=0.5", "data.erasing=0",
]


def test_dead_filters_by_stage_against_a_count_by_hand():
    torch.manual_seed(0)
    model = ReIDNet(backbone="resnet18", num_classes=5, keypoint_blocks=(3, 4))
    with torch.no_grad():
        model.backbone.layer3[1].conv1.weight[:64] = 0.0  # 64 of layer 3's 256 + 256 + 128 + 256 + 256 filters
        model.backbone.layer4[0].conv2.weight[:10] = 1e-30  # below the threshold, not zero
        model.backbone.layer4[0].conv2.weight[10, 0, 0, 0] = 1e-30  # one tiny filter whose other weights live
    d = dead_filters(model)
    layer3 = sum(m.out_channels for n, m in model.named_modules() if n.startswith("backbone.layer3") and isinstance(m, torch.nn.Conv2d))
    layer4 = sum(m.out_channels for n, m in model.named_modules() if n.startswith("backbone.layer4") and isinstance(m, torch.nn.Conv2d))
    total = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert d["layer3"] == pytest.approx(64 / layer3) and d["layer4"] == pytest.approx(10 / layer4)
    assert d["stem"] == d["layer1"] == d["layer2"] == d["head"] == 0.0
    assert d["all"] == pytest.approx(74 / total)


def test_silent_channels_see_a_channel_that_never_fires():
    torch.manual_seed(0)
    model = ReIDNet(backbone="resnet18", num_classes=5)
    x = torch.randn(16, 3, 64, 32)
    with torch.no_grad():  # every first-ReLU channel of layer 2 fires ...
        for block in model.backbone.layer2:
            block.bn1.bias[:] = 1e4
    before = silent_channels(model, x)
    with torch.no_grad():  # ... but 32, pushed below zero for every input
        model.backbone.layer2[0].bn1.bias[:32] = -1e4
    after = silent_channels(model, x)
    layer2 = sum(b.bn1.num_features for b in model.backbone.layer2)
    assert before["layer2"] == 0.0 and after["layer2"] == pytest.approx(32 / layer2)
    assert after["layer1"] == before["layer1"] and model.training  # the model is back in train mode
    row = health_row(model, x)
    assert list(row) == [c for c in health_columns(model) if c in row] and set(row) == set(health_columns(model))


def test_flush_denormal_flushes_and_can_be_turned_off():
    try:
        if not flush_denormal(True):
            pytest.skip("this CPU cannot flush subnormal floats")
        assert float(torch.tensor([1e-39]) * 1.0) == 0.0
        flush_denormal(False)
        assert float(torch.tensor([1e-39]) * 1.0) > 0.0
    finally:
        flush_denormal(True)


def test_training_flushes_by_default_and_logs_dead_filters(tmp_path, monkeypatch):
    import reid_htg.commands.train_reid as train_reid

    calls = []
    monkeypatch.setattr(train_reid, "flush_denormal", lambda enabled=True: calls.append(enabled) or True)
    out = tmp_path / "run"
    run_tool_here("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(out), "epochs=2", *TINY)
    run_tool_here("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(tmp_path / "off"), "epochs=1",
                  "flush_denormal=false", *TINY)
    assert calls == [True, False]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for col in ("dead_filters", "dead_stem", "dead_layer1", "dead_layer4", "silent_channels", "silent_layer4"):
        assert all(0.0 <= float(r[col]) <= 1.0 for r in rows), col
    assert float(rows[-1]["dead_filters"]) == 0.0  # two epochs cannot kill a filter


def test_check_model_prints_stages_and_fails_over_the_limit(tmp_path):
    out = tmp_path / "run"
    run_tool_here("train_reid.py", "--data-root", str(tmp_path / "syn"), "--output-dir", str(out), "epochs=1", *TINY)
    res = run_tool_here("check_model.py", "--checkpoint", str(out / "last.pt"), "--json", str(tmp_path / "h.json"))
    assert "layer3" in res.stdout and "silent" in res.stdout
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["ok"] and report["dead_filters"]["all"] == 0.0 and report["silent_channels"] is not None
    state = torch.load(out / "last.pt", weights_only=True)
    key = next(k for k in state["model"] if k.startswith("backbone.layer3.0.conv1"))
    state["model"][key][:] = 0.0  # all of one convolution's filters: its stage is over 5%
    torch.save(state, tmp_path / "dead.pt")
    res = run_tool_here("check_model.py", "--checkpoint", str(tmp_path / "dead.pt"), "--data-root", str(tmp_path / "nowhere"), check=False)
    assert res.returncode == 1 and "backbone.layer3.0.conv1" in res.stdout and "silent channels not measured" in res.stdout
