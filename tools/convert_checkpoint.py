"""Convert a ConvNeXt checkpoint of any known layout to ours (the official key names).

Usage:
    python tools/convert_checkpoint.py IN OUT

IN may be an official classification or detection/segmentation checkpoint, an mmpretrain, timm
(.pth or .safetensors), torchvision or HF transformers file, a DINOv3 ConvNeXt file (raw .pth, or HF
transformers .safetensors / .bin), a ConvNeXt-V2 FCMAE pre-training file (pt_only/*.pt), a
checkpoint written by our tools/train.py, a URL, or a model-zoo name such as
``torchvision://convnext_tiny``. OUT holds ``{'state_dict': backbone weights}``
with plain tensors only, so it loads with ``torch.load(weights_only=True)``. DINOv3's final norm
is kept as ``norm3``; FCMAE's sparse-conv kernels are written as dense conv weights.
"""
import argparse
import os
import sys

import torch

from convnext_backbone import errors
from convnext_backbone.checkpoint import CheckpointError, convert_state_dict, read_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='input checkpoint path or URL')
    parser.add_argument('dst', help='output .pth path')
    args = parser.parse_args(argv)
    try:
        converted = convert_state_dict(read_checkpoint(args.src))
    except CheckpointError as err:
        message = str(err) if args.src in str(err) else f'{args.src}: {err}'
        errors.report(message)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': converted.state_dict}, args.dst)
    print(f'{args.src} (layout: {converted.layout}): wrote {len(converted.state_dict)} tensors '
          f'to {args.dst}; left out {len(converted.unused)} keys outside the backbone')
    if converted.note:
        print(f'{converted.layout}: {converted.note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
