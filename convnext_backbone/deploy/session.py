"""Open an exported file in a runtime: :func:`open_session` (ONNX Runtime or OpenVINO, CPU).

The session interface is :class:`~.graph_session.GraphSession` (inputs -> outputs by name); its
implementations are :class:`~.ort_session.OnnxRuntimeSession` and
:class:`~.ov_session.OpenVINOSession`. :class:`OnnxGraph`, :data:`SCOPES`, :func:`file_kind` and
:func:`require_kind` keep the names this module had when it held the ONNX Runtime session.
"""
from typing import Optional

from .graph_session import (
    PRECISIONS,
    SCOPES,
    DeployError,
    GraphSession,
    check_known_precision,
    file_kind,
    require_kind,
)
from .ort_session import OnnxRuntimeSession
from .ov_session import OpenVINOSession, check_precision, import_openvino

__all__ = ['PRECISIONS', 'RUNTIMES', 'SCOPES', 'DeployError', 'GraphSession', 'OnnxGraph',
           'check_runtime', 'file_kind', 'open_session', 'require_kind']

#: The runtimes, by the name ``tools/test_onnx.py --runtime`` takes.
RUNTIMES = {'onnxruntime': OnnxRuntimeSession, 'openvino': OpenVINOSession}
#: The ONNX Runtime session, by its earlier name.
OnnxGraph = OnnxRuntimeSession


def check_runtime(runtime: str, precision: str = 'f32') -> None:
    """Refuse, in one line, a runtime or precision that cannot run here, before anything is
    loaded.

    Args:
        runtime (str): A key of :data:`RUNTIMES`.
        precision (str): One of :data:`PRECISIONS`; ONNX Runtime runs 'f32' only. Defaults to
            'f32'.

    Raises:
        DeployError: An unknown runtime or precision, bf16 asked of ONNX Runtime, OpenVINO not
            installed, or bf16 on a CPU without native bf16 (each says what to do).
    """
    if runtime not in RUNTIMES:
        raise DeployError(f'--runtime {runtime}: use one of {", ".join(RUNTIMES)}')
    check_known_precision(precision)
    if runtime == 'onnxruntime' and precision != 'f32':
        raise DeployError(f'--precision {precision}: ONNX Runtime runs the float32 graph in '
                          'float32 only; use --runtime openvino for bf16, or --precision f32')
    if runtime == 'openvino':
        check_precision(import_openvino().Core(), precision)


def open_session(path: str, runtime: str = 'onnxruntime', threads: Optional[int] = None,
                 precision: str = 'f32') -> GraphSession:
    """Open ``path`` in ``runtime`` on the CPU.

    Args:
        path (str): The ``.onnx`` file (from ``tools/export_onnx.py``).
        runtime (str): 'onnxruntime' or 'openvino'. Defaults to 'onnxruntime'.
        threads (int, optional): The runtime's intra-op threads (ONNX Runtime's
            ``intra_op_num_threads``, OpenVINO's ``INFERENCE_NUM_THREADS``); None leaves its
            default. Defaults to None.
        precision (str): 'f32', or 'bf16' (OpenVINO only, where the CPU has native bf16).
            Defaults to 'f32'.

    Returns:
        GraphSession: The session.

    Raises:
        DeployError: :func:`check_runtime` refuses.
    """
    if runtime == 'openvino':  # it checks its precision itself, on the core it compiles with
        return OpenVINOSession(path, threads, precision)
    check_runtime(runtime, precision)
    return OnnxRuntimeSession(path, threads)
