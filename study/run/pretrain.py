"""Weights the platform pretrains itself, once, so fine-tuning can be studied offline.

A study with ``model.pretrain`` fine-tunes a model whose weights were trained on a
*source* task (``pretrain.data``) and measures the decay variants on its own *target*
task (``data.name``): the paper's own setting, next to from-scratch training of the
same model on the same target.

The weights are content-addressed: their file name is the hash of everything that
determines them (the recipe: model, source data, epochs, lr, batch size, seed, shapes),
so two studies with one recipe share one file and a changed recipe never meets an old
file. They are checked before use: the SHA-256 of the file must match the one recorded
when it was written, it is loaded as tensors only (``weights_only``), and its names and
shapes must be the model's. A file that fails a check is set aside and trained again.

The driver trains or loads them before any trial and hands them to every trial through
Ray's object store, so the nodes of a cluster need no shared cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError

FORMAT = 1  # bump when the training recipe below changes: old files then no longer match


def cache_dir() -> Path:
    """``$LPWD_STUDY_CACHE``, else ``$XDG_CACHE_HOME/lpwd-study/pretrained`` (default ``~/.cache``)."""
    if os.environ.get("LPWD_STUDY_CACHE"):
        return Path(os.environ["LPWD_STUDY_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpwd-study" / "pretrained"


def recipe(cfg) -> dict:
    """Everything that determines the pretrained weights, and nothing else."""
    from .data import dims

    p = cfg.model.pretrain
    in_chans, classes, size = dims(p.data)
    return {"format": FORMAT, "model": cfg.model.name, "data": p.data, "epochs": p.epochs, "lr": p.lr,
            "batch_size": p.batch_size, "seed": p.seed, "in_chans": in_chans, "classes": classes, "size": size}


def address(r: dict) -> str:
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:24]


def _fresh_model(r: dict):
    from ..define.config import ModelConfig
    from .models import build_model

    return build_model(ModelConfig(name=r["model"]), r["in_chans"], r["classes"], r["size"], r["seed"])


def train_source(r: dict, announce=print) -> dict:
    """Train the model on the source task for a fixed number of epochs: Adam without decay,
    cosine to 0, batches in seeded order. Nothing is selected, so the 10% validation split
    ``load_dataset`` holds out of the source's training part is left unused."""
    from .data import load_dataset

    torch.manual_seed(r["seed"])
    data = load_dataset(r["data"], None, 0.1, r["seed"], torch.device("cpu"))
    model = _fresh_model(r)
    opt = torch.optim.Adam(model.parameters(), lr=r["lr"])
    steps = math.ceil(len(data.train) / r["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, r["epochs"] * steps)
    gen = torch.Generator().manual_seed(r["seed"])
    announce(f"pretraining {r['model']} on {r['data']} ({r['epochs']} epochs, once; cached by its recipe)")
    for _ in range(r["epochs"]):
        model.train()
        order = torch.randperm(len(data.train), generator=gen)
        for i in range(steps):
            idx = order[i * r["batch_size"]:(i + 1) * r["batch_size"]]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(data.train.x[idx]), data.train.y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.inference_mode():
        acc = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    announce(f"pretrained {r['model']} on {r['data']}: {100 * acc:.1f}% test accuracy on the source task")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check(state, r: dict) -> str | None:
    """Why ``state`` is not this recipe's weights, or None when its names and shapes are the model's."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "not a state dict of tensors"
    expected = {k: tuple(v.shape) for k, v in _fresh_model(r).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        return "its tensors are not the model's"
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        return "it holds NaN or infinite weights"
    return None


def _load_checked(path: Path, meta: Path, r: dict) -> tuple[dict | None, str | None]:
    """(state, None) when the cached file passes every check, else (None, why)."""
    try:
        recorded = json.loads(meta.read_text())
        blob = path.read_bytes()
    except (OSError, ValueError) as e:
        return None, f"unreadable ({type(e).__name__})"
    if not isinstance(recorded, dict) or recorded.get("recipe") != r:
        return None, "its record names another recipe"
    if hashlib.sha256(blob).hexdigest() != recorded.get("sha256"):
        return None, "its SHA-256 differs from the one recorded when it was written"
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any failure to load as plain tensors is a bad file)
        return None, f"it does not load as tensors ({type(e).__name__})"
    why = _check(state, r)
    return (None, why) if why else (state, None)


def _write(path: Path, meta: Path, state: dict, r: dict) -> str:
    """Write the weights, then their record; each via a temporary file and a rename, so a reader
    never sees half a file and a crash leaves at worst an unrecorded file, trained again."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blob = buffer.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    for target, content in ((path, blob), (meta, json.dumps({"recipe": r, "sha256": digest}, indent=1).encode())):
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        partial.write_bytes(content)
        os.replace(partial, target)
    return digest


def pretrained_state(cfg, announce=print) -> tuple[dict, str]:
    """The study's pretrained weights and their SHA-256: from the cache when they pass its checks,
    else trained now and cached."""
    r = recipe(cfg)
    folder = cache_dir()
    path, meta = folder / f"{address(r)}.pt", folder / f"{address(r)}.json"
    if path.exists() or meta.exists():
        state, why = _load_checked(path, meta, r)
        if state is not None:
            return state, json.loads(meta.read_text())["sha256"]
        announce(f"note: cached pretrained weights {path} failed a check ({why}); training them again")
    state = train_source(r, announce)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        digest = _write(path, meta, state, r)
    except OSError as e:
        raise UserError(f"model.pretrain: cannot cache the pretrained weights in {folder} ({e.strerror or e}); "
                        "set LPWD_STUDY_CACHE to a folder you can write") from None
    return state, digest
