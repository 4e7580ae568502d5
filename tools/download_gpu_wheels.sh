#!/usr/bin/env bash
# Wheels of the pure-Python dependencies that the GPU machine's image lacks (it has torch, torchvision, timm, numpy,
# pillow), at the versions pinned in requirements.txt, with their own dependencies, into one folder to carry there
# (about 10 MB). The large compiled dependencies (numpy, pillow, scipy, matplotlib, opencv-python and matplotlib's
# own) are left out: a device carries at most 64 MiB, and the image is expected to have them (check with
# `python -c "import cv2, scipy, matplotlib"` there). Binary wheels are for this machine's Python version.
#
#   tools/download_gpu_wheels.sh shared/gpu_wheels                   # on a machine with a package registry
#   pip install --no-index --find-links shared/gpu_wheels mmengine mmcv-lite mmsegmentation webdataset omegaconf \
#       ftfy nltk textblob                                           # on the GPU machine (no network)
set -euo pipefail
dest="${1:-shared/gpu_wheels}"
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
packages=(mmengine mmcv-lite mmsegmentation webdataset omegaconf ftfy nltk textblob)
pins=()
for name in "${packages[@]}"; do
  pin="$(grep -iE "^${name}==" "$root/requirements.txt" | sed 's/ *#.*//')"
  pins+=("${pin:-$name}")
done
mkdir -p "$dest"
# --only-binary: no source builds there; the dependencies torch already brings are left out by installing on top.
"$python" -m pip download --only-binary=:all: --dest "$dest" "${pins[@]}"
for large in numpy pillow scipy matplotlib opencv_python fonttools contourpy kiwisolver; do
  rm -f "$dest"/"$large"-*.whl
done
echo "wheels for ${pins[*]} in $dest ($(du -sh "$dest" | cut -f1)); numpy, pillow, scipy, matplotlib, opencv-python left to the image"
