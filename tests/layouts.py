"""Write an official-named ConvNeXt state dict in the layouts users hold (official classification,
official detection/segmentation, mmpretrain, timm, HF transformers), for the tests.

Each writer is the inverse of the published layout tables, written independently of the package's
converter, so that a round trip through the converter proves every key is mapped.
"""
import re

import torch

HEAD_DIM = 10


def _backbone(sd):
    return {k: v for k, v in sd.items() if not re.match(r'norm\d\.', k)}


def _head(dim):
    return torch.randn(HEAD_DIM, dim), torch.randn(HEAD_DIM)


def official_classification(sd, dims):
    out = dict(_backbone(sd))
    out['norm.weight'], out['norm.bias'] = torch.rand(dims[-1]) + .5, torch.randn(dims[-1])
    out['head.weight'], out['head.bias'] = _head(dims[-1])
    return {'model': out}


def official_dense(sd, dims):
    out = {'backbone.' + k: v for k, v in sd.items()}
    out['neck.lateral_convs.0.conv.weight'] = torch.randn(8, dims[0], 1, 1)
    out['rpn_head.rpn_conv.weight'] = torch.randn(8, 8, 3, 3)
    return {'state_dict': out, 'meta': {'epoch': 36, 'CLASSES': ('a', 'b')}}


def mmpretrain(sd, dims, classification=False):
    out = {}
    for k, v in (sd if not classification else _backbone(sd)).items():
        k = k.replace('.dwconv.', '.depthwise_conv.').replace('.pwconv', '.pointwise_conv')
        if '.grn.' in k:
            v = v.reshape(-1)
        out['backbone.' + k] = v
    if classification:
        out['backbone.norm3.weight'] = torch.rand(dims[-1]) + .5
        out['backbone.norm3.bias'] = torch.randn(dims[-1])
        out['head.fc.weight'], out['head.fc.bias'] = _head(dims[-1])
    return {'state_dict': out, 'meta': {}}


def timm(sd, dims, conv_mlp=False):
    out = {}
    for k, v in _backbone(sd).items():
        m = re.match(r'downsample_layers\.(\d)\.(\d)\.(.*)', k)
        if m:
            i, j, rest = m.groups()
            k = f'stem.{j}.{rest}' if i == '0' else f'stages.{i}.downsample.{j}.{rest}'
        else:
            i, b, rest = re.match(r'stages\.(\d)\.(\d+)\.(.*)', k).groups()
            rest = {'dwconv': 'conv_dw', 'pwconv1': 'mlp.fc1', 'pwconv2': 'mlp.fc2'}.get(
                rest.split('.')[0], rest.split('.')[0]) + rest[len(rest.split('.')[0]):]
            if rest.startswith('grn.'):
                rest = 'mlp.grn.' + {'gamma': 'weight', 'beta': 'bias'}[rest[4:]]
                v = v.reshape(-1)
            if conv_mlp and rest.startswith('mlp.fc') and rest.endswith('weight'):
                v = v[:, :, None, None]
            k = f'stages.{i}.blocks.{b}.{rest}'
        out[k] = v
    out['head.norm.weight'], out['head.norm.bias'] = torch.ones(dims[-1]), torch.zeros(dims[-1])
    out['head.fc.weight'], out['head.fc.bias'] = _head(dims[-1])
    return out


def huggingface(sd, dims, v2=False):
    prefix = 'convnextv2.' if v2 else 'convnext.'
    out = {}
    for k, v in _backbone(sd).items():
        m = re.match(r'downsample_layers\.(\d)\.(\d)\.(.*)', k)
        if m:
            i, j, rest = m.groups()
            if i == '0':
                k = ('embeddings.patch_embeddings.' if j == '0' else 'embeddings.layernorm.') + rest
            else:
                k = f'encoder.stages.{i}.downsampling_layer.{j}.{rest}'
        else:
            i, b, rest = re.match(r'stages\.(\d)\.(\d+)\.(.*)', k).groups()
            rest = {'norm.weight': 'layernorm.weight', 'norm.bias': 'layernorm.bias',
                    'gamma': 'layer_scale_parameter', 'grn.gamma': 'grn.weight',
                    'grn.beta': 'grn.bias'}.get(rest, rest)
            k = f'encoder.stages.{i}.layers.{b}.{rest}'
        out[prefix + k] = v
    out[prefix + 'layernorm.weight'] = torch.ones(dims[-1])
    out[prefix + 'layernorm.bias'] = torch.zeros(dims[-1])
    out['classifier.weight'], out['classifier.bias'] = _head(dims[-1])
    return out
