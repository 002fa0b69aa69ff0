"""Optimisation: the loss on imbalanced classes, the optimiser and one training step.

The loop itself stays in plain sight in hema.cli.train; the step is here because the benchmark
(bench/train_bench.py) times the same one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def class_weights(labels: np.ndarray, num_classes: int, scheme: str) -> torch.Tensor | None:
    """Loss weights per class from the training labels: none, inverse or sqrt-inverse frequency.

    Weights are scaled so that the average weight over the training rows is 1 (the loss keeps its
    scale); a class absent from training gets weight 0 (it never appears as a target anyway).
    """
    if scheme == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    power = {"inverse": 1.0, "sqrt-inverse": 0.5}[scheme]
    weights = np.divide(1.0, counts**power, out=np.zeros(num_classes), where=counts > 0)
    weights *= counts.sum() / (weights * counts).sum()
    return torch.tensor(weights, dtype=torch.float32)


def balanced_row_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Sampling weight per training row so that each class is drawn equally often."""
    counts = np.bincount(labels, minlength=num_classes)
    return 1.0 / counts[labels]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
                        label_smoothing: float) -> torch.Tensor:
    """Cross-entropy in float32 (class-weighted mean when weights are given)."""
    return F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=label_smoothing)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on biases, norms, the [CLS] token or position embeddings."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or name.endswith(("cls_token", "position_embeddings"))
        (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (one launch for all parameters on GPU, vectorised on CPU)."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=learning_rate, fused=True)


def training_step(accelerator, net: nn.Module, optimizer, scheduler, pixel_values: torch.Tensor,
                  labels: torch.Tensor, loss_weights: torch.Tensor | None, label_smoothing: float,
                  max_grad_norm: float) -> torch.Tensor:
    """One micro-batch: forward, backward and (when Accelerate syncs gradients) the optimiser step.

    Call it inside `accelerator.accumulate(net)`; the prepared optimiser and scheduler skip their step
    on accumulation micro-batches. Returns the detached loss (no host sync).
    """
    loss = classification_loss(net(pixel_values), labels, loss_weights, label_smoothing)
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(net.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
