"""analysis: find the paper's kernel clusters in trained depthwise convolutions.

Babaiee, Kiasari, Rus, Grosu, "Unveiling the Unseen: Identifiable Clusters in Trained Depthwise Convolutional
Kernels", ICLR 2024, Sections 3-5: extract depthwise kernels, preprocess them onto the zero-sum sphere, map them to a
1-D code with an autoencoder, classify through the decoded codebook, name the clusters, draw the figures.

>>> from analysis import KernelClassifier, extract_depthwise
>>> clf = KernelClassifier.pretrained(7)
>>> result = clf.classify(extract_depthwise("timm:convnext_tiny.fb_in1k")[7].kernels)
>>> result.proportions()["on_centre"]
"""
from .autoencoder import AutoencoderConfig, KernelAutoencoder, fit_autoencoder
from .classifier import DEFAULT_THRESHOLDS, ClassificationResult, KernelClassifier, available_pretrained
from .fit import FamilyFit, fit_families
from .kernels import KernelGroup, KernelSet, extract_depthwise, load_kernel_files
from .kmeans3 import fit_kmeans3, minmax_encode
from .labels import LABELS, OTHER, UNCLUSTERED, Interval, match_templates, template_bank
from .preprocess import basis, centre_normalise, from_basis, to_basis

__all__ = [
    "KernelClassifier", "ClassificationResult", "DEFAULT_THRESHOLDS", "available_pretrained",
    "extract_depthwise", "load_kernel_files", "KernelSet", "KernelGroup",
    "AutoencoderConfig", "KernelAutoencoder", "fit_autoencoder", "fit_kmeans3", "minmax_encode",
    "LABELS", "OTHER", "UNCLUSTERED", "Interval", "match_templates", "template_bank",
    "basis", "centre_normalise", "to_basis", "from_basis",
    "fit_families", "FamilyFit",
]
