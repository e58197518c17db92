"""robench: a benchmark for the adversarial robustness of spiking neural networks."""

from .errors import RobenchError
from .gradients import GradMode, grad_mode
from .models import ModelConfig, build_model
from .neurons import SpikingNeuron

__version__ = "0.1.0"
__all__ = ["GradMode", "ModelConfig", "RobenchError", "SpikingNeuron", "build_model", "grad_mode"]
