"""One benchmark run: every backbone on every dataset under every chosen protocol, as tidy result rows.

The order keeps the costly part to once: each backbone's features of each split are extracted (or
read from the cache) once and every protocol reuses them; a backbone's model is loaded only when a
feature set is missing from the cache.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hema import __version__
from hema.base.errors import HemaError
from hema.base.published import dataset_facts, label_column
from hema.benchmark import backbones as backbones_
from hema.benchmark import features as features_
from hema.benchmark import protocols
from hema.benchmark.protocols import DRAWS, FOLDS, SHOTS
from hema.benchmark.results import ResultRow
from hema.benchmark.scoring import HEADLINE, Score, difference, point_metrics, score
from hema.model.data import field_of_view_um, load_splits

logger = logging.getLogger(__name__)

PROTOCOLS = ("fixed", "few-shot", "cv", "cross")


@dataclass(frozen=True)
class Plan:
    backbones: Sequence[str]
    datasets: Sequence[str]
    config: str = "default"
    cross_config: str = "harmonised"  # cross-dataset pairs need the same classes: the ones every source shares
    feature: str = "cls"
    image_size: int | None = None
    protocols: Sequence[str] = PROTOCOLS
    shots: Sequence[int] = SHOTS
    draws: int = DRAWS
    folds: int = FOLDS
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    cache_dir: Path = Path(".")
    export_dir: Path | None = None  # write each feature set there as a plain .npz


@dataclass
class Tally:
    """What a run did, for its report: feature sets read from the cache and extracted."""

    cached: int = 0
    extracted: int = 0


def run(plan: Plan) -> tuple[list[ResultRow], Tally]:
    unknown = sorted(set(plan.protocols) - set(PROTOCOLS))
    if unknown:
        raise HemaError(f"unknown protocol(s) {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}")
    if "cross" in plan.protocols and len(plan.datasets) < 2:
        raise HemaError("the cross-dataset protocol needs two datasets or more (--dataset twice)")
    models = [backbones_.describe(ref, plan.feature, plan.image_size) for ref in plan.backbones]
    decode_size = max(b.image_size for b in models)  # each image decoded once, for every backbone's size
    tally, rows = Tally(), []
    date = datetime.date.today().isoformat()
    extractor = _Extractor(plan, decode_size, tally)
    for backbone in models:
        within = [p for p in plan.protocols if p != "cross"]
        for ref in plan.datasets if within else []:
            splits, _ = load_splits(ref, plan.config, label_column(plan.config), "image")
            sets = {name: extractor(backbone, ref, split, plan.config, 1.0) for name, split in splits.items()}
            dataset = dataset_facts(ref).dataset_id
            outcomes = _within(plan, sets)
            rows += _rows(plan, backbone, dataset, dataset, plan.config, outcomes, sets["test"].class_names, date)
        if "cross" in plan.protocols:
            rows += _cross(plan, backbone, extractor, date)
    return rows, tally


def _within(plan: Plan, sets: dict[str, features_.FeatureSet]) -> list[protocols.Outcome]:
    train, test = sets["train"], sets["test"]
    outcomes = []
    if "fixed" in plan.protocols:
        outcomes += protocols.fixed_split(train, test)
    if "few-shot" in plan.protocols:
        outcomes += protocols.few_shot(train, test, plan.shots, plan.draws, plan.seed)
    if "cv" in plan.protocols:
        outcomes += protocols.cross_validation(features_.FeatureSet.concat(list(sets.values())), plan.folds)
    return outcomes


def _cross(plan: Plan, backbone: backbones_.Backbone, extractor: _Extractor, date: str) -> list[ResultRow]:
    """Fit on each dataset's train split, test on every other's test split (of the cross config:
    harmonised by default), its images cropped to the training images' field of view (as
    hema-evaluate matches fields)."""
    config = plan.cross_config
    splits = {ref: load_splits(ref, config, label_column(config), "image", splits=("train", "test"))[0]
              for ref in plan.datasets}
    facts = {ref: dataset_facts(ref) for ref in plan.datasets}
    fields = {ref: field_of_view_um(facts[ref], splits[ref]["train"]) for ref in plan.datasets}
    rows = []
    for source in plan.datasets:
        train = extractor(backbone, source, splits[source]["train"], config, 1.0)
        for target in (t for t in plan.datasets if t != source):
            crop = 1.0 if fields[source] is None or fields[target] is None else min(1.0, fields[source] / fields[target])
            test = extractor(backbone, target, splits[target]["test"], config, crop)
            features_.check_same_classes(train, test, f"{facts[source].dataset_id} -> {facts[target].dataset_id}")
            outcomes = protocols.fixed_split(train, test, protocol="cross_dataset")
            note = f"test images centre-cropped to {crop:.0%} of their side (the training field of view)" if crop < 1 else ""
            for outcome in outcomes:
                outcome.notes += [note] if note else []
            rows += _rows(plan, backbone, facts[target].dataset_id, facts[source].dataset_id, config, outcomes,
                          train.class_names, date)
    return rows


class _Extractor:
    """Feature sets through the cache; each backbone's model loaded once, on its first miss, and only one
    held at a time (the run goes backbone by backbone)."""

    def __init__(self, plan: Plan, decode_size: int, tally: Tally):
        self.plan, self.decode_size, self.tally = plan, decode_size, tally
        self._loaded: tuple[backbones_.Backbone, object] | None = None

    def __call__(self, backbone: backbones_.Backbone, ref: str, split, config: str, crop: float) -> features_.FeatureSet:
        result, cached = features_.split_features(
            backbone, split, label_column(config), crop=crop, decode_size=self.decode_size,
            cache_dir=self.plan.cache_dir, model=functools.partial(self._model, backbone), device=self.plan.device,
            batch_size=self.plan.batch_size)
        if cached:
            self.tally.cached += 1
        else:
            self.tally.extracted += 1
        if self.plan.export_dir is not None:
            name = f"{_slug(backbone.name)}__{_slug(dataset_facts(ref).dataset_id)}__{config}__{split.split}"
            name += f"__crop{crop:.3f}" if crop < 1 else ""
            self.plan.export_dir.mkdir(parents=True, exist_ok=True)
            features_.export(self.plan.export_dir / f"{name}.npz", result)
        return result

    def _model(self, backbone: backbones_.Backbone):
        if self._loaded is None or self._loaded[0] != backbone:
            self._loaded = None  # the previous backbone's weights are freed before the next one loads
            logger.info("loading backbone %s (%s)", backbone.name, backbone.revision)
            self._loaded = (backbone, backbones_.load(backbone, self.plan.cache_dir))
        return self._loaded[1]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")


def _rows(plan: Plan, backbone: backbones_.Backbone, dataset: str, train_dataset: str, config: str,
          outcomes: list[protocols.Outcome], class_names: Sequence[str], date: str) -> list[ResultRow]:
    """Every metric of every outcome as tidy rows, and for cross-validation the image-level minus
    group-aware difference (cv_leakage), paired: both scored on the same group draws."""
    classes = len(class_names)
    scored = {id(o): score(o.evaluations, classes, bootstrap=plan.bootstrap, seed=plan.seed) for o in outcomes}
    rows = []

    def add(outcome: protocols.Outcome, protocol: str, scores: dict[str, Score], notes: list[str]) -> None:
        spreads = _spreads(outcome) if outcome.protocol == "few_shot" else {}
        for metric, s in scores.items():
            name = f"f1:{class_names[int(metric[3:])]}" if metric.startswith("f1:") else metric
            rows.append(ResultRow(
                backbone=backbone.name, backbone_ref=backbone.ref, revision=backbone.revision, feature=backbone.feature,
                dataset=dataset, train_dataset=train_dataset, config=config, protocol=protocol,
                classifier=outcome.classifier, shots=outcome.shots or 0, metric=name, value=s.value,
                interval_low=s.low, interval_high=s.high, spread=spreads.get(metric, float("nan")),
                n=outcome.test_rows, evaluations=len(outcome.evaluations), note="; ".join(notes), date=date,
                hema_version=__version__))

    for outcome in outcomes:
        add(outcome, outcome.protocol, scored[id(outcome)], outcome.notes)
    by_key = {(o.protocol, o.classifier): o for o in outcomes}
    for (protocol, classifier), image_level in by_key.items():
        group_aware = by_key.get(("cv_group", classifier))
        if protocol == "cv_image" and group_aware is not None:
            a, b = scored[id(image_level)], scored[id(group_aware)]
            leak = {m: difference(a[m], b[m]) for m in HEADLINE}
            add(image_level, "cv_leakage", leak,
                [("image-level minus group-aware cross-validation score: what leaked duplicates and crops of one "
                  "field add"), *group_aware.notes])
    return rows


def _spreads(outcome: protocols.Outcome) -> dict[str, float]:
    """The standard deviation of each headline metric over the few-shot draws."""
    points = [point_metrics(e.truth, e.predicted, int(max(e.truth.max(), e.predicted.max())) + 1)
              for e in outcome.evaluations]
    return {m: float(np.std([p[m] for p in points])) for m in HEADLINE}

