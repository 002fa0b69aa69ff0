"""The Space's leaderboard tab: hema-benchmark's results dataset, as a table a person can sort and filter.

The results come from $HEMA_RESULTS (a Hub dataset id, or a local copy of that dataset: a folder with
data/*.parquet), else from the first entry of this Space's README `datasets:` whose name says
"benchmark". Each push to the results dataset is one Parquet file whose name starts with its UTC
time, so where the same backbone was scored the same way twice, the later push is the one shown.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

#: Which rows are one score: a rerun with the same key replaces the earlier one on the board.
KEY = ["backbone", "revision", "feature", "dataset", "train_dataset", "config", "protocol", "classifier", "shots",
       "metric"]
PROTOCOLS = {"fixed_split": "fixed split", "few_shot": "few-shot", "cv_group": "5-fold CV, group-aware",
             "cv_image": "5-fold CV, image-level", "cv_leakage": "leakage (image-level - group-aware)",
             "cross_dataset": "cross-dataset"}
COLUMNS = {"backbone": "backbone", "dataset": "tested on", "train_dataset": "trained on", "classifier": "classifier",
           "shots": "shots", "macro_f1": "macro-F1", "interval": "95 % interval", "accuracy": "accuracy", "n": "test images",
           "date": "date"}


def results_source(readme: Path) -> str | None:
    """$HEMA_RESULTS, else the README's first `datasets:` entry with "benchmark" in its name."""
    import yaml

    if os.environ.get("HEMA_RESULTS"):
        return os.environ["HEMA_RESULTS"]
    header = yaml.safe_load(readme.read_text(encoding="utf-8").split("---")[1])
    return next((d for d in header.get("datasets") or [] if "benchmark" in d), None)


def load_results(source: str | None) -> pd.DataFrame | None:
    """Every pushed row, oldest push first; None where there is no results dataset or it cannot be read."""
    if not source:
        return None
    try:
        folder = Path(source)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, repo_type="dataset", allow_patterns=["data/*.parquet"]))
        files = sorted((folder / "data").glob("*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else None
    except Exception:  # noqa: BLE001 - no such dataset, no network, a broken file: the tab says so
        return None


def board(results: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One row per backbone, dataset pair, classifier and shots under `protocol`: its latest macro-F1 with
    interval, and accuracy; best first."""
    latest = results.drop_duplicates(KEY, keep="last")
    mine = latest[latest["protocol"] == protocol]
    head = mine[mine["metric"] == "macro_f1"].copy()
    if head.empty:
        return pd.DataFrame(columns=list(COLUMNS.values()))
    accuracy = mine[mine["metric"] == "accuracy"].set_index(KEY[:-1])["value"].rename("accuracy")
    head = head.join(accuracy, on=KEY[:-1])
    head["macro_f1"] = head["value"].round(3)
    head["accuracy"] = head["accuracy"].round(3)
    head["interval"] = [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(head["interval_low"], head["interval_high"])]
    head = head.sort_values(["macro_f1", "backbone"], ascending=[False, True])
    return head[list(COLUMNS)].rename(columns=COLUMNS).reset_index(drop=True)


def protocols_in(results: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, protocol) of the protocols the results hold, in PROTOCOLS' order."""
    present = set(results["protocol"])
    return [(label, p) for p, label in PROTOCOLS.items() if p in present]
