"""``python -m repvgg_deploy.train`` (and ``torchrun ... -m repvgg_deploy.train``): the repvgg-train CLI."""
import sys

from ..cli.train import cli

if __name__ == "__main__":
    sys.exit(cli(prog="python -m repvgg_deploy.train"))
