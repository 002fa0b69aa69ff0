"""Which images show the same cell, and which were cut from one smear field.

- `signatures`: what the searches know of each image (hashes, thumbnail, views, embeddings), computed
  where it is decoded;
- `duplicates`: exact and near duplicates (re-encoded, shifted, re-lit, rescaled, turned), dup_groups;
- `smear_fields`: crops that share part of one smear field, field_groups;
- `groups`: both searches in order, as a build runs them; `report`: the CSV of confirmed pairs;
- `vector_search`, `correlation`, `components`: the nearest-neighbour search, the masked correlation
  and the pair-graph components the searches share.

docs/dedup.md has the methods and the measurements behind every threshold.
"""

from hema.dedup.groups import ImageGroups, group_images
from hema.dedup.signatures import (
    ImageSignature,
    SignatureTable,
    signature,
    signature_batch,
)

__all__ = ["ImageGroups", "ImageSignature", "SignatureTable", "group_images", "signature", "signature_batch"]
