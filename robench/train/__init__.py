"""Training: the configuration and recipes, the training loop and the job that writes a zoo entry (``loop``).
Its public names are re-exported here, so ``from robench.train import TrainConfig, train`` works."""

from .loop import (
    JOB_OPTIONS,
    RAT_BETA,
    RAT_BETA_DEFAULT,
    RECIPE_SHORT,
    RECIPES,
    WEIGHT_DECAY,
    TrainConfig,
    TrainJob,
    TrainResult,
    default_id,
    job_from_options,
    mppd_penalty,
    mppd_sequence,
    orthogonal_retraction,
    orthogonality_step,
    robust_loss,
    run_job,
    train,
)

__all__ = [
    "JOB_OPTIONS", "RAT_BETA", "RAT_BETA_DEFAULT", "RECIPE_SHORT", "RECIPES", "WEIGHT_DECAY", "TrainConfig",
    "TrainJob", "TrainResult", "default_id", "job_from_options", "mppd_penalty", "mppd_sequence",
    "orthogonal_retraction", "orthogonality_step", "robust_loss", "run_job", "train",
]
