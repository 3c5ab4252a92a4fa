from setuptools import find_packages, setup

setup(
    name='convnext-backbone',
    version='0.1.0',
    description='ConvNeXt (V1/V2) backbone, checkpoint loading and layer-wise lr decay for '
                'mmdet 3.x and mmsegmentation 1.x',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='MIT',
    packages=find_packages(include=['convnext_backbone', 'convnext_backbone.*']),
    python_requires='>=3.8',
    # mmcv (with ops) must be built against the installed torch: tools/install.sh does it.
    install_requires=['torch>=2.0', 'mmengine>=0.10,<1.0', 'numpy'],
    extras_require={'det': ['mmdet>=3.0,<4.0', 'pycocotools'], 'seg': ['mmsegmentation>=1.0,<2.0'],
                    'safetensors': ['safetensors']},
)
