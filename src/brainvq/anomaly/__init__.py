"""Unsupervised anomaly detection with the VQ-VAE and its PixelCNN prior (``brainvq anomaly``)."""
