"""The modes of ``tools/benchmark.py``, one module each, and what they share.

- :mod:`.common`: the device, interleaved timing, relative errors, autocast, peak memory,
  tables, random weights;
- :mod:`.peers`: the other ConvNeXt implementations (timm, mmpretrain), one builder each, given
  our weights through the package's layout converter;
- :mod:`.engines`: the CPU inference engines (ONNX Runtime and OpenVINO on our ONNX export,
  zentorch on our module), one builder each;
- :mod:`.busy`: the busy processes of ``--busy N``;
- :mod:`.models`: whole detectors and segmentors: random weights, the tools' preparation,
  synthetic batches, time per part;
- the modes: :mod:`.inference` (backbone, GEMM-rate floors), :mod:`.mlp` (block MLP kernels),
  :mod:`.training` (training step), :mod:`.memory` (``with_cp`` peak memory),
  :mod:`.compiled` (``torch.compile``), :mod:`.config` (one config's ``test_step``),
  :mod:`.e2e` (whole models beside the peer libraries' own configs), :mod:`.deploy` (whole
  models exported to ONNX in ONNX Runtime and OpenVINO beside PyTorch), :mod:`.earlier` (an
  earlier checkout side by side, run by :mod:`.earlier_worker` in a process of its own).
"""
