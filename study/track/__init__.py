"""Track: MLflow, one experiment per study, a parent run per study, a child run per trial.

The client with its retries and deadline, the study's runs and summary runs, its saved
views in MLflow's UI, and a comparison's own run. It may import ``define`` and
``store``; it never imports the sweep, the analysis or the pages (what it logs is
handed to it).
"""
