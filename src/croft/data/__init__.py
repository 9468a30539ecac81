"""The data layer: dataset folders -> :class:`DatasetIndex` (path, label, class, domain, split).

Imports without torch (PIL and numpy only, loaded when used). Paths in an index are
relative to its root with ``/`` separators, so its :meth:`~DatasetIndex.hash` does not
depend on where the data lives.

``read_layout(root, layout, **options)`` reads one of the layouts below and raises the
first problem as one :class:`~croft.errors.CroftError` line (what, where, how to fix);
``check_layout`` returns all problems instead (``croft data check ROOT --layout NAME``).
Every layout accepts ``verify_images=True`` to decode each image with
:func:`load_image`. Image files: jpg, jpeg, png, bmp, gif, tif, tiff, webp (any case);
hidden files and folders (``.name``) are ignored; images may sit in sub-folders of a
class folder.

``domainbed`` (options ``split="all"``)::

    root/<domain>/<class>/<image>        classes = sorted union of class folders,
                                         domains sorted; every record has split "all"

``oodbench`` -- PACS / VLCS as the paper's code expects (options ``test_domain``,
``strict_names=True``)::

    root/images/<domain>/<class>/<image>  (or root/<domain>/<class>/<image> without images/)
    root/test_on_<domain>.json           Dassl split: {"train"|"val"|"test":
                                         [[relpath under images/, label, classname], ...]}

    ``test_domain`` picks the json (required by ``read_layout``; ``check_layout``
    without it checks every json). Domains are matched case-insensitively to the
    folders (bug B12 avoided). :func:`generate_lodo_splits` writes missing json files
    (``croft data splits ROOT``).

``coop`` -- CoOp ``split_zhou_*.json`` datasets (options ``dataset``,
``exclude_overlap_with``, ``max_per_class``, ``seed``, ``ood``, ``strict_names``)::

    $DATA/dtd/images/<class>/<image>              + dtd/split_zhou_DescribableTextures.json
    $DATA/food-101/images/<class>/<image>         + food-101/split_zhou_Food101.json
    $DATA/caltech-101/101_ObjectCategories/<class>/<image>
                                                  + caltech-101/split_zhou_Caltech101.json

    ``root`` is ``$DATA`` or the dataset folder; ``exclude_overlap_with="pacs"|"vlcs"``
    applies the paper's Caltech class filters (92 / 84 of 100 classes kept; lists in
    :data:`CALTECH101_DROPPED_FOR_PACS`, :data:`CALTECH101_DROPPED_FOR_VLCS`).

``imagenet`` (options ``variant``, ``classnames``, ``splits=("train", "val")``)::

    root/classnames.txt                           "<wnid> <class name>" per line
    root/{train,val}/<wnid>/<image>               (or root/images/{train,val}/...)
    variant="v2":     imagenetv2-matched-frequency-format-val/<0..999>/<image>
    variant="sketch": sketch/<wnid>/ or imagenet-sketch/images/<wnid>/
    variant="a":      imagenet-a/<wnid>/ (200 classes)
    variant="r":      imagenet-r/<wnid>/ (200 classes)

    Labels are ImageNet's class indices (line order of classnames.txt). Setup-I:
    :func:`imagenet_class_split` (the authors' 400-class draw) and
    :func:`restrict_to_classes`.

``folder`` -- plain class folders, e.g. an OOD set (options ``ood=False``, ``domain``,
``split="all"``)::

    root/<class>/<image>                 with ood=True: labels -1, no class list, and
                                         images directly in root are allowed too

Few-shot selections: :func:`few_shot` (K per class, optionally balanced over domains)
and :func:`few_shot_authors_balance` (the authors' class-agnostic draw, bug B8).

Ids such as B8 or D7 name behaviours of the authors' code; docs/deviations.md defines them.
"""

from __future__ import annotations

from croft.data.coop import (
    CALTECH101_DROPPED_FOR_PACS,
    CALTECH101_DROPPED_FOR_VLCS,
    COOP_DATASETS,
)
from croft.data.fewshot import few_shot, few_shot_authors_balance
from croft.data.imagenet import imagenet_class_split, read_classnames, restrict_to_classes
from croft.data.images import (
    IMAGE_EXTENSIONS,
    BadImageError,
    is_image_file,
    list_images,
    load_image,
)
from croft.data.index import DatasetIndex, Record
from croft.data.layouts import (
    LAYOUT_NAMES,
    LAYOUTS,
    check_layout,
    inspect_layout,
    layout_options,
    read_layout,
)
from croft.data.oodbench import find_split_file, generate_lodo_splits

__all__ = [
    "CALTECH101_DROPPED_FOR_PACS",
    "CALTECH101_DROPPED_FOR_VLCS",
    "COOP_DATASETS",
    "IMAGE_EXTENSIONS",
    "LAYOUT_NAMES",
    "LAYOUTS",
    "BadImageError",
    "DatasetIndex",
    "Record",
    "check_layout",
    "few_shot",
    "few_shot_authors_balance",
    "find_split_file",
    "generate_lodo_splits",
    "imagenet_class_split",
    "inspect_layout",
    "is_image_file",
    "layout_options",
    "list_images",
    "load_image",
    "read_classnames",
    "read_layout",
    "restrict_to_classes",
]
