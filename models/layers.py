"""Generic layers the two towers share or take from the ViT family (nothing here is specific to grouping).

``attention`` is the one attention primitive (both towers call it); ``Attention`` / ``CrossAttention`` /
``AttnBlock`` / ``CrossAttnBlock`` / ``PatchEmbed`` are the image tower's blocks with the reference's parameter
names (``qkv``, ``q_proj``/``k_proj``/``v_proj``, ``proj``, ``norm1``, ``mlp.fc1``, ...). The MLP is timm's
``Mlp`` (same ``fc1``/``fc2`` keys and values as the reference's).

Shapes: B batch, N query tokens, S key tokens, C channels, h heads.
"""

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, dropout_p: float = 0.0,
              is_causal: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale, causal mask optional) v for [B, heads, L, d] queries and [B, heads, S, d] keys/values.

    ``F.scaled_dot_product_attention`` (fused kernels that never hold the L x S weights), except when autograd records
    bfloat16/float16 attention on the CPU: there the fused kernels' backward is several times slower than the plain
    matmul + softmax (forward-only and float32 are faster fused).
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and q.requires_grad \
            and torch.is_grad_enabled():
        return explicit_attention(q, k, v, scale, dropout_p, is_causal)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                       dropout_p: float = 0.0, is_causal: bool = False) -> torch.Tensor:
    """:func:`attention` computed as written: the [B, heads, L, S] weights are materialised."""
    weights = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        weights = weights + torch.full((L, S), float("-inf"), dtype=weights.dtype, device=weights.device).triu(1)
    weights = weights.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


def straight_through_one_hot(y_soft: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the argmax of probabilities ``y_soft`` along ``dim``, with the gradient of ``y_soft``."""
    index = y_soft.argmax(dim, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(dim, index, 1.0)
    # Computed as one_hot - soft + soft, like the reference (and F.gumbel_softmax), so values match bit for bit.
    return y_hard - y_soft.detach() + y_soft


class MixerMlp(Mlp):
    """timm's ``Mlp`` over the token axis: [B, S_in, C] -> [B, S_out, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (rows laid out q | k | v)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, h, N, C/h]
        x = attention(q, k, v, self.scale, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class CrossAttention(nn.Module):
    """Multi-head attention of queries over separate keys/values (``q_proj``/``k_proj``/``v_proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        B, N, C = query.shape
        S, h = key.shape[1], self.num_heads
        q = self.q_proj(query).reshape(B, N, h, C // h).transpose(1, 2)  # [B, h, N, C/h]
        k = self.k_proj(key).reshape(B, S, h, C // h).transpose(1, 2)  # [B, h, S, C/h]
        v = self.v_proj(key).reshape(B, S, h, C // h).transpose(1, 2)
        x = attention(q, k, v, self.scale, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class AttnBlock(nn.Module):
    """Pre-norm ViT block: x + DropPath(Attn(LN(x))), then x + DropPath(Mlp(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                              proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttnBlock(nn.Module):
    """Post-norm cross-attention block: LN(q + Attn(q, k) + Mlp(LN(.)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm_post = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                                   proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)


class PatchEmbed(nn.Module):
    """Conv patchify + LayerNorm: [B, 3, H, W] -> [B, (H//p)*(W//p), C] and the token grid (h, w).

    Not timm's ``PatchEmbed``: that one refuses (or pads) an image whose sides are not multiples of the patch
    size, while the reference, and segmentation at the image's own size (``test_cfg.mode=whole``), drop the
    remainder as the convolution does. The parameter names (``proj``, ``norm``) are timm's too.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 384,
                 patch_norm: bool = True):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # [B, C, h, w]
        hw_shape = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw_shape
