"""Image sources, datasets, degradations and the LightningDataModule."""
