"""The grad_mode context manager: set, restore, survive eval()/train(), refuse unknown modes."""

from __future__ import annotations

import pytest
import torch

from robench.errors import BadSpec, UsageError
from robench.snn.neurons import spiking_neurons
from robench.snn.paths import GradMode, get_grad_mode, grad_mode, parse_grad_mode, set_grad_mode


def _modes(model) -> list[GradMode]:
    return [n.grad_mode for n in spiking_neurons(model)]


def test_sets_every_neuron_and_restores_each_ones_own_mode(tiny_model):
    neurons = spiking_neurons(tiny_model)
    assert len(neurons) >= 3
    neurons[1].grad_mode = GradMode.rate  # a mixed model: each neuron must get its own mode back
    before = _modes(tiny_model)
    assert get_grad_mode(tiny_model) is None
    with grad_mode(tiny_model, "rate") as m:
        assert m is tiny_model
        assert _modes(tiny_model) == [GradMode.rate] * len(neurons)
        assert get_grad_mode(tiny_model) == GradMode.rate
    assert _modes(tiny_model) == before


def test_survives_eval_and_train_inside(tiny_model):
    tiny_model.train()
    with grad_mode(tiny_model, GradMode.rate):
        tiny_model.eval()  # attack libraries call eval() inside every attack
        assert _modes(tiny_model) == [GradMode.rate] * len(spiking_neurons(tiny_model))
        tiny_model.train()
        assert get_grad_mode(tiny_model) == GradMode.rate
    assert get_grad_mode(tiny_model) == GradMode.bptt
    assert tiny_model.training  # the context does not touch train/eval


def test_restores_on_exception(tiny_model):
    with pytest.raises(RuntimeError, match="boom"), grad_mode(tiny_model, "rate"):
        assert get_grad_mode(tiny_model) == GradMode.rate
        raise RuntimeError("boom")
    assert get_grad_mode(tiny_model) == GradMode.bptt


def test_nested_contexts_restore_in_order(tiny_model):
    with grad_mode(tiny_model, "rate"):
        with grad_mode(tiny_model, "bptt"):
            assert get_grad_mode(tiny_model) == GradMode.bptt
        assert get_grad_mode(tiny_model) == GradMode.rate
    assert get_grad_mode(tiny_model) == GradMode.bptt


@pytest.mark.parametrize("bad", ["rga", "BPTT", ""])
def test_unknown_mode_lists_choices(tiny_model, bad):
    with pytest.raises(BadSpec, match=r"unknown gradient mode .*choose from: bptt, rate"):
        with grad_mode(tiny_model, bad):
            pass
    assert issubclass(BadSpec, UsageError)
    with pytest.raises(BadSpec):
        set_grad_mode(tiny_model, bad)
    assert get_grad_mode(tiny_model) == GradMode.bptt  # nothing was changed by the refused call


def test_parse_and_set(tiny_model):
    assert parse_grad_mode("rate") is GradMode.rate
    set_grad_mode(tiny_model, "rate")
    assert get_grad_mode(tiny_model) == GradMode.rate
    set_grad_mode(torch.nn.Linear(2, 2), "bptt")  # a model without neurons takes its own gradient only
    with pytest.raises(BadSpec, match="'rate' needs spiking neurons.*paths for it: bptt"):
        set_grad_mode(torch.nn.Linear(2, 2), "rate")  # never run under another path's name


def test_forward_is_identical_in_both_modes_but_gradients_differ(tiny_model, tiny_data):
    x, y = tiny_data[0][:8], tiny_data[1][:8]
    grads, outs = {}, {}
    for mode in ("bptt", "rate"):
        xi = x.clone().requires_grad_(True)
        with grad_mode(tiny_model, mode):
            out = tiny_model(xi)
            torch.nn.functional.cross_entropy(out, y).backward()
        outs[mode], grads[mode] = out.detach(), xi.grad
    assert torch.equal(outs["bptt"], outs["rate"])
    assert not torch.allclose(grads["bptt"], grads["rate"])  # the mode really switched the backward
