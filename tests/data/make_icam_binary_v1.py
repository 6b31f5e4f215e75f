"""Frozen reference for tests/test_icam_tasks.py: a binary ICAM checkpoint (format version 1) and its
translate() outputs, written by the code *before* multi-class/regression ICAM (main at 1d51b76):

    PYTHONPATH=<checkout of 1d51b76> python tests/data/make_icam_binary_v1.py tests/data
"""
import sys, numpy as np, torch
torch.set_num_threads(1)
import neurointerp
print(neurointerp.__file__)
from neurointerp.models.inputs import InputSpec
from neurointerp.simulate.icam.checkpoint import icam_dict, save_icam, load_icam
from neurointerp.simulate.icam.train import fit_icam
from neurointerp.simulate.icam.apply import translate
from neurointerp.synth.lesions import make_lesions
out = sys.argv[1]
coh = make_lesions(n_per_group=6, size=24, seed=3)
spec = InputSpec((24, 24), coh.affine, space="synthetic", normalize="zscore")
x = spec.prepare(coh.images)
m, hist = fit_icam(x, coh.labels, epochs=2, batch_size=4, channels=2, seed=0)
save_icam(out + "/icam_binary_v1.pt", icam_dict(m, spec, ["0", "1"], {"seed": 0}, {"history": hist}))
ld = load_icam(out + "/icam_binary_v1.pt")
xs = x[[0, 1, 6, 7]]
r = translate(ld.model, xs, n_samples=3, seeds=[100, 101, 102, 103], keep_samples=True)
r2 = translate(ld.model, xs, n_samples=2, target=coh.labels[[0, 1, 6, 7]], seed=7)
np.savez_compressed(out + "/icam_binary_v1_expected.npz", x=xs.numpy(), **{k: v for k, v in r.items() if v is not None}, **{"label_" + k: v for k, v in r2.items() if v is not None})
print({k: (None if v is None else v.shape) for k, v in r.items()})
