"""hema-train: fine-tune a ViT on MLL23 cell classes with Accelerate, and write a model folder with its card.

With no arguments: the offline demo. It draws the synthetic sample (cached), builds it as a dataset,
trains the small ViT of hema/configs/vit-tiny-demo from random weights and writes outputs/vit-mll23-demo.

The real run, on one GPU, several (accelerate launch --multi_gpu) or CPU processes (the top-level
train_vit.py runs this same script):

  accelerate launch train_vit.py --dataset ORG/mll23 --model google/vit-base-patch16-224-in21k \\
      --output-dir OUT [--dataset-config default|deduplicated|harmonised] [--push-to-hub ORG/NAME]

Images are decoded once into a uint8 cache and augmented on the training device (hema.model.inputs);
validation runs every --eval-every steps and the best checkpoint by validation macro-F1 is the one
that is saved, tested once on the test split, and pushed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from pathlib import Path

# OpenMP workers that spin while they wait (the default) steal the very cores they wait for when the
# CPU is shared: one step of the demo's ViT took 2.3 s instead of 0.1 s on 2 cores busy with other
# work. Waiting passively avoids that. Set before torch loads; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hema.base.published import DEFAULT_CONFIG, LABEL_COLUMNS, label_column  # noqa: E402  (after the OpenMP setting)
from hema.model.configs import VIT_TINY_DEMO  # noqa: E402

DEMO_PER_CLASS = 40  # images per class in the demo's synthetic sample

# Options whose default depends on the mode: fine-tuning a pretrained model, or the from-scratch demo.
DEFAULTS = {
    "model": None, "output_dir": None, "epochs": 5, "batch_size": 64, "learning_rate": 5e-5,
    "weight_decay": 0.05, "warmup_ratio": 0.1, "label_smoothing": 0.1,
}
DEMO_DEFAULTS = {
    "model": str(VIT_TINY_DEMO), "output_dir": "outputs/vit-mll23-demo", "epochs": 30, "batch_size": 32,
    "learning_rate": 1.5e-3, "weight_decay": 0.05, "warmup_ratio": 0.1, "label_smoothing": 0.1,
}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", help="Hub dataset id or local built folder (default: the demo's synthetic sample)")
    d.add_argument("--dataset-config", default=DEFAULT_CONFIG, help=" | ".join(LABEL_COLUMNS))
    d.add_argument("--label-column", help="ClassLabel column (default: the config's, e.g. harmonised_label for harmonised)")
    d.add_argument("--image-column", default="image")
    d.add_argument("--eval-dataset", action="append", default=[], metavar="SOURCE",
                   help="after training, also test on this dataset's test split (Hub id or built folder, same "
                   "--dataset-config; repeatable): e.g. the harmonised view of another source")
    d.add_argument("--no-match-field", dest="match_field", action="store_false",
                   help="evaluate other datasets as stored, not brought to the training images' field of view")
    d.add_argument("--compare-field", action="store_true",
                   help="also report other datasets as stored, beside the field-matched score")
    d.add_argument("--stain-standardise", action="store_true",
                   help="also report other datasets with each colour channel re-standardised to the training set's")
    d.add_argument("--cache-dir", help="decoded-image cache (default: $HEMA_CACHE or ~/.cache/hema, /decoded)")
    m = p.add_argument_group("model")
    m.add_argument("--model", help="Hub id or local folder; a folder with only config.json is randomly "
                   "initialised (default: google/vit-base-patch16-224-in21k; demo: hema/configs/vit-tiny-demo)")
    m.add_argument("--image-size", type=int, help="input size in pixels (default: the model's)")
    m.add_argument("--output-dir", help="model folder to write (demo default: outputs/vit-mll23-demo)")
    t = p.add_argument_group("training (defaults: fine-tuning; the demo's in brackets)")
    t.add_argument("--epochs", type=float, help="passes over the training split (5) [30]")
    t.add_argument("--max-steps", type=int, help="optimiser steps; overrides --epochs")
    t.add_argument("--batch-size", type=int, help="images per device and step (64) [32]")
    t.add_argument("--eval-batch-size", type=int, help="default: 2 x --batch-size")
    t.add_argument("--learning-rate", type=float, help="peak learning rate (5e-5) [1.5e-3]")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay on matrices (0.05)")
    t.add_argument("--warmup-ratio", type=float, help="share of steps with linear warm-up before cosine decay (0.1)")
    t.add_argument("--gradient-accumulation-steps", type=int, default=1)
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    t.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"],
                   help="default: bf16 on GPUs that have it natively (Ampere+), fp16 on older ones, no on CPU")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--class-weighting", choices=["none", "inverse", "sqrt-inverse"], default="sqrt-inverse",
                   help="loss weight per class from training frequencies (default: sqrt-inverse)")
    t.add_argument("--balanced-sampler", action="store_true", help="draw every class equally often")
    t.add_argument("--label-smoothing", type=float, help="(0.1)")
    t.add_argument("--compile", choices=["auto", "yes", "no"], default="auto",
                   help="torch.compile the model (auto: on GPU only; on CPU compiling costs more than it saves)")
    t.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    e = p.add_argument_group("evaluation, checkpoints, logging")
    e.add_argument("--eval-every", type=int, help="validate every N optimiser steps (default: once per epoch)")
    e.add_argument("--checkpoint-every", type=int, help="save OUT/checkpoints/step_N every N steps (default: --eval-every)")
    e.add_argument("--checkpoints-total-limit", type=int, default=2, help="keep the last N checkpoints")
    e.add_argument("--resume-from-checkpoint", help="auto (latest in OUT/checkpoints, if any) or a checkpoint folder")
    e.add_argument("--logging-steps", type=int, default=10)
    e.add_argument("--report-to", choices=["auto", "tensorboard", "none"], default="auto",
                   help="trackers (auto: tensorboard when installed)")
    h = p.add_argument_group("Hub")
    h.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the model folder there at the end")
    h.add_argument("--hub-private", action="store_true", help="create the repository private")
    h.add_argument("--token", help="Hub token (default: HF_TOKEN or the `hf auth login` cache); never stored")
    args = p.parse_args(argv)
    args.demo = args.dataset is None
    for key, value in (DEMO_DEFAULTS if args.demo else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model is None:
        args.model = "google/vit-base-patch16-224-in21k"
    if args.label_column is None:
        args.label_column = label_column(args.dataset_config)
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from hema.cli import run

    return run(train, parse_args(argv, prog), interrupted="interrupted: the model folder was not written")


def train(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, TorchDynamoPlugin, set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from hema.base.cache import cache_root
    from hema.base.errors import HemaError
    from hema.base.published import dataset_facts
    from hema.cli.demo import demo_dataset
    from hema.model import checkpoints, classifier, data, evaluation, inputs, optimisation
    from hema.model import folder as model_folder
    from hema.model.evaluation import SUMMARY_METRICS

    if args.output_dir is None:
        raise HemaError("--output-dir is required with --dataset")
    out = Path(args.output_dir)
    check_options(args)
    model_folder.check_output_dir(out)  # before any work: a folder that is not hema-train's is never written
    checkpoint = checkpoints.find(out, args.resume_from_checkpoint)
    cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in {"1", "true"}
    compile_model = args.compile == "yes" or (args.compile == "auto" and cuda)
    accelerator = Accelerator(
        # Emulated bf16 (a T4 reports it) is slow: default to fp16 there, bf16 from Ampere on.
        mixed_precision=args.mixed_precision or (
            ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16") if cuda else "no"
        ),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers(args.report_to),
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "runs")),
        # One graph, static shapes. Under DDP (several processes) dynamo splits the graph at gradient
        # buckets itself, so the single-graph check is left to single-process runs.
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if compile_model else "no", dynamic=False,
                                        fullgraph=int(os.environ.get("WORLD_SIZE", "1")) == 1, mode=args.compile_mode),
    )
    say = accelerator.print
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    token = None
    if args.push_to_hub:  # before any work that a rejected token would waste
        from hema.base import hub

        token = hub.resolve_token(args.token)
        if accelerator.is_main_process:
            hub.check_write_access(args.push_to_hub, token, repo_type="model")
    set_seed(args.seed)

    # ---- data: the splits, their class names, and each split decoded once into the uint8 cache
    with accelerator.local_main_process_first():  # one process per machine draws, builds and decodes
        source = demo_dataset(DEMO_PER_CLASS) if args.demo else args.dataset
        splits, class_names = data.load_splits(source, args.dataset_config, args.label_column, args.image_column)
        # Other datasets to test on: opened and checked now, so a class mismatch stops before any training.
        others = [data.open_split(s, args.dataset_config, "test", args.label_column) for s in args.eval_dataset]
    for other in others:
        evaluation.check_classes(class_names, other)
    loaded = classifier.load_model(args.model, class_names, args.image_size)
    for note in loaded.notes:
        say(f"model: {note}")
    model = loaded.model
    image_size = loaded.image_size
    cache_dir = Path(args.cache_dir) if args.cache_dir else cache_root() / "decoded"
    with accelerator.local_main_process_first():
        arrays = {s: inputs.decoded_images(ds, args.image_column, image_size, cache_dir) for s, ds in splits.items()}
    labels = {s: np.asarray(ds[args.label_column], dtype=np.int64) for s, ds in splits.items()}
    device = accelerator.device
    images = {s: inputs.DeviceImages(a, device) for s, a in arrays.items()}
    targets = {s: torch.as_tensor(v, device=device) for s, v in labels.items()}
    transform = inputs.BatchTransform(loaded.image_mean, loaded.image_std)
    num_classes = len(class_names)

    row_weights = optimisation.balanced_row_weights(labels["train"], num_classes) if args.balanced_sampler else None
    sampler = inputs.EpochSampler(len(labels["train"]), args.seed, row_weights)
    if len(labels["train"]) < args.batch_size * accelerator.num_processes:
        raise HemaError(f"the training split has {len(labels['train'])} images, fewer than one batch "
                        f"({args.batch_size} x {accelerator.num_processes} processes): lower --batch-size")
    train_dl = accelerator.prepare_data_loader(
        torch.utils.data.DataLoader(range(len(labels["train"])), batch_size=args.batch_size, sampler=sampler,
                                    drop_last=True), device_placement=False)  # static shapes for the compiled step
    eval_batch_size = args.eval_batch_size or 2 * args.batch_size
    eval_dls = {s: accelerator.prepare_data_loader(
        torch.utils.data.DataLoader(range(len(labels[s])), batch_size=eval_batch_size), device_placement=False)
        for s in ("validation", "test")}

    steps_per_epoch = math.ceil(len(train_dl) / args.gradient_accumulation_steps)
    max_steps = args.max_steps or max(1, math.ceil(args.epochs * steps_per_epoch))
    eval_every = args.eval_every or steps_per_epoch
    checkpoint_every = args.checkpoint_every or eval_every
    loss_weights = optimisation.class_weights(labels["train"], num_classes, args.class_weighting)
    loss_weights = None if loss_weights is None else loss_weights.to(device)

    net = classifier.classifier_module(model)
    optimizer = optimisation.make_optimizer(net, args.learning_rate, args.weight_decay)
    # The prepared scheduler steps once per process per optimiser step, hence the factor.
    scheduler = get_scheduler("cosine", optimizer,
                              num_warmup_steps=round(args.warmup_ratio * max_steps) * accelerator.num_processes,
                              num_training_steps=max_steps * accelerator.num_processes)
    net, optimizer, scheduler = accelerator.prepare(net, optimizer, scheduler)

    training_args = resolved_options(args, image_size=image_size, max_steps=max_steps, eval_every=eval_every,
                                     checkpoint_every=checkpoint_every, accelerator=accelerator, compiled=compile_model)
    accelerator.init_trackers("train_vit", config=tracker_config(training_args))

    state = checkpoints.TrainingState(image_size=image_size, class_names=list(class_names))
    best_weights = None
    if checkpoint is None and args.resume_from_checkpoint == "auto":
        say(f"--resume-from-checkpoint auto: no checkpoint in {out / checkpoints.CHECKPOINTS}, starting afresh")
    if checkpoint is not None:
        state, best_weights = checkpoints.load(accelerator, checkpoint, state)
        say(f"resumed from {checkpoint} at step {state.completed_steps}")

    def evaluate(split: str) -> dict:
        """Metrics of the current weights on a split, from all processes' predictions."""
        net.eval()
        predictions, references, confidences = [], [], []
        with torch.no_grad():
            for rows in eval_dls[split]:
                n = len(rows)  # pad the last batch: the compiled model keeps one static shape
                padded = torch.cat([rows, rows[:1].repeat(eval_batch_size - n)]) if n < eval_batch_size else rows
                logits = net(transform.evaluate(images[split].gather(padded)))[:n].float()
                top = torch.softmax(logits, dim=-1).max(dim=-1)
                pred, conf, ref = accelerator.gather_for_metrics((top.indices, top.values, targets[split][rows.to(device)]))
                predictions.append(pred.cpu())
                confidences.append(conf.cpu())
                references.append(ref.cpu())
        net.train()
        return evaluation.classification_scores(torch.cat(predictions).numpy(), torch.cat(confidences).numpy(),
                                                torch.cat(references).numpy(), class_names)

    say(f"training on {len(labels['train']):,} images ({len(labels['validation']):,} validation, "
        f"{len(labels['test']):,} test), {num_classes} classes, {max_steps} steps of "
        f"{args.batch_size} x {accelerator.num_processes} x {args.gradient_accumulation_steps} images, "
        f"{image_size}px, on {describe_hardware(accelerator)}")
    progress = tqdm(total=max_steps, initial=state.completed_steps, desc="train",
                    disable=not accelerator.is_local_main_process)
    net.train()
    started = time.perf_counter() - state.train_seconds
    window_loss, window_batches = torch.zeros((), device=device), 0
    epoch = state.completed_steps // steps_per_epoch
    while state.completed_steps < max_steps:
        train_dl.set_epoch(epoch)
        # A resumed run replays the epoch's order and skips the batches it had done.
        skip = (state.completed_steps - epoch * steps_per_epoch) * args.gradient_accumulation_steps
        batches = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        for position, rows in enumerate(batches, start=skip):
            # Augmentation randomness is a function of (seed, epoch, batch, process): replayable.
            generator = inputs.batch_generator(args.seed, epoch, position, accelerator.process_index)
            with accelerator.accumulate(net):
                pixel_values = transform.train(images["train"].gather(rows), generator)
                loss = optimisation.training_step(
                    accelerator, net, optimizer, scheduler, pixel_values, targets["train"][rows.to(device)],
                    loss_weights, args.label_smoothing, args.max_grad_norm)
            window_loss += loss
            window_batches += 1
            if not accelerator.sync_gradients:
                continue
            state.completed_steps += 1
            step = state.completed_steps
            progress.update(1)
            if step % args.logging_steps == 0 or step == max_steps:
                mean_loss = accelerator.reduce(window_loss / window_batches, "mean").item()
                accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=step)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                window_loss, window_batches = torch.zeros((), device=device), 0
            if step % eval_every == 0 or step == max_steps:
                scores = evaluate("validation")
                accelerator.log({f"validation/{k}": scores[k] for k in SUMMARY_METRICS}, step=step)
                say(f"step {step}: validation " + summary(scores))
                if scores["macro_f1"] > state.best_macro_f1:
                    state.best_macro_f1, state.best_step = scores["macro_f1"], step
                    state.best_validation = {k: scores[k] for k in SUMMARY_METRICS}
                    best_weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(accelerator, net).state_dict().items()}
            if step % checkpoint_every == 0 and step < max_steps:
                state.train_seconds = time.perf_counter() - started
                checkpoints.save(accelerator, out, state, best_weights, args.checkpoints_total_limit)
            if step >= max_steps:
                break
        epoch += 1
    progress.close()
    state.train_seconds = time.perf_counter() - started

    # ---- the best weights, tested once, written as the model folder (and pushed)
    unwrap(accelerator, net).load_state_dict(best_weights)
    test = evaluate("test")
    say(f"test (best validation step {state.best_step}): " + summary(test))
    if accelerator.is_main_process:
        trained = unwrap(accelerator, net)
        facts = dataset_facts(source)
        # Saved in config.json, so that any later evaluation can match the field of view and the stain.
        field = data.field_of_view_um(facts, splits["train"])
        colour = evaluation.ChannelStats.of(arrays["train"])
        setattr(trained.config, evaluation.FIELD_ATTRIBUTE, field)
        setattr(trained.config, evaluation.COLOUR_ATTRIBUTE, vars(colour))
        evaluations = []
        for other in others:
            result = evaluation.score(trained, image_size, loaded.image_mean, loaded.image_std, other,
                                      model_field_um=field, match_field=args.match_field,
                                      compare_field=args.compare_field,
                                      stain_target=colour if args.stain_standardise else None,
                                      device=str(accelerator.device))
            evaluations.append(result)
            say(f"{other.name} ({other.split}): " + summary(result) + f", ECE {result['ece']:.4f}")
        card = card_inputs(args, out, trained, loaded, facts, state, test, training_args, evaluations,
                           describe_hardware(accelerator))
        model_folder.write(out, model=trained, state=state, test=test, card=card, training_args=training_args)
        say(f"model folder: {out}")
        if args.push_to_hub:
            from hema.base import hub

            url = hub.push_folder(out, args.push_to_hub, repo_type="model", token=token, private=args.hub_private,
                                  commit_message=f"train_vit.py: test macro-F1 {test['macro_f1']:.4f}",
                                  ignore_patterns=model_folder.PUSH_IGNORE)
            say(f"pushed: {url}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group


def summary(scores: dict) -> str:
    from hema.model.evaluation import SUMMARY_METRICS

    return ", ".join(f"{k} {scores[k]:.4f}" for k in SUMMARY_METRICS)


def unwrap(accelerator, net):
    """The transformers model inside the prepared (DDP, compiled) training module."""
    return accelerator.unwrap_model(net, keep_torch_compile=False).model


def check_options(args: argparse.Namespace) -> None:
    from hema.base.errors import HemaError

    positive = ("batch_size", "gradient_accumulation_steps", "logging_steps", "checkpoints_total_limit",
                "max_steps", "eval_every", "checkpoint_every", "eval_batch_size", "image_size")
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise HemaError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    if args.epochs <= 0 or args.learning_rate <= 0:
        raise HemaError("--epochs and --learning-rate must be positive")
    if not 0 <= args.warmup_ratio < 1 or not 0 <= args.label_smoothing < 1:
        raise HemaError("--warmup-ratio and --label-smoothing must be in [0, 1)")


def trackers(report_to: str) -> list[str] | None:
    from accelerate.utils import is_tensorboard_available

    from hema.base.errors import HemaError

    if report_to == "none" or (report_to == "auto" and not is_tensorboard_available()):
        return None
    if not is_tensorboard_available():
        raise HemaError("--report-to tensorboard: tensorboard is not installed (pip install tensorboard)")
    return ["tensorboard"]


def resolved_options(args: argparse.Namespace, **resolved) -> dict:
    """What training_args.json records: every option as used (the token never), plus derived values."""
    accelerator = resolved.pop("accelerator")
    options = {k: v for k, v in vars(args).items() if k != "token"}
    options.update(resolved, num_processes=accelerator.num_processes,
                   mixed_precision=accelerator.mixed_precision,
                   total_batch_size=args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps)
    return options


def card_inputs(args: argparse.Namespace, out: Path, model, loaded, facts, state, test: dict, options: dict,
                evaluations: list[dict], hardware: str):
    """What the model card says, typed: the run's recipe as it was used, and the lineage of the
    classes trained on (the harmonised ones', or the training source's own)."""
    from hema.base.taxonomy import HARMONISED_LINEAGE
    from hema.dataset import BUILDERS
    from hema.model import card

    source = BUILDERS.get(facts.source)
    lineage = HARMONISED_LINEAGE if args.label_column == "harmonised_label" else (source.SOURCE.lineage if source else {})
    recipe = card.TrainingRecipe(**{f.name: options[f.name] for f in dataclasses.fields(card.TrainingRecipe)})
    return card.CardInputs(
        model_id=args.push_to_hub or str(out), architecture=card.architecture(model.config), dataset=facts,
        dataset_config=args.dataset_config, label_column=args.label_column, lineage=lineage,
        origin=card.origin(loaded), base_model=loaded.base_model, image_size=loaded.image_size,
        image_mean=loaded.image_mean, image_std=loaded.image_std, test=test, validation=state.best_validation,
        best_step=state.best_step, recipe=recipe, training_time=f"{state.train_seconds / 60:.1f} minutes",
        hardware=hardware, evaluations=evaluations,
    )


def tracker_config(config: dict) -> dict:
    """TensorBoard's hparams take scalars and strings only."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items() if v is not None}


def describe_hardware(accelerator) -> str:
    import torch

    n = accelerator.num_processes
    if accelerator.device.type == "cuda":
        return f"{n} x {torch.cuda.get_device_name(accelerator.device)}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {n} process{'es' * (n > 1)})"


if __name__ == "__main__":
    sys.exit(main(prog="train_vit.py"))
