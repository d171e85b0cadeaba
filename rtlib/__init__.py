"""rtlib: R-Transformer, its baselines, the paper's four tasks and one training engine."""
__version__ = "0.1.0"
