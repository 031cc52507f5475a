"""Success rates with their uncertainty: the Wilson score interval.

Closed-loop success over n episodes is a binomial proportion. The Wilson interval (Wilson
1927; Brown, Cai & DasGupta 2001, "Interval Estimation for a Binomial Proportion") keeps its
coverage near 95 % at the small n and the rates near 0 or 1 that rollouts produce, where the
normal approximation p +- 1.96 sqrt(p(1-p)/n) collapses to a zero-width interval at p = 1.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % standard-normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for `successes` out of `n` trials."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # The bounds are exactly 0 and 1 at 0 and n successes; floats would leave 1e-17 there.
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == n else centre + half
    return low, high
