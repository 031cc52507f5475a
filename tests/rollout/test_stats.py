"""Wilson intervals against published values and their defining properties."""

from __future__ import annotations

import pytest

from services.rollout.stats import wilson_interval


def test_wilson_matches_known_values():
    # Brown, Cai & DasGupta (2001) / any stats package: 8 of 10 -> (0.490, 0.943)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(50, 50)  # all successes: a real interval, not [1, 1]
    assert lo == pytest.approx(0.9287, abs=1e-4) and hi == 1.0
    assert wilson_interval(0, 50)[0] == 0.0


def test_wilson_narrows_with_episodes_and_contains_the_rate():
    widths = []
    for n in (10, 50, 200):
        lo, hi = wilson_interval(int(0.9 * n), n)
        assert lo < 0.9 < hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)


def test_wilson_refuses_bad_counts():
    with pytest.raises(ValueError, match="n must be positive"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(11, 10)
