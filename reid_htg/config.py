"""Experiment configs: frozen dataclasses loaded from YAML, strict on unknown keys.

Only ``tools/`` reads configs; the library takes plain arguments. Defaults
live in one place, the dataclasses below. A YAML file or a ``key=value``
override that names a key that does not exist raises, naming the key and the
valid ones: a typo never trains silently with a default.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field

import yaml

from reid_htg.utils.extras import install_hint


class ConfigError(ValueError):
    """A config that does not match its dataclass."""


@dataclass(frozen=True)
class Component:
    """A pluggable part: ``{name: ..., args: {...}}``."""

    name: str  # the part's registered name
    args: dict = field(default_factory=dict)  # its keyword arguments


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"  # a name from reid_htg.data.DATASETS
    root: str = "data/synthetic"  # --data-root overrides it
    args: dict = field(default_factory=dict)  # reader options (e.g. num_train for cuhk01)
    height: int = 64  # input height in pixels (images are resized to it)
    width: int = 32  # input width in pixels
    p: int = 8  # identities per batch
    k: int = 4  # images per identity
    cache: bool = True  # decode every image once, into memory
    workers: int = 0  # decoding processes when not cached
    skip_unreadable: bool = False  # train without unreadable images instead of stopping
    val_ids: int = 0  # hold out this many training identities as a validation query/gallery (model selection)
    val_seed: int = 0  # which identities: fixed across runs, so paired seeds share one validation set
    flip: bool = True  # random horizontal flip
    pad: int = 4  # pad-and-crop: pixels of zero padding before a random crop back to size (0: off)
    erasing: float = 0.5  # probability of random erasing per image


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"  # a timm ResNet name (resnet18, resnet50, resnet50.a1_in1k, seresnet50 ...)
    pretrained: str = ""  # local weights file; never downloaded
    init_from: str = ""  # a reid-htg last.pt to start from: every weight but the identity classifier (fine-tuning)
    init_sha256: str = ""  # the sha256 of init_from: filled in when the run starts (config.yaml records it), checked when given
    last_stride: int = 1  # 1 (re-ID convention: block 4 at block 3's resolution) or 2
    global_feature: bool = True  # include the pooled block-4 feature in the embedding
    keypoint_blocks: tuple[int, ...] = ()  # backbone blocks with a keypoint branch, a subset of (3, 4); () is the basic model
    embed_dim: int = 0  # 0: no projection
    bnneck: bool = True  # BatchNorm between the embedding and the classifier (BNNeck)
    classifier: str = "biasless"  # or cosine
    cosine_scale: float = 16.0  # logit scale of the cosine classifier
    eval_feature: str = "bn"  # bn (after the BNNeck) or pre


@dataclass(frozen=True)
class LossConfig:
    softmax: float = 1.0  # weight of the identity cross-entropy
    label_smoothing: float = 0.1  # label smoothing epsilon of the identity cross-entropy
    triplet: float = 1.0  # weight of the batch-hard triplet loss
    margin: typing.Optional[float] = 0.3  # null: soft margin
    normalize: bool = True  # triplet on L2-normalised embeddings


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Component = field(default_factory=lambda: Component("adam", {"lr": 3.5e-4, "weight_decay": 5e-4}))  # {name: adam|adamw|sgd, args: {lr, weight_decay, ...}}
    warmup_epochs: float = 2.0  # linear warm-up from 1% of the learning rate
    schedule: str = "cosine"  # cosine, step or constant
    milestones: tuple[int, ...] = ()  # epochs where step decays by gamma
    gamma: float = 0.1  # decay factor of the step schedule
    grad_clip: float = 0.0  # 0: off
    norm_bias_decay: bool = True  # false: no weight decay on 1-d parameters (BatchNorm weights and biases, every bias)


@dataclass(frozen=True)
class HTGConfig:
    """HTG (reid_htg.htg.HTG); every choice the paper leaves open is a key."""

    enabled: bool = False  # train with HTG's generator and discriminator
    warmup_epochs: int = 2  # epochs of the basic model before adversarial steps (at least)
    start_active: typing.Optional[float] = None  # also wait until an epoch's batch-all active fraction of real triplets is below this
    bottleneck: int = 256  # G's narrowest layer
    d_hidden: int = 512  # D's hidden width
    optimizer: str = "adam"  # adam or sgd, for G and D
    lr: float = 1e-3  # G's and D's learning rate (chosen on the small setting's validation split, with g_label 0.1)
    d_steps: int = 1  # D updates per iteration
    g_steps: int = 1  # G updates per iteration
    distance: str = "euclidean"  # euclidean or sqeuclidean (on L2-normalised features when loss.normalize)
    margin: typing.Optional[float] = 0.05  # HTG's own margin (G's reversed hinge and F's hard term); 0.05: G pushes triplets just past violation (chosen on the fixed-F gate)
    mining: str = "semi_hard"  # batch_hard, batch_all or semi_hard: the triplets G and F's hard term use
    g_target: str = "reversed"  # reversed (the paper's hinge, gap -> -margin) or hard (gap -> 0)
    g_triplet: float = 1.0  # weight of G's triplet target
    g_label: float = 0.3  # weight of G's label preservation (D's cross-entropy on G's outputs; with g_balance=grad_norm a share of the triplet gradient)
    g_close: float = 0.3  # weight keeping G(f) near f (|G(f) - f|^2 / |f|^2): G moves only as far as its target needs
    d_fake: float = 1.0  # weight b of D's "generated" term
    d_gen_identity: bool = True  # D also classifies generated features among the K identities
    out_relu: bool = False  # ReLU after G's last layer (G can then only add)
    scale_free: bool = True  # G acts on f / |f|, scaled back by |f|
    f_hard: float = 2.0  # weight of the embedding network's loss on G's hard triplets
    g_classifier: bool = False  # G's label term also through the embedding network's classifier (the paper constrains G through D alone)
    g_center: bool = True  # centre G's move over each batch, so that one shift of the whole batch cannot meet G's target
    g_phase: int = 0  # the paper's schedule: this many iterations of D and G against a fixed F, then f_phase of F on a fixed G (0: all three every step)
    f_phase: int = 0  # iterations of F training on the triplets of a fixed G in each cycle of the alternating schedule
    g_balance: str = "grad_norm"  # none, or grad_norm: G's label gradient scaled to g_label x its triplet gradient's norm, step by step


@dataclass(frozen=True)
class AugmentersConfig:
    """Image-level augmenters mixed into each re-ID batch (reid_htg.augmenters); all off by default."""

    lsro_checkpoint: str = ""  # a DCGAN run of tools/train_gan.py (its last.pt or folder)
    lsro_ratio: float = 0.0  # generated images added per real image, uniform (LSRO) identity targets
    camstyle_checkpoint: str = ""  # a CycleGAN run of tools/train_gan.py between the dataset's two cameras
    camstyle_ratio: float = 0.0  # fraction of the batch also added in the other camera's style
    camstyle_smoothing: float = 0.1  # label smoothing of the style-transferred images
    fgsm_eps: float = 0.0  # FGSM step in [0, 1] pixel units (8/255 ~ 0.031)
    fgsm_ratio: float = 0.0  # fraction of the batch also added as FGSM adversarial copies


@dataclass(frozen=True)
class LogConfig:
    """Where a run's per-epoch metrics go besides metrics.csv and curves.png (always written)."""

    tensorboard: bool = False  # also write every metrics.csv column per epoch as TensorBoard scalars under RUN/tensorboard (the tensorboard extra)


@dataclass(frozen=True)
class TrainConfig:
    name: str = "synthetic_resnet18"  # the run's name: its folder is runs/NAME/ unless --output-dir
    seed: int = 0  # seed of the model, the sampler and augmentation
    epochs: int = 12  # training epochs
    eval_every: int = 0  # 0: evaluate after the last epoch only (on the validation split when data.val_ids > 0)
    eval_test: bool = True  # evaluate the test split once, after the last epoch (false: model selection runs that must not see it)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model (CUDA)
    flush_denormal: bool = True  # flush subnormal floats to zero on the CPU (decayed weights otherwise slow x86 CPUs several-fold)
    log_every: int = 20  # iterations between log lines
    data: DataConfig = field(default_factory=DataConfig)  # the dataset and its batches
    model: ModelConfig = field(default_factory=ModelConfig)  # the embedding network
    loss: LossConfig = field(default_factory=LossConfig)  # the embedding network's objective
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and learning-rate schedule
    htg: HTGConfig = field(default_factory=HTGConfig)  # adversarial hard triplet generation
    augmenters: AugmentersConfig = field(default_factory=AugmentersConfig)  # image-level augmenters mixed into batches
    log: LogConfig = field(default_factory=LogConfig)  # extra logging


@dataclass(frozen=True)
class GANConfig:
    """tools/train_gan.py: DCGAN (LSRO source) or CycleGAN between two cameras (CamStyle)."""

    name: str = "dcgan"  # the run's name
    model: str = "dcgan"  # dcgan or cyclegan
    seed: int = 0  # seed of the networks and the batches
    epochs: int = 10  # training epochs
    iters_per_epoch: int = 0  # 0: one pass over the (larger) image set
    batch_size: int = 64  # images per batch (per domain for CycleGAN)
    dataset: str = "synthetic"  # a dataset name of reid_htg.data (its training images)
    root: str = "data/synthetic"  # --data-root overrides it
    args: dict = field(default_factory=dict)  # reader options
    height: int = 64  # image height (DCGAN: 2 x width)
    width: int = 32  # image width
    flip: bool = True  # random horizontal flip
    lr: float = 2e-4  # Adam learning rate of G and D
    beta1: float = 0.5  # Adam beta1
    nz: int = 100  # DCGAN latent size
    ngf: int = 64  # generator width (CycleGAN: 32 by its config)
    ndf: int = 64  # discriminator width
    n_res: int = 6  # CycleGAN residual blocks
    d_layers: int = 3  # CycleGAN PatchGAN strided layers
    lambda_cycle: float = 10.0  # CycleGAN cycle-consistency weight
    lambda_identity: float = 5.0  # CycleGAN identity-loss weight
    pool_size: int = 50  # CycleGAN history of generated images shown to D
    camera_a: typing.Optional[int] = None  # CycleGAN domains; default: the training split's two cameras
    camera_b: typing.Optional[int] = None  # the second CycleGAN domain (see camera_a)
    sample_every: int = 100  # iterations between sample grids (and checkpoints)
    log_every: int = 20  # iterations between losses.csv rows


def _convert(tp, value, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(inner, v, key) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if tp is dict and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict; unknown keys raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys here: {names}")
    return cls(**{k: _convert(hints[k], v, prefix + k) for k, v in data.items()})


def to_dict(cfg) -> dict:
    """Plain nested dict (tuples as lists), ready for YAML."""

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict, overrides) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (values parsed as YAML)."""
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.load(raw, Loader=_StrictLoader)
        except (yaml.YAMLError, ConfigError) as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    return data


def _merge(base: dict, new: dict) -> dict:
    """``new`` over ``base``, recursively; a component given a ``name`` is replaced whole."""
    out = dict(base)
    for k, v in new.items():
        b = out.get(k)
        if isinstance(v, dict) and isinstance(b, dict) and not ("name" in v and set(b) == {"name", "args"}):
            out[k] = _merge(b, v)
        else:
            out[k] = v
    return out


def check_train_config(cfg: TrainConfig) -> TrainConfig:
    """Validate a re-ID config before any data is read; raise :class:`ConfigError` naming the key and the valid values."""
    from reid_htg.htg import G_BALANCES, G_TARGETS
    from reid_htg.htg import OPTIMIZERS as HTG_OPTIMIZERS
    from reid_htg.losses.miners import DISTANCES, MINERS
    from reid_htg.models.backbone import check_backbone_name
    from reid_htg.optim import OPTIMIZERS, SCHEDULES

    problems = []

    def need(ok: bool, msg: str):
        if not ok:
            problems.append(msg)

    def one_of(key: str, value, valid):
        need(value in valid, f"{key}={value!r} is not one of {list(valid)}")

    d, m, o, h, a = cfg.data, cfg.model, cfg.optim, cfg.htg, cfg.augmenters
    need(1 <= cfg.epochs <= 100_000, f"epochs={cfg.epochs} must be from 1 to 100000")
    need(0 <= cfg.seed < 2**63, f"seed={cfg.seed} must be from 0 to 2**63 - 1")
    need(cfg.name not in ("", ".", "..") and "/" not in cfg.name and "\\" not in cfg.name,
         f"name={cfg.name!r} must be a plain folder name (it becomes runs/<name>); use --output-dir for another place")
    need(d.p <= 100_000 and d.k <= 10_000, f"data.p={d.p} and data.k={d.k} are out of range")
    need(d.p >= 2, f"data.p={d.p} must be >= 2 (identities per batch)")
    need(d.k >= (2 if cfg.loss.triplet or h.enabled else 1), f"data.k={d.k} must be >= 2: the triplet loss needs two images of an identity")
    need(16 <= d.height <= 4096 and 16 <= d.width <= 4096,
         f"data.height x data.width = {d.height} x {d.width}: each must be from 16 (what the backbone needs) to 4096")
    need(0.0 <= d.erasing <= 1.0, f"data.erasing={d.erasing} is a probability, within [0, 1]")
    need(d.pad >= 0 and d.val_ids >= 0, "data.pad and data.val_ids must be >= 0")
    try:
        check_backbone_name(m.backbone)
    except ValueError as exc:
        problems.append(f"model.{exc}")
    need(set(m.keypoint_blocks) <= {3, 4}, f"model.keypoint_blocks={list(m.keypoint_blocks)} must be within the backbone stages [3, 4]")
    need(m.global_feature or bool(m.keypoint_blocks), "model.global_feature=false needs keypoint blocks")
    one_of("model.last_stride", m.last_stride, (1, 2))
    one_of("model.classifier", m.classifier, ("biasless", "cosine"))
    one_of("model.eval_feature", m.eval_feature, ("bn", "pre"))
    need(m.embed_dim >= 0, f"model.embed_dim={m.embed_dim} must be >= 0")
    need(cfg.loss.margin is None or cfg.loss.margin > 0, f"loss.margin={cfg.loss.margin} must be > 0 (or null for the soft margin)")
    need(0.0 <= cfg.loss.label_smoothing < 1.0, f"loss.label_smoothing={cfg.loss.label_smoothing} must be within [0, 1)")
    one_of("optim.optimizer.name", o.optimizer.name, sorted(OPTIMIZERS))
    for arg, value in o.optimizer.args.items():
        need(isinstance(value, (int, float, bool, list)) or value is None,
             f"optim.optimizer.args.{arg}: expected a number, got {value!r} ({type(value).__name__})")
    lr = o.optimizer.args.get("lr")
    need(lr is None or not isinstance(lr, (int, float)) or lr > 0, f"optim.optimizer.args.lr={lr} must be > 0")
    one_of("optim.schedule", o.schedule, SCHEDULES)
    need(o.warmup_epochs >= 0, f"optim.warmup_epochs={o.warmup_epochs} must be >= 0")
    if h.enabled:
        need(h.lr > 0, f"htg.lr={h.lr} must be > 0")
        need(h.margin is None or h.margin > 0, f"htg.margin={h.margin} must be > 0 (or null)")
        need(h.start_active is None or 0.0 <= h.start_active <= 1.0, f"htg.start_active={h.start_active} is a fraction, within [0, 1]")
        one_of("htg.optimizer", h.optimizer, HTG_OPTIMIZERS)
        one_of("htg.distance", h.distance, DISTANCES)
        one_of("htg.mining", h.mining, MINERS)
        one_of("htg.g_target", h.g_target, G_TARGETS)
        one_of("htg.g_balance", h.g_balance, G_BALANCES)
        need(h.d_steps >= 1 and h.g_steps >= 0, "htg.d_steps must be >= 1 and htg.g_steps >= 0")
        need(h.g_phase >= 0 and h.f_phase >= 0 and (h.g_phase > 0) == (h.f_phase > 0),
             f"htg.g_phase={h.g_phase} and htg.f_phase={h.f_phase}: both > 0 (the alternating schedule) or both 0 (every step)")
    if cfg.log.tensorboard:
        import importlib.util

        need(importlib.util.find_spec("tensorboard") is not None, "log.tensorboard=true needs TensorBoard: " + install_hint("tensorboard"))
    for key in ("lsro_ratio", "camstyle_ratio", "fgsm_ratio"):
        need(getattr(a, key) >= 0, f"augmenters.{key}={getattr(a, key)} must be >= 0")
    need(0.0 <= a.fgsm_eps <= 1.0 and 0.0 <= a.camstyle_smoothing < 1.0, "augmenters.fgsm_eps must be within [0, 1], camstyle_smoothing within [0, 1)")
    for kind, ratio, ckpt in (("lsro", a.lsro_ratio, a.lsro_checkpoint), ("camstyle", a.camstyle_ratio, a.camstyle_checkpoint)):
        need(not (ratio > 0 and not ckpt), f"augmenters.{kind}_ratio={ratio} needs augmenters.{kind}_checkpoint (a run of tools/train_gan.py)")
    need(not (a.fgsm_ratio > 0 and a.fgsm_eps == 0), "augmenters.fgsm_ratio > 0 needs augmenters.fgsm_eps > 0 (e.g. 0.03)")
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
# Numbers as people write them: YAML 1.1 reads 1e-4, 5E-4 (no dot) as text; YAML 1.2 and Python read them as floats.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?)$""", re.X),
    list("-+0123456789."),
)


def parse_value(raw: str):
    """One value as the config files read it (YAML, with 1e-4 and .5 as floats)."""
    return yaml.load(raw, Loader=_StrictLoader)


def recipe_path(name: str) -> str:
    """``name`` as given when it is a file; else a recipe shipped with the package (``cuhk03_cpu`` or ``cuhk03_cpu.yaml``:
    the repository's ``configs/``, installed as ``reid_htg.recipes``).

    Raises:
        FileNotFoundError: neither, naming the shipped recipes.
    """
    if os.path.exists(name) or os.sep in name:
        return name
    from importlib import resources

    shipped = resources.files("reid_htg.recipes")
    candidate = shipped / (name if name.endswith(".yaml") else f"{name}.yaml")
    if candidate.is_file():
        return str(candidate)
    names = sorted(p.name[:-5] for p in shipped.iterdir() if p.name.endswith(".yaml"))
    raise FileNotFoundError(f"config {name!r} is neither a file nor a shipped recipe; shipped recipes: {', '.join(names)}")


def read_yaml(path: str) -> dict:
    """A config file as a dict; one line naming the file for a syntax error, a duplicate key, or a file that is not YAML text."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_StrictLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is YAML") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping")
    return data


def load_config(cls=TrainConfig, path: str | None = None, overrides=()):
    """Load ``cls``: its defaults, then a YAML file over them, then ``key=value`` overrides (a re-ID config is then validated)."""
    data = read_yaml(recipe_path(path)) if path else {}
    data = apply_overrides(_merge(to_dict(cls()), data), overrides)
    cfg = from_dict(cls, data)
    return check_train_config(cfg) if cls is TrainConfig else cfg


def save_config(cfg, path: str) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)


def field_docs(cls) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` of every key of a config dataclass, nested sections flattened (``data.p``);
    the meaning is the comment on the field's line in this file (the one place defaults and their meaning live).

    Raises:
        ConfigError: a field without a comment (a test keeps every key described).
    """
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    rows = []

    def comments_of(c) -> dict[str, str]:
        src = textwrap.dedent(inspect.getsource(c))
        lines = {node.lineno: node.target.id for node in ast.walk(ast.parse(src))
                 if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
        return {lines[tok.start[0]]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT and tok.start[0] in lines}

    def walk(c, prefix: str) -> None:
        notes = comments_of(c)
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            key = prefix + f.name
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and tp is not Component:
                walk(tp, key + ".")
                continue
            if f.name not in notes:
                raise ConfigError(f"config key {key} ({c.__name__}) has no description: add a comment on its line in reid_htg/config.py")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, Component):
                default = {"name": default.name, "args": default.args}
            name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
            rows.append((key, name, repr(default) if isinstance(default, str) else str(default), notes[f.name]))

    walk(cls, "")
    return rows


def reference_markdown() -> str:
    """The configuration reference page (docs/configuration.md), generated from the dataclasses."""
    parts = ["# Configuration reference", "",
             "Generated from `reid_htg/config.py` by `python -m reid_htg.config > docs/configuration.md` (a test keeps this page",
             "equal to its output). Every key can be set in a YAML file or as `key=value` on the command line; an unknown key",
             "or a value of the wrong type is refused by name.", ""]
    for title, cls in (("tools/train_reid.py (`TrainConfig`)", TrainConfig), ("tools/train_gan.py (`GANConfig`)", GANConfig)):
        parts += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        parts += [f"| `{k}` | {t} | `{d}` | {m.replace('|', '/')} |" for k, t, d, m in field_docs(cls)]
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(reference_markdown(), end="")
