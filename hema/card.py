"""The dataset card: YAML metadata the Hub reads plus a body rendered from dataset_card/.

Everything in it is computed from the catalog of the build it describes, so the card cannot drift
from the data: counts per class and split, duplicate summary, skipped files, shard names.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from hema.catalog import Catalog, CatalogRow
from hema.sample import SampleManifest
from hema.splits import SPLITS
from hema.taxonomy import CELL_CLASSES, HARMONISED, LINEAGE
from hema.views import VIEWS

TEMPLATE = Path(__file__).resolve().parent.parent / "dataset_card" / "README.md.jinja"
PLACEHOLDER_REPO_ID = "ORG/mll23"
PRETTY_NAME = "MLL23: peripheral blood single-cell images (18 classes)"
TAGS = ["biology", "medical", "hematology", "microscopy", "blood-cells", "cytomorphology", "leukemia"]

# Hub size_categories values, upper bounds exclusive.
_SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


def size_category(n: int) -> str:
    return next((name for bound, name in _SIZE_CATEGORIES if n < bound), "1M<n<10M")


def view_split_counts(catalog: Catalog) -> dict[str, Counter]:
    """Rows per split in each published config."""
    return {v.name: Counter(r.split for r in catalog.rows if v.keeps(r)) for v in VIEWS.values()}


def card_data(
    catalog: Catalog,
    shards: dict[str, list[str]],
    info: datasets.DatasetInfo,
    view_counts: dict[str, Counter],
    *,
    synthetic: bool,
) -> DatasetCardData:
    """The YAML header: Hub metadata, one `configs` entry per view (explicit shard names), infos."""
    configs = []
    infos = {}
    for view in VIEWS.values():
        entry = {
            "config_name": view.name,
            "data_files": [{"split": s, "path": list(shards[s])} for s in SPLITS],
        }
        if view.filters:
            entry["filters"] = [list(f) for f in view.filters]
        else:
            entry["default"] = True
        configs.append(entry)
        counts = view_counts[view.name]
        split_dict = datasets.SplitDict()
        for s in SPLITS:
            full = info.splits[s] if info.splits and s in info.splits else None
            num_bytes = full.num_bytes if (full is not None and not view.filters) else 0
            split_dict.add(datasets.SplitInfo(name=s, num_bytes=num_bytes, num_examples=counts[s]))
        infos[view.name] = datasets.DatasetInfo(features=info.features, splits=split_dict)
    data = DatasetCardData(
        license="cc-by-4.0",
        task_categories=["image-classification"],
        size_categories=[size_category(len(catalog.rows))],
        pretty_name=PRETTY_NAME + (" — synthetic sample" if synthetic else ""),
        tags=TAGS + (["synthetic"] if synthetic else []),
        language=["en"],
        annotations_creators=["machine-generated" if synthetic else "expert-generated"],
        source_datasets=["original"],
        configs=configs,
    )
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def render_card(
    catalog: Catalog,
    shards: dict[str, list[str]],
    info: datasets.DatasetInfo,
    *,
    synthetic: SampleManifest | None = None,
    conflict_figure: str | None = None,
    repo_id: str = PLACEHOLDER_REPO_ID,
) -> DatasetCard:
    """The full card; `synthetic` is the sample's manifest when the source is the synthetic sample."""
    view_counts = view_split_counts(catalog)
    data = card_data(catalog, shards, info, view_counts, synthetic=synthetic is not None)
    per_class = {c: Counter() for c in CELL_CLASSES}
    for r in catalog.rows:
        per_class[r.cell_class][r.split] += 1
    class_rows = [
        {
            "name": c,
            "lineage": LINEAGE[c],
            "harmonised": HARMONISED.get(c, "–"),
            **{s: per_class[c][s] for s in SPLITS},
            "total": sum(per_class[c].values()),
        }
        for c in CELL_CLASSES
    ]
    present = [r for r in class_rows if r["total"]]
    totals = {s: sum(r[s] for r in class_rows) for s in (*SPLITS, "total")}
    config_rows = [
        {"name": name, "rule": VIEWS[name].rule, **{s: counts[s] for s in SPLITS}}
        for name, counts in view_counts.items()
    ]
    return DatasetCard.from_template(
        data,
        template_path=str(TEMPLATE),
        pretty_name=data.pretty_name,
        repo_id=repo_id,
        synthetic=synthetic,
        total_images=len(catalog.rows),
        seed=catalog.seed,
        train_pct=round(100 * (1 - catalog.val_size - catalog.test_size)),
        val_pct=round(100 * catalog.val_size),
        test_pct=round(100 * catalog.test_size),
        class_names=", ".join(CELL_CLASSES),
        config_rows=config_rows,
        class_rows=class_rows,
        totals=totals,
        largest=_named(max(present, key=lambda r: r["total"])),
        smallest=_named(min(present, key=lambda r: r["total"])),
        missing_classes=catalog.missing_classes,
        dups=duplicate_summary(catalog),
        conflict_figure=conflict_figure,
        skipped=catalog.skipped,
        citation=info.citation,
    )


def _named(row: dict) -> dict:
    return {"name": row["name"], "count": row["total"]}


def duplicate_summary(catalog: Catalog) -> dict[str, int]:
    groups: dict[int, CatalogRow] = {}
    for r in catalog.rows:
        if r.dup_group_size > 1:
            groups.setdefault(r.dup_group, r)
    return {
        "exact_groups": sum(r.dup_kind == "exact" for r in groups.values()),
        "near_groups": sum(r.dup_kind == "near" for r in groups.values()),
        "conflict_groups": sum(r.label_conflict for r in groups.values()),
        "images_involved": sum(r.dup_group_size > 1 for r in catalog.rows),
        "pairs": len(catalog.pairs),
    }
