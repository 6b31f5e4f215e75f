#!/usr/bin/env bash
# Every attribution method x (NCC with the planted truth, infidelity, deletion AUC, randomisation
# flag) on one small `synth brain` model, with the commands a user would run.
#
#   bash benchmarks/attribution_table.sh [WORK_DIR]      (about 40 min on 2 CPU cores)
#
# Writes WORK_DIR/eval/metrics.tsv (and the rest of `evaluate`'s outputs) and copies the table
# to benchmarks/results/attribution_table.tsv. Resumable: finished steps are skipped.
set -euo pipefail
WORK=${1:-/tmp/neurointerp-attribution-table}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
export OMP_NUM_THREADS=2

# 1. 160 subjects, 6 mm grid (33x39x32), strong hippocampal/ventricular effect, no confounder
[ -f "$WORK/data/cohort.csv" ] || neurointerp synth brain "$WORK/data" --n-subjects 160 --voxel-size 6 \
  --effect-size 3 --confound-strength 0 --confound-size 0 --noise 0 --template-space --seed 3

# 2. template-space images; 120 subjects to train, 40 held out
python - "$WORK" <<'EOF'
import sys
from pathlib import Path
import pandas as pd
work = Path(sys.argv[1])
frame = pd.read_csv(work / "data" / "cohort.csv", dtype=str)
frame["image"] = [str(work / "data" / p) for p in frame["template_image"]]
frame = frame.drop(columns=["template_image"])
frame.iloc[:120].to_csv(work / "train.csv", index=False)
frame.iloc[120:].to_csv(work / "test.csv", index=False)
EOF

# 3. a shallow 3D model (one conv stack of 4 channels, linear read-out), the recipe of
#    tests/test_saliency.py: `train` cannot build a model without a hidden layer, and the deeper
#    ones tried (channels 4,8, hidden 8, relu or tanh) stayed at chance on these 120 subjects
[ -f "$WORK/model/model.pt" ] || python - "$WORK" <<'EOF'
import sys
from pathlib import Path
import numpy as np, pandas as pd, torch
from neurointerp.io import load_image
from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
from neurointerp.models.classifier import ConvClassifier
from neurointerp.models.inputs import InputSpec
from neurointerp.synth.brain import SPACE
from neurointerp.train.arrays import fit_binary_on_arrays
work = Path(sys.argv[1])
torch.set_num_threads(2)
train = pd.read_csv(work / "train.csv", dtype=str)
vols = [load_image(p) for p in train["image"]]
spec = InputSpec(vols[0].shape, vols[0].affine, space=SPACE, normalize="zscore")
x = spec.prepare(np.stack([v.data for v in vols]))
y = torch.tensor((train["label"] == "patient").to_numpy(np.float32))
torch.manual_seed(0)
model = ConvClassifier(spec.model_shape, channels=(4,), kernel_size=3, hidden=())
fit_binary_on_arrays(model, x, y, epochs=20, batch_size=8, lr=3e-3, weight_decay=1e-3)
(work / "model").mkdir(exist_ok=True)
save_checkpoint(work / "model" / "model.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "shallow3d", {"participant_ids": list(train["participant_id"])}, {}))
EOF

# 4. evaluate every method on 8 held-out subjects (defaults, except the sample counts below)
TRUTH="$WORK/data/truth/space-MNI152NLin2009aSym_desc-disease_logjacobian.nii.gz"
METHODS=""
for m in gradient saliency gradxinput guided-backprop deconvnet gradcam guided-gradcam integrated-gradients \
         smoothgrad occlusion region-perturbation lrp-epsilon lrp-alphabeta optimised-perturbation swap-test \
         lime kernel-shap deeplift gradient-shap; do METHODS="$METHODS --method $m"; done
[ -f "$WORK/eval/metrics.tsv" ] || neurointerp evaluate "$WORK/model/model.pt" "$WORK/test.csv" "$WORK/eval" $METHODS \
  --ground-truth "$TRUTH" --n-subjects 8 --threads 2 --seed 0 \
  --param window=4 --param stride=4 --param n_samples=500
mkdir -p "$HERE/results"
cp "$WORK/eval/metrics.tsv" "$HERE/results/attribution_table.tsv"
echo "wrote $HERE/results/attribution_table.tsv"
