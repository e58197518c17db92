"""Training: the configuration (``config``, torch-free), the recipes and the MPPD loss (``recipes``), the
resumable loop (``loop``), and the job that turns options into a zoo entry (``job``, the only part that imports
the zoo).

The public names below are imported lazily, so that the zoo can check a card's recipe against
:class:`~robench.train.config.TrainConfig` without importing any training code (the job imports the zoo):
``from robench.train import TrainConfig, train`` works as before.
"""

from importlib import import_module

_PUBLIC = {
    "config": ("RAT_BETA", "RAT_BETA_DEFAULT", "RECIPE_SHORT", "WEIGHT_DECAY", "TrainConfig"),
    "recipes": ("RECIPES", "mppd_penalty", "mppd_sequence", "orthogonal_retraction", "orthogonality_step",
                "robust_loss"),
    "loop": ("TrainResult", "train"),
    "job": ("JOB_OPTIONS", "TrainJob", "default_id", "job_from_options", "run_job"),
}
_OWNER = {name: mod for mod, names in _PUBLIC.items() for name in names}
__all__ = sorted(_OWNER)


def __getattr__(name: str):
    if name in _OWNER:
        return getattr(import_module(f".{_OWNER[name]}", __name__), name)
    raise AttributeError(f"module 'robench.train' has no attribute {name!r}")
