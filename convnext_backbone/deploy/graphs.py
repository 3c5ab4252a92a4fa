"""Export graphs of the backbone alone and of mmseg segmentors, and their common input.

Every graph takes ``image``: float32 RGB 0..255, ``(N, 3, H, W)``, and applies the config's data
preprocessor inside (channel order, mean and std), so a deployed model gets the pixels as read.
"""
import copy
from typing import Tuple

import torch
from torch import Tensor, nn

__all__ = ['AdaptivePool2d', 'BackboneGraph', 'BatchNormInference', 'ImageInput', 'SegmentorGraph',
           'exportable_copy']


class ImageInput(nn.Module):
    """RGB 0..255 ``(N, 3, H, W)`` -> what the model's data preprocessor would give it.

    mmengine's ``LoadImageFromFile`` reads BGR; the preprocessor flips the channels when its
    ``bgr_to_rgb`` (or ``rgb_to_bgr``) is set, then subtracts ``mean`` and divides by ``std``.
    So a model whose preprocessor flips sees RGB, and one whose preprocessor does not sees BGR:
    this module flips RGB to BGR for the latter, then normalises.

    Args:
        preprocessor (nn.Module): The model's ``data_preprocessor`` (mmdet's
            ``DetDataPreprocessor``, mmseg's ``SegDataPreprocessor`` or mmengine's
            ``ImgDataPreprocessor``).
    """

    def __init__(self, preprocessor: nn.Module) -> None:
        super().__init__()
        # mmengine's ImgDataPreprocessor keeps the flag private, mmseg's is public
        flips = getattr(preprocessor, 'channel_conversion',
                        getattr(preprocessor, '_channel_conversion', False))
        self.to_bgr = not flips
        normalise = getattr(preprocessor, '_enable_normalize', False)
        self.register_buffer('mean', preprocessor.mean.detach().clone().float().view(1, -1, 1, 1)
                             if normalise else None, persistent=False)
        self.register_buffer('std', preprocessor.std.detach().clone().float().view(1, -1, 1, 1)
                             if normalise else None, persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        x = image.flip(1) if self.to_bgr else image
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


class AdaptivePool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` with its bins computed from the input's (symbolic) size.

    Bin ``i`` of ``n`` over a side of length ``L`` spans ``[floor(i L / n), ceil((i + 1) L /
    n))``, as in PyTorch's kernel. The bins of a side are an (n, L) averaging matrix, so the
    pooling is two matrix products: ``rows @ x @ cols.T``.

    Note:
        torch.onnx translates ``adaptive_avg_pool2d`` through a decomposition whose index
        arithmetic is fixed at the example input's size: a graph exported at one size read out
        of bounds at others (UPerHead's pooling pyramid on a 64x64 input). Averaging matrices
        built in the graph hold for every size. The bounds use non-negative integer arithmetic
        only: ONNX's integer Div truncates, so floor division of a negative number (the
        ``-(-a // b)`` ceiling idiom) would export wrongly.

    Args:
        output_size (int | tuple[int, int]): Output height and width.
    """

    def __init__(self, output_size) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        if any(s is None for s in size):
            raise ValueError(f'AdaptiveAvgPool2d output_size={output_size!r}: None (keep the '
                             'input size) is not supported; give two ints')
        self.output_size = tuple(int(s) for s in size)

    @staticmethod
    def _averaging(bins: int, length, like: Tensor) -> Tensor:
        """(bins, length): row i holds 1 / (bin size) over bin i, 0 elsewhere."""
        index = torch.arange(bins, device=like.device)
        start = torch.div(index * length, bins, rounding_mode='floor')
        end = torch.div((index + 1) * length + bins - 1, bins, rounding_mode='floor')
        position = torch.arange(length, device=like.device)
        inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
        return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]

    def forward(self, x: Tensor) -> Tensor:
        rows = self._averaging(self.output_size[0], x.shape[-2], x)
        cols = self._averaging(self.output_size[1], x.shape[-1], x)
        return torch.matmul(torch.matmul(rows, x), cols.t())


class BatchNormInference(nn.Module):
    """An eval-mode BatchNorm as one multiply-add per channel: ``x * scale + shift`` with
    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``.

    Note:
        torch's ``batch_norm`` checks whether its input is empty, which torch.export cannot
        decide for a batch of data-dependent size (the RoIs of a Cascade box head after NMS).
        The result equals BatchNorm's up to float rounding.

    Args:
        bn (nn.modules.batchnorm._BatchNorm): The layer, with running statistics.
    """

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var.float() + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.float()
            shift = -bn.running_mean.float() * scale
            if bn.bias is not None:
                shift = shift + bn.bias.float()
        self.register_buffer('scale', scale)
        self.register_buffer('shift', shift)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def exportable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every ``nn.AdaptiveAvgPool2d`` replaced by
    :class:`AdaptivePool2d` and every BatchNorm with running statistics by
    :class:`BatchNormInference` (the given model is left as it is)."""
    from torch.nn.modules.batchnorm import _BatchNorm
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(parent, name, AdaptivePool2d(child.output_size))
            elif isinstance(child, _BatchNorm) and child.running_mean is not None:
                setattr(parent, name, BatchNormInference(child))
    return model


class BackboneGraph(nn.Module):
    """The backbone of a detector or segmentor: ``image`` -> one feature map per emitted stage.

    Args:
        model (nn.Module): A built mmdet / mmseg model with ``data_preprocessor`` and a
            ``backbone`` with ``out_indices`` (the outputs are named ``stage{i}``).
    """

    input_names = ('image',)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.image_input = ImageInput(model.data_preprocessor)
        self.backbone = exportable_copy(model.backbone)
        self.output_names = tuple(f'stage{i}' for i in self.backbone.out_indices)

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.backbone(self.image_input(image)))


class SegmentorGraph(nn.Module):
    """An mmseg encoder-decoder's whole-image inference: ``image`` -> ``seg_logits`` (N, K, H,
    W) at the input size, ``label_map`` (N, H, W) int64 (their argmax).

    It is ``EncoderDecoder.encode_decode`` (backbone, neck, decode head, bilinear resize of the
    logits to the input size with the head's ``align_corners``) behind :class:`ImageInput`.
    mmseg's slide mode crops the image into windows, runs ``encode_decode`` on each and
    averages the overlaps: that loop stays outside the graph (the ONNX Runtime segmentor runs
    mmseg's own loop around this graph), as does resizing the logits to the original image size.

    Args:
        segmentor (nn.Module): A built mmseg ``EncoderDecoder`` (or subclass).

    Raises:
        ValueError: Not an encoder-decoder, or a decode head with one output channel (a sigmoid
            threshold, not an argmax, makes its label map).
    """

    input_names = ('image',)
    output_names = ('seg_logits', 'label_map')

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        from mmseg.models.segmentors import EncoderDecoder
        if not isinstance(segmentor, EncoderDecoder):
            raise ValueError(f'cannot export model type {type(segmentor).__name__}: the ONNX '
                             "export supports mmseg's EncoderDecoder and its subclasses")
        if segmentor.out_channels == 1:
            raise ValueError('cannot export a decode head with out_channels=1 (binary, '
                             'thresholded): the ONNX export supports heads with one channel per '
                             'class (argmax)')
        self.image_input = ImageInput(segmentor.data_preprocessor)
        self.segmentor = exportable_copy(segmentor)

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.image_input(image)
        # a torch.Size img_shape makes the decode head resize to it (mmseg's slide-mode branch)
        logits = self.segmentor.encode_decode(x, [dict(img_shape=x.shape[2:])])
        return logits, logits.argmax(dim=1)
