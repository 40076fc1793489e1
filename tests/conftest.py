"""Shared test set-up."""
import torch

# pytest -n 2 runs two workers on a 2-core machine: one torch thread each avoids OpenMP oversubscription, which
# slows elementwise kernels many-fold (a busy core stalls the other thread at every parallel region).
torch.set_num_threads(1)
