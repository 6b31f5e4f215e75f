"""The terms of ICAM's objective, Eq. 5 of papers/icam-vae-gan-attribution.txt::

    min_{G,E^c,E^a} max_{D,D^c}  l_Dc L^Dc_adv + l_D L^D_adv + l_DBCE L^D_BCE + l_BCE L^Ea_BCE + l_KL L^za_KL
                                 + l_M L^M_1 + l_za L^za_1 + l_rec (L^rec_1 + L^cc_1 + L^rec_2 + L^cc_2)

The supplementary (A.6) with the paper's lambda values is not part of our text; the defaults in
:data:`LAMBDAS` are those of the authors' released code (``options.py``): ``lambda_rec`` (L1 and
L2 of reconstruction and cycle) 100, ``lambda_cls_E`` 10, ``lambda_cls_G`` 5, ``lambda_cls_D`` 1,
``lambda_diff_M_reg`` 10, ``lambda_latent_l1`` 1, ``lambda_kl_za`` 0.01, GAN and content terms 1,
plus the L2 regularisation of the content latent (0.01, ``lambda_kl_zc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: default lambda weights of Eq. 5 (the authors' released defaults); keys are the CLI names
LAMBDAS = {
    "content_adv": 1.0,  # l_Dc: class-adversarial content loss (Eq. 1), E^c and D^c
    "domain_adv": 1.0,  # l_D: real/fake loss of the domain discriminator, G and D
    "domain_bce": 5.0,  # l_DBCE: D's class head on generated images (generator side)
    "domain_bce_real": 1.0,  # D's class head trained on real images
    "attr_bce": 10.0,  # l_BCE: classification layer on the attribute latent
    "kl": 0.01,  # l_KL: KL of the attribute posterior to N(0, I)
    "fa_map": 10.0,  # l_M: L1 of the FA maps M = translated - input
    "latent": 1.0,  # l_za: latent regression |E^a(G(E^c(x), z_r)) - z_r|_1 (Eq. 2)
    "rec": 100.0,  # l_rec: L1 + L2 of reconstruction (Eq. 3) and cycle (Eq. 4)
    "content_l2": 0.01,  # L2 regularisation of the content latent (§3.2)
}


def bce(logits: torch.Tensor, target) -> torch.Tensor:
    """Binary cross-entropy with logits against a constant or per-sample target."""
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(logits, float(target))
    target = target.to(logits.dtype).reshape(target.shape[0], *([1] * (logits.ndim - 1))).expand_as(logits) if target.ndim == 1 else target
    return F.binary_cross_entropy_with_logits(logits, target)


def content_adversarial(logits: torch.Tensor) -> torch.Tensor:
    """Encoder side of Eq. 1: ``-[log D^c + log(1 - D^c)] / 2``, i.e. BCE against 1/2 -- minimised
    when the content discriminator cannot tell the classes apart."""
    return bce(logits, 0.5)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(1).mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean()


# --- the paper's extensions (§5): the same terms for a multi-class or regression attribute head ----
#
# ``head_loss`` replaces each BCE of Eq. 5 that has a class target (L^Ea_BCE, L^D_BCE and the
# content discriminator's side of Eq. 1), ``confusion_loss`` the encoder side of Eq. 1:
#
#   binary      BCE with logits (unchanged)          | BCE against 1/2 (unchanged)
#   multiclass  cross-entropy over the K logits      | cross-entropy against the uniform 1/K
#   regression  smooth L1 on the standardised target | smooth L1 against 0, the training mean
#                (the authors' ``reg_loss``)          |   (the prediction that carries no information)


def head_loss(task: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of a class/target head ``out`` ``(N, n_outputs)`` against ``target`` ``(N,)``."""
    if task == "binary":
        return bce(out, target)
    if task == "multiclass":
        return F.cross_entropy(out, target.long())
    return F.smooth_l1_loss(out[:, 0], target.to(out.dtype))


def confusion_loss(task: str, out: torch.Tensor) -> torch.Tensor:
    """Encoder side of the class-adversarial content loss (Eq. 1), per task (see above)."""
    if task == "binary":
        return content_adversarial(out)
    if task == "multiclass":
        return -F.log_softmax(out, dim=1).mean(1).mean()
    return F.smooth_l1_loss(out[:, 0], torch.zeros_like(out[:, 0]))


def predicted(task: str, out: torch.Tensor) -> torch.Tensor:
    """Class index (binary: logit > 0; multi-class: arg max) or standardised value (regression)."""
    if task == "binary":
        return (out[:, 0] > 0).long()
    if task == "multiclass":
        return out.argmax(1)
    return out[:, 0]
