"""Fused GPU kernels (Triton), each tested against the PyTorch path it replaces."""
