"""Surrogate derivatives against hand-computed values and float64 finite differences of their primitives; the
registry and its one-line errors; the ASSG statistics by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robench.errors import BadSpec
from robench.snn.neurons import Triangle
from robench.snn.surrogates import (
    SURROGATES,
    AssgState,
    arctan_backward,
    rectangle_backward,
    sigmoid_backward,
    triangle_backward,
)

F64 = torch.float64


def _d(name: str, value: float, x: float) -> float:
    return SURROGATES.get(name)(value).derivative(torch.tensor([x], dtype=F64)).item()


@pytest.mark.parametrize("name, value, x, expect", [
    ("triangle", 1.0, 0.0, 1.0), ("triangle", 1.0, -0.25, 0.75), ("triangle", 0.5, 0.25, 1.0),
    ("triangle", 0.5, 0.0, 2.0), ("triangle", 2.0, 1.0, 0.25), ("triangle", 0.5, -0.6, 0.0),
    ("sigmoid", 4.0, 0.0, 1.0), ("sigmoid", 4.0, math.log(3) / 4, 0.75), ("sigmoid", 2.0, 0.0, 0.5),
    ("arctan", 2.0, 0.0, 1.0), ("arctan", 2.0, 1 / math.pi, 0.5), ("arctan", 1.0, 2 / math.pi, 0.25),
    ("rectangle", 1.0, 0.0, 1.0), ("rectangle", 1.0, 0.49, 1.0), ("rectangle", 1.0, 0.5, 0.0),
    ("rectangle", 2.0, -0.9, 0.5), ("rectangle", 2.0, 1.5, 0.0),
])
def test_derivative_by_hand(name, value, x, expect):
    assert _d(name, value, x) == pytest.approx(expect, rel=1e-12, abs=1e-15)


def test_pure_backward_functions_scale_the_incoming_gradient():
    g, x = torch.tensor([3.0], dtype=F64), torch.tensor([0.0], dtype=F64)
    assert triangle_backward(g, x, 0.5).item() == 6.0
    assert sigmoid_backward(g, x, 4.0).item() == 3.0
    assert arctan_backward(g, x, 2.0).item() == 3.0
    assert rectangle_backward(g, x, 1.0).item() == 3.0
    a = torch.tensor([2.0, 4.0], dtype=F64)  # ASSG: a per-element sharpness
    assert arctan_backward(torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64), a).tolist() == [1.0, 2.0]


# points away from the kinks of the triangle and rectangle primitives (0, +-w, +-w/2)
POINTS = torch.tensor([-2.3, -0.77, -0.31, -0.07, 0.05, 0.2, 0.41, 0.66, 1.3], dtype=F64)


@pytest.mark.parametrize("name", SURROGATES.names())
@pytest.mark.parametrize("value", [0.7, 1.0, 3.0])
def test_derivative_is_the_finite_difference_of_the_primitive(name, value):
    sg = SURROGATES.get(name)(value)
    x = POINTS[((POINTS.abs() - value).abs() > 1e-3) & ((POINTS.abs() - value / 2).abs() > 1e-3)]
    h = 1e-6
    fd = (sg.primitive(x + h) - sg.primitive(x - h)) / (2 * h)
    torch.testing.assert_close(sg.derivative(x), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", SURROGATES.names())
def test_primitive_is_a_step_and_the_derivative_has_unit_mass(name):
    sg = SURROGATES.get(name)(0.8)
    assert sg.primitive(torch.tensor([-1e4], dtype=F64)).item() == pytest.approx(0, abs=1e-4)
    assert sg.primitive(torch.tensor([1e4], dtype=F64)).item() == pytest.approx(1, abs=1e-4)
    x = torch.linspace(-50, 50, 400_001, dtype=F64)
    mass = torch.trapezoid(sg.derivative(x), x).item()
    ends = sg.primitive(torch.tensor([-50.0, 50.0], dtype=F64))
    assert mass == pytest.approx((ends[1] - ends[0]).item(), abs=1e-3)
    assert mass > 0.98  # arctan's tails beyond +-50 hold about 1 %


def test_registry_and_bad_parameters():
    assert SURROGATES.names() == ["triangle", "sigmoid", "arctan", "rectangle"]
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(BadSpec, match=r"sigmoid k=.*must be a finite number > 0"):
            SURROGATES.get("sigmoid")(bad)
    assert SURROGATES.get("arctan")(2).value == 2.0 and isinstance(SURROGATES.get("arctan")(2).value, float)


def test_the_training_triangle_module_stays_in_neurons():
    x = torch.tensor([0.5], dtype=F64, requires_grad=True)
    Triangle(1.0)(x).sum().backward()
    assert x.grad.item() == 0.5


def test_assg_statistics_by_hand():
    st = AssgState(0.425)
    assert st.c == pytest.approx(2 / math.pi * math.tan(math.pi * 0.425))
    h = torch.tensor([[1.5, -1.0]], dtype=F64)  # [T=1, 2], v_th = 1: d = 0.5, 2
    (a,) = st.prepare(h, 1.0)
    M = torch.tensor([[0.95, 1.1]], dtype=F64)  # 0.9 * 1 + 0.1 * d
    D = 0.1 * (torch.tensor([[0.5, 2.0]], dtype=F64) - M).abs()  # 0.9 * 0 + 0.1 |d - M|
    torch.testing.assert_close(st.M, M)
    torch.testing.assert_close(st.D, D)
    torch.testing.assert_close(a, st.c / (M + 1.5 * D + 1e-4))
    st.prepare(h, 1.0)
    assert st.forwards == 2
    torch.testing.assert_close(st.M, 0.9 * M + 0.1 * torch.tensor([[0.5, 2.0]], dtype=F64))
    st.reset()
    assert st.M is None and st.forwards == 0


def test_assg_mass_within_the_typical_distance_is_2A():
    """With M = delta and D = 0, the arctan share within |x| < delta is 2A (up to the 1e-4 guard)."""
    st = AssgState(0.4)
    a = st.c / (0.3 + 1e-4)
    share = 2 / math.pi * math.atan(math.pi * a * 0.3 / 2)
    assert share == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("A", [0.3, 0.5, -1.0, True])
def test_assg_refuses_a_out_of_range(A):
    with pytest.raises(BadSpec, match=r"assg A=.*must be in \[0.35, 0.49\]"):
        AssgState(A)


@pytest.mark.parametrize("name", SURROGATES.names())
def test_in_place_derivative_matches_the_pure_one(name):
    sg = SURROGATES.get(name)(0.8)
    x = torch.linspace(-2, 2, 101, dtype=F64)
    torch.testing.assert_close(sg.derivative_(x.clone()), sg.derivative(x), rtol=1e-14, atol=1e-15)
