"""twofour: serve 2:4-sparse PyTorch models over the KServe v2 / Triton inference protocol."""

__version__ = "0.1.0"
