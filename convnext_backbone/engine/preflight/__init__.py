"""Dataset checks that turn data mistakes into one line before any compute is spent.

mmdet and mmseg report a missing data folder, a broken annotation file or an empty dataset deep
in dataset construction or from a data worker (``FileNotFoundError``, ``JSONDecodeError``
without the file name, ``ValueError: need at least one array to concatenate``), a missing or
unreadable image at the iteration that loads it, and mmdet silently drops COCO annotations whose
category id the file does not define. The runner
(:class:`~convnext_backbone.engine.runner.ResumableRunner`) calls these functions, each raising
:class:`DatasetError` naming the file or folder, the config key it comes from and what to change:

0. :func:`check_paths` (:mod:`.paths`), when ``train()``, ``val()`` or ``test()`` starts
   (rank 0): the files and folders of every dataloader and evaluator that it will use, every
   problem in one line (so a wrong ``val_evaluator.ann_file`` is named before training, not
   after the first epoch).
1. :func:`check_config` (:mod:`.config`), before each dataset is built (rank 0): ``data_root``,
   ``ann_file`` and every ``data_prefix`` folder exist, and the folders are not empty.
   File-system lookups only.
2. :func:`explain_build_error` (:mod:`.build_errors`), when building fails: a JSON or encoding
   error of the annotation file, or an error raised while the dataset parses it, is named with
   the file.
3. :func:`check_built` (:mod:`.built`), after the dataset is built (rank 0), on what the dataset
   itself parsed, so no annotation file is ever parsed twice:

   - any dataset: it is not empty (:mod:`.empty` words why, where it is);
   - every image file (and label map) it lists exists (one ``stat`` each), is not empty, and
     ends as a JPEG or PNG must end (a read of its last bytes); the few that do not are decoded
     as mmcv's ``LoadImageFromFile`` decodes them, and those that fail to decode are an error
     (a warning where the pipeline skips unreadable images:
     :class:`~convnext_backbone.transforms.LoadImageFromFile`) (:mod:`.images`);
   - COCO-style (mmdet ``CocoDataset`` and subclasses, :mod:`.coco`): every annotation's
     category id is defined in the file's ``categories``, the config's classes are category
     names of the file and exclude a ``_background_`` category (what labelme's COCO export
     writes as id 0), and the model's ``num_classes`` can hold them. The category list is read
     from the file without parsing the rest (:func:`read_coco_categories`,
     :mod:`.coco_categories`: it is a few kB in a file of up to hundreds of MB);
   - segmentation (mmseg ``BaseSegDataset`` and subclasses, :mod:`.seg`): the decode head's
     ``num_classes`` is the number of classes, ``reduce_zero_label`` does not drop a
     ``background`` class 0, and the first label maps are single-channel (palette PNGs read as
     mmseg reads them, with Pillow) with values that fit.

Wrappers (``ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset``,
``MultiImageMixDataset``) are looked through (:mod:`.walk`); remote paths and ``backend_args``
are not checked. :mod:`.problems` holds :class:`DatasetError` and how problems are worded,
:mod:`.classes` the background names and the model's heads.
"""
from .build_errors import explain_build_error
from .built import check_built
from .coco_categories import read_coco_categories
from .config import check_config, config_problems
from .images import SHOWN
from .paths import check_paths
from .problems import DatasetError
from .seg import SAMPLE

__all__ = ['SAMPLE', 'SHOWN', 'DatasetError', 'check_built', 'check_config', 'check_paths',
           'config_problems', 'explain_build_error', 'read_coco_categories']
