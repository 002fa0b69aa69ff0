"""Scores of a protocol's predictions, with 95 % intervals from a bootstrap over field groups.

A protocol yields Evaluations: predictions on one set of test rows (the test split, a fold, a
few-shot draw). Its score is the mean of the evaluations' metric, each metric by scikit-learn's own
function (so anyone refitting the exported features gets the same numbers): macro-F1 first, then
weighted F1, balanced accuracy and accuracy, F1 per class, and the probe's expected calibration
error (hema.model.calibration's 15 bins).

The interval resamples field_groups, not images: two crops of one smear field, or two copies of one
cell, are not two independent observations. Each bootstrap replicate draws the groups with
replacement and weights every row by how often its group was drawn; the replicate's metrics come
from the weighted confusion matrices (all replicates at once, from counts per group). Two protocols
scored with the same groups and seed see the same draws, so their difference is a paired one. The
95 % interval is the 2.5 and 97.5 percentiles of the replicates, widened to take in the estimate
where the resampling's skew leaves it outside.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from hema.model.calibration import ECE_BINS, reliability

HEADLINE = ("macro_f1", "weighted_f1", "balanced_accuracy", "accuracy")
_CHUNK = 64  # replicates computed together


@dataclass
class Evaluation:
    """Predictions on one set of test rows: a split, a fold, a few-shot draw."""

    truth: np.ndarray
    predicted: np.ndarray
    groups: np.ndarray  # the field_group of each row
    confidence: np.ndarray | None = None  # top-1 probability (the probe): what ECE measures


@dataclass(frozen=True)
class Score:
    value: float
    low: float
    high: float
    replicates: np.ndarray  # the bootstrap replicates of `value` (paired across protocols of one draw)


def point_metrics(truth: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    """The headline metrics and F1 per class ("f1:<id>") of one evaluation, by scikit-learn."""
    with warnings.catch_warnings():  # a prediction of a class absent from the truth is no error
        warnings.simplefilter("ignore", UserWarning)
        out = {
            "macro_f1": f1_score(truth, predicted, average="macro", zero_division=0),
            "weighted_f1": f1_score(truth, predicted, average="weighted", zero_division=0),
            "balanced_accuracy": balanced_accuracy_score(truth, predicted),
            "accuracy": accuracy_score(truth, predicted),
        }
        per_class = f1_score(truth, predicted, labels=np.arange(classes), average=None, zero_division=0)
    return {k: float(v) for k, v in out.items()} | {f"f1:{c}": float(per_class[c]) for c in range(classes)}


def score(evaluations: Sequence[Evaluation], classes: int, *, bootstrap: int, seed: int) -> dict[str, Score]:
    """Every metric of the evaluations (their mean), each with its group-bootstrap interval."""
    points = [point_metrics(e.truth, e.predicted, classes) for e in evaluations]
    calibrated = all(e.confidence is not None for e in evaluations)
    if calibrated:
        for p, e in zip(points, evaluations):
            p["ece"] = reliability(e.confidence, e.truth == e.predicted).ece
    replicates = _replicates(evaluations, classes, bootstrap, seed, calibrated)
    out = {}
    for metric in points[0]:
        value = float(np.mean([p[metric] for p in points]))
        out[metric] = interval(value, replicates[metric])
    return out


def interval(value: float, replicates: np.ndarray) -> Score:
    """The 95 % percentile interval of `replicates`, widened to take in `value`."""
    low, high = (np.percentile(replicates, (2.5, 97.5)) if len(replicates) else (value, value))
    return Score(value, float(min(low, value)), float(max(high, value)), replicates)


def difference(a: Score, b: Score) -> Score:
    """a - b, its interval from paired replicates (both scored on the same groups with one seed)."""
    return interval(a.value - b.value, a.replicates - b.replicates)


def _replicates(evaluations: Sequence[Evaluation], classes: int, bootstrap: int, seed: int,
                calibrated: bool) -> dict[str, np.ndarray]:
    """Per metric, `bootstrap` replicates of the evaluations' mean metric."""
    universe = np.unique(np.concatenate([e.groups for e in evaluations]))
    counts = [_group_counts(e, universe, classes, calibrated) for e in evaluations]
    totals: dict[str, list[np.ndarray]] = {}
    for weights in _draws(len(universe), bootstrap, seed):
        per_eval = [_metrics_of(weights, c, classes, calibrated) for c in counts]
        for metric in per_eval[0]:
            totals.setdefault(metric, []).append(np.mean([m[metric] for m in per_eval], axis=0))
    return {k: np.concatenate(v) for k, v in totals.items()} if totals else {}


def _draws(groups: int, bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of replicate weights (replicates x groups): how often each group is drawn."""
    rng = np.random.default_rng(seed)
    for start in range(0, bootstrap, _CHUNK):
        n = min(_CHUNK, bootstrap - start)
        drawn = rng.integers(0, groups, size=(n, groups))
        yield np.stack([np.bincount(row, minlength=groups) for row in drawn]).astype(np.float64)


def _group_counts(e: Evaluation, universe: np.ndarray, classes: int, calibrated: bool) -> dict[str, sparse.csr_matrix]:
    """Per group of `universe`: its rows' confusion counts (and, for ECE, per-bin counts and sums)."""
    group = np.searchsorted(universe, e.groups)
    cell = e.truth * classes + e.predicted
    out = {"confusion": sparse.csr_matrix((np.ones(len(cell)), (group, cell)), shape=(len(universe), classes * classes))}
    if calibrated:
        which = np.clip(np.ceil(e.confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
        right = (e.truth == e.predicted).astype(np.float64)
        for name, value in (("bin_count", np.ones(len(cell))), ("bin_confidence", e.confidence), ("bin_right", right)):
            out[name] = sparse.csr_matrix((value, (group, which)), shape=(len(universe), ECE_BINS))
    return out


def _metrics_of(weights: np.ndarray, counts: dict[str, sparse.csr_matrix], classes: int,
                calibrated: bool) -> dict[str, np.ndarray]:
    """The metrics of weighted confusion matrices, one per replicate (as scikit-learn defines them)."""
    confusion = (counts["confusion"].T @ weights.T).T.reshape(len(weights), classes, classes)
    support, predicted, hits = confusion.sum(axis=2), confusion.sum(axis=1), np.diagonal(confusion, axis1=1, axis2=2)
    total = support.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    seen, present = (support > 0) | (predicted > 0), support > 0
    out = {
        "macro_f1": _masked_mean(f1, seen),
        "weighted_f1": np.divide((f1 * support).sum(axis=1), total, out=np.zeros(len(total)), where=total > 0),
        "balanced_accuracy": _masked_mean(recall, present),
        "accuracy": np.divide(hits.sum(axis=1), total, out=np.zeros(len(total)), where=total > 0),
    } | {f"f1:{c}": f1[:, c] for c in range(classes)}
    if calibrated:
        n, conf, right = (counts[k].T @ weights.T for k in ("bin_count", "bin_confidence", "bin_right"))
        out["ece"] = np.abs(conf - right).sum(axis=0) / np.maximum(n.sum(axis=0), 1)
    return out


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.divide((values * mask).sum(axis=1), mask.sum(axis=1), out=np.zeros(len(values)), where=mask.sum(axis=1) > 0)
