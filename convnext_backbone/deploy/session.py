"""An ONNX Runtime CPU session of one exported file, and the graph kind written into it."""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from .export import META

__all__ = ['SCOPES', 'OnnxGraph', 'file_kind', 'require_kind']

#: The config scope each graph kind is evaluated in.
SCOPES = {'detector': 'mmdet', 'segmentor': 'mmseg'}


class OnnxGraph:
    """An ONNX Runtime CPU session of one exported file, with the metadata we wrote into it.

    Args:
        path (str): The ``.onnx`` file (from ``tools/export_onnx.py``).
        threads (int, optional): ONNX Runtime's intra-op threads; None leaves its default (one
            per core). Defaults to None.

    Attributes:
        kind (str): 'detector', 'segmentor' or 'backbone' ('' for a file not written by us).
        metadata (dict): Our metadata entries, without the key prefix.
        output_names (list[str]): The graph's outputs, in order.
    """

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: not every CastLike can be constant-folded
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k[len(META):]: v for k, v in meta.items() if k.startswith(META)}
        self.kind = self.metadata.get('graph', '')
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, image: Tensor, outputs: Optional[Sequence[str]] = None
                 ) -> Dict[str, Tensor]:
        """Run on ``image`` (N, 3, H, W) float RGB 0..255; returns ``{output name: tensor}``
        for ``outputs`` (default: all)."""
        names = list(outputs) if outputs is not None else self.output_names
        arrays = self.session.run(
            names, {'image': image.detach().to('cpu', torch.float32).contiguous().numpy()})
        return {name: torch.from_numpy(array) for name, array in zip(names, arrays)}

    def require(self, kind: str) -> None:
        """Raise ``ValueError`` (one line) unless this graph is a ``kind`` graph."""
        require_kind(self.path, self.kind, kind)


def require_kind(path: str, found: str, wanted: str) -> None:
    """Raise ``ValueError`` (one line) unless the graph kind ``found`` in ``path`` is
    ``wanted``."""
    if found != wanted:
        held = f'a {found} graph' if found else 'no graph exported by tools/export_onnx.py'
        raise ValueError(f'{path} holds {held}; this needs a {wanted} graph '
                         f'(tools/export_onnx.py with a {SCOPES.get(wanted, wanted)} config)')


def file_kind(path: str) -> str:
    """The graph kind written into an exported file ('' if none), read without its weights."""
    import onnx
    props = onnx.load(path, load_external_data=False).metadata_props
    return next((p.value for p in props if p.key == META + 'graph'), '')
