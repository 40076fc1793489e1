"""What both pipelines (the classifiers and the DoG-formula fit) share: ``preprocess`` (the zero-sum basis),
``labels`` (cluster names, templates, intervals), ``symmetry`` (the square's symmetries and sign) and ``synthetic``
(labelled noisy family kernels)."""
