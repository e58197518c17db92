"""Gradient modes ``bptt`` and ``rate`` (PAPER.md §4), switchable on any robench model without rebuilding it.

The mode is held by every spiking neuron and set with a context manager on the model, separate from
train/eval, because attack libraries call ``model.eval()`` inside every attack::

    with grad_mode(model, "rate"):
        x_adv = attack(x, y)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ..errors import BadSpec
from .neurons import GradMode, rate_slope, spiking_neurons

__all__ = ["GradMode", "grad_mode", "set_grad_mode", "get_grad_mode", "parse_grad_mode", "rate_slope"]


def parse_grad_mode(mode: str | GradMode) -> GradMode:
    try:
        return GradMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in GradMode)
        raise BadSpec(f"unknown gradient mode {mode!r}; choose from: {choices}") from None


def check_supported(model: nn.Module, mode: GradMode) -> None:
    """A model holding neurons of its own (an adapted SpikingJelly or snnTorch model) says through its
    ``check_grad_mode(mode)`` method whether ``mode`` applies to all of them; it raises a one-line BadSpec if not."""
    check = getattr(model, "check_grad_mode", None)
    if callable(check):
        check(mode.value)


def set_grad_mode(model: nn.Module, mode: str | GradMode) -> None:
    """Set the gradient mode on every spiking neuron of ``model`` (a model without neurons is left as is)."""
    mode = parse_grad_mode(mode)
    check_supported(model, mode)
    for n in spiking_neurons(model):
        n.grad_mode = mode


def get_grad_mode(model: nn.Module) -> GradMode | None:
    modes = {n.grad_mode for n in spiking_neurons(model)}
    return modes.pop() if len(modes) == 1 else None


@contextmanager
def grad_mode(model: nn.Module, mode: str | GradMode) -> Iterator[nn.Module]:
    """Use gradient ``mode`` on every neuron of ``model`` inside the block; restore each neuron's mode after."""
    mode = parse_grad_mode(mode)
    check_supported(model, mode)
    neurons = spiking_neurons(model)
    saved = [n.grad_mode for n in neurons]
    try:
        for n in neurons:
            n.grad_mode = mode
        yield model
    finally:
        for n, m in zip(neurons, saved, strict=True):
            n.grad_mode = m
