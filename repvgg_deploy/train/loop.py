"""The training loop: one entry point for one process and for ``torchrun`` (DDP).

Files written to ``out`` (rank 0 only):

* ``last.pth`` after every epoch (and on Ctrl-C / SIGTERM / ``--stop-after``): weights,
  EMA weights, optimizer, schedule, grad scaler, RNG states, position in the run, best
  accuracy. Written atomically (temporary file + fsync + rename).
* ``best.pth`` whenever the validation top-1 improves: the evaluated weights (the EMA
  weights when ``--ema-decay`` is set, since that is the model whose accuracy was measured,
  with BatchNorm statistics recomputed over ``--ema-bn-batches`` training batches) plus the
  data set's metadata; loads in ``repvgg-export`` and ``repvgg-eval`` directly.
* ``metrics.jsonl``: one JSON object per epoch; ``config.json``: the run's settings.

Resume (``--resume``) continues from ``last.pth`` and reaches the same weights as an
uninterrupted run with the same seed on the same machine: the batch order and the
augmentation are functions of ``(seed, epoch, batch)``, and everything else that changes
during training is in the checkpoint. A stop between two steps resumes at the next step.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..data import build_dataset, build_loader, dataset_info
from ..errors import CheckpointError, MissingDependency, UserError
from ..models.config import resolve_arch
from ..models.repvgg import create_model
from ..utils.env import cpu_bf16_native, cxx_compiler, environment
from ..utils.io import atomic_write_json, atomic_write_text, check_out_dir
from .distributed import DistEnv, all_reduce_sum, broadcast_buffers, cleanup_distributed, env_world, init_distributed
from .evaluate import autocast_for, evaluate_model
from .mix import BatchMixer
from .progress import EpochProgress, StopRequest, fmt_duration
from .recipe import ModelEMA, TrainConfig, WarmupCosineSchedule, param_groups, scaled_lr, warmup_steps_for
from .state import _umask, capture_rng, load_train_state, restore_rng, save_train_state, save_weights

__all__ = ["train", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130
STOP_SYNC_EVERY = 16  # under DDP the ranks agree on a stop request every this many steps


def _say(env: DistEnv, *args: Any, err: bool = False) -> None:
    if env.is_main:
        print(*args, file=sys.stderr if err else sys.stdout, flush=True)


def _seed_everything(seed: int, rank: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)


def _setup_backends(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _check_static(cfg: TrainConfig) -> str:
    """Everything that can be checked before touching data or devices; returns the canonical arch."""
    arch = resolve_arch(cfg.arch)
    env = env_world()
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1 or cfg.batch_size % env.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} (the global batch) must be a positive multiple of the "
                        f"{env.world_size} processes")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise UserError(f"--amp must be none, bf16 or fp16, got {cfg.amp!r}")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise UserError(f"--ema-decay must be in (0, 1), got {cfg.ema_decay}")
    if cfg.threads is not None and cfg.threads < 1:
        raise UserError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.stop_after is not None and cfg.stop_after < 1:
        raise UserError(f"--stop-after must be >= 1, got {cfg.stop_after}")
    dataset_info(cfg.data, cfg.data_dir, cfg.in_chans)  # unknown names, folders without train/
    out = Path(cfg.out)
    last = out / "last.pth"
    if cfg.resume:
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint at {last} (nothing to resume; run without --resume to start)")
    elif last.exists() and not cfg.overwrite:
        raise UserError(f"{out} already holds a run ({last}); pass --resume to continue it, --overwrite to start "
                        "over, or another --out")
    check_out_dir(out)
    return arch


def _check_resume(ckpt: Dict[str, Any], cfg: TrainConfig, arch: str, num_classes: int, in_chans: int, img_size: int,
                  path: Path, env: DistEnv) -> None:
    saved_arch = resolve_arch(str(ckpt.get("arch")))
    if saved_arch != arch:
        flag = saved_arch.replace("QARepVGG-", "QA-").replace("RepVGG-", "")  # QARepVGG-A0 -> QA-A0
        raise CheckpointError(f"{path} is a {saved_arch} run, not {arch} (--arch); resume with --arch "
                              f"{flag} or use another --out")
    for key, have in (("num_classes", num_classes), ("in_chans", in_chans), ("img_size", img_size)):
        if ckpt.get(key) is not None and int(ckpt[key]) != have:
            raise CheckpointError(f"{path} was trained with {key}={ckpt[key]}, this run has {have}")
    saved = ckpt.get("config") or {}
    changed = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in TrainConfig.RECIPE_FIELDS
               if k in saved and saved.get(k) != getattr(cfg, k)]
    if changed:
        _say(env, f"warning: resuming with settings that differ from the checkpoint's ({'; '.join(changed)}); "
                  "the result will not match an uninterrupted run", err=True)


def metrics_epochs(path: Path) -> Iterator[Tuple[str, int]]:
    """``(line, epoch)`` for each line of a ``metrics.jsonl`` file that can be read; a line that
    cannot (cut short by a kill mid-append, not JSON, not UTF-8, no integer epoch) is skipped."""
    text = path.read_bytes().decode("utf-8", errors="replace")  # a bad byte spoils its line only
    for line in text.splitlines():
        if "\ufffd" in line:
            continue
        try:
            yield line, int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError, OverflowError):
            continue


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    if not path.exists():
        return
    keep = [line for line, epoch in metrics_epochs(path) if epoch <= epochs_done]
    atomic_write_text(path, "".join(k + "\n" for k in keep))
    os.chmod(path, 0o666 & ~_umask())


def _append_metrics(path: Path, record: Dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _stop_agreed(stop: StopRequest, env: DistEnv, step: int, force: bool = False) -> bool:
    """Single process: the signal flag. DDP: every rank stops at the same step (a MAX all-reduce
    every ``STOP_SYNC_EVERY`` steps, or when ``force``)."""
    if not env.distributed:
        return stop.requested
    if not force and step % STOP_SYNC_EVERY:
        return False
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=env.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item() > 0)


def train(cfg: TrainConfig, resume_command: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) a training run. Returns a summary dict with ``exit_code``:
    0 when done or stopped by ``--stop-after``, 130 when stopped by a signal."""
    arch = _check_static(cfg)
    env = init_distributed(cfg.device)
    try:
        return _train(cfg, arch, env, resume_command)
    finally:
        cleanup_distributed()


def _train(cfg: TrainConfig, arch: str, env: DistEnv, resume_command: Optional[str]) -> Dict[str, Any]:
    device = env.device
    if cfg.amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs a GPU; on CPU use --amp bf16")
    if cfg.amp == "bf16" and device.type == "cpu" and not cpu_bf16_native():
        _say(env, "warning: this CPU has no native bf16 (no AVX512-BF16 or AMX), so --amp bf16 is emulated and many "
                  "times slower than FP32 here; train without --amp (add --channels-last, --compile for speed)", err=True)
    if cfg.sync_bn and device.type != "cuda":
        raise MissingDependency("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    if cfg.compile and not hasattr(torch, "compile"):
        raise MissingDependency("--compile needs torch.compile")
    if cfg.compile and device.type == "cpu" and cxx_compiler() is None:
        raise MissingDependency("--compile on the CPU needs a C++ compiler (g++ or clang++, or $CXX): install one "
                                "(apt-get install g++) or drop --compile")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _setup_backends(cfg, device)
    _seed_everything(cfg.seed, env.rank)

    info = dataset_info(cfg.data, cfg.data_dir, cfg.in_chans)
    img_size = int(cfg.img_size or info.img_size)
    in_chans = info.in_chans
    if env.distributed and cfg.download and not env.is_main:
        torch.distributed.barrier()  # rank 0 downloads first
    train_ds = build_dataset(cfg.data, "train", img_size, in_chans, cfg.data_dir, cfg.download and env.is_main,
                             augment=cfg.augment, subset=cfg.subset, reprob=cfg.reprob)
    val_ds = build_dataset(cfg.data, "val", img_size, in_chans, cfg.data_dir, cfg.download and env.is_main,
                           subset=cfg.val_subset)
    if env.distributed and cfg.download and env.is_main:
        torch.distributed.barrier()
    local_bs = cfg.batch_size // env.world_size
    workers = cfg.workers if cfg.workers is not None else min(8, max(1, (os.cpu_count() or 2) // env.local_world_size))
    train_loader = build_loader(train_ds, local_bs, train=True, device=device, seed=cfg.seed, rank=env.rank,
                                world_size=env.world_size, workers=workers, channels_last=cfg.channels_last)
    val_loader = build_loader(val_ds, max(local_bs, 64), train=False, device=device, seed=cfg.seed, rank=env.rank,
                              world_size=env.world_size, workers=workers, channels_last=cfg.channels_last)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise UserError(f"the training set has {len(train_ds)} images, fewer than one batch of {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(warmup_steps_for(cfg, steps_per_epoch), total_steps)

    torch.manual_seed(cfg.seed)
    model = create_model(arch, num_classes=info.num_classes, in_chans=in_chans)
    if cfg.sync_bn and env.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.scale_lr)
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=peak_lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    schedule = WarmupCosineSchedule(optimizer, total_steps, warmup, peak_lr, cfg.warmup_lr, cfg.min_lr)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)  # takes class indices and mixed targets
    mixer = BatchMixer(info.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob)

    out = Path(cfg.out)
    last_path, best_path, metrics_path = out / "last.pth", out / "best.pth", out / "metrics.jsonl"
    data_meta = {"img_size": img_size, "mean": list(info.mean), "std": list(info.std),
                 "class_names": list(info.class_names),
                 "dataset": info.name if info.kind != "folder" else str(Path(info.root or cfg.data).resolve())}

    start_epoch, start_step, global_step = 0, 0, 0
    best_top1, best_epoch = -1.0, 0
    partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}
    if cfg.resume:
        ckpt = load_train_state(last_path)
        _check_resume(ckpt, cfg, arch, info.num_classes, in_chans, img_size, last_path, env)
        model.load_state_dict(ckpt["model"])
        if ema is not None:
            if "model_ema" in ckpt:
                ema.load_state_dict(ckpt["model_ema"])
            else:
                ema = ModelEMA(model, cfg.ema_decay)  # type: ignore[arg-type]
                _say(env, f"warning: {last_path} has no EMA weights; the EMA starts from the current weights", err=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, start_step, global_step = int(ckpt["epoch"]), int(ckpt["step_in_epoch"]), int(ckpt["global_step"])
        if int(ckpt.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            if start_step:
                raise CheckpointError(f"{last_path} stopped mid-epoch with {ckpt['steps_per_epoch']} steps per epoch; "
                                      f"this run has {steps_per_epoch} (same --batch-size and --subset needed to "
                                      "resume mid-epoch)")
            # another --batch-size or --subset: the schedule goes on from this run's step of that epoch
            global_step = start_epoch * steps_per_epoch
        best_top1, best_epoch = float(ckpt.get("best_top1", -1.0)), int(ckpt.get("best_epoch", 0))
        if start_step and ckpt.get("epoch_stats"):
            partial = dict(ckpt["epoch_stats"])  # summed over the ranks of the run that saved it
            if not env.is_main:
                partial.update(loss_sum=0.0, correct=0.0, count=0.0)
        restore_rng(ckpt["rng"])
        del ckpt
    schedule.set(global_step)

    fwd_model: nn.Module = model
    if env.distributed:
        fwd_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        fwd_model = torch.compile(fwd_model)  # type: ignore[assignment]

    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            _truncate_metrics(metrics_path, start_epoch)
        elif metrics_path.exists():
            metrics_path.unlink()  # --overwrite
        atomic_write_json(out / "config.json", {"config": cfg.to_dict(), "arch": arch, "world_size": env.world_size,
                                                "steps_per_epoch": steps_per_epoch, "peak_lr": peak_lr,
                                                "warmup_steps": warmup, "environment": environment()})
        os.chmod(out / "config.json", 0o666 & ~_umask())
    _say(env, f"{arch} on {info.name}: {len(train_ds)} train / {len(val_ds)} val images, {img_size}x{img_size}x{in_chans}, "
              f"{info.num_classes} classes; {env.world_size} process(es) on {device.type}")
    _say(env, f"recipe: {cfg.epochs} epochs x {steps_per_epoch} steps, batch {cfg.batch_size} "
              f"({env.world_size} x {local_bs}), lr {peak_lr:g} (cosine, {warmup} warm-up steps), SGD momentum "
              f"{cfg.momentum:g}, wd {cfg.weight_decay:g}, label smoothing {cfg.label_smoothing:g}, amp {cfg.amp}, "
              f"EMA {cfg.ema_decay if cfg.ema_decay else 'off'}, seed {cfg.seed}"
              + (f", random erasing {cfg.reprob:g}" if cfg.reprob and cfg.augment else "") + (f", {mixer}" if mixer.enabled else ""))
    if start_epoch or start_step:
        _say(env, f"resuming from {last_path}: epoch {start_epoch + 1} step {start_step}/{steps_per_epoch} "
                  f"(global step {global_step}, best top-1 {max(best_top1, 0):.2f}%)")

    def save_last(epochs_done: int, step_in_epoch: int, stats: Dict[str, float]) -> None:
        if not env.is_main:
            return
        extra: Dict[str, Any] = {}
        if ema is not None:
            extra["model_ema"] = ema.module
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        save_train_state(last_path, model, data_meta, optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                         epoch=epochs_done, step_in_epoch=step_in_epoch, global_step=global_step,
                         steps_per_epoch=steps_per_epoch, epochs=cfg.epochs, best_top1=best_top1, best_epoch=best_epoch,
                         epoch_stats=stats, rng=capture_rng(), config=cfg.to_dict(), world_size=env.world_size,
                         ema=ema is not None, torch_version=str(torch.__version__), **extra)

    def interrupted(where: str, epochs_done: int, step: int) -> Dict[str, Any]:
        cmd = resume_command or "the same command with --resume"
        _say(env, f"interrupted {where}: saved {last_path} (epoch {epochs_done + 1}, step {step}/{steps_per_epoch}); "
                  f"resume with:\n  {cmd}", err=True)
        return {"exit_code": EXIT_INTERRUPTED, "status": "interrupted", "last_path": str(last_path),
                "best_top1": best_top1, "best_epoch": best_epoch, "best_path": str(best_path)}

    eval_model = ema.module if ema is not None else model
    run_t0 = time.perf_counter()
    epochs_this_run = 0
    if start_epoch >= cfg.epochs:
        _say(env, f"{last_path} has already trained {start_epoch}/{cfg.epochs} epochs: nothing to do")
    with StopRequest(announce=env.is_main) as stop:
        for epoch in range(start_epoch, cfg.epochs):
            train_loader.set_epoch(epoch)
            model.train()
            # running sums stay on the device (no sync per step); the count is known on the host
            acc = torch.tensor([partial["loss_sum"], partial["correct"]], dtype=torch.float64).to(device)
            count = float(partial["count"])
            t0 = time.perf_counter() - float(partial["seconds"])
            step = start_step

            def stats() -> Dict[str, float]:
                a = acc.tolist()
                return {"loss": a[0] / max(count, 1), "acc": 100.0 * a[1] / max(count, 1)}

            def sums(reduce: bool) -> list:
                t = torch.cat([acc, torch.tensor([count], dtype=torch.float64).to(device)])
                return (all_reduce_sum(t) if reduce else t).tolist()

            progress = EpochProgress(epoch + 1, cfg.epochs, steps_per_epoch, start_step, stats, env.is_main,
                                     cfg.log_every)
            stopped = False
            for x, y in train_loader.iter_from(start_step):
                schedule.set(global_step)
                x_in, target = mixer(x, y)  # (x, y) as they are unless --mixup/--cutmix
                with autocast_for(device, cfg.amp):
                    logits = fwd_model(x_in)
                    loss = criterion(logits, target)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    if cfg.clip_grad:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if cfg.clip_grad:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                if ema is not None:
                    ema.update(model)
                global_step += 1
                step += 1
                with torch.no_grad():
                    acc += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()])
                count += len(y)
                progress.update(step, len(y) * env.world_size)
                if _stop_agreed(stop, env, step):
                    stopped = True
                    break
            progress.close()
            if math.isnan(stats()["loss"]) and env.is_main:
                warnings.warn("the training loss is NaN (lower --lr, or --clip-grad)", RuntimeWarning)
            if stopped:
                a = sums(reduce=True)  # every rank stopped at this step
                save_last(epoch, step, {"loss_sum": a[0], "correct": a[1], "count": a[2],
                                        "seconds": time.perf_counter() - t0})
                return interrupted("during training", epoch, step)
            train_seconds = time.perf_counter() - t0
            totals = sums(reduce=True)
            train_images = totals[2]

            if env.distributed:
                broadcast_buffers(model)
                if ema is not None:
                    broadcast_buffers(ema.module)
            if ema is not None and cfg.ema_bn_batches:
                # the EMA's averaged BN statistics do not fit its averaged weights: recompute them
                # on this epoch's first training batches (a copy; the EMA itself goes on unchanged)
                eval_model = ema.recalibrated(train_loader.iter_from(0), min(cfg.ema_bn_batches, steps_per_epoch))
                if env.distributed:
                    broadcast_buffers(eval_model)
            try:
                val = evaluate_model(eval_model, val_loader, device, amp=cfg.amp,
                                     stop=None if env.distributed else stop)
                val_raw = evaluate_model(model, val_loader, device, amp=cfg.amp,
                                         stop=None if env.distributed else stop) if ema is not None else None
            except InterruptedError:  # single process only
                a = sums(reduce=False)
                save_last(epoch, steps_per_epoch, {"loss_sum": a[0], "correct": a[1], "count": a[2],
                                                   "seconds": train_seconds})
                return interrupted("during evaluation", epoch, steps_per_epoch)
            epochs_done = epoch + 1
            is_best = val["top1"] > best_top1
            if is_best:
                best_top1, best_epoch = val["top1"], epochs_done
            last_lr = schedule.lr_at(max(global_step - 1, 0))  # of the epoch's last step (also after a resume)
            record = {
                "epoch": epochs_done, "lr": last_lr, "train_loss": totals[0] / max(totals[2], 1),
                "train_acc": 100.0 * totals[1] / max(totals[2], 1), "val_top1": val["top1"], "val_top5": val["top5"],
                "val_loss": val["loss"], "val_n": val["n"], "images_per_s": train_images / max(train_seconds, 1e-9),
                "seconds": train_seconds + val["seconds"] + (val_raw["seconds"] if val_raw else 0.0),
                "train_seconds": train_seconds, "global_step": global_step,
            }
            if val_raw is not None:
                record.update({"val_top1_raw": val_raw["top1"], "val_top5_raw": val_raw["top5"]})
            skipped = int(getattr(train_loader, "skipped", 0)) + int(getattr(val_loader, "skipped", 0))
            if skipped:
                record["skipped_images"] = skipped
            if env.is_main:
                if is_best:
                    save_weights(best_path, eval_model, data_meta, epoch=epochs_done, val_top1=val["top1"],
                                 val_top5=val["top5"], ema=ema is not None, config=cfg.to_dict())
                _append_metrics(metrics_path, record)
            save_last(epochs_done, 0, {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0})
            raw = f" (raw {val_raw['top1']:.2f}%)" if val_raw is not None else ""
            _say(env, f"epoch {epochs_done}/{cfg.epochs}: lr {last_lr:.4g} train loss {record['train_loss']:.4f} "
                      f"acc {record['train_acc']:.2f}% | val top-1 {val['top1']:.2f}%{raw} top-5 {val['top5']:.2f}% | "
                      f"{record['images_per_s']:.0f} img/s, {fmt_duration(record['seconds'])}"
                      f"{' | best' if is_best else ''}")
            if skipped:
                paths = getattr(train_loader, "skipped_paths", []) + getattr(val_loader, "skipped_paths", [])
                _say(env, f"warning: skipped {skipped} unreadable image(s) so far (first: {paths[0] if paths else '?'})",
                     err=True)
            start_step = 0
            partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}
            epochs_this_run += 1
            if epochs_done < cfg.epochs and _stop_agreed(stop, env, 0, force=True):  # the last epoch: done
                return interrupted("after an epoch", epochs_done, 0)
            if cfg.stop_after and epochs_this_run >= cfg.stop_after and epochs_done < cfg.epochs:
                cmd = resume_command or "the same command with --resume"
                _say(env, f"stopped after {epochs_this_run} epoch(s) (--stop-after): saved {last_path}; "
                          f"continue with:\n  {cmd}")
                return {"exit_code": 0, "status": "stopped", "last_path": str(last_path), "best_top1": best_top1,
                        "best_epoch": best_epoch, "best_path": str(best_path)}

    elapsed = time.perf_counter() - run_t0
    _say(env, f"done: {cfg.epochs} epochs ({epochs_this_run} in this run, {fmt_duration(elapsed)}); "
              f"best top-1 {best_top1:.2f}% at epoch {best_epoch}: {best_path}  (last: {last_path})")
    return {"exit_code": 0, "status": "done", "best_top1": best_top1, "best_epoch": best_epoch,
            "best_path": str(best_path), "last_path": str(last_path), "seconds": elapsed}
