"""Analyse: numbers and words from the tidy table alone, and their measured error rates.

Selection on validation and the robustness claims per seed, paired tests and
corrections, the verdict's sentences, pooling across studies, robustness.json's
content, and the simulator and calibration that measure every sentence through this
same code. Pure functions of tables (numpy, pandas, scipy): it may import ``define``
only, so a script, a test or ``report --json`` can use it without Ray, MLflow or torch.
"""
