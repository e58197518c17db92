"""Tiny SpikingJelly, snnTorch and plain PyTorch models for the foreign-model tests.

The tests copy this file into a temporary code folder and import it as a zoo entry point (``tinynets:<function>``);
inputs are Fashion-MNIST sized (``[B, 1, 28, 28]``), pooled to 7x7 first so that every model stays tiny.
"""

import snntorch as snn
import torch
from snntorch import surrogate as snn_surrogate
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn


def sj(kind="lif", step="m", decay_input=True, detach_reset=False):
    """Pool -> conv -> BN -> one SpikingJelly neuron layer -> linear read-out (multi-step ``[T, B, 10]``)."""
    make = {
        "lif": lambda: neuron.LIFNode(tau=2.0, decay_input=decay_input, detach_reset=detach_reset, step_mode=step),
        "if": lambda: neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=detach_reset, step_mode=step),
        "clif": lambda: neuron.ComplementaryLIFNode(step_mode=step),
        "soft": lambda: neuron.IFNode(v_reset=None, step_mode=step),
        "plif": lambda: neuron.ParametricLIFNode(surrogate_function=surrogate.ATan(), detach_reset=detach_reset,
                                                 step_mode=step),
        "nofire": lambda: NoFire(step_mode=step),
    }[kind]
    return nn.Sequential(layer.MaxPool2d(4, step_mode=step), layer.Conv2d(1, 4, 3, padding=1, step_mode=step),
                         layer.BatchNorm2d(4, step_mode=step), make(), layer.Flatten(step_mode=step),
                         layer.Linear(4 * 7 * 7, 10, step_mode=step))


class NoFire(neuron.IFNode):
    """A SpikingJelly neuron that never calls its surrogate_function (a clamp instead of spikes)."""

    def multi_step_forward(self, x_seq):
        return x_seq.clamp(0, 1)


def snn_subtract(beta=0.8, output=False):
    """snnTorch ``Leaky`` as the tutorials write it: subtract reset, ``fast_sigmoid``; with ``output``, a ``Leaky``
    read-out layer that returns ``(spk, mem)`` (single-step ``[B, 10]`` each)."""
    def leaky(**kw):
        return snn.Leaky(beta=beta, spike_grad=snn_surrogate.fast_sigmoid(), init_hidden=True, **kw)

    head = [leaky(output=True)] if output else []
    return nn.Sequential(nn.MaxPool2d(4), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), leaky(), nn.Flatten(),
                         nn.Linear(4 * 7 * 7, 10), *head)


class DictOut(nn.Module):
    """A multi-step SpikingJelly net returning ``{"spikes": ..., "logits": ...}``."""

    def __init__(self):
        super().__init__()
        self.net = sj()

    def forward(self, x):
        out = self.net(x)
        return {"spikes": (out > 0).float(), "logits": out}


def dict_out():
    return DictOut()


def snn_net(beta=0.8):
    """The same with an snnTorch ``Leaky`` nested in a container (single-step ``[B, 10]``)."""
    leaky = snn.Leaky(beta=beta, init_hidden=True, reset_mechanism="zero")
    return nn.Sequential(nn.MaxPool2d(4), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Sequential(leaky),
                         nn.Flatten(), nn.Linear(4 * 7 * 7, 10))


class Counter(nn.Module):
    """A stateful model: its output depends on how often it was called."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1)) + self.calls


def stateful():
    return Counter()


def probabilities():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.Softmax(-1))


def plain():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


class Sampling(nn.Module):
    """A rate-coded model whose forward samples: Bernoulli spikes from the image (straight-through gradient)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        s = torch.bernoulli(x.clamp(0, 1))
        return self.fc((x + (s - x).detach()).flatten(1))


def sampling():
    return Sampling()
