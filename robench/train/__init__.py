"""Training: the configuration (``config``, torch-free), the recipes and the training loop, and the job that
writes a zoo entry (``loop``).

The public names below are imported lazily, so that the zoo can check a card's recipe against
:class:`~robench.train.config.TrainConfig` without importing the loop (which imports the zoo):
``from robench.train import TrainConfig, train`` works as before.
"""

from importlib import import_module

_PUBLIC = {
    "config": ("RAT_BETA", "RAT_BETA_DEFAULT", "RECIPE_SHORT", "WEIGHT_DECAY", "TrainConfig"),
    "loop": ("JOB_OPTIONS", "RECIPES", "TrainJob", "TrainResult", "default_id", "job_from_options", "mppd_penalty",
             "mppd_sequence", "orthogonal_retraction", "orthogonality_step", "robust_loss", "run_job", "train"),
}
_OWNER = {name: mod for mod, names in _PUBLIC.items() for name in names}
__all__ = sorted(_OWNER)


def __getattr__(name: str):
    if name in _OWNER:
        return getattr(import_module(f".{_OWNER[name]}", __name__), name)
    raise AttributeError(f"module 'robench.train' has no attribute {name!r}")
