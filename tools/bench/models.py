"""Whole detectors and segmentors for timing: built from a config with random weights, prepared
as the tools prepare them, fed a synthetic batch, timed per part."""
import copy
import os.path as osp
import time
from typing import Any, Callable, Dict, Sequence

import torch
from torch import nn

from convnext_backbone import cli, precision

#: Submodules timed separately (forward of the first two, predict/loss of the heads).
PARTS = ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'rpn_head', 'roi_head')


def build_random(config: str) -> nn.Module:
    """The model of a config (``pkg::path`` or a file) with random weights, eval mode.

    Args:
        config (str): A config file, or ``package::path`` under the package's ``.mim/configs``.

    Returns:
        nn.Module: The model (seed 0).
    """
    if '::' in config:
        package, rel = config.split('::')
        config = osp.join(osp.dirname(__import__(package).__file__), '.mim', 'configs', rel)
    torch.manual_seed(0)
    return cli.build_model(cli.read_config(config))


def prepare_inference(model: nn.Module) -> nn.Module:
    """Our inference preparation of a whole model: mmcv's ``fuse_conv_bn`` (each BatchNorm after
    a conv folded into it).

    Args:
        model (nn.Module): The model, changed in place.

    Returns:
        nn.Module: The model.
    """
    from mmcv.cnn import fuse_conv_bn
    return fuse_conv_bn(model)


def bf16_model(model: nn.Module) -> nn.Module:
    """A copy of a detector / segmentor prepared for reduced-precision autocast as
    ``tools/test.py --bf16`` runs it (:func:`convnext_backbone.precision.prepare_bf16`: mmcv's
    ops and the heads' output layers in float32).

    Args:
        model (nn.Module): The model (left as it is).

    Returns:
        nn.Module: The prepared copy.
    """
    copied = copy.deepcopy(model)
    precision.prepare_bf16(copied)
    return copied


def synthetic_batch(scope: str, shape: Sequence[int], batch: int, train: bool,
                    seed: int = 0) -> dict:
    """A data batch as the data loader gives it: uint8 images, samples with metainfo (and random
    ground truth for training).

    Args:
        scope (str): 'mmseg' for segmentation samples, else detection samples.
        shape (Sequence[int]): Image (H, W).
        batch (int): Images.
        train (bool): Add random ground truth (8 boxes with masks and labels, or a label map).
        seed (int): The seed. Defaults to 0.

    Returns:
        dict: ``inputs`` and ``data_samples``.
    """
    from mmengine.structures import InstanceData, PixelData
    gen = torch.Generator().manual_seed(seed)
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.), pad_shape=(h, w),
                batch_input_shape=(h, w))
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        if scope == 'mmseg':
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            if train:
                labels = torch.randint(0, 150, (1, h, w), generator=gen)
                sample.gt_sem_seg = PixelData(data=labels)
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            sample = DetDataSample(metainfo=meta)
            if train:
                xy = torch.rand(8, 2, generator=gen) * torch.tensor([w * .6, h * .6])
                wh = torch.rand(8, 2, generator=gen) * torch.tensor([w * .3, h * .3]) + 16
                boxes = torch.cat([xy, xy + wh], 1)
                masks = torch.zeros(8, h, w, dtype=torch.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                    masks[i, y0:y1, x0:x1] = 1
                sample.gt_instances = InstanceData(
                    bboxes=boxes, labels=torch.randint(0, 80, (8,), generator=gen),
                    masks=BitmapMasks(masks.numpy(), h, w))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


class PartTimes:
    """Wall time spent in the model's main parts (``PARTS``) during each run.

    Args:
        model (nn.Module): A detector or segmentor.
    """

    def __init__(self, model: nn.Module) -> None:
        self.last: Dict[str, float] = {}
        for name in PARTS:
            part = getattr(model, name, None)
            if isinstance(part, nn.Module):
                for method in ('forward',) if name in ('backbone', 'neck') else ('predict', 'loss'):
                    setattr(part, method, self._timed(name, getattr(part, method)))

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.last[name] = self.last.get(name, 0.) + time.perf_counter() - start
        return timed
