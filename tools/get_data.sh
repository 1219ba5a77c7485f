#!/usr/bin/env bash
# Install the real Fashion-MNIST (Debian's package dataset-fashion-mnist) where apt is available.
# Idempotent: does nothing when the files are already there. Never fails the caller: without apt
# or root it prints the commands to run and exits 0 (the data-dependent steps then say what is missing).
set -u
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/t10k-images-idx3-ubyte.gz" ] && [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST: found in $DIR"
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist ..."
  if $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; then
    echo "Fashion-MNIST: installed in $DIR"
    exit 0
  fi
fi
cat <<MSG
Fashion-MNIST: not installed and could not be installed here. Get it with one of:
  sudo apt-get install dataset-fashion-mnist          # Debian/Ubuntu: files land in $DIR
  repvgg-train --data fashion-mnist --download ...    # torchvision's download into --data-dir
or put the four IDX .gz files in a folder and pass --data-dir FOLDER.
MSG
exit 0
