"""A bad dataset is named in one line before training (the dataset check of
convnext_backbone.engine.preflight, issue 6): missing folders and files, bad COCO json, classes that
do not match the model; COCO categories are read without parsing the whole file."""
import copy
import json
import time

import pytest
from helpers import one_line
from make_demo_data import SEG_CLASSES, SHAPES, make_ade, make_coco
from torch import nn

from convnext_backbone.engine import DatasetError, ResumableRunner

pytestmark = pytest.mark.core


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    make_coco(str(root / 'coco'), {'train': 3}, size=64)
    make_ade(str(root / 'ade'), {'training': 3}, size=64)
    return root


class Heads(nn.Module):
    """Stands in for a detector or segmentor: only its heads' ``num_classes`` are read."""

    def __init__(self, roi_classes=4, seg_classes=8):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = nn.Module()
        self.roi_head.bbox_head.num_classes = roi_classes
        self.decode_head = nn.Module()
        self.decode_head.num_classes = seg_classes


def _det_dataset(root, **dataset):
    ds = dict(type='CocoDataset', data_root=str(root / 'coco'),
              ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
              metainfo=dict(classes=SHAPES), pipeline=[])
    ds.update(dataset)
    return ds


def _seg_dataset(root, **dataset):
    """The demo's ADE20K-layout set: label 0 is "other" (ignored), 1..8 its 8 classes."""
    ds = dict(type='BaseSegDataset', data_root=str(root / 'ade'), pipeline=[],
              img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
              metainfo=dict(classes=SEG_CLASSES),
              data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'))
    ds.update(dataset)
    return ds


def _build_loader(tmp_path, scope, dataset, model=None):
    """What ResumableRunner does for every dataloader: check, build, check what was built."""
    wrapped = dict(type='RepeatDataset', times=2, dataset=dataset) if scope == 'mmdet' else dataset
    loader = dict(dataset=wrapped, batch_size=1, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False))
    runner = ResumableRunner(model=model or Heads(), work_dir=str(tmp_path / 'work'),
                             default_scope=scope, train_dataloader=loader,
                             train_cfg=dict(by_epoch=False, max_iters=1),
                             optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                             experiment_name=f'data-{time.time_ns()}')
    return runner.build_dataloader(runner._train_dataloader)


def _edit_coco(root, name, edit):
    with open(root / 'coco' / 'annotations' / 'instances_train.json') as f:
        data = json.load(f)
    edit(data)
    path = root / 'coco' / 'annotations' / name
    path.write_text(json.dumps(data))
    return f'annotations/{name}'


def test_good_demo_datasets_pass_the_check(demo_data, tmp_path):
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    assert len(_build_loader(tmp_path, 'mmdet', _det_dataset(demo_data)).dataset) == 6
    assert len(_build_loader(tmp_path, 'mmseg', _seg_dataset(demo_data)).dataset) == 3


def _unknown_category(data):
    data['annotations'][1]['category_id'] = 99


def _no_images(data):
    data['images'], data['annotations'] = [], []


def _no_bbox(data):
    del data['annotations'][0]['bbox']


@pytest.mark.parametrize('case, message', [
    ('missing root', 'dataset folder not found: {root}/nowhere '
                     '(train_dataloader.dataset.dataset.data_root)'),
    ('missing ann', 'annotation file not found: {root}/coco/annotations/nope.json '
                    '(train_dataloader.dataset.dataset.ann_file)'),
    ('bad json', 'annotation file {root}/coco/annotations/bad.json is not valid JSON: '
                 'Expecting value at line 1 column 13'),
    ('not coco', 'annotation file {root}/coco/annotations/nobbox.json could not be parsed '
                 "(KeyError: 'bbox')"),
    ('unknown category', 'annotations in {root}/coco/annotations/unknown.json use category ids '
                         '[99] that its "categories" do not define (defined: [1, 2, 3, 4]): 1 '
                         'such annotation(s), the first on image id 1'),
    ('no images', 'annotation file {root}/coco/annotations/empty.json lists no images: the '
                  'dataset is empty'),
    ('wrong classes', "the classes of train_dataloader.dataset.dataset ('cat', 'dog') are not all "
                      "category names of {root}/coco/annotations/instances_train.json (it has "
                      "'circle', 'triangle', 'square', 'star'; missing 'cat', 'dog')"),
    ('coco classes', "the classes of train_dataloader.dataset.dataset ('person', 'bicycle'"),
    ('too few num_classes', 'train_dataloader.dataset.dataset has 4 classes but '
                            'model.roi_head.bbox_head.num_classes is 3: set num_classes=4'),
    ('empty image folder', 'image folder {root}/empty is empty'),
    ('missing images', '3 of the 3 images listed in '
                       '{root}/coco/annotations/instances_train.json are not in {root}/ade'),
])
def test_bad_coco_dataset_is_named_before_training(demo_data, tmp_path, case, message):
    pytest.importorskip('mmdet')
    root = demo_data
    (root / 'empty').mkdir(exist_ok=True)
    (root / 'coco' / 'annotations' / 'bad.json').write_text('{"images": [')
    dataset = {
        'missing root': lambda: _det_dataset(root, data_root=str(root / 'nowhere')),
        'missing ann': lambda: _det_dataset(root, ann_file='annotations/nope.json'),
        'bad json': lambda: _det_dataset(root, ann_file='annotations/bad.json'),
        'not coco': lambda: _det_dataset(root, ann_file=_edit_coco(root, 'nobbox.json',
                                                                   _no_bbox)),
        'unknown category': lambda: _det_dataset(
            root, ann_file=_edit_coco(root, 'unknown.json', _unknown_category)),
        'no images': lambda: _det_dataset(
            root, ann_file=_edit_coco(root, 'empty.json', _no_images)),
        'wrong classes': lambda: _det_dataset(root, metainfo=dict(classes=('cat', 'dog'))),
        'coco classes': lambda: _det_dataset(root, metainfo=None),
        'too few num_classes': lambda: _det_dataset(root),
        'empty image folder': lambda: _det_dataset(root, data_prefix=dict(img=str(root / 'empty'))),
        'missing images': lambda: _det_dataset(root, data_prefix=dict(img=str(root / 'ade'))),
    }[case]()
    model = Heads(roi_classes=3) if case == 'too few num_classes' else None
    with pytest.raises(DatasetError) as err:
        _build_loader(tmp_path, 'mmdet', dataset, model)
    assert str(err.value).startswith(message.format(root=root)), str(err.value)
    one_line(str(err.value))


@pytest.mark.parametrize('case, message', [
    ('missing root', 'dataset folder not found: {root}/nowhere (train_dataloader.dataset.'
                     'data_root)'),
    ('empty folder', 'image folder {root}/empty is empty'),
    ('no images of the suffix', 'image folder {root}/ade/images/training holds no .png images: '
                                'the dataset is empty'),
    ('missing labels', 'label folder not found: {root}/ade/annotations/nope'),
    ('label beyond num_classes', 'label map {root}/ade/annotations/training/000000.png holds '
                                 'class value 8, beyond decode_head.num_classes=3'),
    ('num_classes not the classes', "train_dataloader.dataset has 8 classes ('sky', 'grass', "
                                    "'water', 'sand', 'circle', 'triangle', ... (8 in all)) but "
                                    'model.decode_head.num_classes is 3: set num_classes=8'),
    ('background dropped', "the first class of train_dataloader.dataset is 'background', but "
                           'reduce_zero_label=True ignores label 0'),
])
def test_bad_segmentation_dataset_is_named_before_training(demo_data, tmp_path, case, message):
    pytest.importorskip('mmseg')
    root = demo_data
    (root / 'empty').mkdir(exist_ok=True)
    dataset = {
        'missing root': lambda: _seg_dataset(root, data_root=str(root / 'nowhere')),
        'empty folder': lambda: _seg_dataset(root, data_prefix=dict(
            img_path=str(root / 'empty'), seg_map_path='annotations/training')),
        'no images of the suffix': lambda: _seg_dataset(root, img_suffix='.png'),
        'missing labels': lambda: _seg_dataset(root, data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/nope')),
        'label beyond num_classes': lambda: _seg_dataset(
            root, metainfo=dict(classes=('a', 'b', 'c'))),
        'num_classes not the classes': lambda: _seg_dataset(root),
        'background dropped': lambda: _seg_dataset(
            root, metainfo=dict(classes=('background', 'sky', 'grass'))),
    }[case]()
    model = Heads(seg_classes=3) if case in ('label beyond num_classes',
                                             'num_classes not the classes') else None
    with pytest.raises(DatasetError) as err:
        _build_loader(tmp_path, 'mmseg', dataset, model)
    assert str(err.value).startswith(message.format(root=root)), str(err.value)
    one_line(str(err.value))


def test_mmdet_alone_drops_unknown_category_silently(demo_data):
    """Why the check exists: mmdet builds the dataset and skips the bad annotation quietly."""
    pytest.importorskip('mmdet')
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    dataset = DATASETS.build(_det_dataset(
        demo_data, ann_file=_edit_coco(demo_data, 'unknown2.json', _unknown_category)))
    kept = sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset)))
    with open(demo_data / 'coco' / 'annotations' / 'instances_train.json') as f:
        assert kept == len(json.load(f)['annotations']) - 1


def test_the_check_leaves_the_config_as_it_was(demo_data, tmp_path):
    pytest.importorskip('mmdet')
    dataset = _det_dataset(demo_data)
    before = copy.deepcopy(dataset)
    _build_loader(tmp_path, 'mmdet', dataset)
    assert dataset == before


@pytest.mark.parametrize('where', ['last', 'first', 'pretty'])
def test_coco_categories_are_read_without_parsing_the_annotations(tmp_path, where):
    """The dataset check reads the small "categories" list of a large file on its own: its
    memory must not grow with the file (mmdet parses the file once; we must not again)."""
    import tracemalloc

    from convnext_backbone.engine.preflight import read_coco_categories
    categories = [dict(id=i, name=f'c{i}', supercategory='x') for i in (1, 2, 7)]
    annotations = [dict(id=i, image_id=i, category_id=1, bbox=[0, 0, 1, 1],
                        segmentation=[[0.5] * 40], note='"categories": [1]') for i in range(40000)]
    data = dict(info=dict(description='has a key "categories" inside'), images=[],
                annotations=annotations, categories=categories)
    if where == 'first':
        data = dict(categories=categories, **{k: v for k, v in data.items() if k != 'categories'})
    path = tmp_path / 'big.json'
    path.write_text(json.dumps(data, indent=1 if where == 'pretty' else None))
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        found = read_coco_categories(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == categories
    assert peak < 2_000_000, peak


def test_coco_categories_of_a_file_without_them_are_none(tmp_path):
    from convnext_backbone.engine.preflight import read_coco_categories
    path = tmp_path / 'x.json'
    path.write_text('{"images": [], "annotations": []}')
    assert read_coco_categories(str(path)) is None
    path.write_text('')
    assert read_coco_categories(str(path)) is None
