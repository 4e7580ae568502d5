"""Checks that keep the documentation true (README.md and docs/*.md), each returning its faults as lines.

- ``link_faults``: every relative link resolves to a file, and every ``#anchor`` to a heading of its file (GitHub's
  anchor rules).
- ``command_faults``: every command line in a fenced shell block that runs a project script names a script that
  exists, and passes only flags its argparse parser accepts (the parser is captured, the script never runs).
- ``config_key_faults``: every dotted config key named in backticks or after ``--opts`` exists in the configs, in
  ``utils/config_schema.py`` or in the table of our keys in docs/faithfulness.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import runpy
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from utils.config_schema import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Launchers that run SCRIPT CONFIG ... and forward the rest to SCRIPT with --cfg CONFIG: how many arguments are theirs
SHELL_LAUNCHERS = {
    "tools/dist_launch.sh": 3,  # SCRIPT CONFIG GPUS [args]
    "tools/dist_mn_launch.sh": 6,  # SCRIPT CONFIG NODE_RANK NODES GPUS MASTER_ADDR [args]
}
FORWARDERS = {"quickstart.sh": "tools/quickstart.py"}  # shell scripts that hand all their arguments to a script
PYTHONS = {"python", "python3", ".venv/bin/python"}
EXTERNAL_SCRIPTS = ("mmsegmentation/",)  # scripts of other projects' clones that the guides run
FILE_SUFFIXES = {"pth", "py", "yml", "yaml", "json", "png", "jpg", "md", "txt", "tar", "gz", "sql", "tsv", "zip",
                 "parquet", "safetensors", "bin", "lock", "ipynb"}
KEY = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+")
FENCE = re.compile(r"^\s*```(\S*)")


# ----------------------------------------------------------------------------------------------------------- markdown
def fenced_lines(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, the language of the fenced block it is in, or None outside blocks), fences left out."""
    lang = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            lang = None if lang is not None else m.group(1) or "text"
            continue
        yield number, line, lang


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: links and code marks dropped, lower case, punctuation but ``-`` and ``_``
    removed, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, a repeated one with GitHub's -1, -2, ... suffixes."""
    seen: dict[str, int] = {}
    out = set()
    for _, line, lang in fenced_lines(text):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if lang is None and m:
            base = github_anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_faults(doc: Path) -> list[str]:
    """Relative links (and images) of ``doc`` whose file or ``#anchor`` does not exist."""
    text = doc.read_text()
    faults = []
    for number, line, lang in fenced_lines(text):
        if lang is not None:
            continue
        line = re.sub(r"`[^`]*`", "", line)  # code spans hold no links
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                faults.append(f"{doc.name}:{number}: link to a missing file: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                faults.append(f"{doc.name}:{number}: no heading for the anchor #{anchor} in {file.name}")
    return faults


# ----------------------------------------------------------------------------------------------------------- commands
def shell_commands(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, argv) of each command in the fenced shell blocks: continuations joined, comments dropped,
    split at ``&&``, ``||``, ``;`` and ``|``."""
    pending, start = "", 0
    for number, line, lang in fenced_lines(text):
        if lang not in ("shell", "sh", "bash"):
            continue
        start = start or number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = shlex.shlex(pending + line, posix=True, punctuation_chars=True)
        words.whitespace_split = True
        words.commenters = "#"
        argv: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", "||", ";", "|", "&"):
                if argv:
                    yield start, argv
                argv = []
            else:
                argv.append(word)
        pending, start = "", 0


def script_call(argv: list[str]) -> tuple[str, list[str]] | None:
    """The project script a command runs and the arguments that reach its parser; None for other commands."""
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    if not argv:
        return None
    head = argv[0].removeprefix("./")
    if head in FORWARDERS:
        return FORWARDERS[head], argv[1:]
    if head in SHELL_LAUNCHERS:
        own = SHELL_LAUNCHERS[head]
        return argv[1], ["--cfg", argv[2], *argv[own + 1:]]
    if head in PYTHONS and len(argv) > 1 and argv[1] != "-m":
        return argv[1], argv[2:]
    if head == "torchrun" or argv[1:3] == ["-m", "torch.distributed.run"]:
        script = next((i for i, word in enumerate(argv) if word.endswith(".py")), None)
        return (argv[script], argv[script + 1:]) if script is not None else None
    if (argv[0].startswith("./") or head.endswith((".sh", ".py"))) and not (ROOT / head).exists():
        return head, []
    return None


class _Captured(BaseException):  # not an Exception: the scripts' error handlers let it through
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@functools.cache
def script_parser(script: str) -> argparse.ArgumentParser:
    """The parser ``script`` builds, captured at its first parse (the script is run as __main__ up to there)."""
    def capture(parser, *args, **kwargs):
        raise _Captured(parser)

    saved = sys.argv, sys.path[:], dict(os.environ), argparse.ArgumentParser.parse_known_args
    sys.argv = [script]
    sys.path[:0] = [str((ROOT / script).parent), str(ROOT)]
    argparse.ArgumentParser.parse_known_args = capture
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except _Captured as e:
        return e.parser
    finally:
        sys.argv, sys.path[:], argparse.ArgumentParser.parse_known_args = saved[0], saved[1], saved[3]
        os.environ.clear()
        os.environ.update(saved[2])
    raise AssertionError(f"{script} parsed no arguments")


def opts_keys(args: list[str]) -> list[str]:
    """The config keys given after ``--opts`` (``key=value`` or ``key value`` pairs), the flag of every script."""
    keys: list[str] = []
    for i, word in enumerate(args):
        if word != "--opts":
            continue
        values = []
        for value in args[i + 1:]:
            if value.startswith("--"):
                break
            values.append(value)
        pairs = iter(values)
        for value in pairs:
            keys.append(value.split("=", 1)[0])
            if "=" not in value:  # the `key value` form: skip the value
                next(pairs, None)
    return keys


def command_faults(doc: Path) -> list[str]:
    """Commands of ``doc`` that run a missing project script or pass a flag its parser does not accept."""
    faults = []
    for number, argv in shell_commands(doc.read_text()):
        call = script_call(argv)
        if call is None or call[0].startswith(EXTERNAL_SCRIPTS):
            continue
        script, args = call
        if not (ROOT / script).is_file():
            faults.append(f"{doc.name}:{number}: no such script: {script}")
            continue
        if not script.endswith(".py"):
            continue
        parser = script_parser(script)
        for word in args:
            if word == "--":
                break
            flag = word.split("=", 1)[0]
            if re.match(r"^--?[A-Za-z]", flag) and flag not in parser._option_string_actions:
                faults.append(f"{doc.name}:{number}: {script} has no flag {flag}")
    return faults


# -------------------------------------------------------------------------------------------------------- config keys
def _flatten(node: object, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_base_":
                continue
            path = f"{prefix}{key}"
            yield path
            yield from _flatten(value, path + ".")


def ours_table(text: str) -> set[str]:
    """The keys in the first column of the "Config keys of ours" table."""
    section = text.partition("## Config keys of ours")[2].split("\n## ")[0]
    return {m.group(1) for m in re.finditer(r"^\|\s*`([a-z_][\w.]*)", section, re.M)}


@functools.cache
def known_keys() -> frozenset[str]:
    """The keys of configs/default.yml and the released experiment configs, the schema's, and ours."""
    keys = set(SCHEMA)
    for name in ("default.yml", "group_vit_gcc_yfcc_30e.yml", "group_vit_gcc_redcap_30e.yml"):
        keys |= set(_flatten(yaml.safe_load((ROOT / "configs" / name).read_text())))
    keys |= ours_table((ROOT / "docs" / "faithfulness.md").read_text())
    return frozenset(keys)


def named_keys(doc: Path) -> Iterator[tuple[int, str]]:
    """(line number, key) of each dotted config key in ``doc``: in code spans, and after ``--opts`` in commands."""
    text = doc.read_text()
    tops = {k for k in known_keys() if "." not in k}
    for number, line, lang in fenced_lines(text):
        if lang is not None:
            continue
        for span in re.findall(r"`([^`]+)`", line):
            for word in span.split():
                key = word.strip("\"',:").split("=", 1)[0]
                if (KEY.fullmatch(key) and key.split(".")[0] in tops
                        and key.rsplit(".", 1)[1] not in FILE_SUFFIXES):
                    yield number, key
    for number, argv in shell_commands(text):  # commands, and --opts examples without one
        for key in opts_keys(argv):
            yield number, key


def config_key_faults(doc: Path) -> list[str]:
    """Config keys named in ``doc`` that no config, the schema or our table has."""
    return [f"{doc.name}:{number}: unknown config key {key}" for number, key in named_keys(doc)
            if key not in known_keys()]
