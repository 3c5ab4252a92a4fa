"""Reading the ``categories`` of a COCO annotation file without parsing the rest of it (a few kB
in a file of up to hundreds of MB)."""
import json
import mmap
import re
from typing import List, Optional

_CATEGORIES = re.compile(rb'"categories"\s*:\s*\[')
_MAX_CATEGORIES_BYTES = 64 << 20


def read_coco_categories(path: str) -> Optional[List[dict]]:
    """The ``categories`` list of a COCO annotation file, without parsing the rest.

    The file is memory-mapped and searched for the ``"categories": [`` key (from the end: COCO
    writes it last); only the list itself is decoded.

    Args:
        path (str): A local COCO annotation file.

    Returns:
        list[dict] | None: The categories (each with ``id`` and ``name``), or None when they
        cannot be found this way.
    """
    try:
        with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            starts = [m.end() - 1 for m in _CATEGORIES.finditer(data)]
            decoder = json.JSONDecoder()
            for start in reversed(starts):
                found = _decode_list(data, start, decoder)
                if found is not None:
                    return found
    except (OSError, ValueError):
        return None
    return None


def _decode_list(data: mmap.mmap, start: int, decoder: json.JSONDecoder) -> Optional[List[dict]]:
    size = 1 << 16
    while True:
        chunk = data[start:start + size].decode('utf-8', errors='replace')
        try:
            value, _ = decoder.raw_decode(chunk)
        except json.JSONDecodeError:
            if start + size >= len(data) or size >= _MAX_CATEGORIES_BYTES:
                return None
            size *= 4
            continue
        ok = isinstance(value, list) and all(isinstance(c, dict) and 'id' in c and 'name' in c
                                             for c in value)
        return value if ok else None
