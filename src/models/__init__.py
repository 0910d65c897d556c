"""The Lightning module that wraps SR networks, its losses and pretrained-weight import."""
