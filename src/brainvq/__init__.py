"""brainvq: VQ-VAE + gated PixelCNN generative model of 2D brain MRI slices."""

__version__ = "0.1.0"
