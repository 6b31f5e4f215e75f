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
    "optimised-perturbation",
    "swap-test",
    "lime",
    "kernel-shap",
    "deeplift",
    "gradient-shap",
)
