"""lpwd inside training loops this project did not write: Lightning, Hugging Face's Trainer,
accelerate and timm's optimizer factory. Each run is compared with the eager loop (the
weights after the same batches) and counts its pre-forward decays: one per optimizer step."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import lpwd

from .test_training_setups import counting_decays

LR, LAM, STEPS, BATCH = 0.05, 0.5, 4, 16


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def dataset(batches):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batches * BATCH, 8, generator=g), torch.randint(4, (batches * BATCH,), generator=g)


def eager(variant, batches, steps, accumulate=1, bf16=False, clip=None, base="adam"):
    """The plain loop: the reference every client is held to."""
    model = net()
    opt = lpwd.build_optimizer(model, variant, LR, LAM, base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    x, y = dataset(batches)
    order = [b % batches for b in range(steps * accumulate)]
    for step in range(steps):
        for b in order[step * accumulate:(step + 1) * accumulate]:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(model(x[b * BATCH:(b + 1) * BATCH]), y[b * BATCH:(b + 1) * BATCH])
            (loss / accumulate).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        opt.zero_grad()
    return list(model.parameters())


def same(a, b, atol=1e-6):
    return all(torch.allclose(p.detach(), q.detach(), rtol=0, atol=atol) for p, q in zip(a, b))


# -- Lightning ------------------------------------------------------------------------------------
L = pytest.importorskip("lightning")


class Classifier(L.LightningModule):
    """docs/library.md's recipe: build_optimizer(self, ...) in configure_optimizers. ``style="net"``
    calls ``self.net(x)`` in training_step, as Lightning's own examples do."""

    def __init__(self, variant="lpwd", style="self", base="adam"):
        super().__init__()
        self.net, self.variant, self.style, self.decays, self.lr = net(), variant, style, [], LR
        self.base = base

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x) if self.style == "net" else self(x), y)

    def configure_optimizers(self):
        opt = lpwd.build_optimizer(self, self.variant, self.lr, LAM, self.base)
        self.decays = counting_decays(opt)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(module, batches, steps, ckpt_path=None, **trainer_kwargs):
    from torch.utils.data import DataLoader, TensorDataset

    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(module, DataLoader(TensorDataset(*dataset(batches)), batch_size=BATCH), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("variant", ["lpwd", "cwd"])
@pytest.mark.parametrize("case", ["plain", "self.net(x)", "accumulate 2", "bf16 + clipping"])
def test_lightning_matches_the_eager_loop(case, variant):
    kwargs = {"accumulate_grad_batches": 2} if case == "accumulate 2" else {}
    if case == "bf16 + clipping":  # refused by Lightning with a fused optimizer; torch's default kernel here
        kwargs = {"precision": "bf16-mixed", "gradient_clip_val": 0.5}
    module = Classifier(variant, style="net" if case == "self.net(x)" else "self")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # lpwd says nothing: the intended update
        fit(module, batches=4, steps=STEPS, **kwargs)
    ref = eager(variant, 4, STEPS, accumulate=2 if "accumulate" in case else 1,
                bf16="bf16" in case, clip=0.5 if "clipping" in case else None)
    assert same(module.net.parameters(), ref, atol=1e-6 if "bf16" not in case else 1e-5)
    assert module.decays == (list(range(STEPS)) if variant == "lpwd" else [])


@pytest.mark.parametrize("variant", ["lpwd", "cwd"])
@pytest.mark.parametrize("base", ["lion", "adafactor", "muon"])
def test_lightning_matches_the_eager_loop_on_other_bases(base, variant):
    """Lightning's loop with accumulation over timm's Lion and Muon and torch's Adafactor: the eager loop's weights."""
    module = Classifier(variant, base=base)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit(module, batches=4, steps=STEPS, accumulate_grad_batches=2)
    assert same(module.net.parameters(), eager(variant, 4, STEPS, accumulate=2, base=base))
    assert module.decays == (list(range(STEPS)) if variant == "lpwd" else [])


def test_lightning_resumes_from_its_checkpoint_and_refits(tmp_path):
    # one batch per epoch: Lightning restarts a cut epoch's dataloader from its start, which with
    # more batches would change the batch order (its behaviour, not lpwd's)
    first = Classifier()
    trainer = fit(first, batches=1, steps=2)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = Classifier()
    torch.manual_seed(1)
    resumed.net = nn.Sequential(*[m.__class__(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m
                                  for m in resumed.net])  # another init: everything must come from the file
    fit(resumed, batches=1, steps=STEPS, ckpt_path=tmp_path / "half.ckpt")
    assert same(resumed.net.parameters(), eager("lpwd", 1, STEPS))
    assert resumed.decays == [2, 3]  # the pending decay came back with the optimizer's state
    refit = Classifier()
    fit(refit, batches=1, steps=2)
    fit(refit, batches=1, steps=2)  # a second fit builds a second optimizer over the same parameters
    assert refit.decays == [0, 1]


def test_lightning_lr_find_then_fit(tmp_path):
    """Tuner.lr_find builds an optimizer from configure_optimizers, trains with it and puts the weights
    back; the fit after it builds another over the same parameters, which takes the decay over."""
    from lightning.pytorch.tuner import Tuner
    from torch.utils.data import DataLoader, TensorDataset

    module = Classifier()
    loader = DataLoader(TensorDataset(*dataset(1)), batch_size=BATCH)
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        finder = Tuner(trainer).lr_find(module, train_dataloaders=loader, num_training=5, early_stop_threshold=None,
                                        update_attr=False)
        assert len(finder.results["lr"]) == 5 and module.decays == list(range(5))  # the search trained
        warnings.simplefilter("error", RuntimeWarning)  # no pending decay, no optimizer in the way
        fit(module, batches=1, steps=STEPS)
    assert module.decays == list(range(STEPS))
    assert same(module.net.parameters(), eager("lpwd", 1, STEPS))


# -- Hugging Face ------------------------------------------------------------------------------------
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


def token_batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(50, (BATCH, 8), generator=g)
    return [{"input_ids": ids[i], "labels": int(ids[i, 0] % 3)} for i in range(BATCH)]


def hf_trainer(model, out, variant, base):
    """The documented recipes, with accumulation and activation checkpointing: the Trainer hands the
    ``model`` entry to the class as its parameters, grouped as build_optimizer groups them (DecayedAdam,
    or any base through ``lpwd.decayed_class``); Muon, whose split into Muon and AdamW groups is
    build_optimizer's, is built first and handed over as ``optimizers=(optimizer, None)``."""
    from transformers import Trainer, TrainingArguments

    from lpwd.bases import BASES

    args = TrainingArguments(
        output_dir=str(out), max_steps=3, per_device_train_batch_size=BATCH // 2, gradient_accumulation_steps=2,
        activation_checkpointing=True, learning_rate=LR, weight_decay=LAM, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=0.0, use_cpu=True, report_to=[], save_strategy="steps", save_steps=2,
        logging_strategy="no", train_sampling_strategy="sequential", seed=0)
    if base == "muon":
        optimizer = {"optimizers": (lpwd.build_optimizer(model, variant, LR, LAM, "muon"), None)}
    else:
        cls = lpwd.DecayedAdam if base == "adam" else lpwd.decayed_class(BASES[base].load())
        optimizer = {"optimizer_cls_and_kwargs": (cls, {"variant": variant, "model": model, "lr": LR,
                                                        "weight_decay": LAM})}
    trainer = Trainer(model=model, args=args, train_dataset=token_batches(), **optimizer)
    trainer.create_optimizer()
    return trainer, counting_decays(trainer.optimizer)


@pytest.mark.parametrize("variant", ["lpwd", "cwd"])
@pytest.mark.parametrize("base", ["adam", "lion", "adafactor", "muon"])
def test_hugging_face_trainer_matches_the_eager_loop_and_resumes(base, variant, tmp_path):
    model = tiny_bert()
    trainer, decays = hf_trainer(model, tmp_path, variant, base)
    trainer.train()
    assert decays == ([0, 1, 2] if variant == "lpwd" else [])
    resumed = tiny_bert()
    trainer, decays = hf_trainer(resumed, tmp_path, variant, base)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert decays == ([2] if variant == "lpwd" else []) and same(resumed.parameters(), model.parameters())

    ref = tiny_bert()
    opt = lpwd.build_optimizer(ref, variant, LR, LAM, base)
    rows = token_batches()
    ids, labels = torch.stack([r["input_ids"] for r in rows]), torch.tensor([r["labels"] for r in rows])
    ref.train()
    for _ in range(3):
        for half in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH)):
            # the Trainer's accumulated loss for a model that takes loss kwargs: the micro-batch losses summed
            ref(input_ids=ids[half], labels=labels[half]).loss.backward()
        opt.step()
        opt.zero_grad()
    assert same(model.parameters(), ref.parameters())
    untrained = tiny_bert()  # the run moved the weights: the comparison is not vacuous
    assert not same(model.parameters(), untrained.parameters(), atol=1e-4)


@pytest.mark.parametrize("variant", ["lpwd", "cwd"])
@pytest.mark.parametrize("base", ["adam", "lion", "adafactor", "muon"])
def test_accelerate_prepare_and_accumulate_match_the_eager_loop(base, variant):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = net()
    opt = lpwd.build_optimizer(model, variant, LR, LAM, base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    decays = counting_decays(opt)
    wrapped, wrapped_opt, wrapped_sched = accelerator.prepare(model, opt, sched)
    x, y = dataset(2)
    for b in [0, 1] * STEPS:
        with accelerator.accumulate(wrapped):
            loss = nn.functional.cross_entropy(wrapped(x[b * BATCH:(b + 1) * BATCH]), y[b * BATCH:(b + 1) * BATCH])
            accelerator.backward(loss)
            wrapped_opt.step()
            wrapped_sched.step()
            wrapped_opt.zero_grad()
    assert decays == (list(range(STEPS)) if variant == "lpwd" else [])
    assert same(model.parameters(), eager(variant, 2, STEPS, accumulate=2, base=base))


# -- timm -------------------------------------------------------------------------------------------
def test_timm_create_optimizer_v2_builds_the_variants_by_name():
    timm = pytest.importorskip("timm")
    import lpwd.timm_registry
    from timm.optim import create_optimizer_v2

    assert {"lpwd", "cwd", "sgdlpwd"} <= set(lpwd.timm_registry.register())
    model = net()
    ours = create_optimizer_v2(model, opt="lpwd", lr=LR, weight_decay=LAM, model=model)
    assert isinstance(ours, lpwd.DecayedAdam) and ours.variant == "lpwd"
    x, y = dataset(1)
    sched = torch.optim.lr_scheduler.LambdaLR(ours, lambda t: 1.0 / (1 + t))
    for _ in range(STEPS):
        nn.functional.cross_entropy(model(x), y).backward()
        ours.step()
        sched.step()
        ours.zero_grad()
    assert same(model.parameters(), eager("lpwd", 1, STEPS))

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10)
    # the model given once, through this library's create_optimizer_v2 (timm's, with the model handed on)
    layered = lpwd.timm_registry.create_optimizer_v2(vit, opt="sgdlpwd", lr=LR, weight_decay=LAM, layer_decay=0.75)
    assert layered.variant == "lpwd" and layered.defaults["momentum"] == 0.9
    qkv = vit.blocks[3].attn.qkv.weight
    group = next(g for g in layered.param_groups if any(p is qkv for p in g["params"]))
    l, L = lpwd.layer_indices(vit)["blocks.3.attn.qkv.weight"]
    assert group["lr_scale"] == pytest.approx(0.75 ** (L - l)) and group["weight_decay"] == LAM
    before = qkv.detach().clone()
    group["lr"] = LR * group["lr_scale"]  # what timm's scheduler does with lr_scale
    layered.pre_forward()
    torch.testing.assert_close(qkv.detach(), before * (1 - LR * group["lr_scale"] * LAM * l / L))
    plain = lpwd.timm_registry.create_optimizer_v2(vit, opt="adamw", lr=LR, weight_decay=LAM)
    assert type(plain) is torch.optim.AdamW  # timm's own names pass through unchanged
