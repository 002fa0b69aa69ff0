"""The protocols: which rows a classifier is fit on and which it is tested on.

Classifiers on frozen features, as the field runs them:
- `knn1`, `knn20`: scikit-learn's KNeighborsClassifier with its defaults (Euclidean, uniform
  votes), as DinoBloom's evaluation (marrlab/DinoBloom, dinov2/eval/general_patch_eval.py);
- `knn20_cosine`: DINO's own kNN (Caron et al. 2021): cosine similarity of L2-normalised features,
  the 20 nearest voting with weight exp(similarity / 0.07);
- `probe`: DinoBloom's linear probe, LogisticRegression(lbfgs, max_iter=1000) with C = 1/(100/(M*C))
  for M features and C classes.

Protocols (`fixed_split`: fit on the published train split, test on the test split, choosing
nothing on test; `few_shot`: 1, 5, 10, 50 training images per class, 10 seeded draws; `cross_validation`:
5 folds of all the config's rows two ways, image-level StratifiedKFold (DinoBloom's, unshuffled) and
StratifiedGroupKFold on field_group; `cross_dataset`: fit on one dataset, test on another) each yield
Outcomes: a classifier's Evaluations, scored by hema.benchmark.scoring.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from hema.base.errors import HemaError
from hema.benchmark.features import FeatureSet
from hema.benchmark.scoring import Evaluation

CLASSIFIERS = ("knn1", "knn20", "knn20_cosine", "probe")
FEW_SHOT_CLASSIFIERS = ("knn1", "probe")  # a 20-neighbour vote over 1 image per class means nothing
SHOTS = (1, 5, 10, 50)
DRAWS = 10
FOLDS = 5
DINO_TEMPERATURE = 0.07
_SIMILARITY_ROWS = 4096  # test rows whose similarities to every training row are held at once


@dataclass
class Outcome:
    """What one classifier scored under one protocol: its evaluations, and on which data."""

    protocol: str  # fixed_split, few_shot, cv_image, cv_group, cross_dataset
    classifier: str
    evaluations: list[Evaluation]
    test_rows: int
    shots: int | None = None
    notes: list[str] = field(default_factory=list)


def fit_predict(classifier: str, train: FeatureSet, test: FeatureSet) -> Evaluation:
    """Fit `classifier` on `train`, predict `test`."""
    x, y = train.features, train.labels
    if classifier == "probe":
        probs, classes = _probe(x, y, test.features)
        return Evaluation(test.labels, classes[probs.argmax(axis=1)], test.groups, probs.max(axis=1))
    if classifier == "knn20_cosine":
        return Evaluation(test.labels, _cosine_knn(x, y, test.features, 20, len(train.class_names)), test.groups)
    k = {"knn1": 1, "knn20": 20}[classifier]
    knn = KNeighborsClassifier(n_neighbors=min(k, len(x))).fit(x, y)
    return Evaluation(test.labels, knn.predict(test.features), test.groups)


def _probe(x: np.ndarray, y: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(y)
    if len(classes) == 1:  # a few-shot draw of one class: nothing to separate
        return np.ones((len(test), 1)), classes
    regularisation = 100 / (x.shape[1] * len(classes))
    with warnings.catch_warnings():  # DinoBloom's 1000 iterations, converged or not
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(C=1 / regularisation, max_iter=1000, solver="lbfgs").fit(x, y)
    return probe.predict_proba(test), probe.classes_


def _cosine_knn(x: np.ndarray, y: np.ndarray, test: np.ndarray, k: int, classes: int) -> np.ndarray:
    """DINO's weighted kNN: the k most similar training rows vote exp(cos / T) for their class (torch's
    matmul and topk: twice numpy's argpartition on MLL23's size)."""
    train = F.normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), dim=1)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    k = min(k, len(train))
    out = []
    with torch.inference_mode():
        for start in range(0, len(test), _SIMILARITY_ROWS):
            chunk = F.normalize(torch.from_numpy(np.ascontiguousarray(test[start : start + _SIMILARITY_ROWS],
                                                                     dtype=np.float32)), dim=1)
            similarity, nearest = (chunk @ train.T).topk(k, dim=1)
            votes = torch.zeros(len(chunk), classes, dtype=torch.float64)
            votes.scatter_add_(1, labels[nearest], torch.exp(similarity.double() / DINO_TEMPERATURE))
            out.append(votes.argmax(dim=1))
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def fixed_split(train: FeatureSet, test: FeatureSet, classifiers: Sequence[str] = CLASSIFIERS,
                protocol: str = "fixed_split") -> list[Outcome]:
    """Fit on the train split, test once on the test split."""
    return [Outcome(protocol, c, [fit_predict(c, train, test)], len(test.labels)) for c in classifiers]


def few_shot(train: FeatureSet, test: FeatureSet, shots: Sequence[int] = SHOTS, draws: int = DRAWS,
             seed: int = 0) -> list[Outcome]:
    """For each number of shots: `draws` seeded draws of that many training images per class (all of a
    class's, where it has fewer), each tested on the whole test split."""
    outcomes = []
    for n in shots:
        rng = np.random.default_rng([seed, n])
        picks = [_draw(train.labels, n, rng) for _ in range(draws)]
        for c in FEW_SHOT_CLASSIFIERS:
            evaluations = [fit_predict(c, train.take(rows), test) for rows in picks]
            outcomes.append(Outcome("few_shot", c, evaluations, len(test.labels), shots=n))
    return outcomes


def _draw(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), min(n, int((labels == c).sum())), replace=False)
                           for c in np.unique(labels)])


def cross_validation(rows: FeatureSet, folds: int = FOLDS, classifiers: Sequence[str] = CLASSIFIERS) -> list[Outcome]:
    """`folds`-fold cross-validation of all the config's rows, image-level (StratifiedKFold, unshuffled:
    DinoBloom's) and group-aware (StratifiedGroupKFold on field_group), the same rows both ways."""
    counts = np.bincount(rows.labels, minlength=len(rows.class_names))
    few = [f"{rows.class_names[c]} ({counts[c]})" for c in np.flatnonzero((counts > 0) & (counts < folds))]
    if few:
        raise HemaError(f"{folds}-fold cross-validation needs at least {folds} images of each class: "
                        f"{', '.join(few)} have fewer; use fewer folds (--folds) or leave out cross-validation")
    notes = [] if rows.grouped else ["the dataset has no field_group: group-aware folds are image-level"]
    schemes = (("cv_image", StratifiedKFold(folds).split(rows.features, rows.labels)),
               ("cv_group", StratifiedGroupKFold(folds).split(rows.features, rows.labels, rows.groups)))
    outcomes = []
    for protocol, splits in schemes:
        with warnings.catch_warnings():  # a class in fewer groups than folds leaves some folds without it
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splits)
        for c in classifiers:
            evaluations = [fit_predict(c, rows.take(fit), rows.take(held)) for fit, held in splits]
            outcomes.append(Outcome(protocol, c, evaluations, len(rows.labels),
                                    notes=notes if protocol == "cv_group" else []))
    return outcomes
