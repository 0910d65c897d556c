"""Super-resolution networks: one architecture per file, plain torch.nn, input and output RGB in [0, 1]."""
