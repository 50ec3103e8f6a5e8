"""A resumed trial restarts from the newest checkpoint on storage, not the one Ray's snapshot names.

Ray Tune saves its experiment state now and then, and deletes a trial's older
checkpoints (``num_to_keep``) as new ones arrive. After a hard kill the saved state
can therefore name a checkpoint that is gone, and Ray then fails the trial at every
try ("does not exist on storage anymore", ray-project/ray#27790); or it names an
older one than the trial wrote, with a checkpoint counter that would write the
trial's next checkpoints under the names of newer ones. Before the first trial of a
sweep starts, ``NewestCheckpoint`` points every unfinished trial at the newest
checkpoint in its folder and continues its counter after the highest one there.
``RayReporter.restore`` then loads the newest readable one (falling back past a
damaged one), so no epoch is trained twice.
"""

from __future__ import annotations

from pyarrow.fs import FileSelector, FileType
from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult

PREFIX = "checkpoint_"


def checkpoint_folders(fs, folder: str) -> dict[int, str]:
    """Index -> path of every checkpoint folder (``checkpoint_NNNNNN``) in a trial's folder on ``fs``."""
    listed = fs.get_file_info(FileSelector(folder, allow_not_found=True))
    return {int(i.base_name[len(PREFIX):]): i.path for i in listed
            if i.type == FileType.Directory and i.base_name.startswith(PREFIX) and i.base_name[len(PREFIX):].isdigit()}


def point_at_newest(trial) -> None:
    """Make the trial's checkpoint bookkeeping match its folder (nothing changes when it already does)."""
    fs = trial.storage.storage_filesystem
    found = checkpoint_folders(fs, trial.storage.trial_fs_path)
    known = trial.latest_checkpoint_result
    newest = max(found, default=-1)
    if (known.checkpoint.path if known else None) == found.get(newest):
        return
    manager = _CheckpointManager(checkpoint_config=trial.run_metadata.checkpoint_manager.checkpoint_config)
    metrics = dict(known.metrics) if known else {}
    for index in sorted(found):  # oldest first, so num_to_keep prunes as Ray would have
        manager.register_checkpoint(_TrainingResult(checkpoint=tune.Checkpoint(found[index], filesystem=fs),
                                                    metrics=metrics))
    trial.run_metadata.checkpoint_manager = manager
    trial.storage.current_checkpoint_index = max(newest, trial.storage.current_checkpoint_index)


class NewestCheckpoint(tune.Callback):
    """Driver-side, once per driver process: at the sweep's first step, before any trial starts."""

    def __getstate__(self) -> dict:
        return {}  # pickled with the tuner: a restored sweep checks again

    def on_step_begin(self, iteration, trials, **info):
        if getattr(self, "_checked", False):
            return
        self._checked = True
        for trial in trials:
            if trial.status != "TERMINATED":
                point_at_newest(trial)
