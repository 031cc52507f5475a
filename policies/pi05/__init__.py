"""π0.5 in plain PyTorch (openpi PI0Pytorch, pi05 path)."""
