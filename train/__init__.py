"""train: DoG-initialised training of timm models with Accelerate and TensorBoard (next issue)."""
