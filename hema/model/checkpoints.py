"""Resumable training state: OUT/checkpoints/step_N, Accelerate's state plus the run's own.

Accelerate saves the model, optimiser, scheduler, gradient-accumulation step and every process's RNG
states; the run adds its TrainingState (step, best validation score, what the run was made with) and
the best weights so far, so that a resumed run ends with the same best model even when the best step
predates the checkpoint. The order of the training rows and the augmentation are functions of (seed,
epoch, batch), so nothing else is needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hema.base.errors import HemaError

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
BEST_WEIGHTS = "best_model.safetensors"


@dataclass
class TrainingState:
    """Where a run stands (saved in each checkpoint as trainer_state.json), and what it was made with:
    a checkpoint of another image size or other classes is not resumed."""

    image_size: int
    class_names: list[str]
    completed_steps: int = 0
    best_macro_f1: float = -1.0
    best_step: int = 0
    train_seconds: float = 0.0
    best_validation: dict[str, float] | None = None  # the summary metrics at best_step

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def completed(root: Path) -> list[Path]:
    """step_N folders, oldest first (a save that was interrupted is still named step_N.partial)."""
    return sorted((p for p in root.glob("step_*") if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))


def find(out: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: `resume` itself, or with "auto" the latest in OUT (None if none)."""
    if resume is None:
        return None
    if resume != "auto":
        if not (Path(resume) / TRAINER_STATE).is_file():
            raise HemaError(f"checkpoint {resume}: not a checkpoint folder (no {TRAINER_STATE})")
        return Path(resume)
    found = completed(out / CHECKPOINTS)
    return found[-1] if found else None


def save(accelerator, out: Path, state: TrainingState, best_weights: dict[str, torch.Tensor] | None, keep: int) -> None:
    """Write OUT/checkpoints/step_<state's step> under a temporary name, rename it, keep the last `keep`."""
    root = out / CHECKPOINTS
    final = root / f"step_{state.completed_steps}"
    partial = root / f"{final.name}.partial"
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if best_weights is not None:
            save_file({k: v.contiguous() for k, v in best_weights.items()}, str(partial / BEST_WEIGHTS))
        (partial / TRAINER_STATE).write_text(state.to_json())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in completed(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load(accelerator, checkpoint: Path, run: TrainingState) -> tuple[TrainingState, dict[str, torch.Tensor] | None]:
    """Restore Accelerate's state from `checkpoint`; return the run's state and best weights.

    `run` is this run's fresh state: the checkpoint must have been made with its image size and
    classes. A checkpoint of another run, or a corrupt one, is one HemaError, not a traceback half way in.
    """
    known = {f.name for f in dataclasses.fields(TrainingState)}
    try:  # what the checkpoint says, over this run's fresh state (a checkpoint of hema < 0.3 has no size or classes)
        saved = json.loads((checkpoint / TRAINER_STATE).read_text())
        state = dataclasses.replace(run, **{k: v for k, v in saved.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise HemaError(f"checkpoint {checkpoint}: {TRAINER_STATE} is unreadable ({exc})") from None
    for key in ("image_size", "class_names"):
        if getattr(state, key) != getattr(run, key):
            raise HemaError(f"checkpoint {checkpoint} was made with {key} {_shown(getattr(state, key))}, this run "
                            f"has {_shown(getattr(run, key))}: resume with the same options, or start afresh in "
                            "another folder")
    try:
        accelerator.load_state(str(checkpoint))
        best = checkpoint / BEST_WEIGHTS
        return state, load_file(str(best)) if best.is_file() else None
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files: torch, safetensors and pickle fail in many ways
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HemaError(f"checkpoint {checkpoint} cannot be resumed from: it is corrupt or from another model ({first})") from None


def _shown(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
