"""Fault injection against the real commands, each run as a process of its own (mostly from the warm Python of
helpers_commands).

- 10 SIGINT trials (to the whole process group, as Ctrl-C in a terminal sends it) and 10 SIGTERM trials (to the
  main process, as ``kill`` sends it) at seeded random moments (0-1 s after a log line of each phase: setting up,
  training, evaluation, checkpoint, next epoch) of a tiny CPU training run with 2 DataLoader workers that evaluates
  and saves a checkpoint every epoch: every trial stops within STOP_LIMIT_S with exit code 130 / 143
  and one line naming where it stopped and the checkpoint to resume from; every checkpoint on disk is complete, no
  partial file is left, the workers are gone and the run lock is free.
- Evaluation: 3 SIGINT and 3 SIGTERM trials of main_seg.py (loading, or 0-3 s into an evaluation that writes
  pictures): the stop line; complete pictures only; an earlier run's results left as they were; the lock free.
- Conversion: SIGINT / SIGTERM while convert_imagenet.py writes shards leaves complete shards only.
- torchrun with 2 ranks: one Ctrl-C stops every rank.
- A second Ctrl-C exits at once; a stop that hangs is forced after utils.interrupt.STOP_DEADLINE_S.
- Two runs into one output folder: the second is refused naming the first; a killed run's lock does not block.
- A DataLoader worker whose receiver leaves mid-handshake prints no traceback.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import helpers_commands as commands
import pytest
from helpers_train_data import jpeg_bytes, write_tiny_setup
from PIL import Image

from utils.checkpoint import load_checkpoint
from utils.interrupt import STOP_DEADLINE_S
from utils.run_lock import LOCK_NAME, acquire, release

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 10
STOP_LIMIT_S = 15.0  # from the signal to the end of every process of the command (a loaded 2-core machine)
GOLDEN_CKPT = ROOT / "tests" / "golden" / "tiny_official_ckpt.pth"
STOP_LINE = re.compile(r"^interrupted \((SIGINT|SIGTERM)\) while (.+?); (.+)$")
CHECKPOINT_NAMED = re.compile(r"the last complete checkpoint is (\S+): to resume")
ENV = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
       "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@dataclass
class Stopped:
    returncode: int
    stderr: str
    stop_s: float  # signal -> every process of the group gone
    delay_s: float  # when the signal was sent, after the command's first sign of work
    anchor: str = ""  # that sign (a log line)


def wait_for(condition, process: subprocess.Popen | commands.Command, timeout: float = 300,
             stderr_path: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, \
            f"ended before the fault was injected:\n{stderr_path.read_text()[-3000:] if stderr_path else ''}"
        assert time.monotonic() < end, "the command never got going"
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except FileNotFoundError:  # a thread that ended after the listing
            pass
    return found


def age_s(pid: int) -> float:
    """Seconds since ``pid`` started (0 when it is gone)."""
    try:
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # clock ticks after boot
    except (OSError, IndexError, ValueError):
        return 0.0
    return float(Path("/proc/uptime").read_text().split()[0]) - started / os.sysconf("SC_CLK_TCK")


def holders(path: Path) -> list[int]:
    """The processes with ``path`` open."""
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == str(path):
                found.append(int(fd.parts[2]))
        except OSError:
            continue
    return sorted(set(found))


def lock_is_free(folder: Path) -> bool:
    """Whether a new run could take ``folder``'s run lock (taken and given back at once)."""
    lock = acquire(folder)
    if lock is not None:
        release(lock)
    return lock is not None


def signalled(pid: int, signum: int) -> bool:
    """Send ``signum`` to ``pid``; False when there is no such process."""
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def interrupt_command(argv: list[str], started, signum: int, delay_s: float, to_group: bool,
                      stderr_path: Path) -> Stopped:
    """Start ``python argv`` in its own session and process group (a project script from the warm Python of
    helpers_commands, ``-m module`` with a fresh one), wait until ``started()``, then ``delay_s``, send ``signum``
    (to the group or to the main process) and time the stop until no process of the group is left."""
    if argv[0] == "-m":
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                       stderr=stderr, start_new_session=True)
    else:
        process = commands.start(argv, stderr_path, env=ENV, new_session=True)
    try:
        wait_for(started, process, stderr_path=stderr_path)
        time.sleep(delay_s)
        assert process.poll() is None, "the command ended before the signal"
        sent = time.monotonic()
        (os.killpg if to_group else os.kill)(process.pid, signum)
        process.wait(timeout=120)
        while group_alive(process.pid) and time.monotonic() - sent < 60:
            time.sleep(0.02)
        stop_s = time.monotonic() - sent
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    return Stopped(process.returncode, stderr_path.read_text(), stop_s, delay_s)


def check_stop_line(stopped: Stopped, signum: int) -> re.Match:
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    match = STOP_LINE.match(lines[-1]) if lines else None
    assert match and match[1] == signal.Signals(signum).name, stopped.stderr[-3000:]
    assert sum(bool(STOP_LINE.match(line)) for line in lines) == 1
    return match


def check_trial_stop(stopped: Stopped, signum: int, name: str) -> re.Match:
    """:func:`check_stop_line`, and the stop within STOP_LIMIT_S (printed: when the signal came, where it stopped)."""
    match = check_stop_line(stopped, signum)
    print(f"{name}: signal {stopped.delay_s:.2f} s after the log line {stopped.anchor!r}, while {match[2]}; every "
          f"process gone {stopped.stop_s:.2f} s later")
    assert stopped.stop_s < STOP_LIMIT_S, f"stopped after {stopped.stop_s:.1f} s"
    return match


# --------------------------------------------------------------------------------------------- training trials


TRAIN_TRIALS = [(signum, i) for signum in (signal.SIGINT, signal.SIGTERM) for i in range(TRIALS)]


def trial_id(trial: tuple[int, int], of: int = TRIALS) -> str:
    return f"{signal.Signals(trial[0]).name.lower()}-trial-{trial[1] + 1:02d}-of-{of}"


@pytest.fixture(scope="module")
def train_cfg(tmp_path_factory) -> Path:
    """100 epochs of 2 steps (never reached), zero-shot classification and a checkpoint after every epoch."""
    return write_tiny_setup(tmp_path_factory.mktemp("faults"), epochs=100, train_length=4, num_workers=2,
                            extra={"evaluate.task": ["cls"], "checkpoint.max_kept": 2})


# Log lines the trials start their random delay from, in turn, so that the signals fall into every phase of the run
# whatever the machine's speed: setting up, the first training steps, the evaluation and checkpoint of epoch 0, the
# next epoch after a checkpoint exists.
ANCHORS = ("training tiny_train", "Train: [0/100][0/", "Accuracy on the", "saved ")


def interrupt_at_log_line(argv: list[str], out: Path, anchor: str, signum: int, delay_s: float) -> Stopped:
    """:func:`interrupt_command` ``delay_s`` after ``anchor`` appears in out/log.txt (SIGINT to the group, SIGTERM to
    the main process); its stderr in out/../<out name>.stderr."""
    log = out / "log.txt"
    stopped = interrupt_command(argv, lambda: log.is_file() and anchor in log.read_text(), signum, delay_s,
                                to_group=signum == signal.SIGINT, stderr_path=out.parent / f"{out.name}.stderr")
    stopped.anchor = anchor
    return stopped


def run_selected_trials(request, test_name: str, run_trial, ids) -> dict[str, tuple[Stopped, Path]]:
    """The trials of ``test_name`` selected in this session, two at a time, by their ids."""
    selected = [item.callspec.params["trial"] for item in request.session.items
                if item.module is request.module and getattr(item, "originalname", "") == test_name]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(map(ids, selected), pool.map(run_trial, selected), strict=True))


@dataclass
class TrainTrial:
    """What a stopped training run left in its folder, read as soon as it stopped."""
    stopped: Stopped
    partial_files: list[str]
    checkpoint_keys: dict[str, set[str]]  # file name -> top-level keys
    lock_free: bool


def checkpoint_keys(path: Path) -> set[str]:
    """The checkpoint's top-level keys; for a file that does not load, the error (which no test expects)."""
    try:
        return set(load_checkpoint(path))
    except Exception as error:  # a broken checkpoint fails its own trial, not the whole module
        return {f"unreadable: {error}"}


def run_train_trial(cfg: Path, trial: tuple[int, int]) -> TrainTrial:
    """One stopped run; its checkpoints are read, then deleted (about 80 MB a trial: the suite's disk stays small)."""
    signum, index = trial
    out = cfg.parent / "trials" / trial_id(trial)
    out.parent.mkdir(exist_ok=True)
    delay = random.Random(f"{signum}-{index}").uniform(0.0, 1.0)
    argv = ["main_group_vit.py", "--cfg", str(cfg), "--output", str(out)]
    stopped = interrupt_at_log_line(argv, out, ANCHORS[index % len(ANCHORS)], signum, delay)
    partial = [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".partial"))]
    checkpoints = sorted(out.glob("*.pth"))
    keys = {path.name: checkpoint_keys(path) for path in checkpoints}
    free = lock_is_free(out)
    for path in checkpoints:
        path.unlink()
    return TrainTrial(stopped, partial, keys, free)


@pytest.fixture(scope="module")
def train_trials(request, train_cfg) -> dict[str, TrainTrial]:
    return run_selected_trials(request, "test_training_stops", lambda trial: run_train_trial(train_cfg, trial),
                               trial_id)


@pytest.mark.slow
@pytest.mark.parametrize("trial", TRAIN_TRIALS, ids=trial_id)
def test_training_stops(trial, train_trials):
    signum = trial[0]
    result = train_trials[trial_id(trial)]
    match = check_trial_stop(result.stopped, signum, trial_id(trial))
    assert not result.partial_files, f"partial files left: {result.partial_files}"
    for name, keys in result.checkpoint_keys.items():  # complete, loadable training checkpoints only
        assert {"model", "optimizer", "lr_scheduler", "epoch"} <= keys, f"{name}: {keys}"
    named = CHECKPOINT_NAMED.search(match[3])
    if named:
        assert "epoch" in result.checkpoint_keys.get(Path(named[1]).name, set()), named[1]
    else:
        assert match[3] == "no checkpoint was saved yet", match[3]
    assert result.lock_free


# --------------------------------------------------------------------------------------------- evaluation


SEG_TRIALS_PER_SIGNAL = 3
SEG_TRIALS = [(signum, i) for signum in (signal.SIGINT, signal.SIGTERM) for i in range(SEG_TRIALS_PER_SIGNAL)]
SEG_ANCHORS = ("evaluating ", "zero-shot segmentation on", "zero-shot segmentation on")
EARLIER_RESULTS = b'{"mIoU": 12.5}\n'  # an earlier run's, which a stopped evaluation must leave as it was


def seg_trial_id(trial: tuple[int, int]) -> str:
    return trial_id(trial, SEG_TRIALS_PER_SIGNAL)


@pytest.fixture(scope="module")
def seg_world(tmp_path_factory) -> Path:
    """600 held-out images of the synthetic world (about 10 s of evaluation for the tiny golden model)."""
    out = tmp_path_factory.mktemp("seg_world")
    done = commands.run(["tools/make_synthetic_data.py", "--out", str(out), "--train-samples", "0", "--cls-images",
                         "0", "--seg-images", "600", "--workers", "1"], out / "streams", env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "seg"


def run_seg_trial(seg_root: Path, trial: tuple[int, int]) -> tuple[Stopped, Path]:
    signum, index = trial
    out = seg_root.parent / "trials" / seg_trial_id(trial)
    out.mkdir(parents=True)
    (out / "seg_results.json").write_bytes(EARLIER_RESULTS)
    delay = random.Random(f"seg-{signum}-{index}").uniform(0.0, 3.0)
    argv = ["main_seg.py", "--cfg", "configs/default.yml", "--resume", str(GOLDEN_CKPT), "--output", str(out),
            "--overwrite", "--vis", "pred", "input_pred", "--opts",
            "evaluate.seg.cfg=segmentation/configs/_base_/datasets/synthetic.py",
            f"evaluate.seg.opts=[data_root={seg_root}]"]
    return interrupt_at_log_line(argv, out, SEG_ANCHORS[index % len(SEG_ANCHORS)], signum, delay), out


@pytest.fixture(scope="module")
def seg_trials(request, seg_world) -> dict[str, tuple[Stopped, Path]]:
    return run_selected_trials(request, "test_evaluation_stops", lambda trial: run_seg_trial(seg_world, trial),
                               seg_trial_id)


@pytest.mark.slow
@pytest.mark.parametrize("trial", SEG_TRIALS, ids=seg_trial_id)
def test_evaluation_stops(trial, seg_trials):
    """main_seg.py stopped at a random moment (loading the model, or 0-3 s into the evaluation of 600 images, with
    pictures being written): the stop line, within the limit; every picture written is complete, no partial file is
    left, the earlier run's results are as they were and the run lock is free."""
    signum = trial[0]
    stopped, out = seg_trials[seg_trial_id(trial)]
    match = check_trial_stop(stopped, signum, seg_trial_id(trial))
    assert match[3] == "rerun the command to evaluate again (no results were written)", match[3]
    assert not [p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))], "partial file left"
    for picture in out.rglob("*.png"):
        with Image.open(picture) as image:
            image.load()  # raises on a truncated file
    assert (out / "seg_results.json").read_bytes() == EARLIER_RESULTS
    assert lock_is_free(out)


# --------------------------------------------------------------------------------------------- conversion


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "val"
    for c in range(2):
        (root / f"n0000000{c}").mkdir(parents=True)
        for i in range(1500):
            (root / f"n0000000{c}" / f"img{c}_{i:05d}.JPEG").write_bytes(jpeg_bytes(i % 50, size=(16, 12)))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_conversion_stops_with_complete_shards_only(imagenet_folder, tmp_path, signum):
    out = tmp_path / "shards"
    stopped = interrupt_command(["convert_dataset/convert_imagenet.py", str(imagenet_folder), "--num-classes", "2",
                                 "--num-shards", "60", "--shards-out", str(out)],
                                lambda: out.is_dir() and len(list(out.glob("*.tar"))) >= 2, signum, 0.0,
                                to_group=signum == signal.SIGINT, stderr_path=tmp_path / "stderr.txt")
    match = check_stop_line(stopped, signum)
    assert stopped.stop_s < STOP_LIMIT_S
    assert match[2].startswith(f"writing {out}/imagenet-val-") and "complete shard(s)" in match[3]
    assert not [p.name for p in out.iterdir() if not p.name.endswith(".tar")], "partial shard left"
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tar:
            assert len(tar.getmembers()) == 2 * 50  # 50 images per shard, jpg + cls each


# --------------------------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_one_ctrl_c_stops_every_torchrun_rank(train_cfg, tmp_path):
    out = tmp_path / "dist"
    with socket_port() as port:
        argv = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port), "main_group_vit.py", "--cfg", str(train_cfg), "--output", str(out),
                "--opts", "data.num_workers=0"]
    log = out / "log.txt"
    stopped = interrupt_command(argv, lambda: log.is_file() and "Train:" in log.read_text(), signal.SIGINT, 1.0,
                                to_group=True, stderr_path=tmp_path / "stderr.txt")
    assert stopped.returncode != 0 and stopped.stop_s < STOP_LIMIT_S + 5, stopped.stderr[-3000:]
    assert "interrupted (SIGINT) while" in stopped.stderr  # rank 0's line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    for path in out.glob("*.pth"):
        assert "epoch" in load_checkpoint(path)


class socket_port:
    """A free TCP port on 127.0.0.1 (closed again on exit, for torchrun to bind)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *_: object) -> None:
        return None


# --------------------------------------------------------------------------------------------- repeats, deadline


SLOW_STOP = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from utils import interrupt
    from utils.cli import run_cli

    def main():
        interrupt.now_doing("a command whose clean-up hangs")
        print("ready", file=sys.stderr, flush=True)
        try:
            time.sleep(120)
        finally:
            time.sleep(120)  # the stop's clean-up never ends

    run_cli(main)
""")


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_and_a_hung_stop_is_forced(tmp_path):
    script = tmp_path / "slow_stop.py"
    script.write_text(SLOW_STOP.format(root=str(ROOT)))
    err = tmp_path / "err.txt"

    def ready() -> bool:
        return err.is_file() and "ready" in err.read_text()

    with open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(script)], env=ENV, stderr=stderr, start_new_session=True)
        wait_for(ready, process)
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert process.poll() is None  # the first stop hangs
        again = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert time.monotonic() - again < 3 and process.returncode == 130
    assert err.read_text().splitlines()[-1] == ("interrupted again (SIGINT): exiting at once, while a command whose "
                                                "clean-up hangs")

    with open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(script)], env=ENV, stderr=stderr, start_new_session=True)
        wait_for(ready, process)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert STOP_DEADLINE_S <= time.monotonic() - sent < STOP_DEADLINE_S + 5 and process.returncode == 143
    assert err.read_text().splitlines()[-1] == (f"interrupted (SIGTERM) while a command whose clean-up hangs; there "
                                                f"is nothing to resume from (forced: the stop took over "
                                                f"{STOP_DEADLINE_S:g} s)")


# --------------------------------------------------------------------------------------------- a receiver lost


LOST_RECEIVER = textwrap.dedent("""
    import multiprocessing, os, socket, sys, time
    from multiprocessing import resource_sharer
    sys.path.insert(0, {root!r})
    from utils.interrupt import handling_stop_signals

    def worker(pipe):
        resource_sharer.DupFd(os.open(os.devnull, os.O_RDONLY))  # serves an fd, as a worker serves a shared tensor
        pipe.send(resource_sharer._resource_sharer._address)
        pipe.recv()
        time.sleep(1.0)  # the serving thread meets the dropped connection

    def main():
        here, there = multiprocessing.Pipe()
        child = multiprocessing.get_context("fork").Process(target=worker, args=(there,))
        child.start()
        with socket.socket(socket.AF_UNIX) as receiver:  # connects, then leaves before answering the challenge
            receiver.connect(here.recv())
        here.send(None)
        child.join()

    if sys.argv[1] == "handled":
        with handling_stop_signals():
            main()
    else:
        main()
""")


@pytest.mark.parametrize("stops", ["handled", "not handled"])
def test_a_receiver_lost_mid_handshake_prints_no_worker_traceback(tmp_path, stops):
    """The main process stopping while it fetches a shared tensor from a DataLoader worker drops the connection to
    the worker's resource sharer mid-handshake. Under handling_stop_signals the worker prints nothing (the main
    process reports the stop); without it, Python prints the sharer thread's traceback (which shows the test is
    real)."""
    script = tmp_path / "lost_receiver.py"
    script.write_text(LOST_RECEIVER.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script), stops], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if stops == "handled":
        assert done.stderr == ""
    else:
        assert "Traceback" in done.stderr and "resource_sharer.py" in done.stderr, done.stderr


POOL_WORKERS = textwrap.dedent("""
    import multiprocessing, signal, sys
    sys.path.insert(0, {root!r})
    from utils.interrupt import handling_stop_signals

    def dispositions(_):
        return [signal.getsignal(signal.SIGINT) == signal.SIG_IGN, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL]

    with handling_stop_signals():
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(pool.map(dispositions, range(2)))
    print("done")
""")


def test_forked_workers_stop_as_the_kernel_says(tmp_path):
    """Under the stop handlers a forked worker ignores SIGINT and ends on SIGTERM by the kernel's default action, not
    through a Python handler (which a signal landing just before a blocking call would never run: Pool.terminate
    then waited for ever on such a worker, seen once in the quickstart's data generation)."""
    script = tmp_path / "pool_workers.py"
    script.write_text(POOL_WORKERS.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[[True, True], [True, True]]", "done"], done.stdout + done.stderr


HALF_BUILT = textwrap.dedent("""
    import gc, os, signal, sys
    sys.path.insert(0, {root!r})
    from utils.interrupt import Interrupted, handling_stop_signals

    class HalfBuilt:  # as a DataLoader iterator whose __init__ a stop interrupted: its __del__ fails
        def __del__(self):
            self.workers_status

    with handling_stop_signals():
        HalfBuilt()  # before any stop: printed
        gc.collect()
        print("stop", file=sys.stderr, flush=True)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except Interrupted:
            HalfBuilt()  # after the stop: a consequence of it, not printed
            gc.collect()
""")


def test_errors_in_del_after_a_stop_are_not_printed(tmp_path):
    script = tmp_path / "half_built.py"
    script.write_text(HALF_BUILT.format(root=str(ROOT)))
    done = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=60)
    before, _, after = done.stderr.partition("stop\n")
    assert done.returncode == 0 and "AttributeError" in before and "workers_status" in before, done.stderr
    assert after == "", done.stderr


# --------------------------------------------------------------------------------------------- one run per folder


@pytest.mark.slow
def test_one_run_per_output_folder(tmp_path):
    """A second run into the folder (under any spelling of its path) is refused naming the first; the first goes on;
    once the first is killed (SIGKILL to its main process: no clean-up at all), its lock file does not block a new
    run, even while the killed run's DataLoader workers still live (they are stopped with SIGSTOP first, as a worker
    that has not yet seen its parent gone)."""
    # Epochs of 200 steps, so that the first run's loader workers live for seconds: with the 2-step epochs of
    # train_cfg a worker lived about 0.5 s, and on idle cores all 100 epochs could end before one was found.
    train_cfg = write_tiny_setup(tmp_path / "data", epochs=100, train_length=400, per_shard=100, num_workers=2,
                                 extra={"evaluate.task": ["cls"]})
    out, first_stderr = tmp_path / "run", tmp_path / "first.stderr"
    with first_stderr.open("w") as stderr:
        first = subprocess.Popen([sys.executable, "main_group_vit.py", "--cfg", str(train_cfg), "--output", str(out)],
                                 cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        log = out / "log.txt"
        wait_for(lambda: log.is_file() and "Train:" in log.read_text(), first, stderr_path=first_stderr)
        (tmp_path / "alias").symlink_to(out)
        for spelling in (out, tmp_path / "alias", Path(os.path.relpath(out, ROOT))):
            second = commands.run(["main_group_vit.py", "--cfg", str(train_cfg), "--output", str(spelling)],
                                  tmp_path / "second", env=ENV)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, second.stderr[-3000:]
            assert re.match(rf"error: another run is using the output folder {re.escape(str(spelling))} \(pid "
                            rf"{first.pid} on \S+, started .*: python\S* main_group_vit\.py --cfg .*\); wait for it "
                            r"to end, stop it, or choose another --output$", lines[0]), lines[0]
        assert first.poll() is None
        assert log.read_text().count("training tiny_train") == 1  # the refused runs wrote nothing into the log
        workers: list[int] = []

        def stopped_workers() -> bool:  # workers past their start (a child just forked may not have closed its copy)
            workers.extend(pid for pid in children(first.pid) if age_s(pid) > 0.5 and signalled(pid, signal.SIGSTOP))
            return bool(workers)

        wait_for(stopped_workers, first, stderr_path=first_stderr)  # the first run ending fails the test, not hangs it
    finally:
        first.kill()
        first.wait()
    try:
        assert (out / LOCK_NAME).is_file()  # left behind by the killed run
        third = commands.run(["main_group_vit.py", "--cfg", str(train_cfg), "--output", str(out), "--opts",
                              "train.epochs=1", "data.dataset.meta.tiny_pairs.length=4"], tmp_path / "third",
                             env=ENV, timeout=600)
        assert third.returncode == 0, f"{third.stderr[-3000:]}; held by {holders(out / LOCK_NAME)}, workers {workers}"
    finally:
        for pid in workers:
            signalled(pid, signal.SIGKILL)
