"""Write an official-named ConvNeXt state dict in the layouts users hold (official classification,
official detection/segmentation, mmpretrain, timm, HF transformers, DINOv3 raw and HF, ConvNeXt-V2
FCMAE pre-training), for the tests.

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


# -- checkpoint families beyond the paper ---------------------------------------------------------
def dinov3(sd, dims):
    """A raw DINOv3 ConvNeXt file (dinov3/models/convnext.py): official names, no classifier, and
    the final norm as ``norm.*`` and again as ``norms.3.*`` (one module, two names; norms.0..2 are
    Identity). ``sd['norm3.*']`` plays the final norm."""
    out = dict(_backbone(sd))
    for name in ('weight', 'bias'):
        out[f'norm.{name}'] = out[f'norms.3.{name}'] = sd[f'norm3.{name}']
    return out


# transformers' convert_dinov3_convnext_to_hf.py: ORIGINAL_TO_CONVERTED_KEY_MAPPING, applied in
# order to every raw key (its patterns are unanchored, as here); it skips norms.3.
_DINOV3_TO_HF = ((r'dwconv', 'depthwise_conv'), (r'pwconv', 'pointwise_conv'),
                 (r'norm', 'layer_norm'), (r'stages.(\d+).(\d+)', r'stages.\1.layers.\2'),
                 (r'downsample_layers.(\d+).(\d+)', r'stages.\1.downsample_layers.\2'))


def dinov3_hf(sd, dims, prefix=''):
    """A DINOv3 ConvNeXt state dict under transformers' ``DINOv3ConvNextModel`` names, as
    ``save_pretrained`` writes it (``prefix='model.'``: the in-memory names of transformers 5)."""
    out = {}
    for key, value in dinov3(sd, dims).items():
        if key.startswith('norms.3.'):
            continue
        for pattern, repl in _DINOV3_TO_HF:
            key = re.sub(pattern, repl, key)
        out[key if key.startswith('layer_norm.') else prefix + key] = value
    return out


def fcmae(sd, dims, decoder_dim=16, patch_size=32):
    """A ConvNeXt-V2 FCMAE pre-training checkpoint (``pt_only/*.pt``), written as the inverse of
    ConvNeXt-V2's ``remap_checkpoint_keys`` (utils.py) from a dense V2 state dict.

    MinkowskiEngine stores a kernel offset-major: offset ``w * k + h`` holds dense
    ``weight[..., h, w]``. Downsample convs: (k*k, in, out); depthwise: (k*k, C); their biases,
    and GRN's gamma and beta, (1, C). LayerNorm and Linear sit under ``.ln`` / ``.linear``
    (models/convnextv2_sparse.py). Beside the encoder: the decoder (one dense V2 block of
    ``decoder_dim`` channels), mask_token, proj and pred of models/fcmae.py.
    """
    out = {}
    for key, value in _backbone(sd).items():
        down = re.match(r'(downsample_layers\.[123])\.(\d)\.(weight|bias)$', key)
        block = re.match(r'(stages\.\d\.\d+)\.(\w+)\.(\w+)$', key)
        if down and down.group(2) == '0':                               # MinkowskiLayerNorm
            key = f'{down.group(1)}.0.ln.{down.group(3)}'
        elif down and down.group(3) == 'weight':                        # MinkowskiConvolution
            key, value = key[:-len('weight')] + 'kernel', value.permute(3, 2, 1, 0).flatten(0, 1)
        elif down:
            value = value[None]
        elif block and block.group(2) == 'dwconv':                     # depthwise
            if block.group(3) == 'weight':
                key, value = key[:-len('weight')] + 'kernel', value[:, 0].permute(2, 1, 0)
                value = value.flatten(0, 1)
            else:
                value = value[None]
        elif block and block.group(2) in ('norm', 'pwconv1', 'pwconv2'):
            sub = 'ln' if block.group(2) == 'norm' else 'linear'
            key = f'{block.group(1)}.{block.group(2)}.{sub}.{block.group(3)}'
        elif block and block.group(2) == 'grn':
            value = value.reshape(1, -1)
        out['encoder.' + key] = value
    d = decoder_dim
    out.update({'decoder.0.dwconv.weight': torch.randn(d, 1, 7, 7),
                'decoder.0.dwconv.bias': torch.randn(d),
                'decoder.0.norm.weight': torch.ones(d), 'decoder.0.norm.bias': torch.zeros(d),
                'decoder.0.pwconv1.weight': torch.randn(4 * d, d),
                'decoder.0.pwconv1.bias': torch.randn(4 * d),
                'decoder.0.grn.gamma': torch.randn(1, 1, 1, 4 * d),
                'decoder.0.grn.beta': torch.randn(1, 1, 1, 4 * d),
                'decoder.0.pwconv2.weight': torch.randn(d, 4 * d),
                'decoder.0.pwconv2.bias': torch.randn(d),
                'mask_token': torch.zeros(1, d, 1, 1),
                'proj.weight': torch.randn(d, dims[-1], 1, 1), 'proj.bias': torch.randn(d),
                'pred.weight': torch.randn(patch_size ** 2 * 3, d, 1, 1),
                'pred.bias': torch.randn(patch_size ** 2 * 3)})
    return {'model': out}
