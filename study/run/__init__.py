"""Run: the sweep on Ray Tune and one trial, from data to model to optimizer to epochs.

The sweep (grid or Optuna), the trainable and its reporter, data and models, weights
the platform pretrains, the plan (each arm's decay mass, measured on the model), the
local Ray and its warden, and what Ray prints. It writes through ``store`` and ``track``
and may import them and ``define``; it never imports the analysis or the pages.
"""
