"""transformers folders and Hub ids wherever --resume is accepted; the exported folder in transformers' own hands.

Nothing is downloaded: the Hub test serves a model from a Hugging Face cache built in a temporary folder, offline.
"""

import html
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image

from datasets import Tokenize
from datasets.builder import build_img_transform
from models import GroupViT, MultiLabelContrastive, TextTransformer, build_model
from models.hf_convert import (
    _section,
    hf_config_from_model_cfg,
    hf_to_reference,
    hf_tokenizer,
    model_cfg_from_hf_config,
    read_hf_config,
    reference_to_hf,
    save_hf_folder,
)
from utils.checkpoint import load_checkpoint
from utils.config import cfg_to_dict, load_config
from utils.errors import UserError

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may touch the network
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "tests" / "golden" / "tiny_official_ckpt.pth"
PROMPTS = ["a photo of an astronaut.", "a photo of a cat.", "a photo of a rocket.", "a photo of a flag.",
           "a photo of a woman in a space suit.", "a photo of a dog."]

# config.json of nvidia/groupvit-gcc-yfcc and nvidia/groupvit-gcc-redcaps. The published files themselves were not
# available offline; these values are derived from transformers' conversion script
# (models/groupvit/convert_groupvit_nvlab_to_hf.py), which converted both checkpoints with a default
# GroupViTConfig() (transformers 4.22), i.e. the values below, which the two repositories share. The text token ids
# (bos 0, eos 2, pad 1) are that release's CLIP-era defaults; `qkv_bias` is a vision field transformers never reads.
HUB_CONFIG = {
    "architectures": ["GroupViTModel"], "model_type": "groupvit", "torch_dtype": "float32",
    "projection_dim": 256, "projection_intermediate_dim": 4096, "logit_scale_init_value": 2.6592,
    "initializer_range": 0.02, "initializer_factor": 1.0,
    "text_config": {
        "model_type": "groupvit_text_model", "vocab_size": 49408, "hidden_size": 256, "intermediate_size": 1024,
        "num_hidden_layers": 12, "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "dropout": 0.0, "attention_dropout": 0.0, "initializer_range": 0.02,
        "initializer_factor": 1.0, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
    "vision_config": {
        "model_type": "groupvit_vision_model", "hidden_size": 384, "intermediate_size": 1536, "depths": [6, 3, 3],
        "num_hidden_layers": 12, "num_group_tokens": [64, 8, 0], "num_output_groups": [64, 8, 8],
        "num_attention_heads": 6, "image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_act": "gelu",
        "layer_norm_eps": 1e-5, "dropout": 0.0, "attention_dropout": 0.0, "initializer_range": 0.02,
        "initializer_factor": 1.0, "assign_eps": 1.0, "assign_mlp_ratio": [0.5, 4], "qkv_bias": True},
}
OUR_CONFIGS = {"yfcc": "configs/group_vit_gcc_yfcc_30e.yml", "redcaps": "configs/group_vit_gcc_redcap_30e.yml"}


def filled(model_cfg: dict) -> dict:
    """A model section with every constructor default written out (so two sections compare key for key)."""
    top = _section(model_cfg, MultiLabelContrastive, "model")
    top["img_encoder"] = _section(top["img_encoder"], GroupViT, "model.img_encoder")
    top["text_encoder"] = _section(top["text_encoder"], TextTransformer, "model.text_encoder")
    return json.loads(json.dumps(top))  # tuples as lists


def hub_config(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps(HUB_CONFIG))
    return read_hf_config(tmp_path)


@pytest.mark.parametrize("name", list(OUR_CONFIGS))
def test_hub_configs_are_our_released_configs(name, tmp_path):
    ours = cfg_to_dict(load_config(OUR_CONFIGS[name]))["model"]
    config = hub_config(tmp_path)
    assert filled(model_cfg_from_hf_config(config, multi_label=ours["multi_label"])) == filled(ours)
    back = hf_config_from_model_cfg(ours)  # and the other way: every architecture value of the published file
    for section in ("text_config", "vision_config"):
        for key, value in HUB_CONFIG[section].items():
            if key not in ("bos_token_id", "eos_token_id", "pad_token_id", "qkv_bias"):
                got = getattr(getattr(back, section), key)
                assert (list(got) if isinstance(got, tuple) else got) == value, (section, key)
    for key in ("projection_dim", "projection_intermediate_dim", "logit_scale_init_value"):
        assert getattr(back, key) == pytest.approx(HUB_CONFIG[key], abs=1e-4), key


def test_hub_sized_model_converts_both_ways_exactly(tmp_path):
    """A random yfcc-sized model (407 keys; redcaps: 406 without the multi-label scale) through transformers'
    GroupViTModel for the published config and back: every key, shape and value. One real-size model in memory."""
    torch.manual_seed(0)
    ours = build_model(cfg_to_dict(load_config(OUR_CONFIGS["yfcc"]))["model"]).state_dict()
    assert len(ours) == 407
    config = hub_config(tmp_path)
    scale = ours["multi_label_logit_scale"]
    for state, extra in ((ours, scale), ({k: v for k, v in ours.items() if k != "multi_label_logit_scale"}, None)):
        with torch.device("meta"):
            hf = transformers.GroupViTModel(config)
        hf.load_state_dict(reference_to_hf(state), strict=True, assign=True)  # transformers takes every tensor
        back = hf_to_reference(hf.state_dict(), multi_label_logit_scale=extra)
        assert list(back) == list(state) and len(back) == (407 if extra is not None else 406)
        for key, value in state.items():
            assert back[key].shape == value.shape and torch.equal(back[key], value), key


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_ckpt) -> Path:
    """The golden tiny checkpoint as a complete transformers folder."""
    full = OmegaConf.to_container(tiny_ckpt["config"], resolve=True)
    folder = tmp_path_factory.mktemp("hf") / "groupvit-tiny"
    save_hf_folder(tiny_ckpt["model"], full["model"], folder, img_aug=full["data"]["img_aug"])
    return folder


def test_transformers_pipeline_on_a_photo_matches_ours(exported, tiny_model, tiny_ckpt):
    """AutoProcessor + GroupViTModel.from_pretrained(folder) on scikit-image's astronaut vs our preprocessing,
    tokenizer and model: embeddings within 1e-4, the same zero-shot ranking."""
    model, info = transformers.GroupViTModel.from_pretrained(exported, local_files_only=True,
                                                             output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    processor = transformers.AutoProcessor.from_pretrained(exported, local_files_only=True)
    photo = Image.fromarray(skimage.data.astronaut())
    inputs = processor(text=PROMPTS, images=photo, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.eval()(**inputs)
        hf_img, hf_txt = out.image_embeds, out.text_embeds  # normalised
        pixels = build_img_transform(False, OmegaConf.create(tiny_ckpt["config"]).data.img_aug)(photo)[None]
        text = Tokenize()(PROMPTS)
        our_img = torch.nn.functional.normalize(tiny_model.encode_image(pixels), dim=-1)
        our_txt = torch.nn.functional.normalize(tiny_model.encode_text(text), dim=-1)
    torch.testing.assert_close(inputs["pixel_values"], pixels, atol=1e-6, rtol=0)
    for row, ids in zip(text, inputs["input_ids"], strict=True):
        n = int((row != 0).sum())
        assert ids[:n].tolist() == row[:n].tolist()
    print(f"max abs diff: image {(hf_img - our_img).abs().max():.2e}, text {(hf_txt - our_txt).abs().max():.2e}")
    torch.testing.assert_close(our_img, hf_img, atol=1e-4, rtol=0)
    torch.testing.assert_close(our_txt, hf_txt, atol=1e-4, rtol=0)
    ours_rank = (our_img @ our_txt.T)[0].argsort(descending=True)
    assert out.logits_per_image[0].argsort(descending=True).tolist() == ours_rank.tolist()
    assert len(set((our_img @ our_txt.T)[0].tolist())) == len(PROMPTS)  # no ties: the ranking is decided


def test_derived_tokenizer_gives_our_ids(tmp_path):
    cases = json.loads((REPO / "tests" / "golden" / "tokenizer_cases.json").read_text())["cases"]
    tokenizer = hf_tokenizer()
    plain = [c for c in cases if not c["ftfy_changes_text"] and html.unescape(c["text"]) == c["text"]]
    assert len(plain) >= 30
    for case in plain:
        assert tokenizer(case["text"], add_special_tokens=False)["input_ids"] == case["bpe_ids"], case["text"]


def test_folder_loads_as_the_checkpoint_it_came_from(exported, tiny_ckpt):
    loaded = load_checkpoint(exported)
    assert list(loaded["model"]) == list(tiny_ckpt["model"])
    assert all(torch.equal(loaded["model"][k], v) for k, v in tiny_ckpt["model"].items())
    assert filled(loaded["config"]["model"]) == filled(cfg_to_dict(tiny_ckpt["config"])["model"])


def broken_copy(exported: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(exported, folder)
    return folder


def test_broken_folders_are_one_line_errors(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    wrong = broken_copy(exported, tmp_path, "wrong-sizes")
    config = json.loads((wrong / "config.json").read_text())
    config["vision_config"]["hidden_size"], config["vision_config"]["intermediate_size"] = 192, 768
    (wrong / "config.json").write_text(json.dumps(config))
    no_weights = broken_copy(exported, tmp_path, "no-weights")
    (no_weights / "model.safetensors").unlink()
    partial = broken_copy(exported, tmp_path, "partial")
    state = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in state.items() if "text_projection" not in k}, partial / "model.safetensors")
    not_groupvit = broken_copy(exported, tmp_path, "clip")
    (not_groupvit / "config.json").write_text(json.dumps({**config, "model_type": "clip"}))
    for folder, message in [
        (wrong, "config.json does not match the weights: .* have other sizes, e.g. vision_model.* is "
                r"\[.*96.*\] in the file but \[.*192.*\] by config.json"),
        (no_weights, "has config.json but no weights: expected model.safetensors or pytorch_model.bin"),
        (partial, "9 of the 214 GroupViTModel weights are missing, e.g. text_projection.0.weight"),
        (not_groupvit, "describes a 'clip' model, not a GroupViT"),
        (tmp_path / "absent", "checkpoint not found"),
    ]:
        with pytest.raises(UserError, match=message) as error:
            load_checkpoint(folder)
        assert "\n" not in str(error.value)


def read_pred(folder: Path) -> np.ndarray:
    (png,) = (folder / "pred").iterdir()
    return np.array(Image.open(png))


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A one-image VOC2012 layout (the label map only needs to exist)."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    rgb = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "JPEGImages" / "astronaut.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    Image.fromarray(np.full((256, 256), 15, np.uint8)).save(root / "SegmentationClass" / "astronaut.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("astronaut\n")
    return root


def load_script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_main_seg_demo_and_web_app_on_a_folder_equal_the_pth(exported, voc_root, tmp_path):
    import main_seg

    opts = ["--opts", f"evaluate.seg.opts=[data_root={voc_root},test_dataloader.num_workers=0]", "--vis", "pred"]
    miou = {}
    for name, resume in (("pth", CKPT), ("folder", exported)):
        miou[name] = main_seg.main(["--cfg", "configs/default.yml", "--resume", str(resume),
                                    "--output", str(tmp_path / name), *opts])
    np.testing.assert_array_equal(read_pred(tmp_path / "pth" / "vis_imgs"), read_pred(tmp_path / "folder" / "vis_imgs"))
    assert miou["pth"] == miou["folder"]

    demo = load_script("demo_seg_hf", REPO / "demo" / "demo_seg.py")
    image = voc_root / "JPEGImages" / "astronaut.jpg"
    for name, resume in (("pth", CKPT), ("folder", exported)):
        demo.main(["--resume", str(resume), "--input", str(image), "--output_dir", str(tmp_path / f"demo-{name}"),
                   "--device", "cpu", "--vis", "pred", "--vocab", "astronaut", "flag"])
    demo_pred = read_pred(tmp_path / "demo-pth" / "vis_imgs")
    np.testing.assert_array_equal(demo_pred, read_pred(tmp_path / "demo-folder" / "vis_imgs"))

    app = load_script("groupvit_web_app_hf", REPO / "demo" / "app.py")
    labels = []
    for resume in (CKPT, exported):
        model, cfg, random_weights, _ = app.load_model(app.parse_args(["--resume", str(resume), "--device", "cpu"]))
        assert not random_weights
        labels.append(app.Segmenter(model, cfg).segment(cv2.imread(str(image)), "astronaut, flag", None, []).label)
    np.testing.assert_array_equal(labels[0], labels[1])
    assert len(np.unique(labels[0])) > 1


@pytest.mark.slow
def test_zero_shot_eval_of_a_folder_with_the_default_config(exported, tmp_path):
    """main_group_vit.py --eval --cfg <default.yml + data only> --resume FOLDER: the model comes from config.json."""
    import yaml
    from helpers_train_data import write_tiny_setup

    import main_group_vit

    with_model = write_tiny_setup(tmp_path)
    cfg = yaml.safe_load(with_model.read_text())
    cfg["_base_"] = [str(REPO / "configs" / "default.yml")]  # no model section
    without_model = tmp_path / "data_only.yml"
    without_model.write_text(yaml.safe_dump(cfg))
    pth = main_group_vit.main(["--cfg", str(with_model), "--eval", "--resume", str(CKPT),
                               "--output", str(tmp_path / "a")])
    folder = main_group_vit.main(["--cfg", str(without_model), "--eval", "--resume", str(exported),
                                  "--output", str(tmp_path / "b")])
    assert folder == pth and pth["num_images"] == 10


def fake_hub_cache(exported: Path, cache: Path, repo_id: str) -> None:
    """The layout huggingface_hub leaves after downloading repo_id (refs/main -> snapshots/<commit>/files)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(exported / name, repo / "snapshots" / commit / name)


def test_hub_id_from_the_cache(exported, tiny_ckpt, tmp_path, monkeypatch):
    """A Hub id loads through huggingface_hub's cache (offline here) and the demo segments with it as with the .pth."""
    from huggingface_hub import constants

    fake_hub_cache(exported, tmp_path / "hub", "someone/groupvit-tiny")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_checkpoint("someone/groupvit-tiny")
    assert all(torch.equal(loaded["model"][k], v) for k, v in tiny_ckpt["model"].items())

    demo = load_script("demo_seg_hub", REPO / "demo" / "demo_seg.py")
    image = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(image), cv2.cvtColor(skimage.data.astronaut()[::2, ::2], cv2.COLOR_RGB2BGR))
    for name, resume in (("hub", "someone/groupvit-tiny"), ("pth", str(CKPT))):
        demo.main(["--resume", resume, "--input", str(image), "--output_dir", str(tmp_path / name), "--device", "cpu",
                   "--vis", "pred"])
    np.testing.assert_array_equal(read_pred(tmp_path / "hub" / "vis_imgs"), read_pred(tmp_path / "pth" / "vis_imgs"))

    with pytest.raises(UserError, match="'someone/not-cached' is no local file or folder, and loading it from the "
                                        "Hugging Face Hub failed") as error:
        load_checkpoint("someone/not-cached")
    assert "\n" not in str(error.value)


def test_segmentation_for_a_transformers_model(exported, tiny_model):
    """segment_with_transformers(GroupViTModel, image) is our segmentor's output for the same weights."""
    from segmentation.datasets import VOCABULARY_PRESETS, with_vocab
    from segmentation.evaluation import build_segmentor
    from segmentation.inference import segment_array
    from segmentation.transformers_model import segment_with_transformers

    hf_model = transformers.GroupViTModel.from_pretrained(exported, local_files_only=True)
    photo = skimage.data.astronaut()
    result = segment_with_transformers(hf_model, Image.fromarray(photo), vocabulary=["astronaut", "flag"],
                                       modes=["input_pred_label"])
    cfg_path, meta = VOCABULARY_PRESETS["voc"]
    seg_model = build_segmentor(tiny_model, with_vocab(meta, ["astronaut", "flag"], vocab_only=True), cfg_path,
                                opts=["test_cfg.mode=whole"])
    expected = segment_array(seg_model, np.ascontiguousarray(photo[..., ::-1]))
    assert result.classes == ("background", "astronaut", "flag") == expected.classes
    np.testing.assert_array_equal(result.label, expected.label)
    assert result.label.shape == photo.shape[:2] and result.pictures["input_pred_label"][0].shape == photo.shape
