"""Naming the clusters of depthwise kernels (Babaiee et al., ICLR 2024, Sec. 3-4): the 1-D-code ``autoencoder``,
its codebook search, ``kmeans3`` for 3x3, ``classifier`` (``KernelClassifier``), ``bundle`` (the bundled weights,
``make classifiers``), ``train_classifier`` (``python -m analysis fit``), ``census`` (one census loop: a classifier
per kernel size, results per size and per layer) and ``profile`` (per-layer family mixes)."""
