"""ONNX Runtime's CPU session of an exported file (:class:`OnnxRuntimeSession`)."""
from typing import Dict, Optional, Sequence

import numpy as np

from .graph_session import GraphSession

__all__ = ['OnnxRuntimeSession']


class OnnxRuntimeSession(GraphSession):
    """An ONNX Runtime CPU session of one exported file, in float32 (ONNX Runtime's CPU
    execution provider computes a float32 graph in float32).

    Args:
        path (str): The ``.onnx`` file (from ``tools/export_onnx.py``).
        threads (int, optional): ONNX Runtime's intra-op threads (one inter-op thread); None
            leaves its default (one per core). Defaults to None.

    Attributes:
        session (onnxruntime.InferenceSession): The session.
    """

    runtime = 'onnxruntime'
    title = 'ONNX Runtime'

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        super().__init__(path)
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: not every CastLike can be constant-folded
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.threads = int(threads) if threads else None
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])

    def run(self, inputs: Dict[str, np.ndarray],
            outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        """Run the graph once (:meth:`GraphSession.run`)."""
        names = list(outputs)
        return dict(zip(names, self.session.run(names, inputs)))

    def version(self) -> str:
        """ONNX Runtime's version."""
        import onnxruntime
        return onnxruntime.__version__
