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

# methods whose maps a confounder feature gate (partial back-propagation, confound/gate.py)
# cannot make confounder-free: perturbations run forward passes only, LRP and DeepLIFT propagate
# their own rules layer by layer, the attention maps are read from the forward pass, and the optimised perturbation's mask would only be optimised
# with a partial gradient of the full score. `saliency --confounder-mask` refuses them.
NOT_GATEABLE = (
    "occlusion",
    "region-perturbation",
    "lrp-epsilon",
    "lrp-alphabeta",
    "optimised-perturbation",
    "swap-test",
    "lime",
    "kernel-shap",
    "deeplift",
    "attention",
)
