"""Loading weights into a model: the one "does it fit" check and its one-line reports.

- :func:`load_pretrained` loads a ConvNeXt checkpoint of any layout into the backbone
  (``init_cfg=dict(type='Pretrained', ...)``);
- :func:`load_state_strictly` loads a whole detector/segmentor state dict (``tools/test.py``,
  ``tools/infer.py``, ``tools/convert_mmdet2_checkpoint.py``);

both through :func:`check_fit`: every weight of the model must be in the file with the same
shape, and the file must hold nothing the model lacks, or a :class:`CheckpointError` lists the
first differences in one line.

- :func:`load_matching` is ``load_from`` and resume: what fits is loaded, as mmengine does
  (fine-tuning with heads of another class count), and one line says how much, per part of the
  model; a file of which nothing fits, or whose backbone is in another ConvNeXt layout, is refused
  in one line that says what to write instead.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import MMLogger, print_log

from .io import CheckpointError, read_checkpoint
from .layouts import (
    DINOV3,
    OFFICIAL_CLS,
    OFFICIAL_DENSE,
    OUTPUT_NORM,
    Converted,
    convert_state_dict,
    describe_arch,
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
            e.g. ``'backbone.'`` for a detector checkpoint; where no key has it, the whole file
            is read in its own layout, with a log line (see ``layouts``). Defaults to None.
        logger (MMLogger, optional): Where to log; defaults to mmengine's current logger.

    Returns:
        Converted: What was loaded.

    Raises:
        CheckpointError: One line naming the file, the layout and the first mismatches.
    """
    raw = read_checkpoint(path)
    try:
        converted = convert_state_dict(raw, prefix=prefix)
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

    if converted.prefix_note:
        log(f'init_cfg prefix: {converted.prefix_note} ({converted.layout}).')
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


# -- load_from and resume ----------------------------------------------------------------------
#: Layouts whose backbone keys are already ours: a whole-model file in one of them needs no
#: conversion.
_OUR_NAMES = (OFFICIAL_DENSE, OFFICIAL_CLS, DINOV3)


@dataclass
class Match:
    """What of a whole-model state dict fits a model (same key, same shape).

    Attributes:
        fitting (OrderedDict): The tensors to load, under the model's keys.
        parts (list[tuple]): ``(part, loaded, total)`` per top-level module of the model
            (``backbone``, ``neck``, ``rpn_head``, ...), in the model's order.
        mismatched (list[str]): ``'key: checkpoint (shape) vs model (shape)'`` entries.
        surplus (list[str]): Keys of the file the model does not have.
    """
    fitting: 'OrderedDict[str, torch.Tensor]'
    parts: List[Tuple[str, int, int]]
    mismatched: List[str] = field(default_factory=list)
    surplus: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every model tensor is loaded and the file holds nothing else."""
        return all(n == total for _, n, total in self.parts) and not self.surplus

    def part(self, name: str) -> Tuple[int, int]:
        """``(loaded, total)`` of one part, ``(0, 0)`` when the model has no such part."""
        return next(((n, total) for p, n, total in self.parts if p == name), (0, 0))

    def describe(self, source: str) -> str:
        """The one summary line of a load."""
        loaded = sum(n for _, n, _ in self.parts)
        total = sum(t for _, _, t in self.parts)
        text = (f'Loaded {loaded} of the model\'s {total} tensors from {source}: '
                + ', '.join(f'{p} {n}/{t}' for p, n, t in self.parts))
        if loaded < total:
            text += ' (the others keep their initialisation)'
        if self.mismatched:
            text += (f'; {len(self.mismatched)} differ in shape, first '
                     + '; '.join(self.mismatched[:SHOWN]))
        if self.surplus:
            text += (f'; {len(self.surplus)} tensors of the file are not in the model, first '
                     f'{self.surplus[:SHOWN]}')
        return text + '.'


def match_state(own: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> Match:
    """Which tensors of ``theirs`` fit ``own`` (a pure function).

    Args:
        own (Mapping): The model's state dict.
        theirs (Mapping): The file's, under the model's names.

    Returns:
        Match: The fitting tensors and the counts per part.
    """
    fitting: OrderedDict[str, torch.Tensor] = OrderedDict()
    mismatched = []
    counts: Dict[str, List[int]] = {}
    for key, value in own.items():
        count = counts.setdefault(key.split('.')[0], [0, 0])
        count[1] += 1
        other = theirs.get(key)
        if other is None:
            continue
        if tuple(other.shape) != tuple(value.shape):
            mismatched.append(f'{key}: checkpoint {tuple(other.shape)} vs model '
                              f'{tuple(value.shape)}')
            continue
        fitting[key] = other
        count[0] += 1
    surplus = [k for k in theirs if k not in own]
    return Match(fitting, [(p, n, t) for p, (n, t) in counts.items()], mismatched, surplus)


def load_matching(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
                  logger: Optional[logging.Logger] = None) -> Match:
    """Load what fits of a whole-model state dict (``load_from``, resume), with one log line.

    Tensors of the model that the file lacks or holds in another shape keep their
    initialisation, as with mmengine's ``load_checkpoint(strict=False)`` (fine-tuning a COCO
    model on data with other classes). Instead of mmengine's lists of every unexpected and
    missing key, one line counts what was loaded per part of the model (a warning unless
    everything fit).

    Args:
        model (nn.Module): The model (not a wrapper).
        state (Mapping): The file's tensors, under the model's names (e.g.
            ``unwrap_state_dict(checkpoint)``).
        source (str): The file, for the messages.
        logger (Logger, optional): Where to log; defaults to mmengine's current logger.

    Returns:
        Match: What was loaded.

    Raises:
        CheckpointError: No tensor of the file fits the model (naming the file's layout, its
            first keys and the model's, and for a ConvNeXt backbone file the ``init_cfg`` to
            write instead); or the file's backbone is in another ConvNeXt layout (mmpretrain,
            as in mmdet's model zoo), which would load only partly.
    """
    own = model.state_dict()
    match = match_state(own, state)
    if not match.fitting:
        raise CheckpointError(_nothing_fits(source, own, state))
    _refuse_foreign_backbone(model, state, match, source)
    model.load_state_dict(match.fitting, strict=False)
    print_log(match.describe(source), logger=logger or 'current',
              level=logging.INFO if match.complete else logging.WARNING)
    return match


def _layout(state: Mapping[str, torch.Tensor], prefix: Optional[str] = None
            ) -> Optional[Converted]:
    try:
        return convert_state_dict(state, prefix=prefix)
    except CheckpointError:
        return None


def _nothing_fits(source: str, own: Mapping[str, torch.Tensor],
                  theirs: Mapping[str, torch.Tensor]) -> str:
    first_own = list(own)[:SHOWN]
    converted = _layout(theirs)
    whole = any(k.startswith('backbone.') for k in theirs)
    if converted is not None and not whole:
        return (f'load_from {source}: none of its {len(theirs)} tensors fits the model (first '
                f'model keys {first_own}): it holds a ConvNeXt backbone alone (layout: '
                f'{converted.layout}); load it into the backbone with model.backbone.init_cfg='
                f"dict(type='Pretrained', checkpoint='{source}') and load_from=None")
    what = (f'layout: {converted.layout}' if converted is not None
            else 'not a ConvNeXt layout')
    return (f'load_from {source}: none of its {len(theirs)} tensors fits the model ({what}; its '
            f'first keys {list(theirs)[:SHOWN]}; the model\'s first keys {first_own}): is it a '
            'checkpoint of this model?')


def _refuse_foreign_backbone(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                             match: Match, source: str) -> None:
    """A whole-model file whose backbone would load fully only after renaming is refused."""
    backbone = getattr(model, 'backbone', None)
    loaded, total = match.part('backbone')
    if not isinstance(backbone, torch.nn.Module) or loaded == total:
        return
    converted = _layout(state, prefix='backbone.')
    if converted is None or converted.prefix_note or converted.layout in _OUR_NAMES:
        return
    fit, _, _ = check_fit(backbone.state_dict(), converted.state_dict, optional=OUTPUT_NORM.match)
    if fit:
        raise CheckpointError(
            f'load_from {source}: its backbone is in the {converted.layout} layout (as in '
            f'mmdet\'s and mmseg\'s model zoos), so only {loaded} of the backbone\'s {total} '
            'tensors would load: convert the file once with python '
            f'tools/convert_mmdet2_checkpoint.py CONFIG {source} OUT.pth and load_from OUT.pth, '
            "or load the backbone alone with model.backbone.init_cfg=dict(type='Pretrained', "
            f"checkpoint='{source}', prefix='backbone.')")
