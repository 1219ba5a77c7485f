"""``repvgg-train``: train a RepVGG on Fashion-MNIST, CIFAR-10 or an ImageFolder tree (also under torchrun)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import List, Optional, Sequence

from .common import nonneg_float, nonneg_int, positive_int, probability, run_main

PROG = "repvgg-train"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a RepVGG / QARepVGG classifier with the paper's recipe (resumable; DDP under torchrun).",
        epilog=(
            "Examples:\n"
            "  repvgg-train --arch A0 --data fashion-mnist --epochs 10 --out runs/a0\n"
            "  repvgg-train --arch A0 --data fashion-mnist --epochs 10 --out runs/a0 --resume\n"
            "  torchrun --nproc_per_node 2 -m repvgg_deploy.train --arch A0 --data fashion-mnist --out runs/a0\n"
            "  repvgg-train --arch B2 --data /data/imagenet --img-size 224 --epochs 120 --out runs/b2\n"
            "See docs/training.md for the recipe and its defaults."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", required=True, help="A0 A1 A2 B0 B1 B1g2 B1g4 B2 B2g2 B2g4 B3 B3g2 B3g4, or QA-A0 ... for QARepVGG")
    p.add_argument("--data", required=True,
                   help="fashion-mnist, cifar10, fake (smoke tests), or a folder with train/ and val/ (ImageFolder)")
    p.add_argument("--out", default=None, help="run folder for last.pth, best.pth, metrics.jsonl (default runs/<arch>)")

    d = p.add_argument_group("data")
    d.add_argument("--data-dir", default=None, help="where to look for (or --download) fashion-mnist / cifar10 first")
    d.add_argument("--download", action="store_true", help="download the data set with torchvision if it is not found")
    d.add_argument("--img-size", type=positive_int, default=None, help="input size (default 32 for fashion-mnist/cifar10, 224 for folders)")
    d.add_argument("--in-chans", type=positive_int, default=None, help="input channels (default 1 for fashion-mnist, else 3)")
    d.add_argument("--subset", type=positive_int, default=None, help="train on the first N training images only")
    d.add_argument("--val-subset", type=positive_int, default=None, help="validate on the first N validation images only")
    d.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no training augmentation (default: random crop with padding + flip; RandomResizedCrop + flip for folders)")
    d.add_argument("--reprob", type=probability, default=0.0,
                   help="random erasing: probability per training image of erasing one rectangle (timm's --reprob; default 0)")
    d.add_argument("--mixup", type=nonneg_float, default=0.0,
                   help="MixUp alpha: blend each batch's images and labels, lam ~ Beta(alpha, alpha) (timm's --mixup, "
                        "e.g. 0.2; default 0: off)")
    d.add_argument("--cutmix", type=nonneg_float, default=0.0,
                   help="CutMix alpha: paste a box of another image of the batch, labels by area (timm's --cutmix, "
                        "e.g. 1.0; default 0: off)")
    d.add_argument("--mixup-prob", type=probability, default=1.0,
                   help="probability that a batch is mixed, when --mixup or --cutmix is on (default 1)")
    d.add_argument("--mixup-switch-prob", type=probability, default=0.5,
                   help="with both --mixup and --cutmix: probability of CutMix for a batch (default 0.5)")
    d.add_argument("--workers", type=nonneg_int, default=None,
                   help="DataLoader worker processes per process for folders (default min(8, cores per process)); "
                        "in-memory sets need none")

    r = p.add_argument_group("recipe (paper defaults)")
    r.add_argument("--epochs", type=positive_int, default=120, help="epochs (default 120)")
    r.add_argument("--batch-size", type=positive_int, default=256, help="global batch over all processes (default 256)")
    r.add_argument("--lr", type=nonneg_float, default=0.1, help="base LR per 256 images, scaled by batch/256 (default 0.1)")
    r.add_argument("--no-lr-scaling", dest="scale_lr", action="store_false", help="use --lr as it is, without the batch/256 scaling")
    r.add_argument("--momentum", type=nonneg_float, default=0.9, help="SGD momentum (default 0.9)")
    r.add_argument("--nesterov", action="store_true", help="Nesterov momentum (default off)")
    r.add_argument("--weight-decay", type=nonneg_float, default=1e-4,
                   help="weight decay (default 1e-4), none on biases and BatchNorm parameters")
    r.add_argument("--warmup-epochs", type=nonneg_float, default=None,
                   help="linear warm-up epochs (default 5, or a tenth of --epochs when that is shorter)")
    r.add_argument("--warmup-steps", type=nonneg_int, default=None, help="linear warm-up in optimizer steps (overrides --warmup-epochs)")
    r.add_argument("--warmup-lr", type=nonneg_float, default=0.0, help="LR the warm-up starts from (default 0)")
    r.add_argument("--min-lr", type=nonneg_float, default=0.0, help="LR the cosine decays to (default 0)")
    r.add_argument("--label-smoothing", type=nonneg_float, default=0.1, help="label smoothing (default 0.1)")
    r.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights with this decay, e.g. 0.9998 (default off)")
    r.add_argument("--ema-bn-batches", type=nonneg_int, default=20,
                   help="before each evaluation, recompute the EMA model's BatchNorm statistics over this many training "
                        "batches (torch.optim.swa_utils.update_bn); 0 keeps the averaged statistics (default 20)")
    r.add_argument("--clip-grad", type=nonneg_float, default=None, help="clip the gradient norm to this (default off)")
    r.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="mixed precision: bf16 (CPU or GPU) or fp16 (GPU, with a GradScaler); default none")
    r.add_argument("--seed", type=int, default=0, help="seed of the initialization, batch order and augmentation (default 0)")
    r.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU; CPU runs are already)")

    x = p.add_argument_group("run")
    x.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pth")
    x.add_argument("--overwrite", action="store_true", help="start over in an --out that already holds a run")
    x.add_argument("--stop-after", type=positive_int, default=None,
                   help="leave after N epochs of this invocation (last.pth saved; continue with --resume)")
    x.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    x.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per process (default: torch's, one per core; torchrun sets OMP_NUM_THREADS=1)")
    x.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convs on GPU with --amp)")
    x.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes under torchrun (GPU only; default off)")
    x.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; default off)")
    x.add_argument("--log-every", type=positive_int, default=None,
                   help="without a terminal, print a progress line every N steps (default: 10 lines per epoch)")
    return p


def _resume_command(prog: str, argv: List[str]) -> str:
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        nnodes = max(1, world // max(local, 1))
        head = f"torchrun --nnodes {nnodes} --nproc_per_node {local}"
        if nnodes > 1:
            head += " <your --rdzv-* options>"
        return f"{head} -m repvgg_deploy.train {shlex.join(args)}"
    return f"{prog} {shlex.join(args)}"


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    from ..models.config import arch_slug
    from ..train import TrainConfig, train

    fields = vars(args).copy()
    if fields["out"] is None:
        fields["out"] = os.path.join("runs", arch_slug(args.arch))
    cfg = TrainConfig(**fields)
    result = train(cfg, resume_command=_resume_command(prog, argv))
    return int(result["exit_code"])


def cli(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    return run_main(lambda a: main(a, prog), prog, argv)


if __name__ == "__main__":
    sys.exit(cli())
