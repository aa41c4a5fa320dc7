"""wgan: train Wasserstein GANs on image collections, from LSUN bedrooms to your own photos."""

__version__ = "0.1.0"
