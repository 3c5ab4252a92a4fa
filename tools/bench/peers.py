"""The other ConvNeXt implementations timed beside ours (``--compare``, ``--e2e``): one builder
function per peer in :data:`PEERS`, each given our weights through the layout converter of
``convnext_backbone.checkpoint``.

timm and mmpretrain are optional, not dependencies: a peer that cannot be built is skipped with
a ``#`` line saying why.
"""
import sys
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from convnext_backbone import convert_state_dict

TIMM_NAMES = {'tiny': 'convnext_tiny', 'small': 'convnext_small', 'base': 'convnext_base',
              'large': 'convnext_large', 'xlarge': 'convnext_xlarge'}


class TimmFeatures(nn.Module):
    """timm's ConvNeXt stem and stages with a timm ``LayerNorm2d`` on each stage output.

    Args:
        arch (str): One of ``TIMM_NAMES``.
    """

    def __init__(self, arch: str) -> None:
        super().__init__()
        import timm
        from timm.layers import LayerNorm2d
        model = timm.create_model(TIMM_NAMES[arch], pretrained=False, num_classes=0)
        self.stem, self.stages = model.stem, model.stages
        for i, stage in enumerate(self.stages):
            self.add_module(f'norm{i}', LayerNorm2d(stage.blocks[0].conv_dw.in_channels, eps=1e-6))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> the four normed stage maps, NCHW."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(getattr(self, f'norm{i}')(x))
        return tuple(outs)


def build_timm(arch: str) -> Optional[nn.Module]:
    """timm's ConvNeXt features, or None when timm is not installed or lacks the arch.

    Args:
        arch (str): One of ``TIMM_NAMES``.

    Returns:
        nn.Module | None: The features (random weights), or None.
    """
    try:
        return TimmFeatures(arch)
    except (ImportError, KeyError, RuntimeError) as err:
        print(f'# timm skipped: {type(err).__name__}: {err}')
        return None


def build_mmpretrain(arch: str, with_cp: bool = False) -> Optional[nn.Module]:
    """mmpretrain's ConvNeXt with norm0..3, or None when mmpretrain is not installed.

    Args:
        arch (str): An mmpretrain ConvNeXt arch.
        with_cp (bool): Gradient checkpointing. Defaults to False.

    Returns:
        nn.Module | None: The backbone (random weights), or None.
    """
    try:
        from mmpretrain.models.backbones import ConvNeXt as MMPretrainConvNeXt
        return MMPretrainConvNeXt(arch=arch, out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                                  layer_scale_init_value=1.0, with_cp=with_cp)
    except (ImportError, KeyError, AssertionError, RuntimeError) as err:
        print(f'# mmpretrain skipped: {type(err).__name__}: {err}')
        return None


#: The peer backbones of ``--compare``, in table order: name -> builder (arch -> module or None).
PEERS: Dict[str, Callable[[str], Optional[nn.Module]]] = {'timm': build_timm,
                                                          'mmpretrain': build_mmpretrain}


def key_map(other: nn.Module) -> Dict[str, str]:
    """Map each state-dict key of another ConvNeXt implementation to our name for it, using the
    package's layout converter (it keeps the order of the keys it renames).

    Args:
        other (nn.Module): The other implementation's backbone.

    Returns:
        dict[str, str]: Its key -> our key.

    Raises:
        RuntimeError: The converter leaves keys unmapped.
    """
    keys = list(other.state_dict())
    converted = convert_state_dict(other.state_dict())
    if converted.unused or len(converted.state_dict) != len(keys):
        raise RuntimeError(f'{type(other).__name__}: keys the converter does not map: '
                           f'{converted.unused[:5]}')
    return dict(zip(keys, converted.state_dict))


def load_our_weights(other: nn.Module, ours: nn.Module) -> Dict[str, str]:
    """Load ``ours``' weights into ``other`` (strictly).

    Args:
        other (nn.Module): The other implementation's backbone.
        ours (nn.Module): Our backbone.

    Returns:
        dict[str, str]: The key map (:func:`key_map`).
    """
    mapping = key_map(other)
    src, dst = ours.state_dict(), other.state_dict()
    other.load_state_dict({k: src[mapping[k]].reshape(dst[k].shape) for k in dst}, strict=True)
    return mapping


def peer_backbones(arch: str, ours: nn.Module,
                   train: bool) -> Dict[str, Tuple[nn.Module, Dict[str, str]]]:
    """Every peer of :data:`PEERS` that can be built, with ``ours``' weights.

    Args:
        arch (str): The arch.
        ours (nn.Module): Our backbone, whose weights the peers get.
        train (bool): Training mode (else eval mode).

    Returns:
        dict: name -> (backbone, its key map to ours), in :data:`PEERS` order.
    """
    peers = {}
    for name, build in PEERS.items():
        other = build(arch)
        if other is not None:
            mapping = load_our_weights(other, ours)
            other.train(train)  # (mmpretrain's train() returns None)
            peers[name] = other, mapping
    return peers


def import_mmpretrain() -> bool:
    """Make ``mmpretrain.models`` importable in this environment, for the peer configs.

    mmpretrain 1.2.0 is pure Python: installed with ``pip install --no-deps --target
    .venv-bench/mmpretrain-only mmpretrain==1.2.0 ...`` and run with
    ``PYTHONPATH=.venv-bench/mmpretrain-only`` (docs/performance.md), it imports here. Its
    ``models`` package imports ``torchvision.ops.boxes`` in two modules
    (``mmpretrain/models/utils/box_utils.py``, ``mmpretrain/evaluation/metrics/
    visual_grounding_eval.py``) that the ConvNeXt backbone never calls; where torchvision cannot
    load, a placeholder module stands in whose every attribute raises, so a real use would fail
    loudly. Its multimodal models (``mmpretrain/models/multimodal/__init__.py``: imported when
    ``WITH_MULTIMODAL``) are switched off: they do not import with transformers 5.

    Returns:
        bool: Whether ``mmpretrain.models`` imported (else a ``#`` line says why).
    """
    import types
    try:
        import torchvision  # noqa: F401
    except ImportError:
        class Placeholder(types.ModuleType):
            def __getattr__(self, name: str) -> Any:
                if name.startswith('__'):
                    raise AttributeError(name)
                raise ImportError(f'{self.__name__}.{name}: torchvision is not installed here')
        names = ('torchvision', 'torchvision.ops', 'torchvision.ops.boxes')
        modules = {name: Placeholder(name) for name in names}
        modules['torchvision'].ops = modules['torchvision.ops']
        modules['torchvision.ops'].boxes = modules['torchvision.ops.boxes']
        sys.modules.update(modules)
    try:
        # Its multimodal models need transformers < 5 and are not used here.
        from mmpretrain.utils import dependency
        dependency.WITH_MULTIMODAL = False
        import mmpretrain.models  # noqa: F401
        return True
    except ImportError as err:
        print(f'# mmpretrain skipped: {type(err).__name__}: {err} (docs/performance.md: '
              'PYTHONPATH=.venv-bench/mmpretrain-only)')
        return False
