"""``python -m study``: a thin layer that wires the stages together.

    study run CONFIG [--set k=v ...]     run (or resume) a study, then its report
    study resume STUDY_DIR               finish an interrupted study
    study status STUDY_DIR               done / running / pending / errored
    study report STUDY_DIR [--metric M] [--baseline wd] [--json]
    study compare STUDY_DIR STUDY_DIR... [--out DIR]   pool several studies' answers
    study suite CONFIG_OR_DIR... [--set k=v ...]  run every study of a suite, then compare them
    study trial CONFIG --variant V --lr X --weight-decay Y --seed S   one cell, in-process
    study ui [--port 5000] [--host 127.0.0.1] [--uri URI]
    study data fetch cifar10 --root DIR
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .present.commands import invocation


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every default that means something shown, once (not "None", not a flag's False)."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    helpful = {"formatter_class": _ShowDefaults}
    where = "a study dir (studies/NAME) or its object-store address (s3://BUCKET/PREFIX/NAME)"
    p = argparse.ArgumentParser(prog="study", description="LPWD robustness studies on Ray Tune + MLflow.", **helpful)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a study from a YAML config", **helpful)
    run.add_argument("config", help="the study's YAML file (configs/quick.yaml; every key in configs/README.md)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key, YAML value (--set train.epochs=3 --set search.seeds=[0,1]); "
                          "repeatable")
    run.add_argument("--no-report", action="store_true", help="skip the report at the end")
    run.add_argument("--yes", action="store_true", help="run a study of more than 5000 planned trials")
    resume = sub.add_parser("resume", help="finish an interrupted study", **helpful)
    resume.add_argument("study_dir", help=where)
    status = sub.add_parser("status", help="progress of a study", **helpful)
    status.add_argument("study_dir", help=where)
    report = sub.add_parser("report", help="the verdict, robustness metrics, heatmaps and curves", **helpful)
    report.add_argument("study_dir", help=where)
    report.add_argument("--metric", default="test_acc_at_best_val",
                        help="reported test metric: test_acc_at_best_val, final_test_acc, "
                             "paper_top10_test_acc (the paper's, test-selected epochs); cells are always chosen on validation")
    report.add_argument("--baseline", default="wd", help="arm every other arm is compared with (wd = AdamW/SGDW)")
    report.add_argument("--test", default="t", choices=["t", "wilcoxon", "signflip"],
                        help="paired test per cell over seeds")
    report.add_argument("--correction", default="holm", choices=["holm", "bh", "none"],
                        help="multiple-comparison correction across cells")
    report.add_argument("--out", default=None, help="folder for report.html and figures (default: the study dir)")
    report.add_argument("--verbose", action="store_true",
                        help="print every part of the verdict: each arm's exploratory numbers, the decay-mass "
                             "decomposition λ by λ, the scope and limits (report.html has them folded)")
    report.add_argument("--json", action="store_true",
                        help="print the answers and summary numbers as JSON (robustness.json's content) and stop: "
                             "no figures, no MLflow, nothing written")
    compare = sub.add_parser("compare", help="pool the answers of several finished studies (forest plot, pooled verdict)",
                             **helpful)
    compare.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR", help=f"two or more finished studies: {where}")
    _compare_options(compare)
    suite = sub.add_parser("suite", help="run (or resume) several studies in turn, then compare them", **helpful)
    suite.add_argument("suite", nargs="+", metavar="CONFIG_OR_DIR",
                       help="study YAML files, or a folder of them (configs/suite)")
    suite.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="applied to every study of the suite")
    suite.add_argument("--yes", action="store_true", help="run studies of more than 5000 planned trials")
    _compare_options(suite)
    trial = sub.add_parser("trial", help="run one cell in this process (no Ray, no study dir touched)", **helpful)
    trial.add_argument("config", help="the study YAML whose data, model and training the cell uses")
    trial.add_argument("--variant", required=True, help="none, l2, wd, rwd, pwd, lpwd, cwd, or lpwd:SCHEDULE "
                                                        "(lpwd:linear_normalized)")
    trial.add_argument("--lr", type=float, required=True, help="learning rate η")
    trial.add_argument("--weight-decay", type=float, required=True, help="decay rate λ")
    trial.add_argument("--seed", type=int, default=0, help="the seed (init, split and batch order)")
    trial.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key (as for run)")
    ui = sub.add_parser("ui", help="the MLflow UI on the study's tracking store", **helpful)
    ui.add_argument("--port", type=int, default=5000, help="port to serve on (refused if in use)")
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on")
    ui.add_argument("--uri", default=None, help="tracking store (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    data = sub.add_parser("data", help="dataset tools", **helpful)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download a CIFAR archive and check its MD5", **helpful)
    fetch.add_argument("name", help="which archive: cifar10 or cifar100")
    fetch.add_argument("--root", required=True, help="folder to put it in (the config's data.root)")
    return p


def _compare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="comparison", help="folder for compare.html, compare.json and the forest plots "
                                                      "(default ./comparison)")
    p.add_argument("--arms", default=None, help="comma-separated arms to compare with the baseline (default: every "
                                               "arm of the first study)")
    p.add_argument("--uri", default=None, help="MLflow store for the comparison's run (default: the first study's, "
                                              "else MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the comparison to MLflow")


def _next_steps(cfg) -> str:
    from .track.tracking import arms_url, parent_of, trials_url

    me, shown = invocation(), cfg.remote or cfg.study_dir
    lines = [f"results: {shown}", f"  {me} status {shown}", f"  {me} report {shown}"]
    run = parent_of(cfg.study_dir)
    if run is not None:
        if run.uri.startswith(("http://", "https://")):
            lines.append(f"  MLflow, the trials: {trials_url(run)}")
            lines.append(f"  MLflow, the arms side by side: {arms_url(run)}")
        else:
            lines.append(f"  {me} ui --uri {run.uri}   # then open the trials at")
            lines.append(f"    {trials_url(run)}")
            lines.append(f"    and the arms side by side at {arms_url(run)}")
    return "\n".join(lines)


def cmd_run(cfg, report: bool, yes: bool = False, resume: str | None = None) -> int:
    """Run (or resume) one study and report it. ``resume``: the command that resumes it, when it is part of
    something larger (a suite resumes as one); by default ``study resume DIR``."""
    from .run import localray, sweep
    from .run.ray_logs import abandon_trials
    from .run.tracking_watch import TrackingLost
    from .store.studydir import owned

    study_dir, shown = cfg.study_dir, cfg.remote or cfg.study_dir
    resume = resume or f"{invocation()} resume {shown}"
    localray.resume_hint = resume
    sweep.preflight(cfg, yes)
    sweep.prepare_study_dir(cfg)
    with owned(study_dir, "run"), pushed(cfg):  # the sweep and its report, one owner throughout
        try:
            from .define.config import baseline_arm

            baseline = baseline_arm(cfg)
            look = None
            if cfg.search.seed_plan and cfg.search.mode == "grid":  # a sequential plan: a look after each wave
                from functools import partial

                from .present.report import look as report_look

                look = partial(report_look, baseline=baseline)
            sweep.run_study(cfg, yes, look)
            if report:  # the report ends the parent run, FINISHED, with the verdict attached
                from .present.report import write_report

                print("report: the claims, the verdict and the figures", flush=True)
                from .store.loader import load

                write_report(load(study_dir, write_back=True), baseline=baseline)
            else:  # every trial is done
                _end_parent(study_dir, "FINISHED")
        except KeyboardInterrupt:
            # a second Ctrl-C while Ray shuts down ends the process at once, without Ray's atexit traceback
            signal.signal(signal.SIGINT, lambda *_: os._exit(130))
            abandon_trials()
            _end_parent(study_dir, "KILLED")
            print(f"\ninterrupted; nothing finished is lost. Resume with: {resume}", file=sys.stderr)
            localray.discard_logs()  # nothing went wrong: Ray's logs are not needed
            return 130
        except TrackingLost as e:  # the server is gone: nothing more can be written to it
            abandon_trials()
            raise UserError(f"{e}. Once it answers, resume with: {resume}") from None
        except UserError:
            raise  # found before any trial ran (a copied study, a changed store), or a report option
        except OSError as e:  # the study dir became unwritable, the disk filled, ...
            abandon_trials()
            _end_parent(study_dir, "FAILED")
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise UserError(f"{study_dir}: {e.strerror or e}{where}; fix it, then resume with: {resume}") from None
        except Exception:
            _end_parent(study_dir, "FAILED")
            for logs in localray.logs():
                print(f"local Ray's logs: {logs}", file=sys.stderr)
            raise
    localray.discard_logs()
    print(_next_steps(cfg))
    return 0


@contextmanager
def pushed(cfg, announce: bool = False):
    """An object-store study's files go back to the bucket when the command ends, however it ends."""
    try:
        yield
    finally:
        if cfg.remote:
            from .store.objectstore import push

            try:
                push(cfg.study_dir, cfg.remote)
                if announce:
                    print(f"copied to {cfg.remote}/")
            except OSError as e:
                print(f"note: could not copy {cfg.study_dir} back to {cfg.remote} ({str(e).splitlines()[0][:200]}); "
                      "the next run, resume or report copies it", file=sys.stderr)


def _end_parent(study_dir: Path, status: str) -> None:
    """Best effort: a crash must still say what happened, not fail again on MLflow."""
    from .track.tracking import end_study

    try:
        end_study(study_dir, status)
    except Exception as e:  # noqa: BLE001 (the original error matters more)
        print(f"note: could not mark the MLflow parent run {status} ({type(e).__name__})", file=sys.stderr)


def arms_of(cfg) -> list[str]:
    from .define.config import arms

    return [a["arm"] for a in arms(cfg)]


def cmd_status(study_dir: str) -> int:
    from .present.status import print_status

    from .store.loader import local_study_dir

    print_status(local_study_dir(study_dir), shown=study_dir)
    return 0


def cmd_trial(args) -> int:
    """One cell in this process: no Ray, no study dir, nothing of the study's records touched."""
    from lpwd import SCHEDULE_NAMES

    from .define.config import VARIANT_NAMES, did_you_mean, load_config
    from .run.trial import PrintReporter, run_trial

    cfg = load_config(args.config, args.overrides)
    variant, _, schedule = args.variant.partition(":")
    if variant not in VARIANT_NAMES:
        guess = did_you_mean(args.variant, [*VARIANT_NAMES, *(f"lpwd:{s}" for s in SCHEDULE_NAMES)])
        raise UserError(f"--variant {args.variant}: not a variant" + (f" (did you mean {guess}?)" if guess else "")
                        + f"; use one of {', '.join(VARIANT_NAMES)}, or lpwd:SCHEDULE")
    if schedule and variant != "lpwd":
        raise UserError(f"--variant {args.variant}: only lpwd takes a layer schedule (lpwd:SCHEDULE, one of "
                        f"{list(SCHEDULE_NAMES)})")
    if schedule and schedule not in SCHEDULE_NAMES:
        guess = did_you_mean(schedule, SCHEDULE_NAMES)
        raise UserError(f"--variant {args.variant}: unknown layer schedule" + (f" (did you mean lpwd:{guess}?)" if guess
                        else "") + f"; use lpwd:SCHEDULE with one of {list(SCHEDULE_NAMES)}")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed {args.seed}: use a seed from 0 to 2**32 - 1")
    params = {"variant": variant, "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed,
              **({"layer_schedule": schedule} if schedule else {})}
    try:  # the optimizer's own argument checks, before any data is loaded
        import lpwd
        import torch

        lpwd.build_optimizer(torch.nn.Linear(1, 1), variant, args.lr, args.weight_decay, cfg.train.base,
                             layer_schedule=schedule or "linear")
    except ValueError as e:
        raise UserError(f"trial: {e}") from None
    tracking = None
    if cfg.tracking.enabled:
        from .track.tracking import single_trials

        tracking = single_trials(cfg)
    pretrained = None
    if cfg.model.pretrain is not None:
        from .run.pretrain import pretrained_state

        pretrained = pretrained_state(cfg)
    reporter = PrintReporter()
    metrics = run_trial(cfg, params, reporter, tracking, pretrained=pretrained)
    print(f"best val {100 * metrics['best_val_acc']:.1f} (test there {100 * metrics['test_acc_at_best_val']:.1f}), "
          f"final test {100 * metrics['final_test_acc']:.1f}" + (", diverged" if metrics["diverged"] else ""))
    if tracking is not None and reporter.last.get("mlflow_run_id"):
        from .track.tracking import run_url

        where = run_url(tracking, reporter.last["mlflow_run_id"])
        hint = "" if tracking.uri.startswith("http") else f"  (after: {invocation()} ui --uri {tracking.uri})"
        print(f"MLflow: {where}{hint}")
    return 0


def cmd_compare(given: list[str], args, times: dict[str, float] | None = None, name: str | None = None) -> int:
    """Compare finished studies; ``name``: the comparison's MLflow run (default: after the studies compared)."""
    from .analyse.compare import compare
    from .analyse.verdict import markdown
    from .present.comparison import load, terminal_table, write
    from .present.report import print_summary
    from .track.comparisons import log_run
    from .track.client import client, resolve_uri
    from .track.tracking import StudyRun, run_url

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for compare.html and its files (default ./comparison)")
    settings = [load(g) for g in given]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    result = compare(settings, arms)
    written = write(result, out, times)
    print_summary(terminal_table(result), result["parts"], "", title="across studies: each study's primary claims, arm − "
                  "baseline [95% t-interval over seeds]; pooled: random effects, HKSJ interval")
    print(f"comparison: {out / 'compare.html'}")
    if not args.no_tracking:
        first_run = next((s.run for s in settings if s.run is not None), None)
        uri = args.uri or (first_run.uri if first_run else resolve_uri(None))
        studies = [r["study"] for r in result["studies"]]
        name = name or "compare " + ", ".join(studies[:4]) + (f" +{len(studies) - 4} more" if len(studies) > 4 else "")
        rid = log_run(result, markdown(result["parts"]), written, uri, name)
        exp = client(uri).get_run(rid).info.experiment_id
        where = run_url(StudyRun(uri, exp, rid), rid)
        print(f"MLflow: {where}" + ("" if uri.startswith("http") else f"  (after: {invocation()} ui --uri {uri})"))
    return 0


def cmd_suite(args, command_line: list[str]) -> int:
    """Every study of the suite (validated first, all of them, before anything trains), run or resumed in
    turn, then compared. Interrupted, it resumes as one: the same command again (``command_line``)."""
    import shlex
    import time

    from .define.config import load_config, repeated_values
    from .run import sweep

    configs = []
    for given in map(Path, args.suite):
        found = sorted(given.glob("*.yaml")) if given.is_dir() else [given]
        if not found:
            raise UserError(f"{given}: no study configs (*.yaml) there; pass a folder like configs/suite")
        configs += found
    cfgs = [load_config(str(c), args.overrides) for c in configs]
    names = [c.name for c in cfgs]
    repeated = repeated_values(names)
    if repeated:
        raise UserError(f"suite: study name {', '.join(repeated)} is used twice; give each config its own name")
    for path, cfg in zip(configs, cfgs):  # everything checkable, for every study, before the first trial
        try:
            sweep.preflight(cfg, args.yes)
            sweep.check_study_dir(cfg)
        except UserError as e:
            raise UserError(f"suite: {path}: {e}; nothing was started") from None
    resume = f"{invocation()} {shlex.join(command_line)}"
    lefts = [trials_left(c) for c in cfgs]
    total = sum(lefts)
    times, trained, began_suite = [], 0, time.perf_counter()
    for i, (cfg, mine) in enumerate(zip(cfgs, lefts), 1):
        pace = ""
        if trained:
            left = (time.perf_counter() - began_suite) / trained * (total - trained)
            pace = f", ETA of the suite {left / 60:.0f} min at this run's pace"
        print(f"\nstudy {i} of {len(cfgs)}: {cfg.name} ({mine} trials left to train; the suite: {trained} of {total} "
              f"trained in this run{pace})", flush=True)
        began = time.perf_counter()
        code = cmd_run(cfg, report=True, yes=args.yes, resume=resume)
        if code:
            return code
        trained += mine
        times.append((cfg.name, time.perf_counter() - began))
    print("\n" + "\n".join(f"{name}: {seconds / 60:.1f} min" for name, seconds in times))
    return cmd_compare([c.remote or str(c.study_dir) for c in cfgs], args, dict(times),
                       name="suite " + ", ".join(Path(s).name for s in args.suite))


def trials_left(cfg) -> int:
    """Trials a study still has to train: a resumed suite's finished studies add nothing to its ETA.
    (A study in object storage is counted whole: its table is read when its turn comes.)"""
    from .define.config import trained_trials
    from .store.table import read_rows

    total = trained_trials(cfg)
    if cfg.remote:
        return total
    done = {r["trial_id"] for r in read_rows(cfg.study_dir) if r.get("status") in ("TERMINATED", "ERROR")}
    return max(0, total - len(done))


def cmd_ui(args) -> int:
    import socket

    from .track.client import resolve_uri
    from .track.tracking import TRAINING_VIEW

    uri = resolve_uri(args.uri)
    with socket.socket() as probe:  # the printed address must be the one that opens
        try:
            probe.bind((args.host, args.port))
        except OSError as e:
            raise UserError(f"--port {args.port}: {args.host}:{args.port} is not free ({e.strerror}; another "
                            f"MLflow UI?); pass another, e.g. --port {args.port + 1}") from None
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port}/#/?{TRAINING_VIEW}  (Ctrl-C to stop)", flush=True)
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", args.host, "--port", str(args.port), "--workers", "1"])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("run", "resume", "suite"):
        from .run.localray import prefer_loopback

        prefer_loopback()  # before anything imports ray
    try:
        if args.command == "run":
            from .define.config import load_config

            return cmd_run(load_config(args.config, args.overrides), not args.no_report, args.yes)
        if args.command == "resume":
            from .store.loader import local_study_dir
            from .store.studydir import load_study

            return cmd_run(load_study(local_study_dir(args.study_dir)), True)
        if args.command == "status":
            return cmd_status(args.study_dir)
        if args.command == "report":
            from .present.report import report_json, write_report
            from .store.loader import load, local_study_dir
            from .store.studydir import load_study, owned

            if args.json:  # reads only: no lock, nothing written, no figures
                import json

                print(json.dumps(report_json(load(args.study_dir), args.metric, args.baseline, args.test,
                                             args.correction), indent=1))
                return 0
            study_dir = local_study_dir(args.study_dir)
            cfg = load_study(study_dir)  # refuses a path that is not a study, before the lock
            with owned(study_dir, "report"), pushed(cfg, announce=True):
                write_report(load(study_dir, write_back=True), args.metric, args.baseline, args.test, args.correction,
                             Path(args.out) if args.out else None, attach_to_mlflow=args.out is None,
                             verbose=args.verbose)
            return 0
        if args.command == "trial":
            return cmd_trial(args)
        if args.command == "compare":
            return cmd_compare(args.study_dirs, args)
        if args.command == "suite":
            return cmd_suite(args, list(argv if argv is not None else sys.argv[1:]))
        if args.command == "ui":
            return cmd_ui(args)
        if args.command == "data":
            from .run.data import fetch

            print(fetch(args.name, args.root))
            return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if args.command not in ("report", "data"):
            raise
        # --out or --root a folder that cannot be written: the user's to change, not a bug
        option = "--out" if args.command == "report" else "--root"
        print(f"error: {e.filename or ''}: {e.strerror or e}; give {option} a folder you can write", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
