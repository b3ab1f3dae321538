"""MNIST CNN and denoising-autoencoder pipeline: a small library driven by DVC stages."""

__version__ = "0.1.0"
