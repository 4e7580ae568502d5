"""Zero-shot semantic segmentation evaluation of a GroupViT checkpoint (mIoU, per-class IoU, visualisations).

    python main_seg.py --cfg configs/group_vit_gcc_yfcc_30e.yml --resume CKPT.pth
    python main_seg.py --cfg configs/group_vit_gcc_yfcc_30e.yml --resume CKPT.pth \
        --opts evaluate.seg.cfg=segmentation/configs/_base_/datasets/pascal_context.py --vis input_pred final_group
    torchrun --nproc_per_node 4 main_seg.py --cfg ... --resume ...

Without a ``model`` section in --cfg (e.g. --cfg configs/default.yml), the model config stored in the checkpoint
is used. Writes ``<output>/seg_results.json``, ``<output>/log.txt``, ``<output>/config.json`` and, with --vis,
``<output>/vis_imgs/<mode>/<image name>.png``. Evaluation runs in float32 (``train.amp_opt_level`` is not used).
"""

from __future__ import annotations

import argparse
import json

from segmentation.evaluation import evaluate_seg
from segmentation.runtime import close_distributed, experiment_config, load_eval_model
from segmentation.vis import VIS_MODES, check_vis_modes
from utils.cli import add_debug_flag, make_output_dir, run_cli
from utils.config import cfg_to_dict
from utils.distributed import get_rank, init_distributed
from utils.logger import get_logger


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GroupViT zero-shot segmentation evaluation")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="experiment config (.yml)")
    parser.add_argument("--opts", nargs="+", default=None,
                        help="config overrides, key=value (or 'key value') pairs, e.g. "
                             "evaluate.seg.cfg=segmentation/configs/_base_/datasets/pascal_context.py")
    parser.add_argument("--resume", help="checkpoint path or URL to evaluate")
    parser.add_argument("--output", metavar="DIR", help="output folder (default output/<model_name>[/<tag>])")
    parser.add_argument("--tag", help="tag of the experiment (a sub-folder of the output)")
    parser.add_argument("--vis", nargs="+", default=None, metavar="MODE",
                        help=f"visualisations to write: {', '.join(VIS_MODES)}")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="accepted for torch.distributed.launch; the device follows the LOCAL_RANK variable")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    cfg = experiment_config(args)
    vis_modes = check_vis_modes(cfg.vis)
    device = init_distributed()  # cuda:LOCAL_RANK or cpu; joins the process group under torchrun
    try:
        output = make_output_dir(cfg.output)
        logger = get_logger(output)
        model, cfg = load_eval_model(cfg, cfg.checkpoint.resume, device)
        if get_rank() == 0:
            (output / "config.json").write_text(json.dumps(cfg_to_dict(cfg), indent=2))
        logger.info("evaluating %s on %s", cfg.checkpoint.resume, cfg.evaluate.seg.cfg)
        results = evaluate_seg(cfg, model, logger, vis_modes, output / "vis_imgs")
        if get_rank() == 0:
            path = output / "seg_results.json"
            path.write_text(json.dumps({"dataset_cfg": cfg.evaluate.seg.cfg, "checkpoint": cfg.checkpoint.resume,
                                        **results.to_json()}, indent=2))
            logger.info("results written to %s", path)
        return results.miou
    finally:
        close_distributed()


if __name__ == "__main__":
    run_cli(main)
