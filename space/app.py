"""Blood-cell classifier demo (a Hugging Face Space): upload single-cell images, get the top-3 classes.

Started the way a Space starts it, `python app.py`. The model comes from $HEMA_MODEL (a Hub id or a
model folder written by hema-train), else from the first entry of `models:` in this Space's README;
the port from Gradio's own $GRADIO_SERVER_PORT. The model's test scores come from its card (macro-F1,
from the model-index) and its all_results.json (the F1 of the predicted class). Research use only: never for diagnosis.
A second tab is the leaderboard of hema-benchmark's results dataset (leaderboard.py says where it comes from).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import gradio as gr
import leaderboard  # space/leaderboard.py, beside this file
import yaml
from PIL import Image, UnidentifiedImageError
from transformers import pipeline

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted((HERE / "examples").glob("*.png"))
MAX_FILE_BYTES = 20 * 1024 * 1024  # a single-cell crop is a few hundred kB
MAX_SIDE = 4096  # pixels: larger is a whole slide or a mistake, not a cell
TOP_K = 3
TABLES_KEPT = 32  # CSV tables kept for download (Gradio copies each into its cache when it serves it)
NOTICE = (
    "**Research use only: not a medical device, not for diagnosis or any clinical decision.** "
    "The model was trained on single-cell crops of one laboratory's blood smears; "
    "on other stains, scanners or magnifications its answers may be wrong with high confidence."
)


def model_id() -> str:
    """$HEMA_MODEL, else the first model the Space's README declares."""
    if os.environ.get("HEMA_MODEL"):
        return os.environ["HEMA_MODEL"]
    header = (HERE / "README.md").read_text(encoding="utf-8").split("---")[1]
    return yaml.safe_load(header)["models"][0]


def model_scores(model: str) -> dict:
    """Test macro-F1 from the model card's model-index, per-class F1 from its all_results.json; {} when absent."""
    folder = Path(model)
    try:
        if folder.is_dir():
            card, results = folder / "README.md", folder / "all_results.json"
        else:
            from huggingface_hub import hf_hub_download

            card, results = (Path(hf_hub_download(model, name)) for name in ("README.md", "all_results.json"))
        from huggingface_hub import ModelCard

        indexed = ModelCard.load(card).data.eval_results or []
        per_class = json.loads(results.read_text()).get("test_per_class", [])
    except Exception:  # noqa: BLE001 - no card or results published, or the Hub unreachable: the page says so
        return {}
    macro = next((r.metric_value for r in indexed if r.metric_type == "f1" and r.dataset_split == "test"), None)
    return {"macro_f1": macro, "per_class_f1": {row["class"]: row["f1"] for row in per_class}}


MODEL = model_id()
CLASSIFIER = pipeline("image-classification", model=MODEL)
SCORES = model_scores(MODEL)
RESULTS_SOURCE = leaderboard.results_source(HERE / "README.md")


# One folder for the CSV tables, for the life of the app (not one per request), removed when it stops:
# at exit, and on SIGTERM (how a Space is stopped), which otherwise skips the exit handlers.
TABLES = tempfile.TemporaryDirectory(prefix="hema-space-")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def open_cell(path: str) -> Image.Image:
    """The upload as an RGB image, or ValueError with a sentence a person can act on."""
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError("the file is empty")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"the file is {size / 1e6:.0f} MB; upload single-cell crops (at most {MAX_FILE_BYTES // 10**6} MB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's size warning, as an error
            with Image.open(path) as image:  # reads the header only: the pixels come with convert()
                if max(image.size) > MAX_SIDE:
                    raise ValueError(f"the image is {image.size[0]}x{image.size[1]} pixels; upload single-cell crops")
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError("the image has far too many pixels for a single cell; upload single-cell crops") from None
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ValueError("this is not an image that can be read (TIF, PNG or JPEG)") from None


def predict(path: str) -> list[dict]:
    """The top classes of one upload, or ValueError with the sentence to show for it."""
    image = open_cell(path)
    try:
        return CLASSIFIER(image, top_k=TOP_K)
    except Exception as err:  # noqa: BLE001 - one odd image must not cost the other uploads their results
        raise ValueError(f"this image could not be classified ({type(err).__name__})") from None


def classify(files: list[str] | None):
    """Top-3 of the first readable image, a table of all, the table as CSV, and what went wrong."""
    rows, problems = [], []
    for path in files or []:
        name = Path(path).name
        try:
            rows.append((name, predict(path)))
        except ValueError as err:
            problems.append(f"- `{name}`: {err}")
    if not rows:
        message = "\n".join(problems) or "Upload one or more single-cell images (TIF, PNG or JPEG), or pick an example."
        return None, "", None, None, message
    first = rows[0][1]
    top = first[0]["label"]
    f1 = SCORES.get("per_class_f1", {}).get(top)
    summary = f"**Top class: {top}** ({first[0]['score']:.1%})"
    if f1 is not None:
        summary += f"; this model's test F1 for {top}: {f1:.3f}"
    table = [[name] + [v for p in preds for v in (p["label"], round(p["score"], 4))] for name, preds in rows]
    header = ["file"] + [f"{k}{i}" for i in range(1, TOP_K + 1) for k in ("class ", "probability ")]
    return ({p["label"]: p["score"] for p in first}, summary, gr.update(value=table, headers=header),
            write_table([header, *table]), "\n".join(problems))


def write_table(rows: list[list]) -> str:
    """The rows as predictions.csv in TABLES (the oldest tables beyond TABLES_KEPT removed); its path."""
    root = Path(TABLES.name)
    older = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
    for stale in older[: max(0, len(older) - TABLES_KEPT + 1)]:
        shutil.rmtree(stale, ignore_errors=True)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    with open(folder / "predictions.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return str(folder / "predictions.csv")


def describe_model() -> str:
    macro = SCORES.get("macro_f1")
    scored = f"test macro-F1 **{macro:.3f}**" if macro is not None else "no published test scores"
    return f"Model: `{MODEL}` ({scored}; macro-F1 averages the F1 of every class alike, as the classes are very unequal)."


def show_board(protocol: str | None):
    """The leaderboard under `protocol`, read afresh from the results dataset, and the line above it."""
    results = leaderboard.load_results(RESULTS_SOURCE)
    if results is None:
        where = f"`{RESULTS_SOURCE}`" if RESULTS_SOURCE else "no results dataset configured (set HEMA_RESULTS)"
        return gr.update(choices=[], value=None), None, f"No benchmark results to show: {where}."
    choices = leaderboard.protocols_in(results)
    protocol = protocol if protocol in [p for _, p in choices] else next(
        (p for _, p in choices if p == "fixed_split"), choices[0][1])
    note = (f"Frozen-feature scores from `{RESULTS_SOURCE}` (hema-benchmark): macro-F1 with its 95 % interval "
            "(a bootstrap over smear-field groups), the latest run of each backbone; group-aware folds keep "
            "duplicates and crops of one field on one side, image-level folds (the usual protocol) do not.")
    return gr.update(choices=choices, value=protocol), leaderboard.board(results, protocol), note


with gr.Blocks(title="Blood-cell classifier") as demo:
    gr.Markdown("# Blood-cell classifier\nUpload single-cell images of a peripheral-blood smear; see the most likely classes.")
    gr.Markdown(NOTICE, elem_id="notice")
    with gr.Tab("Classify", elem_id="classify-tab"):
        gr.Markdown(describe_model(), elem_id="model")
        with gr.Row():
            with gr.Column():
                files = gr.File(label="Cell images (TIF, PNG, JPEG); several at once give a table",
                                file_count="multiple", type="filepath", elem_id="upload")
                if EXAMPLES:
                    gr.Examples([[[str(p)]] for p in EXAMPLES], inputs=files, label="Examples (synthetic cells)")
            with gr.Column():
                top = gr.Markdown(elem_id="top-class")
                label = gr.Label(num_top_classes=TOP_K, label="Top 3 classes", elem_id="top-classes")
                problems = gr.Markdown(elem_id="problems")
        table = gr.Dataframe(label="All images", interactive=False, elem_id="table")
        download = gr.File(label="Download the table (CSV)", elem_id="csv")
        files.change(classify, inputs=files, outputs=[label, top, table, download, problems])
    with gr.Tab("Backbone leaderboard", elem_id="leaderboard-tab") as board_tab:
        board_note = gr.Markdown(elem_id="leaderboard-note")
        protocol = gr.Dropdown(label="Protocol", choices=[], elem_id="leaderboard-protocol")
        board = gr.Dataframe(label="Backbones on frozen features", interactive=False, elem_id="leaderboard")
        board_tab.select(show_board, inputs=protocol, outputs=[protocol, board, board_note])
        protocol.input(show_board, inputs=protocol, outputs=[protocol, board, board_note])

if __name__ == "__main__":
    demo.launch()
