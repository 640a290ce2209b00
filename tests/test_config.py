import glob
import os

import pytest
import torch

from reid_htg.augmenters import DCGAN, CycleGAN
from reid_htg.builders import build_htg, build_model, build_optimization, build_train_step
from reid_htg.config import (
    ConfigError,
    GANConfig,
    TrainConfig,
    from_dict,
    load_config,
    to_dict,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
GAN_CONFIGS = [p for p in ALL_CONFIGS if os.path.basename(p).startswith("gan_")]  # tools/train_gan.py
CONFIGS = [p for p in ALL_CONFIGS if p not in GAN_CONFIGS]  # tools/train_reid.py


def test_misspelled_key_raises_with_its_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbon: resnet50\n")
    with pytest.raises(ConfigError, match=r"model\.backbon"):
        load_config(TrainConfig, str(bad))
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(TrainConfig, None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(TrainConfig, None, ["epochs=many"])


def test_overrides_and_round_trip():
    cfg = load_config(TrainConfig, None, ["optim.optimizer.args.lr=0.01", "model.keypoint_blocks=[4]", "loss.margin=null"])
    assert cfg.optim.optimizer.args["lr"] == 0.01 and cfg.optim.optimizer.args["weight_decay"] == 5e-4
    assert cfg.model.keypoint_blocks == (4,) and cfg.loss.margin is None
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(Exception):
        cfg.epochs = 3  # frozen


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_builds_and_steps(path):
    cfg = load_config(TrainConfig, path, ["htg.enabled=true"])  # every config's HTG section builds too
    model = build_model(cfg, 6).train()
    htg = build_htg(cfg, model.dim, 6)
    opt, sched = build_optimization(cfg, model.parameters(), 1)
    step = build_train_step(cfg, model, opt, sched, htg, torch.device("cpu"))  # the training tool's own step
    x = torch.randn(8, 3, 32, 16)
    y = torch.arange(4).repeat_interleave(2)
    before = [p.detach().clone() for p in model.parameters()]
    stats = step(x, y, y, htg_on=True)
    assert all(torch.isfinite(torch.tensor(stats[k])) for k in ("loss", "softmax", "triplet", "htg_hard", "d_loss", "g_loss"))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("path", GAN_CONFIGS, ids=[os.path.basename(p) for p in GAN_CONFIGS])
def test_every_gan_config_builds_and_steps(path):
    cfg = load_config(GANConfig, path)
    x = torch.rand(2, 3, cfg.height, cfg.width) * 2 - 1
    if cfg.model == "dcgan":
        losses = DCGAN(cfg.height, cfg.width, cfg.nz, cfg.ngf, cfg.ndf, cfg.lr, cfg.beta1).step(x)
    else:
        assert cfg.model == "cyclegan"
        gan = CycleGAN(cfg.ngf, cfg.n_res, cfg.ndf, cfg.d_layers, cfg.lambda_cycle, cfg.lambda_identity, cfg.lr, cfg.beta1, cfg.pool_size)
        losses = gan.step(x, x.flip(3))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_numbers_parse_as_people_write_them(tmp_path):
    """YAML 1.1 reads 1e-4 (no dot) as text; overrides and config files read it, 5E-4 and .5 as floats."""
    cfg = load_config(TrainConfig, None, ["optim.optimizer.args.lr=1e-4", "htg.lr=1e-3", "optim.optimizer.args.weight_decay=5E-4",
                                          "loss.label_smoothing=.05", "htg.margin=+2e-1"])
    assert cfg.optim.optimizer.args == {"lr": 1e-4, "weight_decay": 5e-4} and cfg.htg.lr == 1e-3
    assert cfg.loss.label_smoothing == 0.05 and cfg.htg.margin == 0.2
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  optimizer: {name: adamw, args: {lr: 3e-3, weight_decay: 5e-2}}\n")
    assert load_config(TrainConfig, str(path)).optim.optimizer.args == {"lr": 3e-3, "weight_decay": 5e-2}
    with pytest.raises(ConfigError, match=r"expected a number, got 'fast'"):  # a wrong type is named as a type, not a range
        load_config(TrainConfig, None, ["optim.optimizer.args.lr=fast"])
    with pytest.raises(ConfigError, match="expected float"):
        load_config(TrainConfig, None, ["htg.lr=fast"])
