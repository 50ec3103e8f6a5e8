"""Ray Tune sweeps: grid (FIFO, every cell trained the same) or Optuna (TPE per variant).

A study dir ``storage/name/`` holds ``study.yaml`` (the resolved config),
``trials.csv`` (the tidy table), the report, and one Ray experiment per sweep:
``grid/`` or ``optuna-<variant>/``. Running a study whose dir exists resumes
it with ``Tuner.restore`` (unfinished and errored trials continue from their
last checkpoint); nothing finished is rerun.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickletools
import signal
import sys
import tempfile
from pathlib import Path

import torch
from pyarrow.fs import FileSelector, FileType

from . import localray

from ..store import objectstore
from ..store.atomicfs import atomic_local_filesystem, remove_partial_writes
from ..define.metrics import trial_params
from ..define.config import StudyConfig, arms, dump, planned_trials, sign_flipping_cells, trained_grid, trained_trials, validate
from .data import check_available
from ..errors import UserError
from .models import check_pretrained_path
from .plan import record_plan
from .progress import ProgressLine
from .ray_logs import quiet_ray_logs
from .restart_point import NewestCheckpoint, checkpoint_folders
from ..store.loader import read_plan
from ..store.seal import check_seals
from ..store.studydir import STUDY_FILE, definition, differences, load_study, owned, record_definition  # noqa: F401
from ..store.table import _intact, fixed_columns, read_rows
from .table_callback import TidyTable
from .trial import run_trial, trial_name
from .worker_setup import quiet_worker



# what run_trial writes into every checkpoint and reads back on restore
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "generator", "history", "best", "epoch", "mlflow_run_id",
                   "metrics", "finished"}


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class RayReporter:
    """Checkpoints through Ray Tune: ``tune.report`` each epoch, the trial's own newest checkpoint on restart.

    ``trial_path`` is the trial's folder on the sweep's storage filesystem, local disk or
    bucket (``<study>/<experiment>/<trial_id>``, see ``trial_dirname``).
    """

    def __init__(self, storage, trial_path: str):
        self.storage, self.trial_path = storage, trial_path

    def restore(self) -> dict | None:
        """The newest readable checkpoint of this trial, falling back to older ones.

        Ray's experiment snapshot is periodic, so after a hard kill it may name
        an older checkpoint than the trial had written, or none: looking in the
        trial's own folder continues from the newest one and never trains an epoch
        twice (a finished trial only replays its reports; ``restart_point`` keeps
        Ray's bookkeeping in step). A corrupt checkpoint is reported naming the
        trial and skipped.
        """
        from ray import tune

        name, known = tune.get_context().get_trial_name(), tune.get_checkpoint()
        candidates = set(checkpoint_folders(self.storage, self.trial_path).values())
        if known is not None and _basename(known.path) not in {_basename(c) for c in candidates}:
            candidates.add(known.path)  # the one Ray knows is always tried
        candidates = sorted(candidates, key=_basename, reverse=True)
        for folder in candidates:
            state = self._load(self.storage, folder, name)
            if state is not None:
                return state
        return None

    @staticmethod
    def _load(storage, folder: str, trial: str) -> dict | None:
        """A checkpoint's state, or None if it is unreadable or not shaped like one of ours.

        ``weights_only=True``: tensors and plain containers only, so a ``state.pt`` from a
        shared or downloaded study dir cannot run code when it is loaded.
        """
        try:
            with storage.open_input_stream(f"{folder}/state.pt") as f:
                data = f.read()
        except FileNotFoundError:  # its write never completed (a full disk, a kill): no checkpoint, nothing to say
            return None
        try:
            state = torch.load(io.BytesIO(data), weights_only=True)
            missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
            if missing:
                raise ValueError(f"not a trial checkpoint: lacks {sorted(missing)[:3]}")
            return state
        except Exception as e:  # a corrupt checkpoint must never give a silent wrong result
            print(f"trial {trial}: checkpoint {folder} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                  "trying the previous one (or restarting from scratch)", file=sys.stderr)
            return None

    def report(self, metrics: dict, state: dict | None) -> None:
        from ray import tune

        if state is None:
            tune.report(metrics)
            return
        # staged in the system temp dir ($TMPDIR), not in get_trial_dir(): that is the trial's
        # driver staging folder, which Tune copies into the storage, a half-written copy included
        with tempfile.TemporaryDirectory(prefix="lpwd-checkpoint-") as d:
            torch.save(state, Path(d) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


_config_cache: dict = {}


def trainable(config: dict, study: dict, tracking: dict | None, pretrained: tuple | None = None):
    """The Ray Tune function trainable: one trial of the study."""
    from ray import tune

    from ..track.tracking import StudyRun

    quiet_worker()
    logging.getLogger("ray").setLevel(logging.WARNING)  # no "checkpoint created" line per epoch
    key = repr(study)
    if key not in _config_cache:  # reused actors validate the study config once
        _config_cache[key] = validate(study)
    cfg, context = _config_cache[key], tune.get_context()
    storage, root = sweep_storage(cfg)
    reporter = RayReporter(storage, f"{root}/{context.get_experiment_name()}/{context.get_trial_id()}")
    tags = {"ray_trial_id": context.get_trial_id()}
    run_trial(cfg, trial_params(config), reporter, StudyRun(**tracking) if tracking else None, tags, pretrained)


def name_trial(trial) -> str:
    return trial_name(trial_params(trial.config))


def trial_dirname(trial) -> str:
    return trial.trial_id


def experiments(cfg: StudyConfig) -> list[tuple[str, dict, dict]]:
    """(experiment name, param_space, TuneConfig kwargs) for each sweep of the study."""
    from ray import tune

    s = cfg.search
    common = {"reuse_actors": True, "max_concurrent_trials": cfg.resources.max_concurrent,
              "trial_name_creator": name_trial, "trial_dirname_creator": trial_dirname}
    if s.mode == "grid":
        # one entry per distinct trial: identical trials (lambda = 0, none) are trained once; a sequential
        # seed plan is one sweep per wave of seeds, run only while its looks leave a question open
        return [(wave_name(k), {"cell": tune.grid_search(trained_grid(cfg, seeds))}, common)
                for k, seeds in enumerate(s.waves())]
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    def log_range(values: list[float]):
        positive = [v for v in values if v > 0]
        lo, hi = min(positive), max(positive)
        return tune.loguniform(lo, hi) if hi > lo else lo

    out = []
    for arm in arms(cfg):
        space = {**arm, "lr": log_range(s.lr), "weight_decay": log_range(s.weight_decay), "seed": s.seed_list[0]}
        search = OptunaSearch(sampler=TPESampler(seed=s.seed_list[0]), metric="best_val_acc", mode="max")
        out.append((f"optuna-{arm['arm'].replace(':', '-')}", space,
                    {**common, "search_alg": search, "num_samples": s.num_samples}))
    return out


def wave_name(k: int) -> str:
    """The Ray experiment of wave k (0-based) of a grid: ``grid``, then ``grid-wave2``, ``grid-wave3``, ..."""
    return "grid" if k == 0 else f"grid-wave{k + 1}"


def sweep_size(space: dict, tune_kwargs: dict) -> int:
    """How many trials one sweep trains: its grid's cells, or an Optuna search's samples."""
    cells = space.get("cell")
    return len(cells["grid_search"]) if isinstance(cells, dict) and "grid_search" in cells \
        else tune_kwargs["num_samples"]


def check_study_dir(cfg: StudyConfig, pull: bool = True) -> None:
    """A study dir that exists already must be this config's: refused in one line otherwise (an edited
    ``study.yaml`` too). Writes nothing into it, so a suite checks every study before any trains
    (an object-store study is read in its mirror, ``pull``ed fresh from the bucket)."""
    study_dir = cfg.study_dir
    if cfg.remote and pull:
        study_dir = objectstore.pull(cfg.remote, fresh=True)
    if not (study_dir / STUDY_FILE).exists():
        return
    old = load_study(study_dir)  # also refuses a study.yaml edited after the study started
    differs = differences(definition(old), definition(cfg))
    if differs:
        more = f", +{len(differs) - 4} more" if len(differs) > 4 else ""
        raise UserError(f"{study_dir} was created by a different config ({', '.join(differs[:4])}{more} differ); "
                        f"choose another study name with --set name=NEW, or delete {study_dir}")


def prepare_study_dir(cfg: StudyConfig) -> Path:
    """Create the study dir, or check an existing one was made by a compatible config.

    An object-store study is checked in its mirror, freshly pulled from the bucket.
    """
    study_dir = cfg.study_dir
    if cfg.remote:
        objectstore.check_writable(cfg.remote)
        objectstore.pull(cfg.remote, fresh=True)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        probe = study_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"storage: cannot write to {study_dir} ({e.strerror}); set storage to a writable folder") from None
    saved = study_dir / STUDY_FILE
    if saved.exists():
        check_study_dir(cfg, pull=False)  # pulled just now
    else:
        saved.write_text(dump(cfg))
        record_definition(study_dir, cfg)
        record_plan(study_dir, cfg)
        if cfg.remote:
            objectstore.push(study_dir, cfg.remote)
    return study_dir


def sweep_storage(cfg: StudyConfig) -> tuple:
    """(pyarrow filesystem, study path in it) where Ray Tune keeps the sweeps: the bucket, or the study dir."""
    from ..store.seal import sealing_filesystem

    if cfg.remote:
        fs, root = objectstore.filesystem(cfg.remote)
        return sealing_filesystem(fs), root
    # local or shared disk: a kill mid-save never leaves a torn sweep state or checkpoint
    return sealing_filesystem(atomic_local_filesystem()), str(cfg.study_dir)


def check_ray_address(address: str) -> None:
    """A cluster address must answer within seconds: Ray itself would retry it for minutes in silence."""
    import socket

    if address in ("auto", "local") or "://" in address and not address.startswith("ray://"):
        return  # Ray's own lookups, and addresses this check cannot read
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise UserError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({type(e).__name__}); start it, fix "
                        "RAY_ADDRESS, or unset it to run the study on this machine") from None


# a grid this large is more often a typo (an extra digit in a list) than a plan: it needs --yes
LARGE_STUDY = 5000


def preflight(cfg: StudyConfig, yes: bool = False) -> None:
    """Everything that can be checked before Ray starts: data, model, resources, size, tracking."""
    from .data import check_dataset
    from .models import check_model
    from ..track.client import check_uri

    local = not os.environ.get("RAY_ADDRESS")
    if not local:
        check_ray_address(os.environ["RAY_ADDRESS"])
    if cfg.resources.gpu > 0 and local and not torch.cuda.is_available():
        raise UserError(f"resources.gpu={cfg.resources.gpu} but this machine has no CUDA GPU; "
                        "set resources.gpu=0, or submit to a GPU cluster with ray job submit")
    cores = os.cpu_count() or 1
    if local and cfg.resources.cpu > cores:
        raise UserError(f"resources.cpu={cfg.resources.cpu:g} but this machine has {cores} cores, so no trial could "
                        f"ever start; set resources.cpu to at most {cores}, or submit to a cluster with ray job submit")
    planned = planned_trials(cfg)
    if planned > LARGE_STUDY and not yes:
        raise UserError(f"search: {planned} planned trials (more than {LARGE_STUDY}); check search.lr, "
                        "search.weight_decay and search.seeds, or pass --yes to run them all")
    if cfg.tracking.enabled:
        check_uri(cfg.tracking.uri)
    check_available(cfg.data.name, cfg.data.root)
    check_pretrained_path(cfg.model, read=True)
    check_dataset(cfg.data.name, cfg.data.root)
    check_model(cfg)


def init_ray() -> None:
    import ray

    quiet_ray_logs()
    # our own progress replaces Tune's console output (its experiment box and a TensorBoard hint for a
    # TensorBoard that is not installed); with the legacy reporter, verbose=0 really is silent
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    # "token authentication is enabled (by default)" on every local run: it is, and nothing needs doing
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    from ..track.client import HTTP_ENV

    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", **HTTP_ENV}
    # every worker drops the SystemExit print from its first moment, not only once a trial has started
    # in it: Tune can stop a worker that is still importing (a full disk ends the sweep early)
    setup = "study.run.worker_setup.quiet_worker"
    # per-epoch checkpoints of second-long trials snapshot often by design; the warning is noise here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = os.environ.get("RAY_ADDRESS")
    print(f"Ray: connecting to {address}" if address else "Ray: starting a local head (127.0.0.1, ends with "
          "this command)", flush=True)
    if not address and localray.available():  # loopback only, and stopped with this driver
        address = localray.start_head()
    ray.init(address=address, include_dashboard=False if not address else None,
             runtime_env={"env_vars": env, "worker_process_setup_hook": setup}, logging_level="WARNING",
             log_to_driver=True)
    # SIGTERM (`ray job stop`, a scheduler's preemption) stops the study as Ctrl-C does: Tune saves its
    # state, the parent run is marked KILLED, one line says how to resume. Installed after ray.init,
    # whose core worker puts a stack-dumping handler on SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.getsignal(signal.SIGINT)(signal.SIGINT, frame))


def announce(cfg: StudyConfig) -> None:
    """Before the sweep: how many trials are planned and trained, and which cells flip signs."""
    planned, trained = planned_trials(cfg), trained_trials(cfg)
    shared = f" ({planned - trained} identical ones shared: λ = 0 and `none` do not depend on the variant or λ)" \
        if trained < planned else ""
    plan = cfg.search.seed_plan
    if plan:
        print(f"{cfg.name}: up to {planned} planned trials, {trained} to train{shared}: a sequential seed plan, "
              f"looks at {', '.join(map(str, plan.looks()))} seeds; each wave trains only while a question "
              "of the verdict is undecided", flush=True)
    else:
        print(f"{cfg.name}: {planned} planned trials, {trained} to train{shared}", flush=True)
    flips = sign_flipping_cells(cfg)
    if flips:
        cells = ", ".join(f"η={lr:g} λ={wd:g}" for lr, wd in flips[:4]) + (" ..." if len(flips) > 4 else "")
        print(f"note: {len(flips)} cells have η·λ ≥ 1 ({cells}): the per-step factor 1 − η·λ ≤ 0 zeroes or "
              "flips every decayed weight; they run, and the report marks them", flush=True)


def run_study(cfg: StudyConfig, yes: bool = False, look=None) -> Path:
    """Run (or resume) every sweep of the study, owning its dir throughout; returns the study dir.

    ``look(study_dir) -> bool``: a sequential plan's look, called after each wave but the last (the
    analysis lives above this package); True stops the study there, every question decided."""
    preflight(cfg, yes)
    study_dir = prepare_study_dir(cfg)
    with owned(study_dir, "run"):
        _sweep(cfg, study_dir, look)
    return study_dir


def _sweep(cfg: StudyConfig, study_dir: Path, look=None) -> None:
    import ray
    from ray import tune

    from .shared import check_shared
    from ..track.client import DEADLINE_S, resolve_uri
    from ..track.tracking import saved_run, start_study
    from .tracking_watch import WATCHES, TrackingWatch, raise_if_lost

    if cfg.tracking.enabled:
        saved_run(cfg, study_dir)  # another store, or a copied study: refused before Ray starts
    if not cfg.remote:  # an object store has no half-written objects
        check_sweep_state(study_dir)
        remove_partial_writes(study_dir)
    if finished_already(cfg, study_dir):
        print(f"{cfg.name}: every one of its {planned_trials(cfg)} planned trials has finished; nothing to train")
        return
    sweeps = experiments(cfg)
    for name, _, _ in sweeps:  # a sweep state not ours, or trained trials without one: refused before Ray
        storage, root = sweep_storage(cfg)
        path, where = f"{root}/{name}", f"{cfg.remote or study_dir}/{name}"
        if tune.Tuner.can_restore(path, storage_filesystem=storage):
            check_seals(storage, path, where)
        elif storage.get_file_info(path).type != FileType.NotFound:
            refuse_if_trained(storage, path, where)
    announce(cfg)
    init_ray()
    # several nodes: each must see the study dir and a file tracking store, before a trial or a run exists
    check_shared(None if cfg.remote else study_dir, resolve_uri(cfg.tracking.uri) if cfg.tracking.enabled else None)
    tracking = None
    if cfg.tracking.enabled:
        # a study started before plans were recorded (or with a damaged one) gets it recorded now: a run or
        # a resume owns the study dir; reads only ever compute it in memory
        plan = read_plan(study_dir, cfg) or record_plan(study_dir, cfg)
        tracking = start_study(cfg, study_dir, (study_dir / STUDY_FILE).read_text(), plan).__dict__
        if cfg.remote:
            objectstore.push(study_dir, cfg.remote)
    resources = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    # trials run in their own working dirs: a relative storage path must not be resolved there
    study = cfg.model_dump(mode="json") | ({} if cfg.remote else {"storage": str(study_dir.parent)})
    pretrained = None
    if cfg.model.pretrain is not None:  # trained (or checked) here once; Ray's object store takes it to the trials
        from .pretrain import pretrained_state

        pretrained = pretrained_state(cfg)
    fn = tune.with_resources(tune.with_parameters(trainable, study=study, tracking=tracking, pretrained=pretrained),
                             resources)
    uri = tracking["uri"] if tracking else ""
    WATCHES.clear()  # this study's watches only: the one made here, and any Tune restores with its sweeps
    watch = TrackingWatch(uri, DEADLINE_S) if uri.startswith(("http://", "https://")) else None
    for k, (name, space, tune_kwargs) in enumerate(sweeps):
        total = sweep_size(space, tune_kwargs)
        storage, root = sweep_storage(cfg)
        path = f"{root}/{name}"
        restorable = tune.Tuner.can_restore(path, storage_filesystem=storage)
        # a wave that exists was asked for by the look before it (the same trials give the same look), so
        # it is always finished; otherwise the look decides whether the next wave trains at all
        if k and cfg.search.mode == "grid" and look is not None and not restorable and look(study_dir):
            return
        if restorable:  # sealed: checked above
            tuner = tune.Tuner.restore(path, fn, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=storage)
        else:
            if storage.get_file_info(path).type != FileType.NotFound:  # killed before its first state save
                storage.delete_dir(path)  # nothing was trained in it (checked above): start it afresh
            tuner = tune.Tuner(
                fn, param_space=space,
                tune_config=tune.TuneConfig(**tune_kwargs),
                run_config=tune.RunConfig(
                    name=name, storage_path=root, storage_filesystem=storage, verbose=0,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                    callbacks=[TidyTable(name, fixed_columns(cfg)), ProgressLine(total), NewestCheckpoint()],
                    stop=watch,
                ),
            )
        cpus = int(ray.cluster_resources().get("CPU", 0))
        done = len({r["trial_id"] for r in read_rows(study_dir) if r.get("experiment") == name
                    and r["status"] in ("TERMINATED", "ERROR")})
        left = f"{total - done} of {total} trials left to train" if done else f"{total} trials to train"
        waves = cfg.search.waves()
        wave = (f"wave {k + 1} of up to {len(waves)} (seeds {waves[k][0]}-{waves[k][-1]}): "
                if cfg.search.seed_plan and cfg.search.mode == "grid" else "")
        print(f"sweep: {wave}{left}, {cfg.resources.cpu:g} CPU each, {cpus} CPUs in Ray", flush=True)
        results = tuner.fit()
        raise_if_lost()
        finished = sum(bool(r.metrics) and r.metrics.get("finished") == 1 for r in results)
        if finished + results.num_errors < total:
            # Ctrl-C: Ray saved its state, then stopped every trial (marking them TERMINATED);
            # only a trial's own final report says it finished. The CLI says how to resume.
            raise KeyboardInterrupt


def finished_already(cfg: StudyConfig, study_dir: Path) -> bool:
    """Every planned trial finished (its own final report says so): a resume has nothing for Ray to do,
    so it starts none, and goes straight to the report."""
    try:
        rows = read_rows(study_dir) if (study_dir / "trials.csv").exists() else []
    except (OSError, ValueError, csv.Error):
        return False
    return len(rows) == planned_trials(cfg) and _intact(rows) and all(r["status"] == "TERMINATED" for r in rows)


def refuse_if_trained(storage, path: str, where: str) -> None:
    """A sweep folder without its state (``tuner.pkl``) but with trained trials is never started over:
    that would delete them. Killed before Ray's first state save, it holds no result and may go."""
    selector = FileSelector(path, recursive=True, allow_not_found=True)
    results = [i for i in storage.get_file_info(selector) if i.base_name == "result.json" and i.size]
    if results:
        raise UserError(f"{where} has {len(results)} trial(s) with results but no sweep state (tuner.pkl), so it "
                        f"cannot be resumed and is left as it is: study report reads its finished trials; start a "
                        f"new study with --set name=NEW to train the rest")


def check_sweep_state(study_dir: Path) -> None:
    """Refuse to resume from a sweep state Ray could not read back.

    Given such a file, ``Tuner.restore`` logs "Restarting experiment" and starts the sweep over
    (seen: it then failed naming a trial with no config; it could as well retrain every trial). Studies written by this version save
    through ``atomicfs`` and cannot be left that way by a kill; an older study, or a file damaged
    by hand, stops here. Pickles are checked by walking their opcodes, never by loading them.
    """
    for sweep in sorted(p.parent for p in study_dir.glob("*/tuner.pkl")):
        for path in sorted(sweep.iterdir()):
            name = path.name
            if not path.is_file() or name.startswith("."):
                continue
            kind = "JSON file" if name.startswith("experiment_state-") else "pickle"
            try:
                if kind == "JSON file":
                    json.loads(path.read_bytes())
                else:  # tuner.pkl and the search algorithm's states are pickles, whatever their suffix
                    ops = list(pickletools.genops(path.read_bytes()))
                    if ops[-1][0].name != "STOP":
                        raise ValueError("cut short")
            except (OSError, ValueError, IndexError):
                raise UserError(f"{path} is damaged ({path.stat().st_size} bytes, not a complete {kind}), so Ray "
                                f"cannot resume that sweep: its finished trials stay in trials.csv (study report "
                                f"{study_dir} reports them); start a new study with --set name=NEW to train the rest") \
                    from None
