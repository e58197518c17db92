"""The mask codec and the interval statistics against hand-computed values."""

import numpy as np
import pytest

from robench.errors import IntegrityError
from robench.results.stats import decode_mask, encode_mask, mcnemar, paired, wilson


def test_mask_round_trip_and_hand_value():
    mask = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=bool)
    assert encode_mask(mask) == "0103"  # bit 0 of byte 0; bits 0, 1 of byte 1 (little bit order)
    assert (decode_mask("0103", 10, count=3) == mask).all()
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 200, 1001):
        m = rng.random(n) < 0.4
        assert (decode_mask(encode_mask(m), n, int(m.sum())) == m).all()


def test_readme_three_lines_decode():
    m = np.array([True, False, True])
    row = {"robust_mask": encode_mask(m), "n": 3, "robust_count": 2}
    raw = np.frombuffer(bytes.fromhex(row["robust_mask"]), dtype=np.uint8)
    mask = np.unpackbits(raw, bitorder="little")[: row["n"]].astype(bool)
    assert mask.sum() == row["robust_count"] and (mask == m).all()


@pytest.mark.parametrize("text,n,count", [("zz", 8, None), ("01", 9, None), ("0100", 8, None), ("02", 1, None),
                                          ("03", 8, 1)])
def test_bad_masks_refused(text, n, count):
    with pytest.raises(IntegrityError):
        decode_mask(text, n, count)


def test_wilson_hand_values():
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.27753, abs=1e-5)
    lo, hi = wilson(50, 100)
    assert (lo, hi) == (pytest.approx(0.40383, abs=1e-5), pytest.approx(0.59617, abs=1e-5))
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_difference():
    a = np.array([1] * 30 + [0] * 70, dtype=bool)
    b = np.array([1] * 20 + [0] * 80, dtype=bool)
    p = paired(a, b)
    assert (p.only_a, p.only_b, p.diff) == (10, 0, pytest.approx(0.10))
    assert 0 < p.lo < 0.10 < p.hi < 0.2
    assert p.p_value == pytest.approx(2 * 0.5**10)
    same = paired(a, a)
    assert same.diff == 0 and same.lo <= 0 <= same.hi and same.p_value == 1.0
    assert mcnemar(0, 0) == 1.0
    with pytest.raises(IntegrityError):
        paired(a, b[:50])
