"""The CLIP-style causal text transformer of GroupViT (``text_encoder.*`` in checkpoints).

Shapes use the released configuration: width D = 256, 4 heads, 77 tokens, 12 layers.
"""

import torch
import torch.nn.functional as F
from timm.layers import QuickGELU
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import attention
from .outputs import pack_outputs


def used_length(eot: torch.Tensor, length: int, multiple: int = 8) -> int:
    """How many leading positions the pooled features depend on: up to the last row's EOT, rounded up to
    ``multiple`` (fewer distinct shapes for torch.compile and the GPU kernels), at most ``length``.

    The attention is causal, so a position never sees the padding after it: running only these positions
    gives the same EOT features as running all 77 (captions average well under 77 tokens, noun prompts ~10).
    """
    if eot.numel() == 0:
        return length
    return min(length, (int(eot.max()) + multiple) // multiple * multiple)


def text_lengths(text: torch.Tensor, multiple: int = 8) -> tuple[int, int]:
    """The positions the text tower runs for a batch of token ids [B, 77] or [B, 1+M, 77], known before the batch
    reaches the model: (captions, noun prompts; 0 without prompts), each :func:`used_length` of its group.

    Computed from the loader's CPU copy of the tokens, so the model's forward needs no device-to-host read. A larger
    ``multiple`` gives coarser length buckets (fewer compiled graphs or CUDA graphs) and the same features.
    """
    eot = text.argmax(dim=-1)  # [B] or [B, 1+M]
    if text.ndim == 2:
        return used_length(eot, text.shape[-1], multiple), 0
    prompts = eot[:, 1:]
    return (used_length(eot[:, 0], text.shape[-1], multiple),
            used_length(prompts, text.shape[-1], multiple) if prompts.numel() else 0)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with ``nn.MultiheadAttention``'s parameter names.

    ``in_proj_weight`` [3D, D] stacks the q, k and v projections in that order.
    """

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [B, L, 3D]
        q, k, v = qkv.reshape(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = attention(q, k, v, is_causal=True)  # [B, heads, L, D/heads]
        return self.out_proj(x.transpose(1, 2).reshape(B, L, D))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + Attn(ln_1(x)), then x + MLP(ln_2(x)) with QuickGELU."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = CausalSelfAttention(width, num_heads)
        self.ln_1 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU())  # x * sigmoid(1.702 x), as CLIP
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock``s (``transformer.resblocks.{k}``)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, use_checkpoint: bool = False):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = checkpoint(block, x, use_reentrant=False) if self.use_checkpoint and self.training else block(x)
        return x


class TextTransformer(nn.Module):
    """Token ids [B, 77] -> the ln_final feature at each row's EOT token [B, D]."""

    def __init__(self, context_length: int = 77, width: int = 256, layers: int = 12, vocab_size: int = 49408,
                 mlp_ratio: float = 4.0, with_gc: bool = False):
        super().__init__()
        self.context_length, self.width = context_length, width
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width=width, layers=layers, heads=width // 64, mlp_ratio=mlp_ratio,
                                       use_checkpoint=with_gc)
        self.ln_final = nn.LayerNorm(width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """CLIP's initialisation (matters for training from scratch only)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = self.width ** -0.5 * (2 * self.transformer.layers) ** -0.5
        attn_std = self.width ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, text: torch.Tensor, *, length: int | None = None, as_dict: bool = False):
        """``length``: how many leading positions to run, when the caller knows it (:func:`text_lengths`); None reads
        it from the tokens (a device-to-host copy on a GPU)."""
        # text: [B, L] token ids, zero-padded, EOT (49407, the largest id) after the caption
        eot = text.argmax(dim=-1)  # [B] position of each row's first EOT
        text = text[:, : used_length(eot, text.shape[1]) if length is None else length]
        x = self.token_embedding(text) + self.positional_embedding[: text.shape[1]]  # [B, L', D]
        x = self.ln_final(self.transformer(x))
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # [B, D] at the first EOT
        return pack_outputs({"x": x}, as_dict)
