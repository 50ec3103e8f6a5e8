"""The study YAML, validated with pydantic, with ``--set key=value`` overrides.

Every key is documented in ``configs/README.md``. Validation happens before
anything is started; a mistake becomes one line naming the key and the fix.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

import lpwd

from .claims import PRIMARY_DEFAULT, claims_for
from ..errors import UserError
from .location import SCHEMES, is_remote, mirror_dir

Variant = Literal["none", "l2", "wd", "rwd", "pwd", "lpwd", "cwd"]
VARIANT_NAMES = Variant.__args__


class Strict(BaseModel):
    # no inf/nan anywhere: an infinite lr or cpu count is a typo, never a setting
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# (input channels, classes, image size or sequence length) of each dataset, known without reading it
DATA_DIMS = {"digits": (1, 10, 8), "mnist1d": (1, 10, 40), "mnist1d_noisy": (1, 10, 40),
             "cifar10": (3, 10, 32), "cifar100": (3, 100, 32)}
# what each of the platform's own models takes (``study.run.models`` builds them); timm models take images
OWN_MODEL_INPUTS = {"small_cnn": "image", "cnn1d": "sequence", "mlp": "sequence", "transformer1d": "sequence"}


def repeated_values(values: list) -> list:
    """The values listed more than once, each once, in a stable order."""
    return sorted({x for x in values if values.count(x) > 1}, key=str)


class DataConfig(Strict):
    name: Literal["digits", "mnist1d", "mnist1d_noisy", "cifar10", "cifar100"] = "digits"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    root: Optional[str] = None
    augment: Optional[bool] = None  # default: on for CIFAR (crop + flip), off for digits and MNIST-1D
    # train on this many images of the training part (after the validation split), chosen with the seed
    train_subset: Optional[int] = Field(None, ge=1)


class PretrainConfig(Strict):
    """Weights the platform trains once on a source task and caches (``study.run.pretrain``)."""

    data: Literal["digits", "mnist1d", "mnist1d_noisy"]
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-2, gt=0)
    batch_size: int = Field(128, ge=1)
    seed: int = Field(0, ge=0)


class ModelConfig(Strict):
    name: str = "small_cnn"
    pretrained: bool = False
    pretrained_path: Optional[str] = None
    pretrain: Optional[PretrainConfig] = None
    img_size: Optional[int] = Field(None, gt=0)
    channels_last: Optional[bool] = None  # default: on for CUDA
    compile: bool = False
    timm_kwargs: dict = Field(default_factory=dict)  # passed to timm.create_model, e.g. {window_size: 4}

    @field_validator("name")
    @classmethod
    def known_model(cls, name: str) -> str:
        if name not in OWN_MODEL_INPUTS:
            import timm

            if not timm.is_model(name):
                raise ValueError(f"unknown model {name!r}; use one of {', '.join(OWN_MODEL_INPUTS)} or a timm model name "
                                 "(timm.list_models())")
        return name


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    # the base optimizer the variants sit on (lpwd.bases): torch's Adam and SGD, timm's Muon and Lion,
    # torch's Adafactor; momentum applies to sgd only
    base: Literal["adam", "sgd", "muon", "lion", "adafactor"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    lr_schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: Literal["off", "bf16"] = "off"
    decay_bias_and_norm: bool = False  # 1-D tensors (timm's filter_bias_and_bn=False)
    decay_no_weight_decay: bool = False  # the names the model's no_weight_decay() lists
    diagnostics_every: int = Field(10, ge=0)
    # checkpoint (and flush MLflow) when this many seconds passed since the last one, and at the end;
    # 0 = after every epoch. Second-long trials then pay for one checkpoint, not one per epoch.
    checkpoint_every_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def momentum_is_sgds(self):
        # a saved study.yaml lists every field, the default momentum included: only another value is refused
        if self.momentum != type(self).model_fields["momentum"].default and self.base != "sgd":
            raise ValueError(f"momentum is SGD's (base: sgd); base {self.base} keeps its own default: "
                             "remove train.momentum")
        return self

    @field_validator("step_milestones")
    @classmethod
    def fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v):
            raise ValueError("milestones are fractions of training, each between 0 and 1")
        return v


# a paired t-test needs 3 seeds (analyse.analysis.MIN_SEEDS): a sequential plan's first look has them
FIRST_LOOK_SEEDS = 3
# the tags of search.seeds' two forms, left out of the key a config error names
SEED_FORMS = ("list", "plan")
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class SeedPlan(Strict):
    """A sequential seed plan: the whole grid for seeds 0 .. start − 1, then ``step`` more seeds at a
    time while a primary question of the verdict is undecided, up to ``max`` seeds
    (``study.analyse.sequential``)."""

    start: int = Field(ge=FIRST_LOOK_SEEDS)
    step: int = Field(ge=1)
    max: int

    @model_validator(mode="after")
    def max_after_start(self):
        if self.max <= self.start:
            raise ValueError(f"max ({self.max}) must be larger than start ({self.start}): a plan adds seeds; "
                             f"for a fixed number of seeds list them, e.g. search.seeds=[0,1,2]")
        if self.max > 1000:
            raise ValueError(f"max {self.max}: at most 1000 seeds")
        return self

    def looks(self) -> list[int]:
        """The seed counts at which the plan looks: start, start + step, ..., max."""
        return [*range(self.start, self.max, self.step), self.max]


class SearchConfig(Strict):
    mode: Literal["grid", "optuna"] = "grid"
    variants: list[Variant] = Field(default_factory=lambda: ["wd", "lpwd"], min_length=1)
    lr: list[float] = Field(default_factory=lambda: [1e-3, 3e-3, 1e-2], min_length=1)
    weight_decay: list[float] = Field(default_factory=lambda: [0.0, 0.1, 1.0], min_length=1)
    # a list of seeds, or a sequential plan {start, step, max} (seeds 0 .. max − 1, added wave by wave)
    seeds: Annotated[Annotated[list[Seed], Field(min_length=1), Tag("list")] | Annotated[SeedPlan, Tag("plan")],
                     Discriminator(lambda v: "plan" if isinstance(v, (dict, SeedPlan)) else "list")] = \
        Field(default_factory=lambda: [0])
    # lpwd's schedule(s); a list runs the ablation in one study, one arm per schedule
    layer_schedule: list[Literal[tuple(lpwd.SCHEDULE_NAMES)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["linear"], min_length=1)
    num_samples: int = Field(20, ge=1)
    # control arms; pwd@lpwd-mass is pwd trained at lpwd's total decay (λ scaled by lpwd's λ_eff / λ)
    controls: list[Literal["pwd@lpwd-mass"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def mass_needs_lpwd(self):
        if self.controls and not ("lpwd" in self.variants and "linear" in self.layer_schedule):
            raise ValueError("controls: pwd@lpwd-mass trains pwd at lpwd's decay mass, so variants must include "
                             "lpwd with layer_schedule linear")
        return self

    @field_validator("layer_schedule", mode="before")
    @classmethod
    def one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @property
    def seed_plan(self) -> SeedPlan | None:
        return self.seeds if isinstance(self.seeds, SeedPlan) else None

    @property
    def seed_list(self) -> list[int]:
        """Every seed the study may train: the list, or a plan's 0 .. max − 1."""
        return list(range(self.seeds.max)) if isinstance(self.seeds, SeedPlan) else self.seeds

    def waves(self) -> list[list[int]]:
        """The seeds each wave trains: one wave for a list, the plan's looks apart for a plan."""
        if self.seed_plan is None:
            return [self.seed_list]
        looks = [0, *self.seed_plan.looks()]
        return [list(range(a, b)) for a, b in zip(looks, looks[1:])]

    @field_validator("variants", "lr", "weight_decay", "seeds", "layer_schedule", "controls")
    @classmethod
    def no_repeats(cls, v):
        if not isinstance(v, list):
            return v
        repeated = repeated_values(v)
        if repeated:  # a repeated value is one cell planned twice: counts and the verdict would disagree
            raise ValueError(f"{', '.join(map(str, repeated))} listed more than once; list each value once")
        return v

    @field_validator("lr")
    @classmethod
    def positive_lr(cls, v: list[float]) -> list[float]:
        if any(not x > 0 for x in v):
            raise ValueError("every learning rate must be > 0")
        return v

    @field_validator("weight_decay")
    @classmethod
    def nonnegative_decay(cls, v: list[float]) -> list[float]:
        if any(not x >= 0 for x in v):
            raise ValueError("every decay rate must be >= 0")
        return v

    @model_validator(mode="after")
    def plan_is_a_grids(self):
        if self.mode == "optuna" and self.seed_plan is not None:
            raise ValueError("seeds: a sequential plan adds seeds to a whole grid (mode: grid); an Optuna search "
                             "takes a list of seeds")
        return self

    @model_validator(mode="after")
    def optuna_needs_a_range(self):
        if self.mode == "optuna" and not any(x > 0 for x in self.weight_decay):
            raise ValueError("optuna mode samples weight_decay log-uniformly: give at least one value > 0")
        return self


class ResourcesConfig(Strict):
    # Ray counts resources in steps of 1e-4: less than that is no CPU at all to its scheduler
    cpu: float = Field(1, ge=0.01)
    gpu: float = Field(0, ge=0)
    max_concurrent: Optional[int] = Field(None, ge=1)


class TrackingConfig(Strict):
    enabled: bool = True
    uri: Optional[str] = None  # default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory


class VerdictConfig(Strict):
    """The pre-declared primary claim of each question (study/define/claims.py), the rest exploratory; and the
    arms whose answers are the verdict (Holm's family). Default: every arm but the baseline and the
    controls (pwd@lpwd-mass, lpwd:*_normalized), which are instruments of the decomposition."""

    better: Literal[tuple(claims_for("better"))] = PRIMARY_DEFAULT["better"]  # type: ignore[valid-type]
    more_robust: Literal[tuple(claims_for("more_robust"))] = PRIMARY_DEFAULT["more_robust"]  # type: ignore[valid-type]
    arms: Optional[list[str]] = Field(None, min_length=1)
    # a sequential plan's futility margin, in points: a question whose repeated confidence interval lies
    # inside ±min_effect stops with "ruled out" (no effect of that size); None: questions stop on evidence only
    min_effect: Optional[float] = Field(None, gt=0)
    # how a sequential plan spends α over its looks, both Lan-DeMets functions (analyse.sequential): Pocock-type
    # (even levels, so a clear answer stops early; with 3 seeds a look's t-test has 2 degrees of freedom, and
    # O'Brien-Fleming-type's early levels are out of its reach) or O'Brien-Fleming-type (the most power at the end)
    spending: Literal["pocock", "obrien-fleming"] = "pocock"
    # a sequential plan stops adding seeds once every open question is past deciding at its current estimate
    # (stochastic curtailment); false: an open question keeps the study going to max
    curtail: bool = True


class StudyConfig(Strict):
    name: str = Field("quick", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    storage: str = "./studies"
    max_failures: int = Field(2, ge=0)

    @field_validator("name")
    @classmethod
    def a_folder_of_its_own(cls, name: str) -> str:
        if set(name) == {"."}:
            raise ValueError("a name of dots would put the study in storage itself or its parent; use letters")
        return name

    @field_validator("storage")
    @classmethod
    def a_place_we_can_write(cls, storage: str) -> str:
        if storage.startswith("file://"):  # a local folder written as a URI: the absolute path it names
            from urllib.parse import unquote, urlparse

            parsed = urlparse(storage)
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(f"{storage} names another host; use a folder path, or s3://bucket[/prefix]")
            return unquote(parsed.path)
        scheme = storage.split("://", 1)[0]
        if is_remote(storage) and (scheme not in SCHEMES or not storage.split("://", 1)[1].strip("/")):
            raise ValueError(f"{storage} is neither a folder nor s3://bucket[/prefix] or gs://bucket[/prefix]")
        return storage

    @model_validator(mode="after")
    def model_fits_data(self):
        sequence = self.data.name.startswith("mnist1d")
        kind = OWN_MODEL_INPUTS.get(self.model.name, "image")
        if (kind == "sequence") != sequence:
            fits = [n for n, k in OWN_MODEL_INPUTS.items() if k == "sequence"] if sequence else ["small_cnn", "a timm model"]
            raise ValueError(f"model.name: {self.model.name} takes {kind}s and {self.data.name} holds "
                             f"{'sequences' if sequence else 'images'}; use {' or '.join(fits)}")
        if sequence and self.data.augment:
            raise ValueError("data.augment: crop and flip are for images; MNIST-1D takes none (remove it)")
        pretrain = self.model.pretrain
        if pretrain is not None:
            if self.model.pretrained:
                raise ValueError("model: pretrain (weights trained here) and pretrained (timm's) exclude each other; "
                                 "keep one")
            if self.model.name not in OWN_MODEL_INPUTS:
                raise ValueError(f"model.pretrain: works with the platform's own models ({', '.join(OWN_MODEL_INPUTS)}); "
                                 "for a timm model use pretrained: true")
            if DATA_DIMS[pretrain.data] != DATA_DIMS[self.data.name]:
                raise ValueError(f"model.pretrain.data: {pretrain.data} has another input shape or class count "
                                 f"than {self.data.name}; pretrain on a task of the same shape")
        return self

    @model_validator(mode="after")
    def verdict_arms_are_arms(self):
        if self.verdict.arms is not None:
            names = [a["arm"] for a in arms(self)]
            baseline = "wd" if "wd" in self.search.variants else self.search.variants[0]
            for arm in self.verdict.arms:
                if arm not in names or arm == baseline:
                    guess = did_you_mean(arm, names)
                    raise ValueError(f"{arm} is not an arm this study compares with {baseline}"
                                     + (f" (did you mean {guess}?)" if guess and guess != arm else "")
                                     + f"; list arms of {', '.join(n for n in names if n != baseline)}")
            repeated = repeated_values(self.verdict.arms)
            if repeated:
                raise ValueError(f"verdict.arms: {', '.join(repeated)} listed more than once; list each arm once")
        return self

    @property
    def remote(self) -> str | None:
        """The study's URI when it lives in object storage (``s3://bucket/prefix/name``), else None."""
        return f"{self.storage.rstrip('/')}/{self.name}" if is_remote(self.storage) else None

    @property
    def study_dir(self) -> Path:
        """Where the driver reads and writes the study: the folder itself, or an object-store study's mirror."""
        if self.remote:
            return mirror_dir(self.remote)
        return Path(self.storage).expanduser().resolve() / self.name


class StrictLoader(yaml.SafeLoader):
    """YAML for configs: no aliases (an alias bomb expands to gigabytes) and no duplicate keys
    (the second silently replaces the first, a whole section included)."""

    MAX_DEPTH = 32  # a study config nests three deep; thousands of levels only exhaust the stack

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > self.MAX_DEPTH:
                raise yaml.constructor.ConstructorError(None, None, f"nested more than {self.MAX_DEPTH} levels deep",
                                                        self.peek_event().start_mark)
            return self._compose_node(parent, index)
        finally:
            self._depth -= 1

    def _compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "aliases (*name) are not accepted in a study config",
                                                    event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping as a key: no config has one
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain name, not a list or "
                                                        "mapping", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, where: str):
    """YAML through the strict loader; any error is one line naming where it is, with a short excerpt."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None and "\n" in text else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where} is not valid YAML: {problem[:120]}{at}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``--set a.b=value``: value parsed as YAML (numbers, lists, booleans)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = parse_yaml(value, f"--set {key.strip()}={value[:40]}")
    return raw


def did_you_mean(word, choices) -> str | None:
    """The closest of ``choices`` to a mistyped ``word`` (standard library's difflib), or None."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def _keys_at(loc: tuple) -> list[str]:
    """The keys a config section at ``loc`` (a validation error's location, its last part the key) accepts."""
    from typing import get_args

    model: type[BaseModel] = StudyConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)

        def models_in(t) -> list:  # through Optional, unions and Annotated
            if isinstance(t, type) and issubclass(t, BaseModel):
                return [t]
            return [m for arg in get_args(t) for m in models_in(arg)]

        inner = models_in(field.annotation) if field is not None else []
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def describe(error: ValidationError, source: str, overrides: dict[str, str] | None = None) -> str:
    """The first validation error as one actionable line; one about a key given with ``--set``
    (``overrides``: key -> the value as typed) names the ``--set``, not the file."""
    # an unknown key first: a mistyped name is why a required one is "missing" beside it
    first = next((e for e in error.errors() if e["type"] == "extra_forbidden"), error.errors()[0])
    loc = [p for p in first["loc"] if p not in SEED_FORMS]  # search.seeds' union tags name no key
    where = ".".join(str(p) for p in loc) or "(top level)"
    key_typed = next((k for k in (overrides or {}) if where == k or where.startswith(k + ".")), None)
    msg = first["msg"].removeprefix("Value error, ")
    shown = first.get("input")
    got = "" if first["type"] in ("extra_forbidden", "missing") or isinstance(shown, dict) else f" (got {shown!r:.80})"
    more = f" [+{len(error.errors()) - 1} more]" if len(error.errors()) > 1 else ""
    key = ".".join(str(p) for p in loc if not isinstance(p, int)) or where  # --set takes whole lists
    fix = f"fix it in the file or with --set {key}=..."
    if first["type"] == "extra_forbidden":
        guess = did_you_mean(loc[-1], _keys_at(tuple(loc)))
        msg = "unknown key" + (f" (did you mean {'.'.join([*map(str, loc[:-1]), guess])}?)" if guess else
                               "; see configs/README.md for the accepted keys")
        fix = "rename it in the file or in --set" if guess else fix
    elif first["type"] == "literal_error":
        guess = did_you_mean(shown, [c.strip(" '") for c in first["ctx"]["expected"].replace(" or ", ",").split(",")])
        got = f" (got {shown!r:.80}; did you mean {guess!r}?)" if guess else got
    if key_typed is not None:
        typed = overrides[key_typed]
        fix = (f"a list is written in brackets: --set {key_typed}=[{typed}]" if first["type"] == "list_type"
               else f"correct the --set {key_typed}=... value")
        if first["type"] == "extra_forbidden":
            fix = "rename it in --set" if "did you mean" in msg else "remove it from --set"
        return f"config error in --set {key_typed}={typed[:60]}: {where}: {msg}{got}; {fix}{more}"
    return f"config error in {source}: {where}: {msg}{got}; {fix}{more}"


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> StudyConfig:
    source = str(path) if path else "defaults"
    raw: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} not found; pass a YAML file such as configs/quick.yaml")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"config file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        raw = parse_yaml(text, f"config file {p}") or {}
        if not isinstance(raw, dict):
            raise UserError(f"config file {p} must be a mapping of keys (name:, data:, ...)")
    raw = apply_overrides(raw, list(overrides))
    typed = {item.split("=", 1)[0].strip(): item.split("=", 1)[1] for item in overrides if "=" in item}
    return validate(raw, source, typed)


def validate(raw: dict, source: str = "config", overrides: dict[str, str] | None = None) -> StudyConfig:
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(describe(e, source, overrides)) from None


def arm_name(variant: str, layer_schedule: str) -> str:
    """What a report row compares: the variant, and lpwd's schedule unless it is the paper's."""
    return f"lpwd:{layer_schedule}" if variant == "lpwd" and layer_schedule != "linear" else variant


def arms(cfg: StudyConfig) -> list[dict]:
    """(arm, variant, layer_schedule) of every arm: one per variant, lpwd once per schedule, then the
    controls (``mass_of``: the arm whose decay mass the control's λ is scaled to)."""
    out = []
    for v in cfg.search.variants:
        for sched in (cfg.search.layer_schedule if v == "lpwd" else ["constant"]):
            out.append({"arm": arm_name(v, sched), "variant": v, "layer_schedule": sched})
    for control in cfg.search.controls:
        variant, of = control.split("@")
        out.append({"arm": control, "variant": variant, "layer_schedule": "constant",
                    "mass_of": of.removesuffix("-mass")})
    return out


def baseline_arm(cfg: StudyConfig) -> str:
    """The arm every other is compared with: ``wd`` when the study runs it, else its first arm."""
    return "wd" if "wd" in cfg.search.variants else arms(cfg)[0]["arm"]


def trial_grid(cfg: StudyConfig, seeds: list[int] | None = None) -> list[dict]:
    """Every planned (arm, lr, weight_decay, seed) trial of a grid study (of ``seeds`` only, when given:
    one wave of a sequential plan): one tidy-table row each."""
    s = cfg.search
    return [{**a, "lr": lr, "weight_decay": wd, "seed": seed}
            for a in arms(cfg) for lr in s.lr for wd in s.weight_decay for seed in (seeds or s.seed_list)]


def canonical(trial: dict) -> dict:
    """The trial that computes exactly the same numbers.

    ``none`` ignores lambda, and every variant at lambda = 0 is ``none`` (no shrink
    anywhere, same init, split and batch order): tests/test_optimizer.py proves the
    updates bit-identical, so such trials are trained once and their result shared.
    """
    if trial["variant"] == "none" or trial["weight_decay"] == 0:
        return {"arm": "none", "variant": "none", "layer_schedule": "constant",
                "lr": trial["lr"], "weight_decay": 0.0, "seed": trial["seed"]}
    keys = ("arm", "variant", "layer_schedule", "lr", "weight_decay", "seed") + (("mass_of",) if "mass_of" in trial else ())
    return {k: trial[k] for k in keys}


def trained_grid(cfg: StudyConfig, seeds: list[int] | None = None) -> list[dict]:
    """The trials a grid study trains (of ``seeds`` only, when given): one per distinct canonical
    trial, each listing the planned (arm, weight_decay) rows it stands for."""
    out: dict[tuple, dict] = {}
    for t in trial_grid(cfg, seeds):
        c = canonical(t)
        key = tuple(c.values())
        out.setdefault(key, {**c, "stands_for": []})["stands_for"].append(
            {k: t[k] for k in ("arm", "variant", "layer_schedule", "weight_decay")})
    return list(out.values())


def planned_trials(cfg: StudyConfig) -> int:
    """How many tidy-table rows the study produces (optuna: num_samples per arm)."""
    if cfg.search.mode == "grid":
        return len(trial_grid(cfg))
    return cfg.search.num_samples * len(arms(cfg))


def trained_trials(cfg: StudyConfig) -> int:
    """How many trials are actually trained (grid: identical trials once)."""
    if cfg.search.mode == "grid":
        return len(trained_grid(cfg))
    return planned_trials(cfg)


def sign_flipping_cells(cfg: StudyConfig) -> list[tuple[float, float]]:
    """(lr, lambda) cells with lr * lambda >= 1: the per-step factor 1 - lr lambda is <= 0,
    so decay zeroes or flips the sign of every weight (peak lr; warmup and schedules only lower it)."""
    return [(lr, wd) for lr in cfg.search.lr for wd in cfg.search.weight_decay if lr * wd >= 1]


def dump(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
