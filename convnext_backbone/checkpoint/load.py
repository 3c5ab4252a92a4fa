"""Loading weights into a model strictly: the one "does it fit" check and its one-line report.

- :func:`load_pretrained` loads a ConvNeXt checkpoint of any layout into the backbone
  (``init_cfg=dict(type='Pretrained', ...)``);
- :func:`load_state_strictly` loads a whole detector/segmentor state dict (``tools/test.py``,
  ``tools/infer.py``, ``tools/convert_mmdet2_checkpoint.py``);

both through :func:`check_fit`: every weight of the model must be in the file with the same
shape, and the file must hold nothing the model lacks, or a :class:`CheckpointError` lists the
first differences in one line.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import MMLogger, print_log

from .io import CheckpointError, read_checkpoint
from .layouts import (
    OUTPUT_NORM,
    Converted,
    convert_state_dict,
    describe_arch,
    select_prefix,
    unwrap_state_dict,
)

SHOWN = 3  # keys named per kind of difference


@dataclass
class Fit:
    """How a state dict differs from a model's.

    Attributes:
        missing (list[str]): Model keys absent from the state dict.
        unexpected (list[str]): State dict keys the model lacks.
        mismatched (list[str]): ``'key: checkpoint (shape) vs model (shape)'`` entries.
    """
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        """True when the state dict fits exactly."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """The differences in one line, the first :data:`SHOWN` keys of each kind."""
        parts = []
        if self.mismatched:
            parts.append(f'{len(self.mismatched)} shape mismatches, first '
                         + '; '.join(self.mismatched[:SHOWN]))
        if self.missing:
            parts.append(f'{len(self.missing)} model weights missing from the checkpoint, first '
                         f'{self.missing[:SHOWN]}')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} checkpoint weights the model does not have, '
                         f'first {self.unexpected[:SHOWN]}')
        return '; '.join(parts)


def check_fit(own: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor],
              optional: Optional[Callable[[str], bool]] = None) -> Tuple[Fit, List[str],
                                                                         List[str]]:
    """Compare a state dict with a model's, key for key and shape for shape.

    Args:
        own (Mapping): The model's state dict.
        theirs (Mapping): The checkpoint's, under the model's names.
        optional (callable, optional): Keys for which it is fine to be missing from or surplus
            in the checkpoint. Defaults to None (none).

    Returns:
        tuple: (:class:`Fit` of the required keys, optional model keys absent from the
        checkpoint, optional checkpoint keys the model lacks).
    """
    optional = optional or (lambda key: False)
    fit = Fit(mismatched=[f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                          for k, v in theirs.items() if k in own and v.shape != own[k].shape])
    absent = [k for k in own if k not in theirs]
    surplus = [k for k in theirs if k not in own]
    fit.missing = [k for k in absent if not optional(k)]
    fit.unexpected = [k for k in surplus if not optional(k)]
    return fit, [k for k in absent if optional(k)], [k for k in surplus if optional(k)]


def load_state_strictly(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                        source: str, target: str) -> None:
    """Load a whole-model state dict that must fit ``model`` exactly.

    Args:
        model (nn.Module): The model.
        state (Mapping): Its weights (e.g. ``unwrap_state_dict(checkpoint)``).
        source (str): What the weights are, for the message (usually the file).
        target (str): What the model is, for the message (usually the config).

    Raises:
        CheckpointError: One line naming both and the first differences.
    """
    fit, _, _ = check_fit(model.state_dict(), state)
    if not fit:
        raise CheckpointError(f'checkpoint {source} does not fit the model of {target}: '
                              f'{fit.describe()}')
    model.load_state_dict(state, strict=True)


def load_pretrained(model: torch.nn.Module, path: str, prefix: Optional[str] = None,
                    logger: Optional[MMLogger] = None) -> Converted:
    """Load a checkpoint of any known layout into ``model`` (a ``ConvNeXt``), strictly.

    Every backbone weight must be found with the right shape; only the per-stage output norms
    ``norm0..3`` may be absent (classification checkpoints have none) and are then logged.

    Args:
        model (nn.Module): The backbone.
        path (str): File path or URL.
        prefix (str, optional): Keep only keys under this prefix (stripped) before detection,
            e.g. ``'backbone.'`` for a detector checkpoint. Defaults to None.
        logger (MMLogger, optional): Where to log; defaults to mmengine's current logger.

    Returns:
        Converted: What was loaded.

    Raises:
        CheckpointError: One line naming the file, the layout and the first mismatches.
    """
    raw = read_checkpoint(path)
    try:
        if prefix:
            raw = select_prefix(unwrap_state_dict(raw), prefix)
        converted = convert_state_dict(raw)
    except CheckpointError as err:
        raise CheckpointError(f'{path}: {err}') from None
    own = model.state_dict()
    fit, absent_norms, unused_norms = check_fit(own, converted.state_dict,
                                                optional=OUTPUT_NORM.match)
    if not fit:
        arch = describe_arch(own)
        held = describe_arch(converted.state_dict)
        raise CheckpointError(
            f'checkpoint {path} (layout: {converted.layout}) does not fit this ConvNeXt ({arch})'
            + (f'; the checkpoint holds {held}' if held else '') + f': {fit.describe()}')
    merged = dict(own)
    merged.update((k, v) for k, v in converted.state_dict.items() if k in own)
    model.load_state_dict(merged, strict=True)

    def log(msg: str) -> None:
        print_log(msg, logger=logger or 'current')

    log(f'Loaded {len(converted.state_dict) - len(unused_norms)} ConvNeXt weights from {path} '
        f'(layout: {converted.layout}).')
    if converted.note:
        log(f'{converted.layout}: {converted.note}.')
    if absent_norms:
        names = sorted({k.split('.')[0] for k in absent_norms})
        log(f'Not in the checkpoint, kept at their initial values (weight 1, bias 0): '
            f'{", ".join(names)}.'
            + ('' if converted.note else ' This is expected for classification checkpoints.'))
    skipped = converted.unused + unused_norms
    if skipped:
        heads = sorted({k.split('.')[0] for k in skipped})
        log(f'Ignored {len(skipped)} checkpoint keys outside this backbone: '
            f'{", ".join(h + ".*" for h in heads)}.')
    return converted
