"""Every figure hema publishes: beside the dataset card, the model card and a benchmark's results.

matplotlib (Agg, no display) is imported on first use, not with this module: a build draws its
figures in a child process while it writes Parquet, and the main process never needs it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hema.base.published import SPLITS

SPLIT_COLOURS = {"train": "#4C72B0", "validation": "#DD8452", "test": "#55A868"}
PAIR_CELL = 400  # largest side an image of a pair sheet is shown at (MLL23: 288, Matek19: 400)
CAPTION_SIZE, TITLE_SIZE, LINE_GAP, MARGIN = 12, 15, 3, 12  # pair sheets' text sizes and spacing (px)


def class_distribution(rows: Sequence[object], classes: Sequence[str], path: Path, title: str) -> None:
    """Stacked bars of images per class and split, largest class on top, each bar labelled with its total.

    A linear axis keeps the stacked shares honest; the labels keep the smallest classes readable.
    """
    counts = Counter((r.cell_class, r.split) for r in rows)
    totals = {c: sum(counts[c, s] for s in SPLITS) for c in classes}
    order = sorted(classes, key=lambda c: (totals[c], c))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=110)
    left = np.zeros(len(order))
    for split in SPLITS:
        widths = np.array([counts[c, split] for c in order], dtype=float)
        ax.barh(order, widths, left=left, color=SPLIT_COLOURS[split], label=split)
        left += widths
    for y, c in enumerate(order):
        ax.text(totals[c], y, f" {totals[c]:,}", va="center", fontsize=8)
    ax.set_xlim(0, max(totals.values()) * 1.15 or 1)
    ax.set_xlabel("images")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def image_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, str]], path: Path, title: str, max_pairs: int = 8
) -> None:
    """Side-by-side pairs of images, each image captioned (e.g. both labels of a conflicting duplicate).

    A contact sheet drawn with PIL, not matplotlib: cells are shown pixel for pixel (up to
    PAIR_CELL px a side), as a reviewer judging duplicates needs them, and a sheet of 8 pairs takes
    0.2 s where a matplotlib figure took 0.55 s (a build draws it while its Parquet is written).
    """
    shown = [(_fit(a), _fit(b), caption.split(" | ")) for a, b, caption in list(pairs)[:max_pairs]]
    small, large = ImageFont.load_default(size=CAPTION_SIZE), ImageFont.load_default(size=TITLE_SIZE)
    cell_w = max(max(a.width, b.width) for a, b, _ in shown)
    cell_h = max(max(a.height, b.height) for a, b, _ in shown)
    caption_h = 2 * (CAPTION_SIZE + LINE_GAP) + 2 * LINE_GAP  # file name and class
    title_h, gap = TITLE_SIZE + 2 * MARGIN, MARGIN
    width = 2 * cell_w + 3 * gap
    height = title_h + len(shown) * (caption_h + cell_h + gap) + gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((width // 2, gap), title, fill="black", font=large, anchor="mt")
    top = title_h
    for left_image, right_image, captions in shown:
        for column, (image, caption) in enumerate(zip((left_image, right_image), captions)):
            x = gap + column * (cell_w + gap)
            draw.multiline_text((x + cell_w // 2, top + 4), caption, fill="black", font=small, anchor="ma",
                                align="center", spacing=LINE_GAP)
            sheet.paste(image, (x + (cell_w - image.width) // 2, top + caption_h))
        top += caption_h + cell_h + gap
    sheet.save(path, format="PNG", compress_level=1)  # fpng is faster here, but 1.9x larger


def _fit(rgb: np.ndarray) -> Image.Image:
    image = Image.fromarray(rgb)
    if max(image.size) > PAIR_CELL:
        image.thumbnail((PAIR_CELL, PAIR_CELL), Image.Resampling.LANCZOS)
    return image


def confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path,
    title: str = "Test confusion matrix (colour: share of the true class)",
) -> None:
    """Row-normalised confusion matrix (colour: share of the true class; numbers: counts)."""
    counts = np.asarray(matrix)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    n = len(class_names)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(counts):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_diagram(bins, path: Path, title: str) -> None:
    """Accuracy against confidence per bin (hema.model.calibration.Reliability), with the diagonal of perfect calibration."""
    n = len(bins.counts)
    centres = (np.arange(n) + 0.5) / n
    accuracy = np.nan_to_num(np.asarray(bins.accuracy, dtype=float))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.bar(centres, accuracy, width=1 / n, edgecolor="black", color="#4C72B0", label="accuracy")
    gap = np.nan_to_num(np.asarray(bins.confidence, dtype=float)) - accuracy
    ax.bar(centres, gap, bottom=accuracy, width=1 / n, color="#DD8452", alpha=0.6,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def benchmark_scores(rows: Sequence[dict], path: Path, metric: str = "macro_f1") -> None:
    """Each backbone's score and 95 % interval per dataset (a panel each) and protocol x classifier."""
    shown = [r for r in rows if r["metric"] == metric and r["protocol"] != "cv_leakage"]
    datasets = sorted({r["dataset"] for r in shown}) or [""]
    backbones = sorted({r["backbone"] for r in shown})
    plt = _pyplot()
    fig, axes = plt.subplots(len(datasets), 1, figsize=(10, 2.2 + 2.6 * len(datasets)), dpi=110, squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets):
        mine = [r for r in shown if r["dataset"] == dataset]
        columns = sorted({(r["protocol"], r["classifier"], r["shots"], r["train_dataset"]) for r in mine})
        for k, backbone in enumerate(backbones):
            offset = (k - (len(backbones) - 1) / 2) * 0.8 / max(len(backbones), 1)
            for x, column in enumerate(columns):
                row = next((r for r in mine if r["backbone"] == backbone
                            and (r["protocol"], r["classifier"], r["shots"], r["train_dataset"]) == column), None)
                if row is not None:
                    ax.errorbar(x + offset, row["value"], yerr=[[row["value"] - row["interval_low"]],
                                [row["interval_high"] - row["value"]]], fmt="o", color=f"C{k}", capsize=2,
                                label=backbone if x == 0 else None)
        labels = [f"{p}\n{c}" + (f" {s}-shot" if s else "") + (f"\nfrom {t}" if t != dataset else "")
                  for p, c, s, t in columns]
        ax.set_xticks(range(len(columns)), labels, fontsize=6, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(f"tested on {dataset}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
