"""Reporting of a run's scalars: TensorBoard (``<output>/tensorboard``) and, with ``--wandb``, Weights & Biases."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from utils.errors import UserError


class Reporter:
    """Scalars to TensorBoard (``<output>/tensorboard``) and, with ``--wandb``, to Weights & Biases (rank 0)."""

    def __init__(self, cfg: DictConfig, logger: logging.Logger):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(cfg.output) / "tensorboard"))
        except ImportError as e:
            logger.info(f"TensorBoard logging off ({e})")
        self.wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise UserError("--wandb needs the wandb package (pip install wandb)") from None
            self.wandb = wandb.init(project="group_vit", name=f"{cfg.model_name}/{cfg.tag}", dir=cfg.output,
                                    config=OmegaConf.to_container(cfg, resolve=True),
                                    resume="allow" if cfg.checkpoint.auto_resume else None)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)
        if self.wandb is not None:  # no step: W&B needs it monotonic across iteration and epoch logs
            self.wandb.log(dict(values))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
