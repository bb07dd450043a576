"""Triton kernels, each with a host wrapper and a torch reference; nothing else."""
