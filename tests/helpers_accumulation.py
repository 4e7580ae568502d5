"""A tiny model and a batch of 16 for the accumulation tests, and their 2-process worker (run under torchrun, gloo):

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers_accumulation.py OUT_DIR

Each process takes its 8 of the 16 samples as 2 micro-batches of 4 and makes one accumulated SGD step of the
DDP-wrapped model; rank 0 saves the weights after it to OUT_DIR/weights.pt.
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root
WORDS = ["dog", "cat", "car", "tree", "boat", "bird", "horse", "chair", "pizza", "house", "road", "ball", "cup",
         "lamp", "bed", "sofa"]


def tiny_model(proj_num_layers: int = 1, stochastic: bool = False) -> torch.nn.Module:
    """The golden tiny model's architecture at 64 px, seeded; without ``stochastic``: no drop path, and soft
    assignment without Gumbel noise, so that a micro-batch's features do not depend on the batch it is in."""
    from models import build_model
    from utils.config import load_config

    cfg = load_config(ROOT / "tests" / "golden" / "tiny_model.yml")
    cfg.model.proj_num_layers = proj_num_layers
    cfg.model.img_encoder.img_size = 64
    if not stochastic:
        cfg.model.img_encoder.drop_path_rate = 0.0
        cfg.model.img_encoder.hard_assignment = False
    torch.manual_seed(0)
    return build_model(cfg.model).train()


def make_batch(size: int = 16) -> dict[str, torch.Tensor]:
    """Images [size, 3, 64, 64] and caption + 3 prompt tokens [size, 4, 77]."""
    from datasets import tokenize

    generator = torch.Generator().manual_seed(0)
    image = torch.randn(size, 3, 64, 64, generator=generator)
    text = torch.stack([tokenize([f"a photo of a {w} next to a {WORDS[(i + 1) % len(WORDS)]}" * (1 + i % 3),
                                  f"a photo of a {w}.", f"itap of a {w}.", f"a {w} in the picture."])
                        for i, w in enumerate(WORDS[:size])])
    return {"image": image, "text": text}


def split(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """``parts`` consecutive micro-batches of equal size."""
    chunks = {k: v.chunk(parts) for k, v in batch.items()}
    return [{k: chunks[k][i] for k in batch} for i in range(parts)]


def main(out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.precision import FP32
    from training.step import accumulated_step
    from utils.distributed import get_rank, init_distributed

    init_distributed()
    rank = get_rank()
    model = DistributedDataParallel(tiny_model(), broadcast_buffers=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    local = {k: v[8 * rank:8 * rank + 8] for k, v in make_batch().items()}
    accumulated_step(model, split(local, 2), optimizer, torch.amp.GradScaler("cpu", enabled=False),
                     FP32, clip_grad=None)
    if rank == 0:
        torch.save({n: p.detach() for n, p in model.module.named_parameters()}, Path(out_dir) / "weights.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
