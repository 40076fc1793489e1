"""analysis: find the paper's kernel clusters in trained depthwise convolutions.

Babaiee, Kiasari, Rus, Grosu, "Unveiling the Unseen: Identifiable Clusters in Trained Depthwise Convolutional
Kernels", ICLR 2024, Sections 3-5: extract depthwise kernels, preprocess them onto the zero-sum sphere, map them to a
1-D code with an autoencoder, classify through the decoded codebook, name the clusters, draw the figures.

>>> from analysis import KernelClassifier, extract_depthwise
>>> clf = KernelClassifier.pretrained(7)
>>> result = clf.classify(extract_depthwise("timm:convnext_tiny.fb_in1k")[7].kernels)
>>> result.proportions()["on_centre"]

The sub-packages go one way: ``core`` and ``kernels`` <- ``classify`` and ``fit`` <- ``report`` <- ``__main__``.
Every public name is importable from here; each is loaded on first use, so that a light part (the figure style a
timeline needs) does not pull in torch and scikit-learn.
"""
from __future__ import annotations

from dog_init.lazy import lazy_exports

# name -> module (relative to this package) that defines it
_EXPORTS = {
    "classify.classifier": ("KernelClassifier", "ClassificationResult", "DEFAULT_THRESHOLDS", "available_pretrained"),
    "classify.census": ("take_census", "ClassifierChoice", "Census", "LayerCensus", "SizeCensus"),
    "classify.autoencoder": ("AutoencoderConfig", "KernelAutoencoder", "fit_autoencoder"),
    "classify.kmeans3": ("fit_kmeans3", "minmax_encode"),
    "classify.profile": ("measure_profile",),
    "kernels.extract": ("extract_depthwise", "load_kernel_files", "KernelSet", "KernelGroup", "nonfinite_warning"),
    "kernels.sources": ("read_state_dict",),
    "kernels.timm_models": ("create_model",),
    "core.labels": ("LABELS", "OTHER", "UNCLUSTERED", "Interval", "match_templates", "template_bank"),
    "core.preprocess": ("basis", "centre_normalise", "to_basis", "from_basis"),
    "fit.fitting": ("fit_families", "FamilyFit"),
    "report.folder": ("run_report",),
    "report.figures": ("kernel_mosaic", "layer_proportions_figure"),
    "report.style": ("PALETTE", "DEGENERATE", "colour", "pretty", "panel_grid", "legend_beside",
                     "save_figure"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
