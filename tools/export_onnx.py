"""Export a detector, a segmentor or its backbone, from one of our configs, to ONNX.

Usage::

    python tools/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W] [--opset N]
        [--part model|backbone] [--cfg-options KEY=VALUE ...]

The graph takes ``image``: float32 RGB 0..255, (N, 3, H, W), the config's normalisation inside.

- mmseg configs (UperNet ...): ``seg_logits`` (N, K, H, W) and ``label_map`` (N, H, W) int64;
  N, H and W are dynamic.
- mmdet configs (Mask R-CNN, Cascade Mask R-CNN, Faster R-CNN): one image (N = 1, H and W
  dynamic) -> ``boxes`` (D, 4) x1 y1 x2 y2 in input pixels, ``scores`` (D,), ``labels`` (D,)
  int64 and, with a mask head, ``masks`` (D, H, W) probabilities and ``mask_probs`` (D, 28, 28),
  after the config's test-time score threshold and NMS.
- ``--part backbone``: one feature map per emitted stage, ``stage0`` ... ``stage3``; the
  checkpoint may then be of any layout the backbone loads (a classification checkpoint too).

Only standard ONNX operators (no custom domain); docs/deploy.md says what is inside the graph.
Whole models load the checkpoint strictly: every weight must fit the config's model.
"""
import argparse

from mmengine.logging import print_log

from convnext_backbone import cli, errors
from convnext_backbone.checkpoint import (
    load_pretrained,
    load_state_strictly,
    read_checkpoint,
    unwrap_state_dict,
)
from convnext_backbone.deploy import DEFAULT_OPSET, PARTS, build_graph, export_onnx


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the model (or its backbone) of an mmdet or mmseg config to ONNX.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file or URL')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'),
                        help='size of the example image that is traced (default 480 640); the '
                        'exported graph runs at any size from a model-dependent minimum on')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset, >= 17 (default {DEFAULT_OPSET})')
    parser.add_argument('--part', choices=PARTS, default='model',
                        help='model: the whole detector or segmentor (default); backbone: the '
                        'backbone alone')
    cli.add_config_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = cli.read_config(args.config, args.cfg_options)
    if cfg.get('default_scope') not in cli.SCOPES:
        errors.fail(f'{args.config}: default_scope is {cfg.get("default_scope")!r}; this tool '
                    f'exports mmdet and mmseg configs (default_scope one of {cli.SCOPES})')
    checkpoint = cli.existing_checkpoint(args.checkpoint)
    with cli.one_line_errors():
        model = cli.build_model(cfg)
        if args.part == 'backbone':
            load_pretrained(model.backbone, checkpoint)
        else:
            load_state_strictly(model, unwrap_state_dict(read_checkpoint(checkpoint)),
                                checkpoint, args.config)
    try:
        graph = build_graph(model, args.part)
        onnx_model = export_onnx(graph, args.out, args.shape, args.opset,
                                 metadata=dict(config=args.config, checkpoint=checkpoint))
    except ValueError as err:
        errors.fail(str(err), code=1)

    def describe(values) -> str:
        return ', '.join(f'{v.name} ({", ".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim)})'  # noqa: E501
                         for v in values)

    print_log(f'Wrote {args.out} (opset {args.opset}): inputs {describe(onnx_model.graph.input)};'
              f' outputs {describe(onnx_model.graph.output)}', logger='current')


if __name__ == '__main__':
    main()
