"""The dataset card: YAML metadata the Hub reads plus a body rendered from templates/dataset_card.md.jinja.

Everything in it is computed from the catalog of the build it describes, so the card cannot drift
from the data: counts per class and split, duplicate summary, skipped files, shard names.
"""

from __future__ import annotations

from collections import Counter

import datasets
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from pathlib import Path

from hema.base.published import DEFAULT_CONFIG, SPLITS
from hema.base.taxonomy import HARMONISED_CLASSES
from hema.dataset.catalog import Catalog, CatalogRow
from hema.dataset.configs import SELECTING_VIEWS, VIEWS, ConfigSplit, View
from hema.dataset.sources.declaration import Source

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md.jinja"

#: The oldest datasets release that loads a build (explicit data_files per config, no filters),
#: loading and streaming; checked by tests/test_clients.py.
MIN_DATASETS_VERSION = "3.1"
TAGS = ["biology", "medical", "hematology", "microscopy", "blood-cells", "cytomorphology", "leukemia"]

# Hub size_categories values, upper bounds exclusive.
_SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


def placeholder_repo_id(source_name: str) -> str:
    """What the card's snippets load until `push` names the real repository (with_repo_id)."""
    return f"ORG/{source_name}"


def with_repo_id(card_text: str, previous: str, repo_id: str) -> str:
    """The card's loading snippets pointed from `previous` at `repo_id` (the card is rendered before
    anyone knows where it will be pushed)."""
    for quoted in ('"{}"', "hf://datasets/{}/"):  # the snippets name the repo in these two ways only
        card_text = card_text.replace(quoted.format(previous), quoted.format(repo_id))
    return card_text


def size_category(n: int) -> str:
    return next((name for bound, name in _SIZE_CATEGORIES if n < bound), "1M<n<10M")


def card_data(
    catalog: Catalog, source: Source, configs: dict[str, dict[str, ConfigSplit]], info: datasets.DatasetInfo
) -> DatasetCardData:
    """The YAML header: Hub metadata, one `configs` entry per view naming its whole files, infos."""
    synthetic = catalog.synthetic is not None
    entries = []
    infos = {}
    for view in VIEWS.values():
        splits = configs[view.name]
        entry = {
            "config_name": view.name,
            "data_files": [{"split": s, "path": list(c.paths)} for s, c in splits.items()],
        }
        if view.name == DEFAULT_CONFIG:
            entry["default"] = True
        entries.append(entry)
        split_dict = datasets.SplitDict()
        for s, c in splits.items():
            split_dict.add(datasets.SplitInfo(name=s, num_bytes=c.num_bytes, num_examples=c.rows))
        infos[view.name] = datasets.DatasetInfo(features=info.features, splits=split_dict)
    data = DatasetCardData(
        license=source.license,
        task_categories=["image-classification"],
        size_categories=[size_category(len(catalog.rows))],
        pretty_name=source.pretty_name + (" — synthetic sample" if synthetic else ""),
        tags=TAGS + (["synthetic"] if synthetic else []),
        language=["en"],
        annotations_creators=["machine-generated" if synthetic else "expert-generated"],
        source_datasets=["original"],
        configs=entries,
        hema={"source": source.name, "pixel_size_um": None if source.pixel_size_um is None else round(source.pixel_size_um, 6)},  # fields of view can be matched
    )
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def render_card(
    catalog: Catalog,
    source: Source,
    configs: dict[str, dict[str, ConfigSplit]],
    info: datasets.DatasetInfo,
    duplicates: dict[str, int],
    *,
    conflict_figure: str | None = None,
    field_figure: str | None = None,
) -> DatasetCard:
    """The full card (it says SYNTHETIC, with the sample's manifest, when the catalog is of the sample)."""
    data = card_data(catalog, source, configs, info)
    per_class = {c: Counter() for c in source.classes}
    harmonised = {c: set() for c in source.classes}
    for r in catalog.rows:
        per_class[r.cell_class][r.split] += 1
        harmonised[r.cell_class].add(HARMONISED_CLASSES[r.harmonised_label] if r.harmonised_label >= 0 else "–")
    class_rows = [
        {
            "name": c,
            "lineage": source.lineage.get(c, ""),
            "harmonised": ", ".join(sorted(harmonised[c])) or "–",
            **{s: per_class[c][s] for s in SPLITS},
            "total": sum(per_class[c].values()),
        }
        for c in source.classes
    ]
    present = [r for r in class_rows if r["total"]]
    totals = {s: sum(r[s] for r in class_rows) for s in (*SPLITS, "total")}
    config_rows = [
        {
            "name": name,
            "rule": VIEWS[name].rule,
            "label_column": VIEWS[name].label_column,
            "glob": _glob(VIEWS[name]),
            **{s: splits[s].rows if s in splits else 0 for s in SPLITS},
        }
        for name, splits in configs.items()
    ]
    return DatasetCard.from_template(
        data,
        template_path=str(TEMPLATE),
        pretty_name=data.pretty_name,
        repo_id=placeholder_repo_id(source.name),
        source=source,
        harmonised_count=len(HARMONISED_CLASSES),
        synthetic=catalog.synthetic,
        total_images=len(catalog.rows),
        seed=catalog.seed,
        train_pct=round(100 * (1 - catalog.val_size - catalog.test_size)),
        val_pct=round(100 * catalog.val_size),
        test_pct=round(100 * catalog.test_size),
        class_names=", ".join(source.classes),
        config_rows=config_rows,
        first_file=next(iter(configs[DEFAULT_CONFIG].values())).paths[0],
        class_rows=class_rows,
        totals=totals,
        largest=_named(max(present, key=lambda r: r["total"])),
        smallest=_named(min(present, key=lambda r: r["total"])),
        missing_classes=catalog.missing_classes,
        dups=duplicates,
        min_datasets=MIN_DATASETS_VERSION,
        conflict_figure=conflict_figure,
        field_figure=field_figure,
        skipped=catalog.skipped,
        citation=info.citation,
    )


def _glob(view: View) -> str:
    """The file pattern of a config's train split, for clients that read files (polars, DuckDB)."""
    if view.keeps is None:
        return "data/train-*.parquet"
    position = SELECTING_VIEWS.index(view)
    infix = "-".join(v.tags[0] if i == position else "*" for i, v in enumerate(SELECTING_VIEWS))
    return f"data/train-{infix}-*.parquet".replace("*-*", "*")


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
        "field_groups": len({r.field_group for r in catalog.rows if r.field_group_size > 1}),
        "field_images": sum(r.field_group_size > 1 for r in catalog.rows),
        "shared_field_pairs": len(catalog.field_pairs),
    }
