"""Super-resolution networks: one architecture per file, plain torch.nn, RGB in [0, 1]."""
