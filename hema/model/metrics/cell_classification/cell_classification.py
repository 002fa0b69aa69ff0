"""Metrics for single-label cell classification over many imbalanced classes.

Loaded from this folder, so it works offline: ``evaluate.load(str(hema.model.metrics.CELL_CLASSIFICATION))``.
Accuracy alone hides the rare classes of MLL23 (33 reactive lymphocytes beside 8,606 myeloblasts),
so this module also reports balanced accuracy, macro and weighted F1, per-class precision, recall,
F1 and support, and the confusion matrix: scikit-learn's functions compute every one of them.
"""

from __future__ import annotations

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support,
)

_DESCRIPTION = """
Accuracy, balanced accuracy (mean recall over the classes present in the references), macro-F1
(unweighted mean F1 over the classes present in the references or the predictions, as scikit-learn
averages), weighted F1 (F1 weighted by support), per-class precision/recall/F1/support and the
confusion matrix (rows: reference class, columns: predicted class). A ratio with a zero denominator
counts as 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids.
    num_classes (`int`, optional): number of classes; default: 1 + the largest id seen.
    class_names (`list` of `str`, optional): names of the classes, in id order; sets num_classes.
Returns:
    accuracy, balanced_accuracy, macro_f1, weighted_f1 (`float`),
    per_class (`list` of `dict`: class, precision, recall, f1, support),
    confusion_matrix (`list` of `list` of `int`).
Examples:
    >>> metric = evaluate.load(str(hema.model.metrics.CELL_CLASSIFICATION))
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"]
    0.6666666666666666
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CellClassification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        num_classes: int | None = None,
        class_names: list[str] | None = None,
    ) -> dict:
        pred = np.asarray(predictions, dtype=np.int64)
        ref = np.asarray(references, dtype=np.int64)
        if class_names is not None:
            num_classes = len(class_names)
        if num_classes is None:
            num_classes = int(max(pred.max(initial=-1), ref.max(initial=-1))) + 1
        return classification_report(pred, ref, num_classes, class_names)


def classification_report(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, class_names: list[str] | None
) -> dict:
    """All the numbers, by scikit-learn's own functions (so they equal what anyone computes with them
    from the same predictions); a ratio with a zero denominator counts as 0."""
    names = class_names or [str(i) for i in range(num_classes)]
    if len(ref) == 0:
        return {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0, "weighted_f1": 0.0,
                "per_class": [{"class": n, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for n in names],
                "confusion_matrix": np.zeros((num_classes, num_classes), dtype=int).tolist()}
    labels = np.arange(num_classes)
    with warnings.catch_warnings():  # predictions of a class absent from the references are no error
        warnings.simplefilter("ignore", UserWarning)
        precision, recall, f1, support = precision_recall_fscore_support(ref, pred, labels=labels, zero_division=0)
        return {
            "accuracy": float(accuracy_score(ref, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(ref, pred)),
            "macro_f1": float(f1_score(ref, pred, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(ref, pred, average="weighted", zero_division=0)),
            "per_class": [
                {"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
                 "f1": float(f1[i]), "support": int(support[i])}
                for i in range(num_classes)
            ],
            "confusion_matrix": confusion_matrix(ref, pred, labels=labels).tolist(),
        }
