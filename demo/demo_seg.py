"""Zero-shot segmentation of one image with a GroupViT checkpoint, written as visualisations.

    python demo/demo_seg.py --resume group_vit_gcc_yfcc_30e-879422e0.pth --input demo/examples/coffee.jpg
    python demo/demo_seg.py --cfg configs/group_vit_gcc_yfcc_30e.yml --resume CKPT.pth --dataset context \
        --input IMG.jpg --vis input_pred_label final_group --output_dir demo/output
    python demo/demo_seg.py --resume CKPT.pth --input IMG.jpg --vocab cup saucer spoon --vocab-only

Classes: the --dataset's (voc, context, coco with background; ade20k, coco_stuff, cityscapes without), plus the
--vocab names; with --vocab-only just background and the --vocab names. The whole resized image is processed at
once (test_cfg.mode=whole; another mode can be set with --opts "evaluate.seg.opts=[test_cfg.mode=slide]"). Without
--cfg the model config stored in the checkpoint is used (with configs/default.yml for everything else). Files:
<output_dir>/vis_imgs/<mode>/<image name>.png. Runs on CUDA when available, else on CPU (--device chooses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demo/ is not a package: import the project's packages from the repository root

from segmentation.datasets import VOCABULARY_PRESETS, with_vocab  # noqa: E402
from segmentation.evaluation import build_segmentor  # noqa: E402
from segmentation.image_files import read_image  # noqa: E402
from segmentation.inference import class_shares, segment_image  # noqa: E402
from segmentation.model_loading import DEFAULT_CFG, experiment_config, load_eval_model  # noqa: E402
from segmentation.vis import VIS_MODES, check_palette_png, check_vis_modes, visualize_sample  # noqa: E402
from utils.cli import add_debug_flag, make_output_dir, pick_device, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GroupViT zero-shot segmentation demo")
    parser.add_argument("--cfg", metavar="FILE",
                        help="experiment config (.yml); default: configs/default.yml with the checkpoint's model")
    parser.add_argument("--opts", nargs="+", default=None, help="config overrides, key=value pairs")
    parser.add_argument("--resume", required=True,
                        help="checkpoint: a .pth path or URL, a transformers GroupViT folder or a Hugging Face Hub id")
    parser.add_argument("--vis", nargs="+", default=["input_pred_label", "final_group"], metavar="MODE",
                        help=f"visualisations to write (default: input_pred_label final_group): {', '.join(VIS_MODES)}")
    parser.add_argument("--device", help="torch device (default: cuda:0 when available, else cpu)")
    parser.add_argument("--dataset", default="voc", choices=list(VOCABULARY_PRESETS),
                        help="class names to segment with")
    parser.add_argument("--input", required=True, help="image file")
    parser.add_argument("--output_dir", default="demo/output", help="output folder (default demo/output)")
    parser.add_argument("--vocab", nargs="+", metavar="NAME",
                        help="extra class names (open vocabulary); values may be comma-separated lists")
    parser.add_argument("--vocab-only", action="store_true", help="segment with background and the --vocab names only")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    modes = check_vis_modes(args.vis)
    if args.vocab_only and not args.vocab:
        raise UserError("--vocab-only needs class names with --vocab")
    img = read_image(args.input)
    out_dir = make_output_dir(args.output_dir) / "vis_imgs"
    device = pick_device(args.device)
    args.cfg = args.cfg or str(DEFAULT_CFG)
    dataset_cfg, meta = VOCABULARY_PRESETS[args.dataset]
    meta = with_vocab(meta, args.vocab, args.vocab_only) if args.vocab else meta
    if "pred" in modes:
        check_palette_png(len(meta["classes"]))

    cfg = experiment_config(args)
    model, cfg = load_eval_model(cfg, cfg.checkpoint.resume, device)
    seg_model = build_segmentor(model, meta, dataset_cfg, opts=["test_cfg.mode=whole", *cfg.evaluate.seg.opts],
                                template=cfg.evaluate.seg.template)
    inputs, sample = segment_image(seg_model, img, name=args.input)

    shares = class_shares(sample.pred_sem_seg.data[0].cpu().numpy(), seg_model.classes)
    print(f"{args.input}: " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares))
    written = visualize_sample(seg_model, inputs, sample, modes, out_dir, Path(args.input).stem)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    run_cli(main)
