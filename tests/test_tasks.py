"""The task kinds beyond digits, offline: MNIST-1D from its generator, a transformer, fine-tuning.

Tiny settings (one epoch, a hundred sequences): the data is generated, the model built,
one real trial trained in-process, and the same seed gives the same trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import pytest
import torch

from study.define.config import validate
from study.run.data import load_dataset, load_raw
from study.errors import UserError
from study.run.pretrain import address, cache_dir, pretrained_state, recipe
from study.run.trial import run_trial


class Silent:
    def restore(self):
        return None

    def report(self, metrics, state):
        pass


def tiny(model: str, data: str = "mnist1d", **model_extra) -> object:
    return validate({"name": "tiny", "data": {"name": data, "train_subset": 100, "val_fraction": 0.2},
                     "model": {"name": model, **model_extra}, "tracking": {"enabled": False},
                     "train": {"epochs": 1, "batch_size": 32, "diagnostics_every": 1}})


def trial(cfg, seed: int, pretrained=None) -> dict:
    params = {"variant": "lpwd", "lr": 3e-3, "weight_decay": 1.0, "seed": seed}
    return run_trial(cfg, params, Silent(), pretrained=pretrained)


def test_mnist1d_is_generated_offline_and_the_noisy_domain_differs():
    x, y, x_test, y_test, classes = load_raw("mnist1d", None)
    assert x.shape == (4000, 1, 40) and x_test.shape == (1000, 1, 40) and classes == 10
    assert sorted(set(y.tolist())) == list(range(10))
    again = load_raw.__wrapped__("mnist1d", None)  # generated again, not read from the cache
    assert (again[0] == x).all() and (again[1] == y).all()
    noisy = load_raw("mnist1d_noisy", None)
    assert noisy[0].shape == x.shape and not (noisy[0] == x).all()
    split = load_dataset("mnist1d", None, 0.2, 0, torch.device("cpu"), train_subset=100)
    assert split.train.x.shape == (100, 1, 40) and len(split.val) == 800 and not split.augment
    assert abs(split.train.x.mean().item()) < 1e-5  # normalised with the training part's statistics


@pytest.mark.parametrize("model", ["cnn1d", "mlp", "transformer1d"])
def test_a_sequence_model_trains_and_a_seed_repeats(model):
    cfg = tiny(model)
    first, again, other = trial(cfg, 0), trial(cfg, 0), trial(cfg, 1)
    assert first["train_loss"] == again["train_loss"] and first["val_acc"] == again["val_acc"]
    assert first["train_loss"] != other["train_loss"]
    assert 0 < first["r_op"] and first["diverged"] == 0


def test_a_timm_vit_trains_on_digits():
    cfg = validate({"name": "vit", "data": {"name": "digits", "train_subset": 100}, "tracking": {"enabled": False},
                    "model": {"name": "vit_tiny_patch16_224", "img_size": 8,
                              "timm_kwargs": {"patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2}},
                    "train": {"epochs": 1, "batch_size": 32}})
    first, again = trial(cfg, 0), trial(cfg, 0)
    assert first["train_loss"] == again["train_loss"] and first["diverged"] == 0


def finetune(model: str = "cnn1d") -> object:
    return tiny(model, "mnist1d_noisy", pretrain={"data": "mnist1d", "epochs": 1, "batch_size": 256})


def test_fine_tuning_starts_from_the_cached_pretrained_backbone_with_a_fresh_head(tmp_path, monkeypatch):
    monkeypatch.setenv("LPWD_STUDY_CACHE", str(tmp_path))
    cfg = finetune()
    said = []
    state, digest = pretrained_state(cfg, said.append)
    assert said[0].startswith("pretraining cnn1d on mnist1d")
    path = cache_dir() / f"{address(recipe(cfg))}.pt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    said.clear()
    cached, same = pretrained_state(cfg, said.append)  # the second study gets the same file, untrained
    assert said == [] and same == digest and all(torch.equal(cached[k], state[k]) for k in state)
    from study.run.models import build_model

    model = build_model(cfg.model, 1, 10, 40, seed=3, pretrained=state)
    fresh = build_model(cfg.model, 1, 10, 40, seed=3)
    body = [k for k in state if not k.startswith("7.")]  # CNN1d's head is its last module, after Flatten
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in body)
    assert torch.equal(model.head.weight, fresh.head.weight) and not torch.equal(model.head.weight, state["7.weight"])
    first, again = trial(cfg, 0, (state, digest)), trial(cfg, 0, (state, digest))
    assert first["train_loss"] == again["train_loss"]
    assert first["train_loss"] != trial(cfg, 0)["train_loss"]  # from scratch is another trial


def test_a_cached_file_that_fails_its_check_is_never_loaded(tmp_path, monkeypatch):
    """A weights file replaced by one that runs code when unpickled, its record forged to match:
    refused by the weights-only load, set aside, and trained again."""
    monkeypatch.setenv("LPWD_STUDY_CACHE", str(tmp_path))
    cfg = finetune("mlp")
    pretrained_state(cfg, lambda *_: None)
    path = cache_dir() / f"{address(recipe(cfg))}.pt"
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Payload()))
    meta = path.with_suffix(".json")
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    said = []
    state, digest = pretrained_state(cfg, said.append)
    assert not marker.exists()
    assert said[0].startswith("note: cached pretrained weights") and "does not load as tensors" in said[0]
    assert said[1].startswith("pretraining mlp")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # replaced by a good file
    path.write_bytes(path.read_bytes()[:-10])  # cut short: the digest no longer matches
    said.clear()
    pretrained_state(cfg, said.append)
    assert "SHA-256 differs" in said[0]


@pytest.mark.parametrize("raw, words", [
    ({"data": {"name": "mnist1d"}, "model": {"name": "small_cnn"}},
     "model.name: small_cnn takes images and mnist1d holds sequences; use cnn1d or mlp or transformer1d"),
    ({"data": {"name": "digits"}, "model": {"name": "cnn1d"}}, "cnn1d takes sequences and digits holds images"),
    ({"data": {"name": "mnist1d", "augment": True}, "model": {"name": "mlp"}}, "data.augment: crop and flip are for images"),
    ({"data": {"name": "digits"}, "model": {"name": "resnet18", "pretrain": {"data": "digits"}}},
     "model.pretrain: works with the platform's own models"),
    ({"data": {"name": "digits"}, "model": {"name": "small_cnn", "pretrain": {"data": "mnist1d"}}},
     "model.pretrain.data: mnist1d has another input shape or class count than digits"),
])
def test_a_model_that_does_not_fit_its_data_is_one_line(raw, words):
    with pytest.raises(UserError) as e:
        validate(raw)
    assert words in str(e.value) and "\n" not in str(e.value)
