"""OpenVINO's CPU compilation of an exported file (:class:`OpenVINOSession`), in f32 or bf16.

``openvino.Core().compile_model`` reads the ``.onnx`` file itself (OpenVINO's ONNX frontend): no
conversion step and no second file. The precision is OpenVINO's ``INFERENCE_PRECISION_HINT``:
``f32``, or ``bf16`` where the CPU computes bf16 natively (``BF16`` among the CPU's
``OPTIMIZATION_CAPABILITIES``); ``--threads`` is ``INFERENCE_NUM_THREADS``.

Note:
    In bf16, OpenVINO's CPU plugin computes every node upstream of a convolution or matrix
    product in bf16 and keeps float32 only for the graph's tail after the last of them
    (``Graph::EnforceInferencePrecision``, ``src/plugins/intel_cpu/src/graph.cpp``). A
    detector's mask pasting (:func:`~.detector.paste_masks`) is two matrix products whose
    inputs are computed from pixel coordinates: in bf16 (8 significant bits: steps of 4 px at
    512-1023, 8 px above) the pasted masks of a tiny Mask R-CNN at 800x1216 overlapped those
    pasted in float32 from the same probabilities and boxes by IoU 0.76. So under bf16 this
    session compiles the detector without its ``masks`` output and pastes ``mask_probs`` at
    ``boxes`` itself, in float32, with the function the graph holds: the same output, at the
    precision of ``boxes`` and ``mask_probs``. In f32 every output is the graph's own.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .detector import paste_masks
from .graph_session import DeployError, GraphSession, check_known_precision

__all__ = ['INSTALL', 'OpenVINOSession', 'check_precision', 'import_openvino']

#: How to install OpenVINO.
INSTALL = 'pip install openvino'


def import_openvino():
    """The ``openvino`` module.

    Returns:
        ModuleType: ``openvino``.

    Raises:
        DeployError: It is not installed (one line with the pip command).
    """
    try:
        import openvino
    except ImportError:
        raise DeployError(f'--runtime openvino: the openvino package is not installed; '
                          f'{INSTALL} (or the deploy extra: pip install -e ".[deploy]")') from None
    return openvino


def cpu_capabilities(core) -> List[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (``'FP32'``, ``'BF16'`` ...).

    Args:
        core (openvino.Core): The core.

    Returns:
        list[str]: The capabilities.
    """
    return [str(c) for c in core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')]


def check_precision(core, precision: str) -> None:
    """Refuse, in one line, a precision that OpenVINO's CPU plugin cannot run natively here.

    Args:
        core (openvino.Core): The core.
        precision (str): 'f32' or 'bf16'.

    Raises:
        DeployError: Another value, or 'bf16' on a CPU without native bf16.
    """
    check_known_precision(precision)
    if precision == 'bf16':
        capabilities = cpu_capabilities(core)
        if 'BF16' not in capabilities:
            raise DeployError(
                '--precision bf16: this CPU has no native bf16 (OpenVINO lists its CPU '
                f'capabilities as {", ".join(capabilities)}, without BF16); use --precision f32')


class OpenVINOSession(GraphSession):
    """OpenVINO's CPU compilation of one exported file.

    Args:
        path (str): The ``.onnx`` file (from ``tools/export_onnx.py``).
        threads (int, optional): ``INFERENCE_NUM_THREADS``; None leaves OpenVINO's default
            (one per core). Defaults to None.
        precision (str): ``INFERENCE_PRECISION_HINT``: 'f32' or 'bf16' (where the CPU has native
            bf16). Defaults to 'f32'.

    Attributes:
        compiled (openvino.CompiledModel): The compiled model (``PERFORMANCE_HINT='LATENCY'``:
            one request at a time, all threads on it).

    Raises:
        DeployError: openvino is not installed, or the precision is refused
            (:func:`check_precision`).
    """

    runtime = 'openvino'
    title = 'OpenVINO'

    def __init__(self, path: str, threads: Optional[int] = None,
                 precision: str = 'f32') -> None:
        super().__init__(path)
        openvino = import_openvino()
        core = openvino.Core()
        check_precision(core, precision)
        self.precision = precision
        self.threads = int(threads) if threads else None
        model = core.read_model(path)
        # bf16: masks are pasted here in float32 (the module's note)
        self._paste_masks = precision == 'bf16' and {
            'masks', 'mask_probs', 'boxes'} <= set(self.output_names)
        if self._paste_masks:
            model.remove_result(next(r for r in model.get_results()
                                     if 'masks' in r.output(0).get_names()))
            model.validate_nodes_and_infer_types()
        config = {'INFERENCE_PRECISION_HINT': precision, 'PERFORMANCE_HINT': 'LATENCY'}
        if self.threads:
            config['INFERENCE_NUM_THREADS'] = self.threads
        self.compiled = core.compile_model(model, 'CPU', config)
        self._request = self.compiled.create_infer_request()
        self._ports = {port.get_any_name(): port for port in self.compiled.outputs}

    def run(self, inputs: Dict[str, np.ndarray],
            outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        """Run the graph once (:meth:`GraphSession.run`)."""
        results = self._request.infer(inputs, share_inputs=True)
        found = {name: results[port] for name, port in self._ports.items()}
        if self._paste_masks and 'masks' in outputs:
            height, width = inputs['image'].shape[2:]
            found['masks'] = paste_masks(torch.from_numpy(found['mask_probs']),
                                         torch.from_numpy(found['boxes']), height,
                                         width).numpy()
        return {name: found[name] for name in outputs}

    def version(self) -> str:
        """OpenVINO's version (without its build suffix)."""
        return import_openvino().__version__.split('-')[0]
