"""A benchmark's results: one tidy table, its files, the results dataset on the Hub, the model card.

One row per (backbone, dataset, protocol, classifier, shots, metric): its value, 95 % interval, spread
over few-shot draws, test rows, date and hema version. The same rows go to results.json, results.csv
and (appended, one Parquet file per push) a results dataset on the Hub whose card lets the viewer
and `load_dataset` read every push; summary.md and scores.png show the headline numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RESULTS_JSON, RESULTS_CSV, SUMMARY, FIGURE = "results.json", "results.csv", "summary.md", "scores.png"
FEATURES_DIR = "features"
OUTPUT_FILES = frozenset({RESULTS_JSON, RESULTS_CSV, SUMMARY, FIGURE, FEATURES_DIR})
PROTOCOL_NAMES = {"fixed_split": "fixed split", "few_shot": "few-shot", "cv_image": "5-fold CV, image-level",
                  "cv_group": "5-fold CV, group-aware", "cv_leakage": "leakage (image - group)",
                  "cross_dataset": "cross-dataset"}


@dataclass(frozen=True)
class ResultRow:
    backbone: str
    backbone_ref: str
    revision: str
    feature: str
    dataset: str  # the dataset tested on
    train_dataset: str  # the dataset fitted on (another one for cross_dataset)
    config: str
    protocol: str
    classifier: str
    shots: int  # few-shot images per class (0: all)
    metric: str  # macro_f1, weighted_f1, balanced_accuracy, accuracy, ece, f1:<class>
    value: float
    interval_low: float
    interval_high: float
    spread: float  # standard deviation over few-shot draws (NaN elsewhere)
    n: int  # test rows
    evaluations: int  # folds or draws averaged
    note: str
    date: str
    hema_version: str


_ARROW = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}  # the fields' annotations, as strings
SCHEMA = pa.schema([(f.name, _ARROW[f.type]) for f in dataclasses.fields(ResultRow)])


def table(rows: Sequence[ResultRow]) -> pa.Table:
    return pa.Table.from_pylist([dataclasses.asdict(r) for r in rows], schema=SCHEMA)


def write_files(folder: Path, rows: Sequence[ResultRow]) -> None:
    """results.json, results.csv, summary.md and scores.png into `folder`."""
    from hema.base import figures

    records = [dataclasses.asdict(r) for r in rows]
    (folder / RESULTS_JSON).write_text(json.dumps([{k: _json(v) for k, v in r.items()} for r in records], indent=1))
    with open(folder / RESULTS_CSV, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(SCHEMA.names))
        out.writeheader()
        out.writerows(records)
    (folder / SUMMARY).write_text(summary(rows))
    figures.benchmark_scores(records, folder / FIGURE)


def _json(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def read_rows(path: Path) -> list[ResultRow]:
    """The rows of a results.json (HemaError-free: the caller checks the folder is ours first)."""
    return [ResultRow(**{k: (float("nan") if v is None else v) for k, v in r.items()}) for r in json.loads(path.read_text())]


def is_results_folder(folder: Path) -> bool:
    """Whether `folder` holds only what write_files and the feature export write, with a results.json."""
    try:
        records = json.loads((folder / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return False
    entries = {p.name for p in folder.iterdir()}
    return isinstance(records, list) and all(isinstance(r, dict) and "protocol" in r for r in records) \
        and entries <= OUTPUT_FILES


def summary(rows: Sequence[ResultRow]) -> str:
    """The headline numbers as Markdown: macro-F1 [95 % interval] per backbone, dataset, protocol, classifier."""
    head = [r for r in rows if r.metric == "macro_f1"]
    lines = ["# Frozen-feature benchmark", "",
             "Macro-F1 [95 % interval, bootstrap over field groups]; few-shot: mean over draws ± their spread.", ""]
    for protocol, title in PROTOCOL_NAMES.items():
        mine = [r for r in head if r.protocol == protocol]
        if not mine:
            continue
        columns = sorted({(r.classifier, r.shots) for r in mine})
        lines += [f"## {title}", "", "| backbone | trained on | tested on | " + " | ".join(
            f"{c}{f' {s}-shot' if s else ''}" for c, s in columns) + " |", "|---|---|---|" + "---:|" * len(columns)]
        for key in sorted({(r.backbone, r.train_dataset, r.dataset) for r in mine}):
            cells = {(r.classifier, r.shots): r for r in mine if (r.backbone, r.train_dataset, r.dataset) == key}
            lines.append(f"| {' | '.join(key)} | " + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
        lines.append("")
    notes = sorted({r.note for r in head if r.note})
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def _cell(row: ResultRow | None) -> str:
    if row is None:
        return "–"
    text = f"{row.value:.3f} [{row.interval_low:.3f}, {row.interval_high:.3f}]"
    return text + (f" ± {row.spread:.3f}" if not math.isnan(row.spread) else "")


RESULTS_CARD = """---
license: cc-by-4.0
pretty_name: Frozen-feature benchmark of blood-cell image backbones
tags:
  - benchmark
  - hematology
  - blood-cells
  - image-feature-extraction
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/*.parquet
---

# Frozen-feature benchmark of blood-cell image backbones

Results of `hema-benchmark` (https://github.com/hema-org/hema): backbones scored by kNN and linear
probes on frozen features of blood-cell datasets built by hema, with duplicate- and smear-field-aware
protocols. Each push appends one Parquet file of rows under `data/`.

```python
from datasets import load_dataset

results = load_dataset("{repo_id}", split="train")
```

One row per backbone, dataset, protocol, classifier, few-shot size and metric: `value` with its 95 %
interval (`interval_low`, `interval_high`: a bootstrap over field groups, not images), `spread` (the
standard deviation over few-shot draws), `n` test rows, `date` and `hema_version`. Protocols:
`fixed_split` (fit on train, test on test), `few_shot`, `cv_image` (DinoBloom's image-level 5-fold
cross-validation), `cv_group` (folds that keep each field group whole), `cv_leakage` (their
difference: what leaked duplicates and crops of one field add), `cross_dataset` (fit on one dataset's
harmonised train split, test on another's, its images brought to the training field of view).
"""


def add_to_results_dataset(folder: Path, rows: Sequence[ResultRow], repo_id: str) -> Path:
    """Add `rows` to the results dataset in `folder` as one new Parquet file (named by the UTC time, so names
    sort in the order of the pushes) and write its card; returns the new file."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / "data" / f"results-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(rows), path)
    (folder / "README.md").write_text(RESULTS_CARD.replace("{repo_id}", repo_id))
    return path


def push_results(rows: Sequence[ResultRow], repo_id: str, *, token: str, private: bool = False) -> str:
    """Append `rows` to the results dataset `repo_id` on the Hub (one new Parquet file, and its card; the
    files already there stay); push_folder checks the token first. Returns the dataset's URL."""
    import tempfile

    from hema.base import hub

    with tempfile.TemporaryDirectory(prefix="hema-results-") as tmp:
        add_to_results_dataset(Path(tmp), rows, repo_id)
        return hub.push_folder(Path(tmp), repo_id, repo_type="dataset", token=token, private=private,
                               commit_message=f"hema-benchmark: {len(rows)} result rows")


def model_index(rows: Sequence[ResultRow], backbone_ref: str) -> tuple[list, str]:
    """The model-index entries (macro-F1 and accuracy of each protocol and classifier) of one backbone's
    rows, and a Markdown section with its summary, for its model card."""
    from huggingface_hub import EvalResult

    mine = [r for r in rows if r.backbone_ref == backbone_ref and r.metric in ("macro_f1", "accuracy")
            and r.protocol != "cv_leakage"]
    results = [
        EvalResult(task_type="image-classification", task_name="Image Classification (frozen features)",
                   dataset_type=r.dataset, dataset_name=r.dataset, dataset_config=r.config, dataset_split="test",
                   metric_type="f1" if r.metric == "macro_f1" else "accuracy",
                   metric_name=f"{PROTOCOL_NAMES[r.protocol]} {r.classifier}{f' {r.shots}-shot' if r.shots else ''} "
                               f"{'macro F1' if r.metric == 'macro_f1' else 'accuracy'} (frozen features)",
                   metric_value=round(r.value, 4), metric_args={"average": "macro"} if r.metric == "macro_f1" else None)
        for r in mine
    ]
    return results, summary([r for r in rows if r.backbone_ref == backbone_ref])
