"""The opposing penalty rate R_op, measured cheaply, and per-layer weight norms.

R_op (the "delay defect" of the LPWD paper) is the fraction of decayed weights whose
gradient step crosses zero, theta_t * (theta_t - lr * u_t) < 0: exactly where
decoupled decay (``wd``) pushes a weight *away* from zero. ``rwd``, ``pwd`` and
``lpwd`` never apply an opposing penalty (their decay acts on the weight after
the gradient step), so for them R_op counts the crossings their ordering
neutralises; comparing it across variants shows how often the defect arises.

A naive measurement copies every weight before every step (3.6x a fused AdamW
step). Instead a probe runs every ``every``-th step and looks at a fixed,
seeded, uniform sample of ``sample`` coordinates (``sample=None``: all of
them). It reads the sampled values right before the base update and right
after it, which costs two small gathers per probed step and no extra copy of
the model. Results accumulate on the device and are synchronised only when
read, so probing never stalls a GPU.
"""

from __future__ import annotations

import math

import torch


class OpposingPenaltyProbe:
    """Samples coordinates of the decayed tensors and accumulates R_op."""

    def __init__(self, every: int = 10, sample: int | None = 4096, seed: int = 0):
        if every < 0:
            raise ValueError(f"diagnostics_every={every} must be >= 0 (0 switches R_op off)")
        if sample is not None and sample <= 0:
            raise ValueError(f"diagnostics_sample={sample} must be > 0, or None for every coordinate")
        self.every = every
        self.sample = sample
        self.seed = seed
        self._index: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._sum: torch.Tensor | float = 0.0
        self.count = 0

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def _indices(self, params: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A uniform sample over all coordinates, drawn once from the seed."""
        if self._index is None:
            sizes = torch.tensor([p.numel() for p in params])
            total = int(sizes.sum())
            gen = torch.Generator().manual_seed(self.seed)
            if self.sample is None or self.sample >= total:
                flat = torch.arange(total)
            else:
                flat = torch.randint(total, (self.sample,), generator=gen).sort().values
            starts = torch.cumsum(sizes, 0) - sizes
            owner = torch.searchsorted(torch.cumsum(sizes, 0), flat, right=True)
            self._index = []
            for i, p in enumerate(params):
                local = flat[owner == i] - starts[i]
                if local.numel():
                    self._index.append((p, local.to(p.device)))
        return self._index

    def snapshot(self, params: list[torch.Tensor]) -> torch.Tensor:
        """Sampled values of theta_t, read before the base update."""
        self._indices(params)
        return self.sample_of(lambda p: p)

    def sample_of(self, tensor_of) -> torch.Tensor:
        """The sampled coordinates of ``tensor_of(param)`` (a tensor shaped like it; None reads as 0)."""
        parts = []
        for p, idx in self._index:
            t = tensor_of(p)
            parts.append(torch.take(t.detach(), idx) if t is not None else torch.zeros(idx.numel(), dtype=p.dtype,
                                                                                       device=idx.device))
        return torch.cat(parts)

    def record(self, before: torch.Tensor, shrink: torch.Tensor | None = None) -> None:
        """Compare with the values after the base update.

        ``shrink`` is the per-coordinate ``lr * lambda`` that was already taken
        off theta_t before the update (``wd``); it is added back so that
        ``after`` is the landing point theta_t - lr * u_t.
        """
        after = self.sample_of(lambda p: p)
        if shrink is not None:
            after = after + shrink * before
        crossed = (before * after < 0).float().mean()
        self._sum = self._sum + crossed
        self.count += 1

    def sampled_tensors(self) -> list[tuple[torch.Tensor, int]]:
        return [(p, idx.numel()) for p, idx in self._index]

    def read(self, reset: bool = True) -> tuple[float, int]:
        """Mean R_op over the probed steps since the last reset, and their count."""
        count = self.count
        value = float(self._sum) / count if count else math.nan
        if reset:
            self._sum, self.count = 0.0, 0
        return value, count

    def state_dict(self) -> dict:
        return {"sum": float(self._sum), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self._sum, self.count = state["sum"], state["count"]


def is_dtensor(p: torch.Tensor) -> bool:
    """A sharded tensor of FSDP2/tensor parallelism (torch.distributed.tensor.DTensor)."""
    return type(p).__name__ == "DTensor" and hasattr(p, "full_tensor")


def layer_weight_norms(params: list[torch.Tensor], layers: list[int]) -> dict[int, float]:
    """L2 norm of the weights of each layer (one foreach kernel, one sync). Sharded tensors are
    gathered first (every rank calls this alike, as it calls ``step``)."""
    if not params:
        return {}
    params = [p.full_tensor() if is_dtensor(p) else p for p in params]
    norms = torch.stack(torch._foreach_norm([p.detach() for p in params])).double().pow(2).cpu()
    out: dict[int, float] = {}
    for layer, sq in zip(layers, norms.tolist()):
        out[layer] = out.get(layer, 0.0) + sq
    return {layer: math.sqrt(v) for layer, v in sorted(out.items())}
