"""The project's commands as child processes of a warm Python, for the test matrices that start dozens of them.

``python main_group_vit.py ...`` spends most of its first seconds importing torch, timm (with torchvision) and
mmsegmentation: about 8 s of CPU on this project's 2-core machine, against 0.3 s for the work of a bad-input case.
The matrices (bad input, interrupts, kills) therefore start their commands from multiprocessing's fork server, which
imports those modules once (``PRELOAD``). Each command is still a process of its own, with its own pid, exit code,
stderr and, when asked, its own session and process group. It runs the script as ``python script.py args`` would:
``__name__ == "__main__"`` (runpy), ``sys.argv``, the script's folder first on ``sys.path``, the given environment
(``OMP_NUM_THREADS`` applied to torch's threads) and working folder, multiprocessing's default start method, and
the interpreter's exit handlers at the end. It does not test the script's own imports from a fresh interpreter: the
tests that run each command with a fresh Python (``test_every_command_offers_debug``, each command's CLI tests) do.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ["torch", "timm", "mmseg.models", "main_group_vit", "main_seg"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _run_script(argv: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str, new_session: bool) -> None:
    """In the child: become ``python argv[0] argv[1:]`` (see the module's docstring)."""
    if new_session:
        os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    multiprocessing.set_start_method(None, force=True)  # a fresh interpreter's default, not the fork server's
    if "OMP_NUM_THREADS" in env:  # a fresh interpreter's OpenMP reads it at start; the fork server's already has
        import torch
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for stream, path in ((sys.stdout, stdout), (sys.stderr, stderr)):
        stream.flush()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # one file may take both streams
        os.dup2(fd, stream.fileno())
        os.close(fd)
    script = str(Path(cwd, argv[0]))
    sys.argv = list(argv)
    sys.path[0] = str(Path(script).parent)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()


@dataclass
class Command:
    """A started command: ``subprocess.Popen``'s ``pid``, ``poll``, ``wait``, ``returncode`` (negative: the signal
    that ended it), ``send_signal`` and ``kill``, and its stderr (a file)."""

    process: multiprocessing.process.BaseProcess
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.process.name, timeout)
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.process.kill()

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def start(argv: list[str], stderr: Path, *, stdout: Path | None = None, env: dict[str, str] | None = None,
          cwd: Path = ROOT, new_session: bool = False) -> Command:
    """Start ``python argv[0] argv[1:]`` in ``cwd`` (the repository); stderr (and stdout, else discarded) go to
    files, emptied first (the same file for both takes them interleaved); ``new_session``: in a session and process
    group of its own (as ``start_new_session``)."""
    for path in {stderr, stdout or stderr}:
        Path(path).write_bytes(b"")
    process = _context.Process(
        target=_run_script, name=Path(argv[0]).name, daemon=False,
        args=(list(map(str, argv)), str(cwd), dict(os.environ if env is None else env),
              str(stdout or os.devnull), str(stderr), new_session))
    process.start()
    return Command(process, Path(stderr))


def run(argv: list[str], output_dir: Path, *, env: dict[str, str] | None = None, cwd: Path = ROOT,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python argv[0] argv[1:]`` to its end, as ``subprocess.run(..., capture_output=True, text=True)``;
    its stdout and stderr are kept in ``output_dir`` (stdout.txt, stderr.txt)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = output_dir / "stdout.txt", output_dir / "stderr.txt"
    command = start(argv, stderr, stdout=stdout, env=env, cwd=cwd)
    try:
        code = command.wait(timeout)
    except subprocess.TimeoutExpired:
        command.kill()
        raise
    return subprocess.CompletedProcess(argv, code, stdout.read_text(), stderr.read_text())
