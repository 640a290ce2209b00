import pytest
import torch

from reid_htg.models import KeypointBlock, ReIDNet, build_backbone


def test_keypoint_densities_sum_to_one_and_pool():
    blk = KeypointBlock(16).eval()
    x = torch.randn(2, 16, 6, 3)
    p = blk.densities(x)
    assert torch.allclose(p.sum(dim=(2, 3)), torch.ones(2, 16), atol=1e-5)
    f = blk(x)
    assert f.shape == (2, 16)
    assert torch.allclose(f, (p * x).sum(dim=(2, 3)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,dim",
    [
        (dict(keypoint_blocks=(3, 4)), 512 + 256 + 512),
        (dict(), 512),
        (dict(global_feature=False, keypoint_blocks=(3,)), 256),
        (dict(embed_dim=64, bnneck=False, classifier="cosine"), 64),
    ],
)
def test_reidnet_parts_switch(kwargs, dim):
    m = ReIDNet("resnet18", num_classes=7, **kwargs)
    assert m.dim == dim
    out = m.train()(torch.randn(4, 3, 32, 16))
    assert out["embedding"].shape == (4, dim) and out["logits"].shape == (4, 7)
    out["logits"].sum().backward()
    assert m.extract(torch.randn(2, 3, 32, 16)).shape == (2, dim)


def test_biasless_classifier_has_no_bias():
    m = ReIDNet("resnet18", num_classes=5)
    assert not any("classifier" in n and n.endswith("bias") for n, _ in m.named_parameters())


def test_last_stride_one_doubles_block4_resolution():
    x = torch.randn(1, 3, 64, 32)
    s1 = build_backbone("resnet18", last_stride=1)(x)[1]
    s2 = build_backbone("resnet18", last_stride=2)(x)[1]
    assert s1.shape[-2:] == (4, 2) and s2.shape[-2:] == (2, 1)


def test_bad_model_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="not a supported timm ResNet: the supported families are resnet, seresnet"):
        build_backbone("vit_base_patch16_224")
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone("resnet18", pretrained_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="global feature or at least one"):
        ReIDNet("resnet18", global_feature=False, keypoint_blocks=())


def test_pretrained_weights_from_local_file(tmp_path):
    import timm

    src = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    bb = build_backbone("resnet18", pretrained_path=str(path))
    assert torch.equal(bb.conv1.weight, src.conv1.weight)


@pytest.mark.parametrize("name", ["resnet10t", "resnet18", "resnet34", "resnet50", "resnet101", "resnet50.a1_in1k"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_backbone_reports_true_channels_and_reductions(name, last_stride):
    model = build_backbone(name, out_indices=(3, 4), last_stride=last_stride).eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        maps = model(x)
    assert model.feature_info.channels() == [m.shape[1] for m in maps]
    assert model.feature_info.reduction() == [x.shape[-2] // m.shape[-2] for m in maps]
    assert model.feature_info.reduction()[1] == (16 if last_stride == 1 else 32)


def test_library_defaults_are_the_configs():
    """A default lives in one place: where the library has one, it is the config dataclass's."""
    import dataclasses
    import inspect

    from reid_htg.builders import model_args
    from reid_htg.config import HTGConfig, ModelConfig, TrainConfig
    from reid_htg.data.sampler import PKSampler
    from reid_htg.htg import HTG

    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}

    htg = defaults(HTG.__init__)
    cfg = {f.name: f.default for f in dataclasses.fields(HTGConfig)}
    shared = set(htg) - {"normalize"}  # normalize is the triplet loss's (loss.normalize)
    assert shared and shared <= set(cfg), shared - set(cfg)
    assert {k: htg[k] for k in shared} == {k: cfg[k] for k in shared}
    assert htg["normalize"] == TrainConfig().loss.normalize
    net = defaults(ReIDNet.__init__)
    built = model_args(TrainConfig(), 0)
    common = set(net) & set(built)
    assert len(common) >= 10 and {k: net[k] for k in common} == {k: built[k] for k in common}
    assert ModelConfig().keypoint_blocks == () and net["keypoint_blocks"] == ()  # the default model is the recipes' baseline
    assert defaults(PKSampler.__init__) == {"seed": TrainConfig().seed, "rank": 0, "world_size": 1}
