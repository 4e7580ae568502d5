"""GroupViT web demo (Gradio): zero-shot segmentation of an image with a vocabulary of your choice.

    python demo/app.py --resume group_vit_gcc_yfcc_30e-879422e0.pth          # then open http://127.0.0.1:7860
    python demo/app.py --resume CKPT.pth --device cpu --port 8080 --host 0.0.0.0
    python demo/app.py                                                         # random weights (a warning says so)

The page takes an image (an upload or a bundled example), class names separated by commas or one per line (or a
VOC, Context, COCO, ... preset; for a checkpoint trained on the synthetic world by the quickstart, that world's
classes too), an optional background threshold and the pictures to show; it shows ``input_pred_label``,
``final_group``, ``all_groups`` and a table of the classes found with their pixel shares. Every picture is shown at
one size (PICTURE_HEIGHT), small ones enlarged without smoothing. The whole image is processed at once, as in
``demo/demo_seg.py``. Images with a side longer than 4096 pixels are downscaled to
4096; images over 100 megapixels are refused. Bad input is explained in the page. Nothing leaves the machine:
no analytics, no share link, no fonts or scripts from the internet.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # demo/ is not a package: import the project's packages from the repository root

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from datasets.image_check import MAX_PIXELS, check_image  # noqa: E402
from models import build_model  # noqa: E402
from segmentation.datasets import preset_vocabulary  # noqa: E402
from segmentation.datasets.synthetic import world_preset  # noqa: E402
from segmentation.datasets.vocab import prompted_classes  # noqa: E402
from segmentation.image_files import decode_image  # noqa: E402
from segmentation.inference import ImageSegmentation, segment_array  # noqa: E402
from segmentation.model_loading import DEFAULT_CFG, experiment_config, load_eval_checkpoint  # noqa: E402
from segmentation.segmentor_cache import ExtraPreset, SegmentorCache  # noqa: E402
from utils.cli import add_debug_flag, pick_device, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402

log = logging.getLogger("groupvit.app")

OUTPUT_MODES = ("input_pred_label", "final_group", "all_groups")
PRESETS = {"VOC": "voc", "Context": "context", "COCO": "coco", "ADE20K": "ade20k", "COCO-Stuff": "coco_stuff",
           "Cityscapes": "cityscapes"}  # button label: demo_seg dataset
EXAMPLES = [ROOT / "demo" / "examples" / name for name in ("coffee.jpg", "astronaut.jpg", "chelsea.jpg")]
RANDOM_WEIGHTS_CFG = ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"  # the model built without --resume
MAX_SIDE = 4096  # a longer side is downscaled to this
WORLD = "world"  # the preset of a checkpoint's synthetic world
PICTURE_SIDE = 256  # smaller pictures are drawn enlarged (nearest) to at least this, so that class names fit
PICTURE_HEIGHT = 360  # CSS pixels: every picture of the page is shown at this height, small ones not smoothed
CSS = f"""
#input-image img, #out-label img, #out-final img, #out-groups img {{
    height: {PICTURE_HEIGHT}px !important; width: 100% !important; object-fit: contain !important;
    image-rendering: pixelated;
}}
#out-groups .thumbnail-item, #out-groups .thumbnails {{ height: {PICTURE_HEIGHT}px !important; }}
"""
MAX_UPLOAD = "50mb"  # Gradio refuses bigger uploads in the page
SEGMENTOR_CACHE = 4  # (vocabulary, threshold) requests whose segmentors are kept
RANDOM_WARNING = ("**Warning: no checkpoint was given (`--resume`), so the weights are random and the "
                  "segmentations mean nothing.** Restart with `--resume CHECKPOINT`.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GroupViT zero-shot segmentation web demo")
    parser.add_argument("--resume", help="checkpoint: a .pth path or URL, a transformers GroupViT folder or a "
                        "Hugging Face Hub id (without it the weights are random)")
    parser.add_argument("--cfg", metavar="FILE", help="experiment config (.yml); default: configs/default.yml "
                        "with the checkpoint's model, or configs/group_vit_gcc_yfcc_30e.yml without --resume")
    parser.add_argument("--opts", nargs="+", default=None, help="config overrides, key=value pairs")
    parser.add_argument("--device", help="torch device (default: cuda:0 when available, else cpu)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, DictConfig, bool, ExtraPreset | None]:
    """The model in eval mode, its config, whether its weights are random (no ``--resume``) and, for a checkpoint
    trained on the synthetic world, that world's preset (``world_preset``)."""
    device = pick_device(args.device)
    if args.resume:
        cfg = experiment_config(argparse.Namespace(cfg=args.cfg or str(DEFAULT_CFG), opts=args.opts,
                                                   resume=args.resume))
        model, cfg, stored = load_eval_checkpoint(cfg, cfg.checkpoint.resume, device)
        return model, cfg, False, world_preset(stored)
    cfg = experiment_config(argparse.Namespace(cfg=args.cfg or str(RANDOM_WEIGHTS_CFG), opts=args.opts))
    if "model" not in cfg:
        raise UserError(f"{args.cfg} has no model section: without --resume the model is built from --cfg")
    torch.manual_seed(0)
    return build_model(cfg.model).to(device).eval(), cfg, True, None


def check_threshold(value: float | str | None) -> float | None:
    """The background threshold in [0, 1], or None (empty: the dataset config's)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        thresh = float(value)
    except ValueError:
        raise UserError(f"the background threshold must be a number between 0 and 1, not {value!r}") from None
    if not 0 <= thresh <= 1:
        raise UserError(f"the background threshold must be between 0 and 1, not {thresh:g}")
    return thresh


def load_upload(path: str | Path | None) -> tuple[np.ndarray, str]:
    """The image as uint8 BGR (as the CLI demo reads it), downscaled to MAX_SIDE, and a note on the resize."""
    if not path:
        raise UserError("no image: upload one or pick an example below the upload box")
    data = Path(path).read_bytes()
    name = f"`{Path(path).name}`"
    check_image(data, name, MAX_PIXELS)
    img = decode_image(data, name)
    height, width = img.shape[:2]
    if max(height, width) <= MAX_SIDE:
        return img, ""
    scale = MAX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img, f"downscaled from {width}×{height} to {size[0]}×{size[1]} pixels (longest side at most {MAX_SIDE})"


class Segmenter:
    """The model, loaded once, and the segmentors of the last few requests (``SegmentorCache``); one image at a
    time. ``world``: the checkpoint's synthetic world as a preset (``load_model``)."""

    def __init__(self, model: torch.nn.Module, cfg: DictConfig, random_weights: bool = False,
                 world: ExtraPreset | None = None):
        self.segmentors = SegmentorCache(model, seg_opts=cfg.evaluate.seg.opts, template=cfg.evaluate.seg.template,
                                         size=SEGMENTOR_CACHE, extra_presets={WORLD: world} if world else None)
        self.random_weights = random_weights
        self.world = world
        self._lock = threading.Lock()

    def segment(self, img: np.ndarray, vocabulary: str, bg_thresh: float | None,
                modes: Sequence[str]) -> ImageSegmentation:
        """Segment a BGR image with ``vocabulary``; ``bg_thresh`` None: the config's."""
        seg_model = self.segmentors.get(vocabulary, bg_thresh)
        with self._lock:
            return segment_array(seg_model, img, modes, min_side=PICTURE_SIDE)

    def presets(self) -> dict[str, str]:
        """Button label -> the vocabulary it fills in."""
        buttons = {f"{label} classes": preset_vocabulary(dataset) for label, dataset in PRESETS.items()}
        if self.world:
            buttons = {"Quickstart world classes": ", ".join(prompted_classes(self.world[1])), **buttons}
        return buttons


@dataclass(frozen=True)
class PageResult:
    """What the page shows: a Markdown message, the pictures per mode and the (class, share) table rows."""

    message: str
    pictures: dict[str, list[np.ndarray]] = field(default_factory=dict)
    table: list[list[str]] = field(default_factory=list)


def segment_page(segmenter: Segmenter, image_path: str | Path | None, vocabulary: str,
                 bg_thresh: float | str | None, show: Sequence[str]) -> PageResult:
    """The page's work, without Gradio: every problem becomes a message, never an exception."""
    try:
        img, note = load_upload(image_path)
        thresh = check_threshold(bg_thresh)
        result = segmenter.segment(img, vocabulary, thresh, [m for m in OUTPUT_MODES if m in show])
    except UserError as e:
        return PageResult(f"**Error:** {e}")
    except Exception:  # a bug, not the user's fault: keep serving, leave the traceback to the server log
        log.exception("segmentation failed")
        return PageResult("**Error:** the segmentation failed unexpectedly; the server log has the details.")
    shares = result.shares()
    height, width = result.label.shape
    lines = [f"Segmented a {width}×{height} image into {len(shares)} of {len(result.classes)} classes."]
    if note:
        lines.append(f"The image was {note}.")
    if segmenter.random_weights:
        lines.append("The weights are random: the classes found mean nothing.")
    return PageResult(" ".join(lines), result.pictures, [[name, f"{100 * share:.1f}%"] for name, share in shares])


def build_page(segmenter: Segmenter) -> gr.Blocks:
    """The Gradio page; its callback is ``segment_page``."""
    with gr.Blocks(title="GroupViT zero-shot segmentation", analytics_enabled=False) as page:
        gr.Markdown("# GroupViT: zero-shot semantic segmentation\nUpload an image, name the classes to look for, "
                    "and see which pixels GroupViT groups together and how it names the groups.")
        gr.Markdown(RANDOM_WARNING, visible=segmenter.random_weights, elem_id="weights-warning")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"],
                                 elem_id="input-image")
                gr.Examples([[str(path)] for path in EXAMPLES], inputs=[image], label="Examples", elem_id="examples")
            with gr.Column():
                vocabulary = gr.Textbox(label="Vocabulary", lines=3, elem_id="vocab",
                                        placeholder="class names separated by commas or one per line, e.g. cup, "
                                                    "saucer, spoon")
                with gr.Row():
                    presets = [(gr.Button(label, size="sm", elem_classes="preset"), vocab)
                               for label, vocab in segmenter.presets().items()]
                bg_thresh = gr.Textbox(label="Background threshold (optional)", elem_id="bg-thresh",
                                       placeholder="0 to 1; empty: the dataset config's (0.95; Context 0.35); "
                                                   "ADE20K, COCO-Stuff, Cityscapes: none")
                show = gr.CheckboxGroup(list(OUTPUT_MODES), value=list(OUTPUT_MODES), label="Show")
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            label_pic = gr.Image(label="input_pred_label", format="png", interactive=False, elem_id="out-label")
            final_pic = gr.Image(label="final_group", format="png", interactive=False, elem_id="out-final")
        groups = gr.Gallery(label="all_groups (one picture per grouping stage)", format="png", columns=2,
                            elem_id="out-groups")
        table = gr.Dataframe(headers=["class", "pixel share"], datatype=["str", "str"], interactive=False,
                             label="Classes found", elem_id="class-table")

        for button, vocab in presets:
            button.click(lambda vocab=vocab: vocab, outputs=vocabulary, queue=False)

        def on_submit(upload: dict[str, Any] | None, vocab: str, thresh: str | None,
                      modes: list[str] | None) -> tuple[Any, ...]:
            # preprocess=False: the upload arrives as Gradio's file record (its path checked to lie in Gradio's
            # upload folder), so that a file that is no image reaches segment_page instead of failing in Gradio
            modes = modes or []
            result = segment_page(segmenter, (upload or {}).get("path"), vocab, thresh, modes)
            pictures = result.pictures
            stages = [(pic, f"stage {k + 1}") for k, pic in enumerate(pictures.get("all_groups", []))]
            return (result.message,
                    gr.update(value=pictures.get("input_pred_label", [None])[0], visible="input_pred_label" in modes),
                    gr.update(value=pictures.get("final_group", [None])[0], visible="final_group" in modes),
                    gr.update(value=stages, visible="all_groups" in modes),
                    result.table or None)

        submit.click(on_submit, inputs=[image, vocabulary, bg_thresh, show],
                     outputs=[status, label_pic, final_pic, groups, table], preprocess=False, concurrency_limit=1)
    return page


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model, cfg, random_weights, world = load_model(args)
    if random_weights:
        log.warning("no --resume: the weights are random, the page says so")
    page = build_page(Segmenter(model, cfg, random_weights, world))
    try:
        page.launch(server_name=args.host, server_port=args.port, share=False, ssr_mode=False, css=CSS,
                    max_file_size=MAX_UPLOAD, show_error=False, run_history=False)
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e}") from None


if __name__ == "__main__":
    run_cli(main)
