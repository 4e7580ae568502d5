"""GroupViT's top-level model: image and text towers, projection heads, losses and zero-shot helpers.

Shapes use the released configuration: image width 384, text width 256, output dim E = 256,
M = 3 extra prompt texts per caption for the multi-label loss.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils.distributed import all_gather_with_grad, get_rank, get_world_size

from .outputs import pack_outputs


class ProjectMLP(nn.Module):
    """(Conv1d(k=1) -> BatchNorm1d -> ReLU) x (num_layers - 1), then Conv1d(k=1) to ``out_dim``.

    Conv1d over [B, C, L] is a Linear per token; the Conv1d modules are kept for the checkpoint layout
    (weights [out, in, 1]) but run as ``F.linear`` on the tokens as rows [B*L, C] (several times faster than
    a kernel-1 convolution, forward and backward). BatchNorm over those rows pools over B and L exactly like
    BatchNorm1d over [B, C, L]. Accepts [B, C] or [B, L, C].
    """

    def __init__(self, in_dim: int = 256, inner_dim: int = 4096, out_dim: int = 256, num_layers: int = 2):
        super().__init__()
        hidden = []
        for i in range(num_layers - 1):
            hidden += [nn.Conv1d(in_dim if i == 0 else inner_dim, inner_dim, kernel_size=1),
                       nn.BatchNorm1d(inner_dim), nn.ReLU(inplace=True)]
        self.linear_hidden = nn.Sequential(*hidden)
        self.linear_out = nn.Conv1d(in_dim if num_layers == 1 else inner_dim, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])  # [B*L, C]
        for layer in self.linear_hidden:
            x = pointwise(layer, x) if isinstance(layer, nn.Conv1d) else layer(x)
        return pointwise(self.linear_out, x).view(*lead, -1)  # [B, (L,) E]


def pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d applied to rows [N, C_in] -> [N, C_out]."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class MultiLabelContrastive(nn.Module):
    """Image-text contrastive model; with ``multi_label > 0`` also the multi-label (noun prompt) loss."""

    def __init__(self, img_encoder: nn.Module, text_encoder: nn.Module, output_dim: int = 256,
                 contrast_temperature: float = 0.07, proj_num_layers: int = 2, multi_label: int = 0,
                 share_temperature: bool = False, multi_label_loss_weight: float = 1.0,
                 group_loss_weight: float = 0.0):
        """``group_loss_weight`` (ours; 0 = the reference): weight of the group loss, the multi-label loss with each
        image's similarity to a prompt taken from its best-matching final group (see :meth:`multi_label_loss`)."""
        super().__init__()
        self.img_encoder = img_encoder
        self.text_encoder = text_encoder
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / contrast_temperature)))
        self.multi_label = multi_label
        self.share_temperature = share_temperature
        self.multi_label_loss_weight = multi_label_loss_weight
        self.group_loss_weight = group_loss_weight
        if group_loss_weight > 0 and not self.with_multi_label:
            raise ValueError("the group loss (group_loss_weight > 0) needs the noun prompts: set multi_label > 0")
        if self.with_multi_label and not share_temperature:
            self.multi_label_logit_scale = nn.Parameter(torch.tensor(math.log(1 / contrast_temperature)))
        if proj_num_layers > 0:
            self.img_projector = ProjectMLP(in_dim=img_encoder.width, num_layers=proj_num_layers, out_dim=output_dim)
            self.text_projector = ProjectMLP(in_dim=text_encoder.width, num_layers=proj_num_layers, out_dim=output_dim)
        else:
            self.img_projector, self.text_projector = nn.Identity(), nn.Identity()

    @property
    def with_multi_label(self) -> bool:
        return self.multi_label > 0

    def compile_towers(self, **options) -> None:
        """``torch.compile`` the image encoder, the text transformer's blocks and both projectors, in place
        (``nn.Module.compile``: parameter names and checkpoints are unchanged). ``options`` go to torch.compile.

        The towers are compiled apart so that each is one graph: the losses' cross-process gathers and the text
        tower's choice of how many positions to run (a host-side value) stay outside.
        """
        for module in (self.img_encoder, self.text_encoder.transformer, self.img_projector, self.text_projector):
            module.compile(**options)

    @staticmethod
    def clamped_scale(logit_scale: torch.Tensor) -> torch.Tensor:
        """exp(logit_scale), capped at 100 as in every use by the reference."""
        return torch.clamp(logit_scale.exp(), max=100)

    # ---- encoders -------------------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor, *, return_feat: bool = False, as_dict: bool = False):
        """'image_x' [B, E] (projected mean token); with ``return_feat`` also 'image_feat' [B, 8, E]."""
        img_outs = self.img_encoder(image, return_feat=return_feat, as_dict=True)
        outs = {"image_x": self.img_projector(img_outs["x"])}
        if return_feat:
            outs["image_feat"] = self.img_projector(img_outs["feat"])
        return pack_outputs(outs, as_dict)

    def encode_text(self, text: torch.Tensor, *, lengths: tuple[int, int] | None = None, as_dict: bool = False):
        """[B, 77] -> 'text_x' [B, E]; [B, 1+M, 77] -> 'text_x' (slot 0) and 'text_multi_label_x' [B, M, E].

        ``lengths``: the positions to run for captions and prompts (``models.transformer.text_lengths`` of the
        tokens' host copy); None reads them from the tokens.
        """
        assert text.ndim in (2, 3), f"text must be [B, 77] or [B, 1+M, 77], got {tuple(text.shape)}"
        caption_length, prompt_length = lengths or (None, None)
        if text.ndim == 2:
            return pack_outputs({"text_x": self.text_projector(self.text_encoder(text, length=caption_length))},
                                as_dict)
        B, num_text = text.shape[:2]
        if num_text > 1:
            # Captions and noun prompts are encoded apart, each group only up to its own longest text (the prompts
            # are much shorter); the features go to the projector together, in (sample, slot) order, so its
            # BatchNorm sees the same batch as with one pass.
            captions = self.text_encoder(text[:, 0], length=caption_length)  # [B, D]
            prompts = self.text_encoder(text[:, 1:].flatten(0, 1), length=prompt_length)  # [B*M, D]
            features = torch.cat([captions[:, None], prompts.view(B, num_text - 1, -1)], dim=1).flatten(0, 1)
        else:
            features = self.text_encoder(text.flatten(0, 1), length=caption_length)  # [B, D]
        text_x = self.text_projector(features).view(B, num_text, -1)  # [B, 1+M, E]
        return pack_outputs({"text_x": text_x[:, 0], "text_multi_label_x": text_x[:, 1:]}, as_dict)

    # ---- losses ---------------------------------------------------------------------------------
    def loss(self, image_x: torch.Tensor, text_x: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the global batch: local rows against all ranks' columns."""
        batch_size = image_x.shape[0]
        labels = torch.arange(batch_size, device=image_x.device) + batch_size * get_rank()
        image_x, text_x = F.normalize(image_x, dim=-1), F.normalize(text_x, dim=-1)
        scale = self.clamped_scale(self.logit_scale)
        logits_per_img = image_x @ all_gather_with_grad(text_x).t() * scale  # [B, W*B]
        logits_per_text = text_x @ all_gather_with_grad(image_x).t() * scale
        return 0.5 * (F.cross_entropy(logits_per_img, labels) + F.cross_entropy(logits_per_text, labels))

    def multi_label_loss(self, image_feat: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
        """Soft-target contrastive loss between each image's G vectors [B, G, E] and its M prompt texts [B, M, E].

        An image's similarity to a text is the highest over its G vectors: the reference passes the image vector
        alone (G = 1); the group loss passes the final groups. An image row puts 1/M on each of its own M prompts;
        a prompt row puts 1 on its own image. Columns are gathered from all ranks, ordered (rank, sample, slot).
        """
        B, G, _ = image_feat.shape
        M = text_feat.shape[1]
        rank, world = get_rank(), get_world_size()
        image_x = F.normalize(image_feat, dim=-1).flatten(0, 1)  # [B*G, E]
        text_x = F.normalize(text_feat, dim=-1).flatten(0, 1)  # [B*M, E]
        logit_scale = self.logit_scale if self.share_temperature else self.multi_label_logit_scale
        scale = self.clamped_scale(logit_scale)
        logits_per_img = image_x @ all_gather_with_grad(text_x).t() * scale  # [B*G, W*B*M]
        logits_per_text = text_x @ all_gather_with_grad(image_x).t() * scale  # [B*M, W*B*G]
        if G > 1:  # the best-matching group of each image
            logits_per_img = logits_per_img.view(B, G, -1).amax(dim=1)  # [B, W*B*M]
            logits_per_text = logits_per_text.view(B * M, -1, G).amax(dim=2)  # [B*M, W*B]

        eye = torch.eye(B, dtype=image_x.dtype, device=image_x.device)
        target_img = image_x.new_zeros(B, world * B * M)
        target_img[:, rank * B * M:(rank + 1) * B * M] = eye.repeat_interleave(M, dim=1) / M
        target_text = image_x.new_zeros(B * M, world * B)
        target_text[:, rank * B:(rank + 1) * B] = eye.repeat_interleave(M, dim=0)
        # probability targets: the mean over rows of sum(-target * log_softmax(logits))
        return 0.5 * (F.cross_entropy(logits_per_img, target_img) + F.cross_entropy(logits_per_text, target_text))

    def encode_for_loss(self, image: torch.Tensor, text: torch.Tensor,
                        text_lengths: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """The features the losses take: 'image_x' [B, E], 'text_x' [B, E] and, for text [B, 1+M, 77],
        'text_multi_label_x' [B, M, E] (``text_lengths``: see :meth:`encode_text`); with the group loss also
        'image_feat' [B, G, E] (the projected final groups)."""
        image = self.encode_image(image, return_feat=self.group_loss_weight > 0, as_dict=True)
        return {**image, **self.encode_text(text, lengths=text_lengths, as_dict=True)}

    def losses_from_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss dict from :meth:`encode_for_loss`'s features: 'loss', plus 'multi_label_loss' when multi_label > 0
        and 'group_loss' when group_loss_weight > 0."""
        image_x = features["image_x"]
        with torch.autocast(image_x.device.type, enabled=False):  # the small logit matrices in float32 under autocast
            image_x = image_x.float()
            losses = {"loss": self.loss(image_x, features["text_x"].float())}
            if self.with_multi_label:
                losses["multi_label_loss"] = self.multi_label_loss(
                    image_x.unsqueeze(1), features["text_multi_label_x"].float()) * self.multi_label_loss_weight
            if self.group_loss_weight > 0:
                losses["group_loss"] = self.multi_label_loss(
                    features["image_feat"].float(), features["text_multi_label_x"].float()) * self.group_loss_weight
        return losses

    def forward_train(self, image: torch.Tensor, text: torch.Tensor,
                      text_lengths: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Loss dict: 'loss', plus 'multi_label_loss' when text is [B, 1+M, 77] and multi_label > 0.

        With ``text_lengths`` (see :meth:`encode_text`) the forward reads nothing back from the device, and traces
        as one graph (``torch.compile(..., fullgraph=True)``). The two halves, :meth:`encode_for_loss` and
        :meth:`losses_from_features`, are what gradient accumulation (``training.step.accumulated_step``) runs apart.
        """
        return self.losses_from_features(self.encode_for_loss(image, text, text_lengths))

    # ---- zero-shot ------------------------------------------------------------------------------
    @torch.no_grad()
    def build_text_embedding(self, text: torch.Tensor) -> torch.Tensor:
        """Class prompts [N, T, 77] -> class embeddings [N, E]: mean over templates, THEN L2-normalise."""
        N, T = text.shape[:2]
        text_x = self.encode_text(text.flatten(0, 1).to(self.logit_scale.device))  # [N*T, E]
        return F.normalize(text_x.view(N, T, -1).mean(dim=1), dim=-1)

    def zero_shot_pred(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B, N] between images and class embeddings [N, E] (no logit scale)."""
        return F.normalize(self.encode_image(image), dim=-1) @ text.t()

    def forward_test(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.zero_shot_pred(image, text)

    def forward(self, image: torch.Tensor, text: torch.Tensor, text_lengths: tuple[int, int] | None = None):
        """Losses in training mode, zero-shot logits in eval mode (``text`` = class embeddings)."""
        if self.training:
            return self.forward_train(image, text, text_lengths=text_lengths)
        return self.forward_test(image, text)
