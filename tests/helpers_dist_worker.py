"""Worker for tests/test_distributed.py, run under torchrun (2 processes, gloo on CPU), cwd the repository root.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers_dist_worker.py OUT_DIR CONFIG CHECKPOINT

1. Gradients: the tiny golden model (children in eval mode, so no Gumbel noise, drop path or batch statistics;
   forward_train still runs) wrapped in DDP, each rank on its half of ``make_batch()``; saves every gradient.
2. ``main_group_vit.py --eval`` over the validation shards, split across the two ranks.
3. Two training iterations of main_group_vit.py with DDP.
Rank 0 writes the metrics of 2 and 3 to OUT_DIR/metrics.json.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root


def make_batch() -> dict[str, torch.Tensor]:
    """A global batch of 4: images [4, 3, 224, 224] and caption + 3 prompt tokens [4, 4, 77]."""
    from datasets import tokenize

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(4, 3, 224, 224, generator=generator)
    words = ["dog", "cat", "car", "tree"]
    text = torch.stack([tokenize([f"a photo with a {w} and a {v}" for v in ("house", w, "ball", "road")])
                        for w in words])
    return {"image": image, "text": text}


def loss_model(ckpt_path: str) -> torch.nn.Module:
    """The golden tiny model; top module in training mode (forward -> forward_train), every child in eval mode."""
    from models import build_model
    from utils.checkpoint import load_checkpoint, load_model_state

    ckpt = load_checkpoint(ckpt_path)
    model = build_model(ckpt["config"].model)
    load_model_state(model, ckpt["model"])
    model.eval()
    model.training = True
    return model


def main(out_dir: str, cfg: str, ckpt: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import main_group_vit
    from utils.distributed import get_rank, get_world_size, init_distributed

    init_distributed()
    rank, world = get_rank(), get_world_size()
    assert world == 2 and dist.get_backend() == "gloo"
    out = Path(out_dir)

    model = loss_model(ckpt)
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    local = {k: v[2 * rank:2 * rank + 2] for k, v in make_batch().items()}
    losses = ddp(**local)
    sum(losses.values()).backward()
    torch.save({n: p.grad for n, p in model.named_parameters()}, out / f"grads_rank{rank}.pt")

    metrics = {"eval": main_group_vit.main(["--cfg", cfg, "--eval", "--resume", ckpt, "--output", str(out / "eval")])}
    metrics["train"] = main_group_vit.main(["--cfg", cfg, "--output", str(out / "train")])
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
