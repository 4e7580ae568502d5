"""The documentation cannot rot: links, commands and config keys of README.md and docs/*.md are checked, and each
checker is shown to catch a planted fault."""

import re
from pathlib import Path

import helpers_docs as docs
import pytest

README = docs.ROOT / "README.md"


@pytest.mark.parametrize("doc", docs.DOCS, ids=lambda p: p.name)
def test_links_and_anchors_resolve(doc: Path):
    assert docs.link_faults(doc) == []


@pytest.mark.parametrize("doc", docs.DOCS, ids=lambda p: p.name)
def test_commands_name_scripts_and_their_flags(doc: Path):
    assert docs.command_faults(doc) == []


@pytest.mark.parametrize("doc", docs.DOCS, ids=lambda p: p.name)
def test_config_keys_exist(doc: Path):
    assert docs.config_key_faults(doc) == []


def test_readme_is_the_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    linked = {(README.parent / t.split("#")[0]).resolve() for t in re.findall(r"\]\(([^)#\s]+)", text)}
    guides = sorted((docs.ROOT / "docs").glob("*.md"))
    assert guides and [g.name for g in guides if g.resolve() not in linked] == []


def test_github_anchor_rules():
    assert docs.github_anchor("Small budgets: gradient accumulation and step checkpoints") == \
        "small-budgets-gradient-accumulation-and-step-checkpoints"
    assert docs.github_anchor("The `main_seg.py` command, [linked](x.md)") == "the-main_segpy-command-linked"
    assert docs.anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


# Planted faults: each checker must report them.
def test_link_checker_reports_a_missing_file_and_anchor(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\n[ok](other.md#other-page) [self](#title) [web](https://example.com)\n"
                   "[gone](missing.md) [bad anchor](other.md#no-such-heading) [bad self](#nowhere)\n"
                   "`[in code](missing.md)`\n```\n[in a block](missing.md)\n```\n")
    faults = docs.link_faults(doc)
    assert len(faults) == 3, faults
    assert "missing.md" in faults[0] and "#no-such-heading" in faults[1] and "#nowhere" in faults[2]


def test_command_checker_reports_unknown_flags_and_scripts(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```shell\n"
        "python main_seg.py --cfg configs/default.yml --resume CKPT --no-such-flag  # ok up to the last flag\n"
        "./tools/dist_launch.sh main_group_vit.py configs/default.yml 8 --eval \\\n"
        "    --bogus 1\n"
        "./quickstart.sh --epochs 2 --nope=3\n"
        "python tools/no_such_script.py --help && ./tools/run_tests.sh -k golden\n"
        "python mmsegmentation/tools/dataset_converters/cityscapes.py data --nproc 8\n"
        "```\n"
        "```text\npython main_seg.py --not-a-shell-block\n```\n")
    faults = docs.command_faults(doc)
    assert [f.split(": ", 1)[1] for f in faults] == [
        "main_seg.py has no flag --no-such-flag",
        "main_group_vit.py has no flag --bogus",
        "tools/quickstart.py has no flag --nope",
        "no such script: tools/no_such_script.py",
    ]
    assert faults[1].startswith("doc.md:3:")


def test_config_key_checker_reports_unknown_keys(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Set `train.accumulation_steps: 4`, `model.group_loss_weight` (ours), not `train.acumulation_steps`;\n"
        "files and calls are no keys: `checkpoint.pth`, `model.compile_towers()`, `utils.config.get_config`.\n"
        "```shell\n"
        "python main_group_vit.py --cfg configs/default.yml --opts train.epochs=2 evaluate.seg.nope=1\n"
        "--opts data.batch_size 8 data.bogus 3\n"
        "```\n")
    faults = docs.config_key_faults(doc)
    assert [f.rsplit(" ", 1)[1] for f in faults] == ["train.acumulation_steps", "evaluate.seg.nope", "data.bogus"]
