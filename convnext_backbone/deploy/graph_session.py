"""The runtime-neutral session of one exported file: run inputs -> outputs by name.

:class:`GraphSession` is what the exported models of mmengine's test loop
(:mod:`.exported_detector`, :mod:`.exported_segmentor`) and the tests call; each runtime
implements :meth:`GraphSession.run` (:mod:`.ort_session`: ONNX Runtime, :mod:`.ov_session`:
OpenVINO). The file's own description (our metadata, its outputs and their shapes) is read here
from the ONNX file, the same for every runtime, as is the graph kind each config scope needs.
"""
import abc
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .export import META

__all__ = ['PRECISIONS', 'SCOPES', 'DeployError', 'FileHeader', 'GraphSession',
           'check_known_precision', 'file_kind', 'read_header', 'require_kind']

#: The config scope each graph kind is evaluated in.
SCOPES = {'detector': 'mmdet', 'segmentor': 'mmseg'}
#: The precisions a session may compute in (OpenVINO's ``INFERENCE_PRECISION_HINT`` names).
PRECISIONS = ('f32', 'bf16')


class DeployError(UserError, ValueError):
    """A runtime or precision that cannot run here; the message says what to do."""


def check_known_precision(precision: str) -> None:
    """Refuse, in one line, a precision that is none of :data:`PRECISIONS`.

    Raises:
        DeployError: ``precision`` is not one of them.
    """
    if precision not in PRECISIONS:
        raise DeployError(f'--precision {precision}: use one of {", ".join(PRECISIONS)}')


class FileHeader(NamedTuple):
    """What an exported file says about itself, read without its weights.

    Attributes:
        metadata (dict): Our metadata entries (``convnext_backbone.*``), without the prefix.
        output_names (list[str]): The graph's outputs, in order.
        output_shapes (dict): Output name -> its dimensions: an int where fixed, the dimension's
            name (``'height'``, ``'detections'`` ...) where dynamic.
    """

    metadata: Dict[str, str]
    output_names: List[str]
    output_shapes: Dict[str, Tuple[Union[int, str], ...]]


def read_header(path: str) -> FileHeader:
    """Read the :class:`FileHeader` of an ONNX file (its weights are parsed, not kept).

    Args:
        path (str): The ``.onnx`` file.

    Returns:
        FileHeader: Its metadata, outputs and output shapes.
    """
    import onnx
    model = onnx.load(path, load_external_data=False)
    metadata = {p.key[len(META):]: p.value for p in model.metadata_props
                if p.key.startswith(META)}
    shapes = {out.name: tuple(d.dim_param or d.dim_value
                              for d in out.type.tensor_type.shape.dim)
              for out in model.graph.output}
    return FileHeader(metadata, [out.name for out in model.graph.output], shapes)


def require_kind(path: str, found: str, wanted: str) -> None:
    """Raise ``ValueError`` (one line) unless the graph kind ``found`` in ``path`` is
    ``wanted``."""
    if found != wanted:
        held = f'a {found} graph' if found else 'no graph exported by tools/export_onnx.py'
        raise ValueError(f'{path} holds {held}; this needs a {wanted} graph '
                         f'(tools/export_onnx.py with a {SCOPES.get(wanted, wanted)} config)')


def file_kind(path: str) -> str:
    """The graph kind written into an exported file ('' if none)."""
    return read_header(path).metadata.get('graph', '')


class GraphSession(abc.ABC):
    """One exported file opened in one runtime on the CPU: inputs -> outputs by name.

    A runtime implements :meth:`run` (and sets :attr:`runtime`, :attr:`precision`,
    :attr:`threads`); everything else is the file's, the same in every runtime.

    Args:
        path (str): The ``.onnx`` file (from ``tools/export_onnx.py``).

    Attributes:
        path (str): The file.
        kind (str): 'detector', 'segmentor' or 'backbone' ('' for a file not written by us).
        metadata (dict): Our metadata entries, without the key prefix.
        output_names (list[str]): The graph's outputs, in order.
        output_shapes (dict): Output name -> dimensions (int where fixed, name where dynamic).
    """

    #: The runtime's name, as ``tools/test_onnx.py --runtime`` takes it.
    runtime = ''
    #: Its name in the log.
    title = ''
    #: The precision it computes in: 'f32' or 'bf16'.
    precision = 'f32'
    #: Its intra-op threads (None: the runtime's default, one per core).
    threads: Optional[int] = None

    def __init__(self, path: str) -> None:
        header = read_header(path)
        self.path = path
        self.metadata = header.metadata
        self.kind = self.metadata.get('graph', '')
        self.output_names = header.output_names
        self.output_shapes = header.output_shapes

    @abc.abstractmethod
    def run(self, inputs: Dict[str, np.ndarray],
            outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        """Run the graph once.

        Args:
            inputs (dict): Input name -> array (C-contiguous, the graph's dtype).
            outputs (Sequence[str]): The output names wanted.

        Returns:
            dict: ``{output name: array}`` for ``outputs``, in their order.
        """

    def __call__(self, image: Tensor, outputs: Optional[Sequence[str]] = None
                 ) -> Dict[str, Tensor]:
        """Run on ``image`` (N, 3, H, W) float RGB 0..255; returns ``{output name: tensor}``
        for ``outputs`` (default: all)."""
        names = list(outputs) if outputs is not None else self.output_names
        array = image.detach().to('cpu', torch.float32).contiguous().numpy()
        return {name: torch.from_numpy(out)
                for name, out in self.run({'image': array}, names).items()}

    def require(self, kind: str) -> None:
        """Raise ``ValueError`` (one line) unless this graph is a ``kind`` graph."""
        require_kind(self.path, self.kind, kind)

    def describe(self) -> str:
        """One line for the log: runtime and version, precision, threads."""
        threads = self.threads if self.threads else 'default'
        return f'{self.title} {self.version()} (CPU, {self.precision}, threads {threads})'

    @abc.abstractmethod
    def version(self) -> str:
        """The runtime's version."""
