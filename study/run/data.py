"""Datasets as tensors resident on the trial's device, with batched augmentation.

Images are (N, C, H, W); MNIST-1D sequences are (N, 1, 40). Every dataset but CIFAR is
made offline: scikit-learn's bundled digits, and MNIST-1D generated procedurally with
the ``mnist1d`` package's own ``make_dataset`` (its download path is never used).

Following airbench: the whole split is one tensor on the device, batches are
index slices of a seeded permutation, and augmentation (CIFAR: random crop
with 4 px padding + horizontal flip) runs on the whole batch at once. No
DataLoader, no per-sample Python on the hot path.

The validation split is held out of the *training* set with the trial's seed;
the test set is fixed and only ever reported, never used for selection.
Raw arrays are cached per process, so a reused Ray actor loads a dataset once.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

CIFAR = {
    "cifar10": {
        "archive": "cifar-10-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": b"labels",
        "classes": 10,
    },
    "cifar100": {
        "archive": "cifar-100-python.tar.gz",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "labels": b"fine_labels",
        "classes": 100,
    },
}


# MNIST-1D (Greydanus & Kobak): the published generator's settings, and a harder target
# domain of the same ten templates (twice the correlated and i.i.d. noise, more shear
# and scale, other draws), which a model pretrained on ``mnist1d`` is fine-tuned on.
MNIST1D = {
    "mnist1d": {},
    "mnist1d_noisy": {"corr_noise_scale": 0.35, "iid_noise_scale": 0.03, "shear_scale": 1.0, "scale_coeff": 0.5,
                      "seed": 1},
}


@dataclass
class Split:
    """One dataset split on the device: images (N, C, H, W) float, labels (N,) long."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: bool


def dims(name: str) -> tuple[int, int, int]:
    """(input channels, classes, image size or sequence length) of a dataset, known without reading it."""
    from ..define.config import DATA_DIMS

    return DATA_DIMS[name]


def fetch_command(name: str, root: str | None) -> str:
    return f"python -m study data fetch {name} --root {root or 'DIR'}"


def check_available(name: str, root: str | None) -> None:
    """Fail early, before any trial, if a dataset's files are missing."""
    if name not in CIFAR:
        return
    if root is None:
        raise UserError(f"data.root is not set for {name}; set it to the folder holding "
                        f"{CIFAR[name]['archive']} (get it with: {fetch_command(name, None)})")
    _cifar_source(name, root)


def _cifar_source(name: str, root: str) -> Path:
    spec = CIFAR[name]
    base = Path(root).expanduser()
    for candidate in (base / spec["folder"], base / spec["archive"]):
        if candidate.exists():
            return candidate
    raise UserError(f"data.root: {base} has neither {spec['archive']} nor {spec['folder']}/; "
                    f"get it with: {fetch_command(name, root)}")


class CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the published CIFAR batches hold (dicts, lists, bytes, numbers, numpy
    arrays): an archive from a mirror is data, and a pickle naming any other callable (``os.system``)
    is refused before it can run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not data; this is not a CIFAR batch")


def _unpickle(f) -> dict:
    entry = CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError("a CIFAR batch is a dict")
    return entry


def check_dataset(name: str, root: str | None) -> None:
    """Read the dataset once on the driver and check its shapes and labels, before any trial starts."""
    if name not in CIFAR:
        return
    train_x, train_y, test_x, test_y, classes = load_raw(name, root)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.ndim != 4 or x.shape[1:] != (3, 32, 32) or len(x) != len(y) or len(y) == 0:
            raise UserError(f"data.root: the {split} split of {name} has images {x.shape} and {len(y)} labels, "
                            f"expected (N, 3, 32, 32) and N; re-fetch it: {fetch_command(name, root)}")
        if y.min() < 0 or y.max() >= classes:
            raise UserError(f"data.root: {name} {split} labels run {y.min()}..{y.max()}, expected 0..{classes - 1}; "
                            f"re-fetch it: {fetch_command(name, root)}")


def _read_cifar_batches(source: Path, spec: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []

    def add(entry: dict) -> None:
        xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry[spec["labels"]], dtype=np.int64))

    if source.is_dir():
        for n in names:
            with open(source / n, "rb") as f:
                add(_unpickle(f))
    else:
        with tarfile.open(source) as tar:
            for n in names:
                member = tar.extractfile(f"{spec['folder']}/{n}")
                if member is None:
                    raise UserError(f"data.root: {source} lacks {spec['folder']}/{n}; re-fetch it")
                add(_unpickle(member))
    return np.concatenate(xs), np.concatenate(ys)


@lru_cache(maxsize=4)
def load_raw(name: str, root: str | None):
    """(train_x, train_y, test_x, test_y, classes), uint8/float arrays, cached per process."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images.astype(np.float32) / 16.0)[:, None]
        y = digits.target.astype(np.int64)
        # a fixed test set (same for every trial and seed), 20% of the data
        order = np.random.RandomState(1234).permutation(len(y))
        n_test = len(y) // 5
        test, train = order[:n_test], order[n_test:]
        return x[train], y[train], x[test], y[test], 10
    if name in MNIST1D:
        return _mnist1d(name)
    spec = CIFAR[name]
    source = _cifar_source(name, root)
    try:
        train_x, train_y = _read_cifar_batches(source, spec, spec["train"])
        test_x, test_y = _read_cifar_batches(source, spec, spec["test"])
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"data.root: could not read {source} ({e}); re-fetch it: "
                        f"{fetch_command(name, root)}") from None
    return train_x, train_y, test_x, test_y, spec["classes"]


def _mnist1d(name: str):
    """MNIST-1D from its generator: 4000 training and 1000 test sequences of length 40, the
    package's own split; deterministic, since ``make_dataset`` seeds itself from its args."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in MNIST1D[name].items():
        setattr(args, key, value)
    import random

    states = np.random.get_state(), random.getstate()  # make_dataset seeds the global generators
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    x, x_test = (np.asarray(d[k], dtype=np.float32)[:, None, :] for k in ("x", "x_test"))
    return x, np.asarray(d["y"], dtype=np.int64), x_test, np.asarray(d["y_test"], dtype=np.int64), 10


def load_dataset(name: str, root: str | None, val_fraction: float, seed: int,
                 device: torch.device, augment: bool | None = None, train_subset: int | None = None) -> Dataset:
    """The trial's splits: validation held out of the training set with ``seed``, then
    (``train_subset``) the first images of the rest of the same permutation: a smaller,
    harder problem whose accuracies do not saturate, still paired across variants by seed."""
    train_x, train_y, test_x, test_y, classes = load_raw(name, root)
    order = np.random.RandomState(seed).permutation(len(train_y))
    n_val = max(1, int(round(val_fraction * len(train_y))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        t = torch.as_tensor(x)
        if t.dtype == torch.uint8:
            t = t.float().div_(255.0)
        return Split(t.to(device), torch.as_tensor(y).to(device))

    train = to_split(train_x[train_idx], train_y[train_idx])
    # normalise with statistics of this trial's training part only
    per_channel = [0, *range(2, train.x.ndim)]
    mean = train.x.mean(dim=per_channel, keepdim=True)
    std = train.x.std(dim=per_channel, keepdim=True).clamp_min(1e-6)
    splits = [train, to_split(train_x[val_idx], train_y[val_idx]), to_split(test_x, test_y)]
    for s in splits:
        s.x = (s.x - mean) / std
    if augment is None:
        augment = name in CIFAR
    return Dataset(*splits, num_classes=classes, augment=augment)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, for a whole batch on its device."""
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=dev)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(dev)
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped).contiguous()


def write_cifar10_archive(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A CIFAR-10 archive in the published python format, with random images.

    For tests and benchmarks on machines without the real data: same files,
    same pickled keys, same shapes, so the real loading code runs on it.
    """
    rng = np.random.RandomState(seed)
    path = Path(root) / CIFAR["cifar10"]["archive"]
    batches = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    with tarfile.open(path, "w:gz") as tar:
        for name, n in batches:
            entry = {b"data": rng.randint(0, 256, (n, 3072), dtype=np.uint8),
                     b"labels": rng.randint(0, 10, n).tolist(), b"batch_label": name.encode()}
            blob = pickle.dumps(entry)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def fetch(name: str, root: str) -> Path:
    """Download a CIFAR archive into ``root`` and check its published MD5."""
    if name not in CIFAR:
        raise UserError(f"dataset {name!r} cannot be fetched; use one of {sorted(CIFAR)} (digits ships with scikit-learn)")
    spec = CIFAR[name]
    target = Path(root).expanduser() / spec["archive"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        partial = target.with_suffix(".part")
        try:
            urllib.request.urlretrieve(spec["url"], partial)
        except OSError as e:
            raise UserError(f"could not download {spec['url']} ({e}); download it by hand into {target.parent}") from None
        partial.rename(target)
    digest = hashlib.md5(target.read_bytes()).hexdigest()
    if digest != spec["md5"]:
        raise UserError(f"{target} has MD5 {digest}, expected {spec['md5']}; delete it and fetch again")
    return target
