"""Zero-shot semantic segmentation evaluation of a GroupViT checkpoint (mIoU, per-class IoU, visualisations).

    python main_seg.py --cfg configs/group_vit_gcc_yfcc_30e.yml --resume CKPT.pth
    python main_seg.py --cfg configs/group_vit_gcc_yfcc_30e.yml --resume CKPT.pth \
        --opts evaluate.seg.cfg=segmentation/configs/_base_/datasets/pascal_context.py --vis input_pred final_group
    torchrun --nproc_per_node 4 main_seg.py --cfg ... --resume ...
    python main_seg.py --cfg ... --resume CKPT --suite all [--skip-missing] [--opts evaluate.seg.protocol=sclip]
    python main_seg.py --cfg ... --resume CKPT --bg-thresh 0.5 0.7 0.9 0.95

Without a ``model`` section in --cfg (e.g. --cfg configs/default.yml), the model config stored in the checkpoint
is used (for a transformers folder or Hub id: its config.json). Writes ``<output>/seg_results.json`` (with --suite:
``suite_results.json`` and ``suite_results.md``), ``<output>/log.txt``, ``<output>/config.json`` and, with --vis,
``<output>/vis_imgs/[<dataset>/]<mode>/<image name>.png``. Results or pictures already in the folder are refused
(``--overwrite``: replaced when the evaluation succeeds); the config is written with the results, so a failed run
leaves the folder as it was. Evaluation runs in float32 (``train.amp_opt_level`` is not used).
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import torch.distributed as dist

from segmentation.evaluation import evaluate_seg
from segmentation.evaluation.suite import SUITE, SUITE_RESULTS, parse_suite, run_suite
from segmentation.model_loading import experiment_config, load_eval_model
from segmentation.vis import VIS_MODES, check_vis_modes
from utils import interrupt
from utils.atomic_files import write_atomic
from utils.cli import add_debug_flag, make_output_dir, run_cli
from utils.config import cfg_to_dict
from utils.distributed import close_distributed, get_rank, init_distributed, is_dist
from utils.errors import UserError
from utils.logger import get_logger
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite, replacing
from utils.run_lock import hold_run_lock


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GroupViT zero-shot segmentation evaluation")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="experiment config (.yml)")
    parser.add_argument("--opts", nargs="+", default=None,
                        help="config overrides, key=value (or 'key value') pairs, e.g. "
                             "evaluate.seg.cfg=segmentation/configs/_base_/datasets/pascal_context.py")
    parser.add_argument("--resume", help="checkpoint to evaluate: a .pth path or URL, a transformers GroupViT "
                        "folder or a Hugging Face Hub id")
    parser.add_argument("--output", metavar="DIR", help="output folder (default output/<model_name>[/<tag>])")
    parser.add_argument("--tag", help="tag of the experiment (a sub-folder of the output)")
    parser.add_argument("--vis", nargs="+", default=None, metavar="MODE",
                        help=f"visualisations to write: {', '.join(VIS_MODES)}")
    parser.add_argument("--suite", metavar="NAMES",
                        help=f"evaluate the benchmark suite: 'all' or a comma list of {', '.join(SUITE)} "
                             "(the model is loaded once)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="with --suite: skip the datasets that are not there (default: an error before any runs)")
    parser.add_argument("--bg-thresh", type=float, nargs="+", default=None, metavar="T",
                        help="background thresholds to score, all from one forward per image (default: the "
                             "dataset config's); with --suite they apply to the datasets with background")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="accepted for torch.distributed.launch; the device follows the LOCAL_RANK variable")
    add_overwrite_flag(parser, "the results and pictures in the output folder")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def check_thresholds(values: list[float] | None) -> list[float] | None:
    if values is not None and not all(0.0 <= t <= 1.0 for t in values):
        raise UserError(f"--bg-thresh values must lie in [0, 1], got {' '.join(map(str, values))}")
    return values


def results_of(output: Path, suite: bool, vis: bool) -> list[Path]:
    """What an evaluation writes into ``output`` besides its log and config."""
    return [output / name for name in (SUITE_RESULTS if suite else ("seg_results.json",))] + \
        ([output / "vis_imgs"] if vis else [])


def main(argv: list[str] | None = None) -> float:
    """Returns the mIoU (with --suite: the mean over the datasets evaluated)."""
    args = parse_args(argv)
    cfg = experiment_config(args)
    vis_modes = check_vis_modes(cfg.vis)
    bg_threshs = check_thresholds(args.bg_thresh)
    suite = parse_suite(args.suite) if args.suite is not None else None
    if args.skip_missing and suite is None:
        raise UserError("--skip-missing needs --suite")
    outputs = results_of(Path(cfg.output), suite is not None, bool(vis_modes))
    refuse_to_overwrite(outputs, "the results of an earlier evaluation", args.overwrite)
    device = init_distributed()  # cuda:LOCAL_RANK or cpu; joins the process group under torchrun
    try:
        output = make_output_dir(cfg.output)
        with hold_run_lock(output, device), replacing(outputs) if get_rank() == 0 else nullcontext():
            if is_dist():
                dist.barrier()  # rank 0 has set the old outputs aside before any rank writes pictures
            logger = get_logger(output)
            model, cfg = load_eval_model(cfg, cfg.checkpoint.resume, device)
            interrupt.now_doing(f"evaluating {cfg.checkpoint.resume}")
            interrupt.progress.resume = "rerun the command to evaluate again (no results were written)"
            if suite is not None:
                logger.info("evaluating %s on the suite %s", cfg.checkpoint.resume, ", ".join(suite))
                results = run_suite(cfg, model, suite, logger, args.skip_missing, bg_threshs, vis_modes,
                                    output / "vis_imgs")
                if get_rank() == 0:
                    paths = results.write(output)
                    logger.info("results written to %s and %s", *paths)
                miou = results.mean_miou()
            else:
                logger.info("evaluating %s on %s", cfg.checkpoint.resume, cfg.evaluate.seg.cfg)
                results = evaluate_seg(cfg, model, logger, vis_modes, output / "vis_imgs", bg_threshs)
                if get_rank() == 0:
                    path = output / "seg_results.json"
                    write_atomic(path, json.dumps({"dataset_cfg": cfg.evaluate.seg.cfg,
                                                   "checkpoint": cfg.checkpoint.resume, **results.to_json()}, indent=2))
                    logger.info("results written to %s", path)
                miou = results.miou
            if get_rank() == 0:
                write_atomic(output / "config.json", json.dumps(cfg_to_dict(cfg), indent=2))
            return miou
    finally:
        close_distributed()


if __name__ == "__main__":
    run_cli(main)
