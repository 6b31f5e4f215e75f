"""The methods paragraph of a run report: boilerplate generated from the options the run used,
with citations of the methods and papers behind them and the software versions (read when the
report is written, like fMRIPrep's boilerplate). Papers of the design are in ``shared/papers``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from neurointerp.report.html import Section, esc

#: key -> (in-text citation, full reference)
CITATIONS: dict[str, tuple[str, str]] = {
    "avants2011": ("Avants et al. 2011", "Avants BB, Tustison NJ, Song G, Cook PA, Klein A, Gee JC. A reproducible evaluation of ANTs similarity metric performance in brain image registration. NeuroImage 54(3):2033-2044, 2011."),
    "tustison2010": ("Tustison et al. 2010", "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: improved N3 bias correction. IEEE Transactions on Medical Imaging 29(6):1310-1320, 2010."),
    "fonov2011": ("Fonov et al. 2011", "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate atlases for pediatric studies. NeuroImage 54(1):313-327, 2011 (the MNI152 2009 templates)."),
    "simonyan2014": ("Simonyan et al. 2014", "Simonyan K, Vedaldi A, Zisserman A. Deep inside convolutional networks: visualising image classification models and saliency maps. ICLR workshop, 2014."),
    "springenberg2015": ("Springenberg et al. 2015", "Springenberg JT, Dosovitskiy A, Brox T, Riedmiller M. Striving for simplicity: the all convolutional net. ICLR workshop, 2015."),
    "zeiler2014": ("Zeiler & Fergus 2014", "Zeiler MD, Fergus R. Visualizing and understanding convolutional networks. ECCV, 2014."),
    "selvaraju2017": ("Selvaraju et al. 2017", "Selvaraju RR, Cogswell M, Das A, Vedantam R, Parikh D, Batra D. Grad-CAM: visual explanations from deep networks via gradient-based localization. ICCV, 2017."),
    "sundararajan2017": ("Sundararajan et al. 2017", "Sundararajan M, Taly A, Yan Q. Axiomatic attribution for deep networks. ICML, 2017."),
    "smilkov2017": ("Smilkov et al. 2017", "Smilkov D, Thorat N, Kim B, Viegas F, Wattenberg M. SmoothGrad: removing noise by adding noise. arXiv:1706.03825, 2017."),
    "bach2015": ("Bach et al. 2015", "Bach S, Binder A, Montavon G, Klauschen F, Mueller KR, Samek W. On pixel-wise explanations for non-linear classifier decisions by layer-wise relevance propagation. PLoS ONE 10(7):e0130140, 2015."),
    "shrikumar2017": ("Shrikumar et al. 2017", "Shrikumar A, Greenside P, Kundaje A. Learning important features through propagating activation differences. ICML, 2017."),
    "lundberg2017": ("Lundberg & Lee 2017", "Lundberg SM, Lee SI. A unified approach to interpreting model predictions. NeurIPS, 2017."),
    "ribeiro2016": ("Ribeiro et al. 2016", "Ribeiro MT, Singh S, Guestrin C. \"Why should I trust you?\": explaining the predictions of any classifier. KDD, 2016."),
    "fong2017": ("Fong & Vedaldi 2017", "Fong RC, Vedaldi A. Interpretable explanations of black boxes by meaningful perturbation. ICCV, 2017."),
    "nigri2020": ("Nigri et al. 2020", "Nigri E, Ziviani N, Cappabianco F, Antunes A, Veloso A. Explainable deep CNNs for MRI-based diagnosis of Alzheimer's disease. IJCNN, 2020."),
    "zhou2016": ("Zhou et al. 2016", "Zhou B, Khosla A, Lapedriza A, Oliva A, Torralba A. Learning deep features for discriminative localization. CVPR, 2016."),
    "schlemper2019": ("Schlemper et al. 2019", "Schlemper J, Oktay O, Schaap M, Heinrich M, Kainz B, Glocker B, Rueckert D. Attention gated networks: learning to leverage salient regions in medical images. Medical Image Analysis 53:197-207, 2019."),
    "review": ("Thibeau-Sutre et al. 2023", "Thibeau-Sutre E, Collin S, Burgos N, Colliot O. Interpretability of machine learning methods applied to neuroimaging. In: Machine Learning for Brain Disorders (Colliot O, ed.), Neuromethods 197, Springer, 2023 (shared/papers/interpretability-review-neuroimaging)."),
    "zhao2019": ("Zhao et al. 2019", "Zhao Q, Adeli E, Pfefferbaum A, Sullivan EV, Pohl KM. Confounder-aware visualization of ConvNets. Machine Learning in Medical Imaging (MLMI), LNCS 11861:328-336, 2019 (shared/papers/confounder-aware-saliency)."),
    "liu2021": ("Liu et al. 2021", "Liu Z, Adeli E, Pohl KM, Zhao Q. Going beyond saliency maps: training deep models to interpret deep models. Information Processing in Medical Imaging (IPMI), 2021 (shared/papers/simulator-networks-jacobian)."),
    "bass2020": ("Bass et al. 2020", "Bass C, da Silva M, Sudre C, Tudosiu PD, Smith SM, Robinson EC. ICAM: interpretable classification via disentangled representations and feature attribution mapping. NeurIPS, 2020 (shared/papers/icam-vae-gan-attribution)."),
    "baumgartner2018": ("Baumgartner et al. 2018", "Baumgartner CF, Koch LM, Tezcan KC, Ang JX, Konukoglu E. Visual feature attribution using Wasserstein GANs. CVPR, 2018."),
    "gbp_rodent": ("the guided-backprop background-removal paper", "Improving a rodent brain tissue segmentation U-Net by interpreting it: guided back-propagation to remove background (shared/papers/gbp-background-removal-segmentation)."),
    "ronneberger2015": ("Ronneberger et al. 2015", "Ronneberger O, Fischer P, Brox T. U-Net: convolutional networks for biomedical image segmentation. MICCAI, 2015."),
    "adebayo2018": ("Adebayo et al. 2018", "Adebayo J, Gilmer J, Muelly M, Goodfellow I, Hardt M, Kim B. Sanity checks for saliency maps. NeurIPS, 2018."),
    "yeh2019": ("Yeh et al. 2019", "Yeh CK, Hsieh CY, Suggala AS, Inouye DI, Ravikumar P. On the (in)fidelity and sensitivity of explanations. NeurIPS, 2019."),
    "winkler2014": ("Winkler et al. 2014", "Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE. Permutation inference for the general linear model. NeuroImage 92:381-397, 2014."),
    "benjamini1995": ("Benjamini & Hochberg 1995", "Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful approach to multiple testing. J R Stat Soc B 57(1):289-300, 1995."),
    "hanley1982": ("Hanley & McNeil 1982", "Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating characteristic (ROC) curve. Radiology 143(1):29-36, 1982."),
    "li2018": ("Li et al. 2018", "Li F, Morgan KL, Zaslavsky AM. Balancing covariates via propensity score weighting. J Am Stat Assoc 113(521):390-400, 2018."),
    "kingma2015": ("Kingma & Ba 2015", "Kingma DP, Ba J. Adam: a method for stochastic optimization. ICLR, 2015."),
}

#: attribution method -> citation keys
METHOD_CITATIONS: dict[str, tuple[str, ...]] = {
    "gradient": ("simonyan2014",), "saliency": ("simonyan2014", "zhao2019"), "gradxinput": ("shrikumar2017",),
    "guided-backprop": ("springenberg2015",), "deconvnet": ("zeiler2014",), "gradcam": ("selvaraju2017",),
    "guided-gradcam": ("selvaraju2017", "springenberg2015"), "integrated-gradients": ("sundararajan2017",),
    "smoothgrad": ("smilkov2017",), "occlusion": ("zeiler2014",), "region-perturbation": ("review",),
    "lrp-epsilon": ("bach2015",), "lrp-alphabeta": ("bach2015",), "cam": ("zhou2016",), "attention": ("schlemper2019",),
    "optimised-perturbation": ("fong2017",), "swap-test": ("nigri2020",), "lime": ("ribeiro2016",), "kernel-shap": ("lundberg2017",),
    "deeplift": ("shrikumar2017",), "gradient-shap": ("lundberg2017",),
}

#: distributions whose versions the methods paragraph and the provenance give
PACKAGES = (("torch", "PyTorch"), ("antspyx", "ANTsPy"), ("nibabel", "nibabel"), ("nilearn", "nilearn"), ("numpy", "NumPy"), ("scipy", "SciPy"), ("pandas", "pandas"), ("matplotlib", "matplotlib"))


def versions() -> dict[str, str]:
    """Versions of neurointerp, Python and the libraries, read now (no import of the libraries)."""
    import platform
    from importlib import metadata

    from neurointerp._version import __version__

    out = {"neurointerp": __version__, "Python": platform.python_version()}
    for dist, name in PACKAGES:
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cite(*keys: str) -> str:
    """``(Selvaraju et al. 2017; Bach et al. 2015)``."""
    return "(" + citet(*keys) + ")"


def citet(*keys: str) -> str:
    """``Selvaraju et al. 2017`` (in running text)."""
    return "; ".join(CITATIONS[k][0] for k in keys if k in CITATIONS)


def methods_section(view, fn: Callable | None) -> Section:
    """The methods paragraph (the command's own, else a generic one), software and references."""
    text, keys = ("", [])
    if fn is not None:
        text, keys = fn(view)
    if not text:
        text = f"Outputs were computed with `neurointerp {view.command}` with the options listed under Provenance."
    v = versions()
    libs = ", ".join(f"{k} {v[k]}" for k in ("PyTorch", "ANTsPy", "nibabel", "nilearn", "NumPy", "SciPy") if v.get(k) != "not installed")
    software = f"Software: neurointerp {view.record.get('version', v['neurointerp'])} (Python {v['Python']}; {libs})."
    keys = list(dict.fromkeys(k for k in keys if k in CITATIONS))
    body = "".join(f"<p>{esc(p)}</p>" for p in text.strip().split("\n\n")) + f"<p>{esc(software)}</p>"
    body += ("<p class='note'>This paragraph is generated from the options of this run (like fMRIPrep's boilerplate); "
             "you may copy it into a manuscript.</p>")
    if keys:
        refs = sorted((CITATIONS[k][1] for k in keys), key=lambda s: s.lower())
        body += "<h3>References</h3><ol class='refs'>" + "".join(f"<li>{esc(r)}</li>" for r in refs) + "</ol>"
    return Section("Methods", html=body, anchor="methods")


def method_list(methods: Any) -> list[str]:
    if methods is None:
        return []
    if isinstance(methods, str):
        return [m for m in re.split(r"[,\s]+", methods) if m]
    return [str(m) for m in methods]
