"""neurointerp: interpretable deep learning on brain MRI.

Every command of the ``neurointerp`` CLI is also a plain Python function with the same
arguments (their options are declared once, in :mod:`neurointerp.options`):

========================  ==================================================================
``synth ...``             :mod:`neurointerp.synth.gaussians` (``synth_gaussians``) and its siblings
                          ``brain``, ``lesions``, ``rodent``, ``spikein``
``preprocess``            :mod:`neurointerp.preprocess.pipeline` (``run_preprocess``)
``train``                 :mod:`neurointerp.train.loop` (``train``)
``saliency``              :mod:`neurointerp.attribution.pipeline` (``run_saliency``); single
                          arrays: :mod:`neurointerp.attribution.registry` (``attribute``)
``confound-test``         :mod:`neurointerp.confound.run` (``run_confound_test``)
``simulate ...``          :mod:`neurointerp.simulate` (``train_simulator``, ``apply_simulator``)
``jacobian``              :mod:`neurointerp.simulate.jacobian` (``jacobian_maps``)
``group-map``             :mod:`neurointerp.group.api` (``group_map``)
``evaluate``              :mod:`neurointerp.evaluate.run` (``run_evaluate``)
``segment-bg ...``        :mod:`neurointerp.segment_bg` (``run_train``, ``run_apply``)
``demo``                  :mod:`neurointerp.demo` (``run_demo``)
========================  ==================================================================

Cohort tables (:mod:`neurointerp.io`, ``read_cohort``) may be given as a file or as a pandas
DataFrame. Heavy dependencies (torch, ants) are imported lazily.
"""

from neurointerp._version import __version__

__all__ = ["__version__"]
