"""Image operations shared by training, evaluation and prediction (resize, colour, tiling)."""
