"""DeepFM click-through-rate models: config, feature map, model, readers and training."""

__version__ = "0.1.0"
