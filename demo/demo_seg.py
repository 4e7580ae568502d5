"""Zero-shot segmentation of an image, or of a whole folder, with a GroupViT checkpoint.

    python demo/demo_seg.py --resume group_vit_gcc_yfcc_30e-879422e0.pth --input demo/examples/coffee.jpg
    python demo/demo_seg.py --cfg configs/group_vit_gcc_yfcc_30e.yml --resume CKPT.pth --dataset context \
        --input IMG.jpg --vis input_pred_label final_group --output_dir demo/output
    python demo/demo_seg.py --resume CKPT.pth --input IMG.jpg --vocab cup saucer spoon --vocab-only
    python demo/demo_seg.py --resume CKPT.pth --input photos/ --output_dir out --vocab sky road --vocab-only

One image (--input IMG.jpg): the --vis pictures, and the classes' pixel shares printed. Many images (--input a
folder, searched recursively, a glob such as 'photos/**/*.jpg', or a .txt file listing paths): the model is loaded
once and segmentation.folder writes <output_dir>/labels/<relative path>.png (pixel = class index), classes.json,
shares.csv and errors.csv, plus the --vis pictures if asked for (none by default); a rerun skips the images already
done; the exit code is 1 when some image failed.

Classes: the --dataset's (voc, context, coco with background; ade20k, coco_stuff, cityscapes without), plus the
--vocab names; with --vocab-only just background and the --vocab names. The whole resized image is processed at
once (test_cfg.mode=whole; another mode can be set with --opts "evaluate.seg.opts=[test_cfg.mode=slide]"). Without
--cfg the model config stored in the checkpoint is used (with configs/default.yml for everything else). Pictures:
<output_dir>/vis_imgs/<mode>/<image name>.png. Runs on CUDA when available, else on CPU (--device chooses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demo/ is not a package: import the project's packages from the repository root

from datasets.image_check import IMAGE_EXTENSIONS  # noqa: E402
from segmentation.datasets import VOCABULARY_PRESETS, with_vocab  # noqa: E402
from segmentation.evaluation import GroupViTSegInference, build_segmentor  # noqa: E402
from segmentation.folder import segment_folder  # noqa: E402
from segmentation.image_files import ImageInput, list_images, read_image  # noqa: E402
from segmentation.inference import class_shares, segment_image  # noqa: E402
from segmentation.label_outputs import ERRORS_FILE, LABELS_DIR, LabelOutputs, run_description  # noqa: E402
from segmentation.model_loading import DEFAULT_CFG, experiment_config, load_eval_model  # noqa: E402
from segmentation.vis import VIS_MODES, check_palette_png, check_vis_modes, existing_vis, visualize_sample  # noqa: E402
from utils.cli import add_debug_flag, make_output_dir, pick_device, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GroupViT zero-shot segmentation demo")
    parser.add_argument("--cfg", metavar="FILE",
                        help="experiment config (.yml); default: configs/default.yml with the checkpoint's model")
    parser.add_argument("--opts", nargs="+", default=None, help="config overrides, key=value pairs")
    parser.add_argument("--resume", required=True,
                        help="checkpoint: a .pth path or URL, a transformers GroupViT folder or a Hugging Face Hub id")
    parser.add_argument("--vis", nargs="*", metavar="MODE",
                        help="visualisations to write (default: input_pred_label final_group for one image, none "
                             f"for many): {', '.join(VIS_MODES)}")
    parser.add_argument("--device", help="torch device (default: cuda:0 when available, else cpu)")
    parser.add_argument("--dataset", default="voc", choices=list(VOCABULARY_PRESETS),
                        help="class names to segment with")
    parser.add_argument("--input", required=True,
                        help="an image file, or many: a folder (recursively), a glob or a .txt file of paths")
    parser.add_argument("--output_dir", default="demo/output", help="output folder (default demo/output)")
    parser.add_argument("--vocab", nargs="+", metavar="NAME",
                        help="extra class names (open vocabulary); values may be comma-separated lists")
    parser.add_argument("--vocab-only", action="store_true", help="segment with background and the --vocab names only")
    parser.add_argument("--batch-size", type=int, default=4, help="many images: images per encoder pass (default 4)")
    parser.add_argument("--workers", type=int, default=2,
                        help="many images: processes reading and resizing them (default 2; 0: this one)")
    add_overwrite_flag(parser, "an earlier run's pictures of the one --input image (a folder run resumes instead)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    images = list_images(args.input)
    default_vis = ["input_pred_label", "final_group"] if images is None else []
    modes = check_vis_modes(default_vis if args.vis is None else args.vis)
    if args.vocab_only and not args.vocab:
        raise UserError("--vocab-only needs class names with --vocab")
    if images is not None and not images:
        raise UserError(f"no images found in {args.input} (image files end in {', '.join(IMAGE_EXTENSIONS)})")
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be at least 1 and --workers at least 0")
    img = read_image(args.input) if images is None else None
    out_dir = make_output_dir(args.output_dir)
    device = pick_device(args.device)
    args.cfg = args.cfg or str(DEFAULT_CFG)
    dataset_cfg, meta = VOCABULARY_PRESETS[args.dataset]
    meta = with_vocab(meta, args.vocab, args.vocab_only) if args.vocab else meta
    if "pred" in modes or images is not None:
        check_palette_png(len(meta["classes"]))

    cfg = experiment_config(args)
    model, cfg = load_eval_model(cfg, cfg.checkpoint.resume, device)
    seg_model = build_segmentor(model, meta, dataset_cfg, opts=["test_cfg.mode=whole", *cfg.evaluate.seg.opts],
                                template=cfg.evaluate.seg.template)
    if images is not None:
        return segment_many(seg_model, images, out_dir, modes, args, template=cfg.evaluate.seg.template)
    # one image: an earlier run's pictures of it stay unless asked (checked after the input and the model)
    refuse_to_overwrite(existing_vis(out_dir / "vis_imgs", Path(args.input).stem, modes),
                        "the pictures of an earlier run", args.overwrite)
    inputs, sample = segment_image(seg_model, img, name=args.input)

    shares = class_shares(sample.pred_sem_seg.data[0].cpu().numpy(), seg_model.classes)
    print(f"{args.input}: " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares))
    written = visualize_sample(seg_model, inputs, sample, modes, out_dir / "vis_imgs", Path(args.input).stem)
    for path in written:
        print(f"wrote {path}")
    return written


def segment_many(seg_model: GroupViTSegInference, images: list[ImageInput], out_dir: Path, modes: list[str],
                 args: argparse.Namespace, template: str) -> list[Path]:
    """The folder mode: label maps and tables (``segmentation.folder``); exit code 1 when some image failed."""
    seg_model.keep_seg_logits = False  # the label maps are all that is written
    outputs = LabelOutputs(out_dir, run_description(seg_model, dataset=args.dataset, template=template,
                                                    checkpoint=args.resume))
    result = segment_folder(seg_model, images, outputs, modes, batch_size=args.batch_size, workers=args.workers)
    print(f"segmented {len(result.written)} images into {out_dir / LABELS_DIR} ({len(result.skipped)} already done, "
          f"{len(result.failed)} failed); classes.json, shares.csv and errors.csv in {out_dir}")
    if result.failed:
        print(f"{len(result.failed)} of {len(images)} images failed: {out_dir / ERRORS_FILE} lists them with the "
              f"reason (first: {result.failed[0][1]})", file=sys.stderr)
        sys.exit(1)
    return [outputs.label_path(name) for name in result.written]


if __name__ == "__main__":
    run_cli(main)
