"""Models: small CNN-scale models for CPU studies, and any timm model by name.

Images (digits, CIFAR) take ``small_cnn`` or a timm model (a ViT at 8 px is
``vit_tiny_patch16_224`` with ``img_size: 8`` and ``timm_kwargs: {patch_size: 2, ...}``);
MNIST-1D sequences take ``cnn1d`` and ``mlp`` (the MNIST-1D paper's two baselines)
or ``transformer1d``. ``pretrained: true`` fine-tunes ImageNet weights (from the
hub when online, or ``pretrained_path`` to a local checkpoint file); ``pretrain``
fine-tunes weights this platform trains itself (``study.run.pretrain``); otherwise from
scratch. The model is built under ``torch.manual_seed(seed)`` so its init follows
the trial's seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..define.config import ModelConfig
from ..errors import UserError


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(in_chans: int, num_classes: int, width: int = 32) -> nn.Sequential:
    """Three conv-BN-ReLU layers and a linear head: seconds per trial on a CPU."""
    return nn.Sequential(
        *_conv_bn(in_chans, width),
        *_conv_bn(width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_bn(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


class CNN1d(nn.Sequential):
    """The MNIST-1D paper's CNN: three stride-2 convolutions and a linear head."""

    def __init__(self, in_chans: int, num_classes: int, length: int, width: int = 32):
        layers: list[nn.Module] = []
        cin = in_chans
        for _ in range(3):
            layers += [nn.Conv1d(cin, width, 5, stride=2, padding=2), nn.ReLU()]
            cin, length = width, (length + 1) // 2
        super().__init__(*layers, nn.Flatten(), nn.Linear(width * length, num_classes))

    @property
    def head(self) -> nn.Linear:
        return self[-1]


class MLP(nn.Sequential):
    """The MNIST-1D paper's MLP: two hidden layers of 100 units."""

    def __init__(self, in_chans: int, num_classes: int, length: int, width: int = 100):
        super().__init__(nn.Flatten(), nn.Linear(in_chans * length, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_classes))

    @property
    def head(self) -> nn.Linear:
        return self[-1]


class Transformer1d(nn.Module):
    """A small pre-norm transformer on a 1-D signal: non-overlapping patches are the tokens
    (a ViT on sequences), learned positions, mean-pooled tokens into a linear head. Its
    blocks are one ``nn.ModuleList``, so lpwd numbers its layers block by block."""

    def __init__(self, in_chans: int, num_classes: int, length: int, dim: int = 32, depth: int = 2,
                 heads: int = 2, patch: int = 4):
        super().__init__()
        if length % patch:
            raise ValueError(f"sequence length {length} is not a multiple of patch {patch}")
        self.patch = patch
        self.embed = nn.Linear(in_chans * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, length // patch, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, length = x.shape
        tokens = x.reshape(n, c, length // self.patch, self.patch).permute(0, 2, 1, 3).flatten(2)
        h = self.embed(tokens) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(1))


# the platform's own models by name (``config.OWN_MODEL_INPUTS`` says what each takes)
OWN_MODELS = {"small_cnn": lambda c, k, size: small_cnn(c, k), "cnn1d": CNN1d, "mlp": MLP, "transformer1d": Transformer1d}


def check_pretrained_path(cfg: ModelConfig, read: bool = False) -> None:
    """The pretrained checkpoint exists; with ``read`` (once, before any trial), that it loads as weights:
    a damaged file would otherwise fail every trial. Loaded as data only (``weights_only``)."""
    if not (cfg.pretrained and cfg.pretrained_path):
        return
    path = Path(cfg.pretrained_path).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained_path: {cfg.pretrained_path} does not exist; point it at a timm checkpoint file")
    if read:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                load_file(str(path))
            else:
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a cut file, another format, a pickle that is more than weights
            raise UserError(f"model.pretrained_path: {cfg.pretrained_path} does not load as a checkpoint "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); replace the file") from None


def build_model(cfg: ModelConfig, in_chans: int, num_classes: int, img_size: int, seed: int,
                pretrained: dict | None = None) -> nn.Module:
    """The trial's model, initialised from ``seed``; ``pretrained`` (a state dict from
    ``study.run.pretrain``) then replaces every weight but the head, which stays freshly initialised."""
    torch.manual_seed(seed)
    if cfg.name in OWN_MODELS:
        model = OWN_MODELS[cfg.name](in_chans, num_classes, img_size)
        if pretrained is not None:
            load_backbone(model, pretrained)
        return model
    import timm

    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **cfg.timm_kwargs}
    if cfg.img_size is not None:
        kwargs["img_size"] = cfg.img_size
    check_pretrained_path(cfg)
    if cfg.pretrained and cfg.pretrained_path:
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(cfg.pretrained_path).expanduser())}
    try:
        return timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
    except (OSError, RuntimeError) as e:
        if cfg.pretrained:
            raise UserError(
                f"model.pretrained: could not load weights for {cfg.name} ({str(e).splitlines()[0][:120]}); "
                "offline, set model.pretrained_path to a local checkpoint file"
            ) from None
        raise


def effective_decays(cfg) -> dict[str, float]:
    """lambda_eff / lambda of every arm of a study on its model (no weights loaded, nothing trained)."""
    import lpwd

    from ..define.config import arms
    from .data import dims

    in_chans, classes, size = dims(cfg.data.name)
    model = build_model(cfg.model.model_copy(update={"pretrained": False}), in_chans, classes,
                        cfg.model.img_size or size, seed=0)
    def of(variant: str, schedule: str) -> float:
        return lpwd.effective_decay(model, variant, schedule, cfg.train.decay_bias_and_norm,
                                    cfg.train.decay_no_weight_decay)

    # a control trained at another arm's mass applies that arm's total decay
    return {a["arm"]: of(a["mass_of"], "linear") if a.get("mass_of") else of(a["variant"], a["layer_schedule"])
            for a in arms(cfg)}


def check_model(cfg) -> None:
    """Build the study's model once, before any trial: bad ``timm_kwargs`` are one line, not a trial error each."""
    from .data import dims

    in_chans, classes, size = dims(cfg.data.name)
    try:
        build_model(cfg.model.model_copy(update={"pretrained": False}), in_chans, classes, cfg.model.img_size or size, 0)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:150]
        raise UserError(f"model: timm could not build {cfg.model.name} with timm_kwargs={cfg.model.timm_kwargs} "
                        f"({type(e).__name__}: {first}); fix model.timm_kwargs or model.img_size") from None


def load_backbone(model: torch.nn.Module, state: dict) -> None:
    """Every pretrained weight but the head's (``model.head``, else its last linear layer): the
    target task gets a fresh classifier, as in fine-tuning a pretrained network on a new dataset."""
    head_module = getattr(model, "head", None) or [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    prefix = next(name for name, module in model.named_modules() if module is head_module)
    head = {k for k in model.state_dict() if k.startswith(prefix + ".")}
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    if set(missing) != head or unexpected:
        raise UserError(f"model.pretrain: the pretrained weights do not fit {type(model).__name__} "
                        f"(missing {sorted(set(missing) - head)[:3]}, unexpected {unexpected[:3]})")
