"""Two processes under torchrun with gloo: gathered-loss gradients, split evaluation, DDP training; launchers."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_dist_worker import loss_model, make_batch
from helpers_train_data import write_tiny_setup

import main_group_vit

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_CKPT = ROOT / "tests" / "golden" / "tiny_official_ckpt.pth"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This environment without torchrun variables, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path):
    cfg = write_tiny_setup(tmp_path, train_length=8, extra={"evaluate.task": ["cls"]})
    out = tmp_path / "dist"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "tests/helpers_dist_worker.py", str(out), str(cfg), str(GOLDEN_CKPT)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # 1. DDP-averaged gradients of loss + multi_label_loss with the all_gather == one process on the whole batch
    model = loss_model(str(GOLDEN_CKPT))
    losses = model(**make_batch())
    assert set(losses) == {"loss", "multi_label_loss"}
    sum(losses.values()).backward()
    grads = [torch.load(out / f"grads_rank{r}.pt", weights_only=True) for r in range(2)]
    atol = 1e-5 * max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)  # fp32 noise
    checked = 0
    for name, param in model.named_parameters():
        if param.grad is None:
            assert grads[0][name] is None and grads[1][name] is None, name
            continue
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=0)  # DDP: identical on all ranks
        torch.testing.assert_close(grads[0][name], param.grad, rtol=1e-4, atol=atol, msg=name)
        if param.grad.abs().max() > 1000 * atol:  # a substantial gradient: also equal as a whole
            assert (grads[0][name] - param.grad).norm() <= 1e-4 * param.grad.norm(), name
            checked += 1
    assert checked > 100 and model.logit_scale.grad.abs() > 0 and model.multi_label_logit_scale.grad.abs() > 0

    # 2. zero-shot evaluation split over 2 ranks == one process: all 10 images, same accuracy
    metrics = json.loads((out / "metrics.json").read_text())
    single = main_group_vit.main(["--cfg", str(cfg), "--eval", "--resume", str(GOLDEN_CKPT),
                                  "--output", str(tmp_path / "single")])
    assert metrics["eval"]["num_images"] == single["num_images"] == 10
    assert metrics["eval"]["acc1"] == pytest.approx(single["acc1"])
    assert metrics["eval"]["acc5"] == pytest.approx(single["acc5"])

    # 3. DDP training ran its 2 iterations (8 samples / (batch 2 x 2 processes)) and wrote a checkpoint
    log = (out / "train" / "log.txt").read_text()
    assert "world size 2" in log and "2 iterations per epoch" in log and "Train: [0/1][1/2]" in log
    ckpt = torch.load(out / "train" / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and not any(k.startswith("module.") for k in ckpt["model"])
    assert {float(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {2.0}


# Each process writes its rank, world size, rendezvous address and arguments to rank<RANK>.txt beside the script.
SHOW_ARGS = """import os, sys
env = [os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")]
with open(os.path.join(os.path.dirname(__file__), f"rank{env[0]}.txt"), "w") as f:
    f.write(" ".join(env + sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["single", "multi"])
def test_launchers(tmp_path, launcher):
    script = tmp_path / "show.py"
    script.write_text(SHOW_ARGS)
    port = free_port()
    env = {**clean_env(), "PYTHON": sys.executable, "PORT": str(port)}
    if launcher == "single":
        command = ["tools/dist_launch.sh", str(script), "my.yml", "2", "--tag", "x"]
    else:  # tcp://host:port: the port in the address wins over PORT (which the reference ignored)
        port = free_port()
        command = ["tools/dist_mn_launch.sh", str(script), "my.yml", "0", "1", "2", f"tcp://127.0.0.1:{port}",
                   "--tag", "x"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert lines == [f"{r} 2 127.0.0.1 {port} --cfg my.yml --tag x" for r in range(2)]


def test_launcher_usage_errors():
    for script in ("tools/dist_launch.sh", "tools/dist_mn_launch.sh"):
        result = subprocess.run([script, "main_group_vit.py"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.startswith("usage:")


RESTART = """
import os, sys, time, torch
from utils.distributed import all_reduce_sum, close_distributed, init_distributed
for attempt in range(2):
    os.environ["TORCHELASTIC_RESTART_COUNT"] = str(attempt)
    if attempt == 1 and os.environ["RANK"] == "1":
        time.sleep(3)  # the restarted rank 0 reads the store alone
    init_distributed()
    print(int(all_reduce_sum(torch.ones(1)).item()), flush=True)
    close_distributed()
"""


@pytest.mark.slow
def test_a_restarted_group_does_not_read_the_dead_groups_keys():
    """torchrun keeps its store across restarts. Two ranks form a group, leave it and form it again as torchrun's
    restarted workers would, rank 1 late: rank 0 must wait for the new rank 1, not connect to the address that the
    first group's rank 1 left in the store (it hung there)."""
    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {**clean_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": "2",
           "TORCHELASTIC_USE_AGENT_STORE": "True"}
    ranks = [subprocess.Popen([sys.executable, "-c", RESTART], cwd=ROOT, env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        outputs = [p.communicate(timeout=90) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert [out.split() for out, _ in outputs] == [["2", "2"]] * 2, outputs[0][1][-2000:]
