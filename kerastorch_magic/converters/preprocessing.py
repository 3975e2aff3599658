"""Preprocessing layers: Rescaling, Normalization, and random augmentations (identity at inference)."""
