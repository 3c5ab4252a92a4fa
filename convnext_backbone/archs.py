"""ConvNeXt sizes, as data: depths and widths of the four stages, whether blocks use GRN (V2),
the LayerNorms' eps.

The checkpoint module names the arch a file holds from this table, and the model builds from it;
neither imports the other for it.
"""
from typing import Dict, Optional, Sequence

#: eps of every LayerNorm of the official release (``norm_cfg`` may set another).
LN_EPS = 1e-6

ARCH_SETTINGS: Dict[str, dict] = {
    'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    'small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    'base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    'large': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    'xlarge': dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
    'v2-atto': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), use_grn=True),
    'v2-femto': dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), use_grn=True),
    'v2-pico': dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), use_grn=True),
    'v2-nano': dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), use_grn=True),
    'v2-tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), use_grn=True),
    'v2-base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), use_grn=True),
    'v2-large': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), use_grn=True),
    'v2-huge': dict(depths=(3, 3, 27, 3), dims=(352, 704, 1408, 2816), use_grn=True),
}


def arch_name(depths: Sequence[int], dims: Sequence[int], use_grn: bool) -> Optional[str]:
    """The name of a released arch with these sizes, or None.

    Args:
        depths (Sequence[int]): Blocks per stage.
        dims (Sequence[int]): Channels per stage.
        use_grn (bool): Whether the blocks have GRN (V2).

    Returns:
        str | None: e.g. 'tiny' or 'v2-atto'.
    """
    for name, setting in ARCH_SETTINGS.items():
        if (tuple(setting['depths']) == tuple(depths) and tuple(setting['dims']) == tuple(dims)
                and setting.get('use_grn', False) == use_grn):
            return name
    return None


def resolve_arch(arch) -> dict:
    """Validate an ``arch`` argument and return its setting.

    Args:
        arch (str | dict): A key of :data:`ARCH_SETTINGS` or ``dict(depths=(4 ints), dims=(4
            ints), use_grn=False)``.

    Returns:
        dict: ``depths``, ``dims`` and optionally ``use_grn``.

    Raises:
        ValueError: An unknown name or a malformed dict, naming what is allowed.
        TypeError: Neither a str nor a dict.
    """
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'unknown ConvNeXt arch {arch!r}; choose one of '
                             f'{", ".join(ARCH_SETTINGS)} or dict(depths=..., dims=...)')
        return ARCH_SETTINGS[arch]
    if isinstance(arch, dict):
        unknown = set(arch) - {'depths', 'dims', 'use_grn'}
        if unknown or not {'depths', 'dims'} <= set(arch):
            raise ValueError(f'arch dict needs keys depths and dims (optional use_grn), got '
                             f'{sorted(arch)}')
        for key in ('depths', 'dims'):
            value = arch[key]
            if len(value) != 4 or not all(isinstance(v, int) and v > 0 for v in value):
                raise ValueError(f'arch {key}={value!r} must be 4 positive ints')
        return arch
    raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}')
