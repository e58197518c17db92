"""robench: a benchmark for the adversarial robustness of spiking neural networks.

The public names below are imported lazily, so `robench report` (pandas and matplotlib only) never loads torch.
The one-call evaluation is ``robench.evaluate(model, x, y, eps=8/255)`` (:mod:`robench.api`).
"""

from importlib import import_module

__version__ = "0.1.0"
_PUBLIC = {
    "RobenchError": "errors", "GradMode": "snn.paths", "grad_mode": "snn.paths", "ModelConfig": "snn.models",
    "build_model": "snn.models", "SpikingNeuron": "snn.neurons", "load_dataset": "data", "load_model": "zoo",
    "evaluate": "api", "benchmark": "api", "EvalResult": "api",
}
_RENAMED = {"load_dataset": "load", "load_model": "load"}  # public name -> the owning module's name
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        mod = import_module(f".{_PUBLIC[name]}", __name__)
        return getattr(mod, _RENAMED.get(name, name))
    raise AttributeError(f"module 'robench' has no attribute {name!r}")
