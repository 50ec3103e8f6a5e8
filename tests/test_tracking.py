"""MLflow bookkeeping of a trial, in a real SQLite store."""

from study.track.tracking import StudyRun, TrialRun, client


def test_a_trial_resumed_from_an_older_checkpoint_logs_no_epoch_twice(tmp_path):
    """Its newest checkpoint damaged, a trial falls back to an older one and retrains epochs MLflow
    already holds: each epoch stays in the run once, with its first value."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = client(uri)
    exp = c.create_experiment("resumed")
    parent = c.create_run(exp).info.run_id
    study = StudyRun(uri, exp, parent)
    first = TrialRun(study, None, "t", {"seed": 0}, {"ray_trial_id": "t0"})
    for epoch in range(4):
        first.log_epoch({"val_acc": 0.1 * epoch}, epoch)
    first.flush()
    again = TrialRun(study, first.run_id, "t", {"seed": 0}, {"ray_trial_id": "t0"})  # from epoch 1's checkpoint
    for epoch in range(2, 6):
        again.log_epoch({"val_acc": 0.5 + 0.1 * epoch}, epoch)
    again.finish()
    history = sorted((m.step, round(m.value, 4)) for m in c.get_metric_history(first.run_id, "val_acc"))
    assert history == [(0, 0.0), (1, 10.0), (2, 20.0), (3, 30.0), (4, 90.0), (5, 100.0)]  # accuracies in points
