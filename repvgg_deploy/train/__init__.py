"""Training and evaluation: the paper's recipe, resumable checkpoints, DDP under torchrun.

    python -m repvgg_deploy.train --arch A0 --data fashion-mnist --epochs 10 --out runs/a0
    torchrun --nproc_per_node 2 -m repvgg_deploy.train --arch A0 --data fashion-mnist ...

From Python::

    from repvgg_deploy.train import TrainConfig, train, evaluate_checkpoint, evaluate_onnx
    train(TrainConfig(arch="A0", data="fashion-mnist", out="runs/a0", epochs=10))
    evaluate_onnx("models/repvgg-a0.onnx", data="fashion-mnist")["top1"]
"""
from .evaluate import evaluate, evaluate_checkpoint, evaluate_model, evaluate_onnx, prediction_agreement
from .loop import EXIT_INTERRUPTED, train
from .mix import BatchMixer
from .recipe import (ModelEMA, TrainConfig, WarmupCosineSchedule, lr_at, param_groups, scaled_lr, split_decay,
                     warmup_steps_for)
from .state import capture_rng, load_train_state, restore_rng

__all__ = [
    "TrainConfig", "train", "EXIT_INTERRUPTED", "evaluate", "evaluate_model", "evaluate_checkpoint", "evaluate_onnx",
    "prediction_agreement", "ModelEMA", "WarmupCosineSchedule", "lr_at", "param_groups", "split_decay", "scaled_lr",
    "warmup_steps_for", "capture_rng", "restore_rng", "load_train_state", "BatchMixer",
]
