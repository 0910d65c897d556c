"""SR Lab: a Hydra + PyTorch Lightning platform for image super-resolution research."""
