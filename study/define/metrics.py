"""What a trial reports and what it is called: the names Ray, MLflow and ``trials.csv`` share.

Kept apart from ``study.run.trial`` (which needs torch) so that reading a study's table,
``study status`` and ``study report --json`` import no training code.
"""

# every metric a trial reports, named the same in Ray, MLflow and trials.csv
EPOCH_METRICS = [
    "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "best_val_acc",
    "test_acc_at_best_val", "r_op", "decay_fraction", "weight_norm", "lr_now", "diverged",
    "final_test_acc", "paper_top10_test_acc", "images_per_s",
]
TRIAL_PARAMS = ["arm", "variant", "layer_schedule", "lr", "weight_decay", "seed"]
# accuracies: fractions in Ray and trials.csv, percentage points in MLflow (as in the report and its claims)
ACCURACIES = frozenset(m for m in EPOCH_METRICS if "_acc" in m)



def trial_name(params: dict) -> str:
    """``lpwd η=0.003 λ=0.5 seed 0``: the arm, then the cell, unambiguous."""
    arm = params.get("arm", params["variant"])
    return f"{arm} η={params['lr']:.3g} λ={params['weight_decay']:.3g} seed {params['seed']}"


def trial_params(config: dict) -> dict:
    """A Ray trial's params: grid trials carry them under ``cell``, Optuna trials flat."""
    return config.get("cell", config)
