"""A resumed trial's checkpoint bookkeeping follows its folder, on Ray's own Trial objects."""

from __future__ import annotations

from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial

from study.run.restart_point import point_at_newest

tune.register_trainable("restart_point_test", lambda config: None)


def trial_with_checkpoints(tmp_path, on_disk: list[int], known: int | None) -> Trial:
    """A trial as Ray restores it from a saved state that knew checkpoint ``known``; ``on_disk`` is what exists."""
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="sweep", trial_dir_name="t")
    trial = Trial("restart_point_test", config={}, storage=storage,
                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    for index in on_disk:
        folder = tmp_path / "sweep" / "t" / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"state")
    if known is not None:
        path = str(tmp_path / "sweep" / "t" / f"checkpoint_{known:06d}")
        trial.run_metadata.checkpoint_manager.register_checkpoint(
            _TrainingResult(checkpoint=tune.Checkpoint(path), metrics={"training_iteration": known + 1}))
        trial.storage.current_checkpoint_index = known
    return trial


def names(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "sweep" / "t").glob("checkpoint_*"))


def test_a_checkpoint_ray_pruned_after_its_last_save_is_replaced_by_the_newest_on_disk(tmp_path):
    trial = trial_with_checkpoints(tmp_path, on_disk=[2, 3], known=1)  # Ray deleted 0 and 1 after its save
    point_at_newest(trial)
    assert trial.checkpoint.path == str(tmp_path / "sweep" / "t" / "checkpoint_000003")
    trial.storage._update_checkpoint_index({})  # what Ray does before writing the next checkpoint
    assert trial.storage.checkpoint_dir_name == "checkpoint_000004"  # after the newest, over nothing


def test_an_older_checkpoint_than_the_trial_wrote_moves_on_and_ray_prunes_as_it_would_have(tmp_path):
    trial = trial_with_checkpoints(tmp_path, on_disk=[1, 2, 3], known=1)
    point_at_newest(trial)
    assert trial.checkpoint.path.endswith("checkpoint_000003")
    assert names(tmp_path) == ["checkpoint_000002", "checkpoint_000003"]  # num_to_keep=2


def test_nothing_left_on_disk_means_a_fresh_start_not_a_failing_restore(tmp_path):
    trial = trial_with_checkpoints(tmp_path, on_disk=[], known=4)
    point_at_newest(trial)
    assert trial.latest_checkpoint_result is None
    assert trial.storage.current_checkpoint_index == 4  # names already used are not reused


def test_bookkeeping_that_matches_the_folder_is_left_alone(tmp_path):
    trial = trial_with_checkpoints(tmp_path, on_disk=[2, 3], known=3)
    manager = trial.run_metadata.checkpoint_manager
    point_at_newest(trial)
    assert trial.run_metadata.checkpoint_manager is manager and trial.storage.current_checkpoint_index == 3
