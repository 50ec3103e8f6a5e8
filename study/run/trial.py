"""One trial: data -> model -> lpwd optimizer -> epochs, reporting every epoch.

Free of Ray: the sweep wraps it in a Ray reporter, ``python -m study trial``
runs it in-process (debugging one cell under pdb, or a GPU machine without
Ray). Every random source derives from the trial's seed: model init
(``torch.manual_seed``), the validation split, batch order and augmentation
(one seeded generator whose state is checkpointed), and the R_op sample.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import torch
import torch.nn.functional as F

import lpwd

from ..define.config import StudyConfig
from ..define.metrics import EPOCH_METRICS, TRIAL_PARAMS, trial_name  # noqa: F401 (re-exported)
from .data import augment_batch, load_dataset
from .models import build_model

class Reporter(Protocol):
    def restore(self) -> dict | None: ...

    def report(self, metrics: dict, state: dict | None) -> None:
        """Every epoch's metrics; ``state`` (a checkpoint) only when one is due."""


class PrintReporter:
    """In-process runs (``study trial``): one line per epoch, accuracies in points; keeps no checkpoint."""

    last: dict = {}

    def restore(self) -> dict | None:
        return None

    def report(self, metrics: dict, state: dict | None) -> None:
        self.last = metrics
        r_op = metrics["r_op"]
        print(f"epoch {metrics['epoch']:>3}  loss {metrics['train_loss']:.4f}  val {100 * metrics['val_acc']:5.1f}  "
              f"test {100 * metrics['test_acc']:5.1f}  R_op {'-' if math.isnan(r_op) else f'{r_op:.4f}'}  "
              f"{metrics['images_per_s']:,.0f} img/s", flush=True)


def with_defaults(cfg: StudyConfig, params: dict) -> dict:
    """A trial's params with its arm and layer schedule filled in (``study trial`` gives only the variant)."""
    from ..define.config import arm_name

    schedule = params.get("layer_schedule") or (cfg.search.layer_schedule[0] if params["variant"] == "lpwd" else "constant")
    return {"arm": arm_name(params["variant"], schedule), **params, "layer_schedule": schedule}


def lr_factor(cfg: StudyConfig, steps_per_epoch: int):
    """Multiplier of the base lr at optimizer step t: warmup, then constant / cosine / step."""
    total = cfg.train.epochs * steps_per_epoch
    warmup = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    milestones = [int(m * total) for m in cfg.train.step_milestones]

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        if cfg.train.lr_schedule == "cosine":
            progress = (t - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if cfg.train.lr_schedule == "step":
            return cfg.train.step_gamma ** sum(t >= m for m in milestones)
        return 1.0

    return factor


def decay_scale(model, cfg: StudyConfig, params: dict) -> float:
    """The factor a control arm's λ is trained at: ``mass_of: lpwd`` is lpwd's λ_eff / λ on this
    model (``study.run.plan`` records the same number for the report); 1 for every other arm."""
    if not params.get("mass_of"):
        return 1.0
    return lpwd.effective_decay(model, params["mass_of"], "linear", cfg.train.decay_bias_and_norm,
                                cfg.train.decay_no_weight_decay)


def pick_device(cfg: StudyConfig) -> torch.device:
    return torch.device("cuda" if cfg.resources.gpu > 0 and torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def evaluate(model, split, batch_size: int = 1024, autocast=None) -> tuple[float, float]:
    model.eval()
    loss, correct = torch.zeros((), device=split.x.device), torch.zeros((), device=split.x.device)
    for i in range(0, len(split), batch_size):
        x, y = split.x[i:i + batch_size], split.y[i:i + batch_size]
        with autocast():
            out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
    return loss.item() / len(split), correct.item() / len(split)


def run_trial(cfg: StudyConfig, params: dict, reporter: Reporter, tracking=None, tags: dict | None = None,
              pretrained: tuple[dict, str] | None = None) -> dict:
    """Train one (arm, lr, weight_decay, seed) cell; returns the last metrics. ``pretrained``:
    the study's (weights, SHA-256) from ``study.run.pretrain`` when it fine-tunes them."""
    params = with_defaults(cfg, params)
    device = pick_device(cfg)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed = int(params["seed"])
    data = load_dataset(cfg.data.name, cfg.data.root, cfg.data.val_fraction, seed, device, cfg.data.augment,
                        cfg.data.train_subset)
    in_chans, img_size = data.train.x.shape[1], data.train.x.shape[-1]
    model = build_model(cfg.model, in_chans, data.num_classes, img_size, seed,
                        pretrained[0] if pretrained else None).to(device)
    channels_last = cfg.model.channels_last if cfg.model.channels_last is not None else device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    extra = {"momentum": cfg.train.momentum} if cfg.train.base == "sgd" else {}
    scale = decay_scale(model, cfg, params)
    decays = params["variant"] not in ("none", "l2") and float(params["weight_decay"]) > 0
    opt = lpwd.build_optimizer(
        model, params["variant"], float(params["lr"]), float(params["weight_decay"]) * scale, cfg.train.base,
        layer_schedule=params["layer_schedule"], decay_bias_and_norm=cfg.train.decay_bias_and_norm,
        decay_no_weight_decay=cfg.train.decay_no_weight_decay,
        diagnostics_every=cfg.train.diagnostics_every, diagnostics_seed=seed, compile_step=cfg.model.compile, **extra,
        **lpwd.fastest_kernel(model.parameters(), cfg.train.base),  # torch's own CPU default is the slow single-tensor loop
    )
    forward = torch.compile(model) if cfg.model.compile else model
    steps = math.ceil(len(data.train) / cfg.train.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps))
    gen = torch.Generator().manual_seed(seed)
    amp = cfg.train.amp == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    history: dict[str, list] = {"test_acc": [], "val_acc": []}
    best = {"val_acc": -1.0, "test_acc": float("nan")}
    start, run_id = 0, None
    state = reporter.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        history, best, run_id = state["history"], state["best"], state["mlflow_run_id"]
        start = state["epoch"] + 1
        if state["finished"]:
            # finished before an interruption that Ray's snapshot missed: report it again, train nothing
            reporter.report({**state["metrics"], "finished": 1, "replayed": 1, "mlflow_run_id": run_id or ""}, state)
            opt.remove_hook()
            return state["metrics"]
    run = None
    if tracking is not None:
        from ..track.tracking import TrialRun

        logged = {**{k: params[k] for k in TRIAL_PARAMS}, "base": cfg.train.base,
                  "model": cfg.model.name, "pretrained": cfg.model.pretrained, "dataset": cfg.data.name,
                  "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
                  "lr_schedule": cfg.train.lr_schedule, "warmup_epochs": cfg.train.warmup_epochs,
                  "label_smoothing": cfg.train.label_smoothing, "train_subset": cfg.data.train_subset,
                  "decay_scale": scale, **({"pretrained_sha256": pretrained[1]} if pretrained else {})}
        if len(params.get("stands_for", [])) > 1:
            logged["stands_for"] = ", ".join(f"{t['arm']} λ={t['weight_decay']:g}" for t in params["stands_for"])
        run = TrialRun(tracking, run_id, trial_name(params), logged, {"study": cfg.name, **(tags or {})})

    chance = 1.0 / data.num_classes
    metrics: dict = {}
    last_checkpoint = time.perf_counter()
    check_every = 1 if device.type == "cpu" else 25  # a finiteness check syncs a GPU
    for epoch in range(start, cfg.train.epochs):
        model.train()
        began = time.perf_counter()
        lr_now = opt.param_groups[0]["lr"]
        order = torch.randperm(len(data.train), generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        diverged = False
        for i in range(steps):
            idx = order[i * cfg.train.batch_size:(i + 1) * cfg.train.batch_size]
            x, y = data.train.x[idx], data.train.y[idx]
            if data.augment:
                x = augment_batch(x, gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with autocast():
                out = forward(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.train.label_smoothing)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            if (i + 1) % check_every == 0 and not torch.isfinite(loss_sum):
                diverged = True
                break
        train_loss = loss_sum.item() / len(data.train)
        diverged = diverged or not math.isfinite(train_loss)
        seconds = time.perf_counter() - began
        diag = opt.diagnostics()
        if diverged:
            val_loss, val_acc, test_acc = float("nan"), chance, chance
        else:
            val_loss, val_acc = evaluate(forward, data.val, autocast=autocast)
            _, test_acc = evaluate(forward, data.test, autocast=autocast)
        history["test_acc"].append(test_acc)
        history["val_acc"].append(val_acc)
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "test_acc": test_acc}
        top10 = sorted(history["test_acc"], reverse=True)[:10]
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": correct.item() / len(data.train),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_acc": test_acc,
            "best_val_acc": best["val_acc"],
            "test_acc_at_best_val": best["test_acc"],
            "r_op": diag["r_op"],
            "decay_fraction": diag.get("decay_fraction", 1.0 if decays else 0.0),
            "weight_norm": diag["weight_norm"],
            "lr_now": lr_now,
            "diverged": int(diverged),
            "final_test_acc": test_acc,
            "paper_top10_test_acc": sum(top10) / len(top10),
            "images_per_s": (i + 1) * cfg.train.batch_size / seconds,
        }
        if run is not None:
            run.log_epoch({k: metrics[k] for k in EPOCH_METRICS}, epoch)
        last = diverged or epoch == cfg.train.epochs - 1
        state = None
        if last or time.perf_counter() - last_checkpoint >= cfg.train.checkpoint_every_s:
            state = {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "generator": gen.get_state(), "history": history, "best": best, "epoch": epoch,
                "mlflow_run_id": run.run_id if run is not None else None, "metrics": metrics, "finished": last,
            }
            if run is not None:  # MLflow holds exactly the epochs a checkpoint holds: none twice on resume
                run.flush()
            last_checkpoint = time.perf_counter()
        if last and run is not None:
            run.finish("FAILED" if diverged else "FINISHED")
        reporter.report({**metrics, "finished": int(last), "mlflow_run_id": run.run_id if run else ""}, state)
        if diverged:
            break
    opt.remove_hook()
    return metrics
