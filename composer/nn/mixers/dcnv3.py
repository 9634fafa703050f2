"""The torch modules of composer.mixers.dcnv3 (configs and costs live there)."""

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ...facts import Init


class _ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map; the inner ``norm`` keeps STM-Evaluation's keys."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def sampling_grid(kernel_size: int) -> torch.Tensor:
    """The (P, 2) base offsets (dx, dy) of a k x k grid, x the outer loop: (-1,-1), (-1,0), (-1,1), (0,-1), ..."""
    r = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
    dx, dy = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


class DCNv3(nn.Module):
    """Deformable convolution v3 on a (B, H, W, C) map (see the module docstring)."""

    def __init__(self, dim: int, groups: int, kernel_size: int = 3, dw_kernel_size: int = 3,
                 offset_scale: float = 1.0, norm_eps: float = 1e-5, init: Init = "internimage"):
        super().__init__()
        self.groups, self.kernel_size, self.offset_scale, self.init = groups, kernel_size, offset_scale, init
        self.points = kernel_size * kernel_size
        self.pad = kernel_size // 2
        self.dw_conv = nn.Sequential(
            nn.Conv2d(dim, dim, dw_kernel_size, padding=dw_kernel_size // 2, groups=dim),
            _ChannelsFirstLayerNorm(dim, norm_eps),
            nn.GELU())
        self.sampling_offsets = nn.Linear(dim, groups * self.points * 2)
        self.attention_weights = nn.Linear(dim, groups * self.points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        # base offsets, (1, 1, 1, P, 2): a buffer so that the forward creates no tensors of its own
        self.register_buffer("grid", sampling_grid(kernel_size).view(1, 1, 1, -1, 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.value_proj.weight.device.type == "meta":
            return
        if self.init == "stm":  # what a trunc-normal pass over the whole model leaves
            for layer in (self.dw_conv[0], self.sampling_offsets, self.attention_weights, self.value_proj,
                          self.output_proj):
                trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
            return
        for layer in (self.sampling_offsets, self.attention_weights):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def sampling_locations(self, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``grid_sample`` coordinates in [-1, 1] of the padded map, (B, N, G, P, 2), from offsets (B, N, G, P, 2)."""
        padded = torch.tensor([width + 2 * self.pad, height + 2 * self.pad], dtype=offsets.dtype,
                              device=offsets.device)
        ys = torch.arange(height, dtype=offsets.dtype, device=offsets.device) + self.pad + 0.5
        xs = torch.arange(width, dtype=offsets.dtype, device=offsets.device) + self.pad + 0.5
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, -1, 1, 1, 2)  # (x, y)
        pixels = centres + (self.grid + offsets) * self.offset_scale
        return 2 * pixels / padded - 1

    def forward(self, x):
        b, h, w, c = x.shape
        g, p, n = self.groups, self.points, h * w
        features = self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        offsets = self.sampling_offsets(features).reshape(b, n, g, p, 2)
        mask = self.attention_weights(features).reshape(b, n, g, p).softmax(-1)
        value = F.pad(self.value_proj(x), (0, 0, self.pad, self.pad, self.pad, self.pad))  # zero pad H and W
        value = value.reshape(b, h + 2 * self.pad, w + 2 * self.pad, g, c // g).permute(0, 3, 4, 1, 2)
        value = value.reshape(b * g, c // g, h + 2 * self.pad, w + 2 * self.pad)
        grid = self.sampling_locations(offsets, h, w).transpose(1, 2).reshape(b * g, n, p, 2)
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mask = mask.transpose(1, 2).reshape(b * g, 1, n, p)
        out = (sampled * mask).sum(-1)  # (B·G, C/G, N): element-wise, as the reference count has it
        out = out.reshape(b, c, h, w).permute(0, 2, 3, 1)
        return self.output_proj(out)
