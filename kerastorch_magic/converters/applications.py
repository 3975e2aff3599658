"""Custom layers that keras.applications defines (CustomScaleLayer, LayerScale)."""
