"""Cached features: the feature-file schema and, above it, the keyed extraction store."""

from croft.features.extract import ViewSpec, extract_text_features, view_seed
from croft.features.files import FeatureSet, load_features, save_features
from croft.features.shards import kept_indices
from croft.features.store import (
    ExtractionInterrupted,
    default_cache_dir,
    extract_features,
    store_manifest,
    write_feature_file,
)

__all__ = [
    "ExtractionInterrupted",
    "FeatureSet",
    "ViewSpec",
    "default_cache_dir",
    "extract_features",
    "extract_text_features",
    "kept_indices",
    "load_features",
    "save_features",
    "store_manifest",
    "view_seed",
    "write_feature_file",
]
