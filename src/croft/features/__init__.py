"""Cached features: the feature-file schema (and, above it, the keyed store)."""

from croft.features.files import FeatureSet, load_features, save_features

__all__ = ["FeatureSet", "load_features", "save_features"]
