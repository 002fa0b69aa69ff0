"""Calibration: does a model's confidence mean what it says? Expected calibration error and its diagram.

ECE (Guo et al. 2017) with 15 equal-width bins of top-1 confidence: the gap between mean confidence
and accuracy in each bin, weighted by the bin's share of the images. A model that is 90 % sure should
be right 9 times in 10; models moved to another laboratory's smears are often sure and wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin (equal width over [0, 1]): images, mean confidence and accuracy (nan when empty)."""

    counts: list[int]
    confidence: list[float]
    accuracy: list[float]

    @property
    def ece(self) -> float:
        total = sum(self.counts)
        return float(sum(n * abs(c - a) for n, c, a in zip(self.counts, self.confidence, self.accuracy) if n) / max(total, 1))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Bin top-1 confidences (right-closed bins, the first also holds 0) and measure each bin's accuracy."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    right = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return Reliability(
            counts=[int(n) for n in counts],
            confidence=[float(x) for x in conf_sum / counts],
            accuracy=[float(x) for x in right / counts],
        )
