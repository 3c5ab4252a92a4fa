"""An independent, plain ConvNeXt written from the paper for the tests.

NCHW everywhere, channels-first LayerNorm written out by hand, official parameter names. The
package's backbone must match it to float rounding after loading the same weights in any
checkpoint layout.
"""
import torch
from torch import nn


class RefLayerNorm(nn.Module):
    """LayerNorm over the channel dim of NCHW input, or the last dim when ``channels_last``."""

    def __init__(self, dim, channels_last=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.channels_last = channels_last

    def forward(self, x):
        dim = -1 if self.channels_last else 1
        mean = x.mean(dim, keepdim=True)
        var = (x - mean).pow(2).mean(dim, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-6)
        shape = (-1,) if self.channels_last else (-1, 1, 1)
        return self.weight.view(shape) * x + self.bias.view(shape)


class RefGRN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):  # NHWC
        gx = torch.sqrt((x * x).sum(dim=(1, 2), keepdim=True))
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class RefBlock(nn.Module):
    def __init__(self, dim, v2, act=None):
        super().__init__()
        self.act_fn = act or nn.functional.gelu
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = RefLayerNorm(dim, channels_last=True)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = RefGRN(4 * dim) if v2 else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = None if v2 else nn.Parameter(torch.ones(dim))

    def forward(self, x):  # NCHW
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.act_fn(self.pwconv1(self.norm(y)))
        if self.grn is not None:
            y = self.grn(y)
        y = self.pwconv2(y)
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class RefConvNeXt(nn.Module):
    """Official-style ConvNeXt for dense prediction, returning the four normed stage maps."""

    def __init__(self, depths, dims, v2=False, in_chans=3, act=None):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, dims[0], 4, stride=4), RefLayerNorm(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                RefLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[RefBlock(dims[i], v2, act) for _ in range(depths[i])])
            for i in range(4))
        for i in range(4):
            self.add_module(f'norm{i}', RefLayerNorm(dims[i]))

    def stage_maps(self, x):
        """The four stage outputs before their norms."""
        maps = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            maps.append(x)
        return maps

    def forward(self, x):
        return [getattr(self, f'norm{i}')(m) for i, m in enumerate(self.stage_maps(x))]


def dinov3_patch_tokens(model, final_norm, x):
    """DINOv3's normalised patch tokens (``x_norm_patchtokens`` of ``forward_features`` in
    dinov3/models/convnext.py, no patch_size resizing): the last stage map as (N, H*W, C) tokens,
    its spatial mean put in front as a class token, one LayerNorm (eps 1e-6) over every token,
    the class token dropped.

    Args:
        model (RefConvNeXt): Supplies the stages.
        final_norm (tuple): DINOv3's final norm (weight, bias).
        x (Tensor): Images (N, 3, H, W).
    """
    last = model.stage_maps(x)[-1]
    tokens = last.flatten(2).transpose(1, 2)
    tokens = torch.cat([last.mean((2, 3))[:, None], tokens], dim=1)
    weight, bias = final_norm
    return nn.functional.layer_norm(tokens, weight.shape, weight, bias, 1e-6)[:, 1:]


def randomise_(model, seed=0):
    """Fill every parameter with random values: no ones or zeros left to hide a bad mapping."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if '.grn.' in name else (0.02 if p.dim() > 1 else 0.2)
            centre = 1.0 if name.endswith('weight') and p.dim() == 1 else 0.0
            p.copy_(centre + scale * torch.randn(p.shape, generator=gen))
    return model
