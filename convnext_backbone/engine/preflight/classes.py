"""The classes of a dataset as the checks see them: names that mean "no object", and the model's
heads whose ``num_classes`` must hold them."""
from typing import Any, Iterator, Optional, Sequence, Tuple

import torch

#: Category names that stand for "no object" (labelme's COCO export writes '_background_', id 0).
BACKGROUND = ('_background_', '__background__', 'background', 'bg')


def is_background_name(name: Any) -> bool:
    """Whether a class or category name is one of :data:`BACKGROUND` (any case, spaces around).

    Args:
        name (Any): The name (turned into a string).

    Returns:
        bool: Whether it stands for "no object".
    """
    return str(name).strip().lower() in BACKGROUND


def heads(model: Optional[torch.nn.Module],
          names: Sequence[str]) -> Iterator[Tuple[str, torch.nn.Module]]:
    """The heads of ``model`` at the dotted ``names`` (lists of heads unrolled).

    Args:
        model (nn.Module, optional): The model (None: no heads).
        names (Sequence[str]): Dotted attribute paths, e.g. 'roi_head.bbox_head'.

    Yields:
        tuple[str, nn.Module]: ``(name, head)`` for each head the model has.
    """
    for name in names:
        obj: Any = model
        for part in name.split('.'):
            obj = getattr(obj, part, None)
        for head in obj if isinstance(obj, (list, tuple, torch.nn.ModuleList)) else [obj]:
            if head is not None:
                yield name, head
