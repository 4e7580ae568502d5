"""GroupViT pretraining, and zero-shot ImageNet classification with ``--eval``.

    python main_group_vit.py --cfg configs/group_vit_gcc_yfcc_30e.yml                       # one process
    torchrun --nproc_per_node 8 main_group_vit.py --cfg configs/group_vit_gcc_yfcc_30e.yml  # one node
    python main_group_vit.py --cfg CONFIG --resume CHECKPOINT --eval                        # zero-shot ImageNet
    python main_group_vit.py --cfg configs/default.yml --resume nvidia/groupvit-gcc-yfcc --eval  # a transformers model

Runs on CPU or CUDA, as a plain process or under torchrun (NCCL on GPUs, gloo on CPUs). The engine is the
training/ package; datasets/builder.py has the data.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch.distributed as dist

from training import evaluate, train
from utils.cli import add_debug_flag, run_cli
from utils.config import get_config
from utils.distributed import is_dist


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT training and zero-shot evaluation")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="path to the config file")
    parser.add_argument("--opts", nargs="+", help="config overrides: key=value (or key value) pairs")
    parser.add_argument("--batch-size", type=int, help="batch size per process (data.batch_size)")
    parser.add_argument("--resume", help="checkpoint to resume from or to evaluate: a .pth path or URL, a "
                        "transformers GroupViT folder or a Hugging Face Hub id")
    parser.add_argument("--amp-opt-level", choices=["O0", "O1", "O2"],
                        help="train.amp_opt_level: O0 = float32; O1/O2 = float16 autocast with a grad scaler on "
                             "CUDA (float32 on CPU); train.amp=bf16|fp16|fp32 overrides it")
    parser.add_argument("--output", metavar="PATH", help="output folder (default output/<model_name>)")
    parser.add_argument("--tag", help="run tag, appended to the output folder")
    parser.add_argument("--eval", action="store_true", help="only evaluate zero-shot ImageNet classification")
    parser.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    parser.add_argument("--keep", type=int, help="number of epoch checkpoints to keep (checkpoint.max_kept)")
    parser.add_argument("--local_rank", "--local-rank", type=int, help="set by torch.distributed.launch; optional")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train (returns the best metrics: max_accuracy, max_miou) or, with ``--eval``, evaluate (top-1, top-5)."""
    args = parse_args(argv)
    cfg = get_config(args)
    owns_group = not is_dist()
    try:
        return evaluate(cfg) if cfg.evaluate.eval_only else train(cfg).best
    finally:
        if owns_group and is_dist():
            dist.destroy_process_group()


if __name__ == "__main__":
    run_cli(main)
