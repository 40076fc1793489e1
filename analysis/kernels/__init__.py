"""Depthwise kernels out of models and files: ``extract`` (``extract_depthwise``, ``KernelSet``), ``sources``
(readers of state dicts, checkpoints, .npy / .npz with layer tables) and ``timm_models`` (timm, with the CIFAR
ConvMixers registered)."""
