"""GroupViT image encoder: a ViT whose stages merge image tokens into learned groups.

Shapes below use the released configuration: C = 384 channels, 6 heads, 196 patch tokens at
224 px, 64 groups after stage 0 and 8 groups after stage 1. Module and parameter names follow the
reference checkpoints exactly (``img_encoder.layers.{i}.blocks.{j}.attn.qkv.weight`` and so on).
"""

import torch
import torch.nn.functional as F
from timm.layers import Mlp, resample_abs_pos_embed, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from utils.errors import UserError

from .layers import AttnBlock, CrossAttnBlock, MixerMlp, PatchEmbed, straight_through_one_hot
from .outputs import pack_outputs


class AssignAttention(nn.Module):
    """Single-head attention that assigns every image token to one group.

    The softmax runs over the GROUP axis (each token picks a group); in training it is a Gumbel
    softmax, and with ``hard`` it becomes a straight-through one-hot. Each group then receives the
    sum of its tokens' values divided by (its token count + ``assign_eps``).
    """

    def __init__(self, dim: int, qkv_bias: bool = True, qk_scale: float | None = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, hard: bool = True, gumbel: bool = True, gumbel_tau: float = 1.0,
                 sum_assign: bool = False, assign_eps: float = 1.0):
        super().__init__()
        self.scale = qk_scale or dim ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.hard, self.gumbel, self.gumbel_tau = hard, gumbel, gumbel_tau
        self.sum_assign, self.assign_eps = sum_assign, assign_eps

    def forward(self, query: torch.Tensor, key: torch.Tensor, return_attn: bool = False):
        # query: groups [B, S, C]; key: image tokens [B, L, C]
        q = self.q_proj(query).unsqueeze(1)  # [B, 1, S, C]
        k = self.k_proj(key).unsqueeze(1)  # [B, 1, L, C]
        v = self.v_proj(key).unsqueeze(1)
        logits = (q @ k.transpose(-2, -1)).float() * self.scale  # [B, 1, S, L]; float32 under autocast too
        noisy = self.gumbel and self.training
        # plain softmax over the group axis: the assignment without noise, and the 'soft' map (computed once)
        soft = logits.softmax(dim=-2) if return_attn or not noisy else None
        if noisy:  # softmax((logits + Gumbel(0, 1) noise) / tau), straight-through one-hot with hard
            attn = F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=self.hard, dim=-2)
        else:
            attn = straight_through_one_hot(soft, dim=-2) if self.hard else soft
        attn_dict = {"hard": attn, "soft": soft} if return_attn else None
        if not self.sum_assign:
            attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
        out = (self.attn_drop(attn) @ v).squeeze(1)  # [B, S, C]
        return self.proj_drop(self.proj(out)), attn_dict


class GroupingBlock(nn.Module):
    """Merge L image tokens into S2 groups, guided by S1 learned group tokens."""

    def __init__(self, dim: int, num_heads: int, num_group_token: int, num_output_group: int,
                 mlp_ratio: tuple[float, float] = (0.5, 4.0), hard: bool = True, gumbel: bool = True):
        super().__init__()
        tokens_dim, channels_dim = int(mlp_ratio[0] * dim), int(mlp_ratio[1] * dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.mlp_inter = Mlp(in_features=num_group_token, hidden_features=tokens_dim, out_features=num_output_group)
        self.norm_post_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.pre_assign_attn = CrossAttnBlock(dim=dim, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True)
        self.assign = AssignAttention(dim=dim, qkv_bias=True, hard=hard, gumbel=gumbel)
        self.norm_new_x = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(in_features=dim, hidden_features=channels_dim, out_features=dim)

    def forward(self, x: torch.Tensor, group_tokens: torch.Tensor, return_attn: bool = False):
        # x: image tokens [B, L, C]; group_tokens: [B, S1, C]
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        # token mixing S1 -> S2 over the group axis
        projected = self.norm_post_tokens(self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2))  # [B, S2, C]
        projected = self.pre_assign_attn(projected, x)
        new_x, attn_dict = self.assign(projected, x, return_attn=return_attn)  # [B, S2, C]
        new_x = new_x + projected
        new_x = new_x + self.mlp_channels(self.norm_new_x(new_x))
        return new_x, attn_dict


class GroupingLayer(nn.Module):
    """One stage: transformer blocks over [image tokens; group tokens], then (optionally) grouping."""

    def __init__(self, dim: int, depth: int, num_heads: int, num_group_token: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: list[float] | None = None, downsample: nn.Module | None = None,
                 group_projector: nn.Module | None = None, zero_init_group_token: bool = False,
                 use_checkpoint: bool = False):
        super().__init__()
        self.num_group_token = num_group_token
        if num_group_token > 0:
            self.group_token = nn.Parameter(torch.zeros(1, num_group_token, dim))
            if not zero_init_group_token:
                trunc_normal_(self.group_token, std=0.02)
        drop_path = drop_path or [0.0] * depth
        self.blocks = nn.ModuleList(
            AttnBlock(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                      drop=drop, attn_drop=attn_drop, drop_path=drop_path[i])
            for i in range(depth))
        self.downsample = downsample
        self.group_projector = group_projector
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor, prev_group_token: torch.Tensor | None = None, return_attn: bool = False):
        # x: [B, L, C]; prev_group_token: the previous stage's group tokens as they left its blocks
        group_token = None
        if self.num_group_token > 0:
            group_token = self.group_token.expand(x.size(0), -1, -1)  # [B, S, C]
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
            x_cat = torch.cat([x, group_token], dim=1)
        else:
            x_cat = x
        for blk in self.blocks:
            x_cat = checkpoint(blk, x_cat, use_reentrant=False) if self.use_checkpoint and self.training else blk(x_cat)
        if group_token is not None:
            x, group_token = x_cat[:, : -self.num_group_token], x_cat[:, -self.num_group_token:]
        else:
            x = x_cat
        attn_dict = None
        if self.downsample is not None:
            x, attn_dict = self.downsample(x, group_token, return_attn=return_attn)
        return x, group_token, attn_dict


class GroupViT(nn.Module):
    """The hierarchical grouping vision transformer (image encoder of GroupViT)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 0,
                 embed_dim: int = 384, embed_factors: tuple[int, ...] = (1, 1, 1),
                 depths: tuple[int, ...] = (6, 3, 3), num_heads: tuple[int, ...] = (6, 6, 6),
                 num_group_tokens: tuple[int, ...] = (64, 8, 0), num_output_groups: tuple[int, ...] = (64, 8),
                 hard_assignment: bool = True, gumbel: bool | None = None, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, patch_norm: bool = True,
                 use_checkpoint: bool = False, pos_embed_type: str = "simple", freeze_patch_embed: bool = False,
                 assign_init_scale: tuple[float, float] = (1.0, 1.0)):
        """``gumbel`` (ours; default: ``hard_assignment``, as the reference ties them): Gumbel noise on the
        training assignment. ``assign_init_scale`` (ours, not the reference's; (1, 1) = the reference): factors on
        the starting weights of every assignment, (query/key, value/output projection). The reference's init makes
        the assignment logits tiny (soft maps near uniform) and the assigned content a few % of each group token;
        larger factors start training with sharper, content-carrying groups. Only the initialisation changes."""
        super().__init__()
        num_layers = len(depths)
        if not (len(num_heads) == len(num_group_tokens) == len(embed_factors) == num_layers
                and len(num_output_groups) == num_layers - 1 and num_group_tokens[-1] == 0):
            raise UserError("GroupViT: depths, num_heads, num_group_tokens and embed_factors need one entry per "
                            "stage, num_output_groups one fewer, and the last stage no group tokens")
        if len(set(embed_factors)) != 1:
            raise UserError(f"GroupViT: embed_factors must all be equal (got {list(embed_factors)})")
        if pos_embed_type != "simple":
            raise UserError(f"GroupViT: pos_embed_type {pos_embed_type!r} is not supported (only 'simple')")
        dim = int(embed_dim * embed_factors[0])
        self.width = self.num_features = dim

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      patch_norm=patch_norm)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        n_blocks = sum(depths)  # stochastic depth rises linearly from 0 over all blocks
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]

        self.layers = nn.ModuleList()
        for i in range(num_layers):
            downsample = None
            if num_group_tokens[i] > 0:
                downsample = GroupingBlock(dim=dim, num_heads=num_heads[i], num_group_token=num_group_tokens[i],
                                           num_output_group=num_output_groups[i], hard=hard_assignment,
                                           gumbel=hard_assignment if gumbel is None else gumbel)
            group_projector = None
            if i > 0 and num_group_tokens[i] > 0:
                group_projector = nn.Sequential(
                    nn.LayerNorm(dim), MixerMlp(in_features=num_group_tokens[i - 1], hidden_features=dim // 2,
                                                out_features=num_group_tokens[i]))
            self.layers.append(GroupingLayer(
                dim=dim, depth=depths[i], num_heads=num_heads[i], num_group_token=num_group_tokens[i],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[: i + 1])], downsample=downsample,
                group_projector=group_projector, zero_init_group_token=group_projector is not None,
                use_checkpoint=use_checkpoint))

        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)
        qk_factor, value_factor = assign_init_scale
        with torch.no_grad():
            for assign in (m for m in self.modules() if isinstance(m, AssignAttention)):
                for linear, factor in ((assign.q_proj, qk_factor), (assign.k_proj, qk_factor),
                                       (assign.v_proj, value_factor), (assign.proj, value_factor)):
                    linear.weight.mul_(factor)
        if freeze_patch_embed:
            for p in self.patch_embed.parameters():
                p.requires_grad = False

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor, return_attn: bool = False):
        """[B, 3, H, W] -> final tokens [B, 8, C], last group tokens, and one attn dict per stage."""
        x, (h, w) = self.patch_embed(x)  # [B, h*w, C]
        pos_embed = self.pos_embed
        if not (self.training and h * w == pos_embed.shape[1]):
            # bicubic resize of the square grid to h x w (unchanged when it is one); the reference has no class
            # token and no antialiasing
            pos_embed = resample_abs_pos_embed(pos_embed, new_size=[h, w], num_prefix_tokens=0,
                                               interpolation="bicubic", antialias=False)
        x = self.pos_drop(x + pos_embed)
        group_token, attn_dicts = None, []
        for layer in self.layers:
            x, group_token, attn_dict = layer(x, group_token, return_attn=return_attn)
            attn_dicts.append(attn_dict)
        return self.norm(x), group_token, attn_dicts

    def forward(self, x: torch.Tensor, *, return_feat: bool = False, return_attn: bool = False,
                as_dict: bool = False):
        """Image vector 'x' [B, C] (mean of the final tokens); optionally 'feat' and 'attn_dicts'.

        ``attn_dicts[i]`` is ``{'hard', 'soft'}`` of shape [B, 1, S_i, L_i] for grouping stages, else None.
        """
        feat, _, attn_dicts = self.forward_features(x, return_attn=return_attn)
        outs = {"x": self.head(feat.mean(dim=1))}
        if return_feat:
            outs["feat"] = feat
        if return_attn:
            outs["attn_dicts"] = attn_dicts
        return pack_outputs(outs, as_dict)
