"""Names of the attribution methods (importable without torch or numpy, for the CLI help)."""

METHOD_NAMES = (
    "gradient",
    "saliency",
    "gradxinput",
    "guided-backprop",
    "deconvnet",
    "gradcam",
    "guided-gradcam",
    "integrated-gradients",
    "smoothgrad",
    "occlusion",
    "region-perturbation",
    "lrp-epsilon",
    "lrp-alphabeta",
    "cam",
    "attention",
    "optimised-perturbation",
    "swap-test",
    "lime",
    "kernel-shap",
    "deeplift",
    "gradient-shap",
)

# Not attribution maps: other output kinds of ``saliency`` (see neurointerp.attribution.featureoutputs)
FEATURE_OUTPUTS = ("feature-maps", "input-optimisation", "first-layer-filters")
