"""The study platform: is a weight-decay method really robust to its hyperparameters?

A study passes through the stages in order, one folder each (docs/architecture.md):

    define  ->  run  ->  store / track  ->  analyse  ->  present      (cli.py wires them)

``define`` declares the study (config, arms, claims); ``run`` trains its trials on Ray
Tune, writing through ``store`` (the study dir, the tidy table) and ``track`` (MLflow);
``analyse`` turns the tidy table into claims, answers and their error rates; ``present``
shows them. Imports run one way: beneath to above, define < store < track < run <
analyse < present < cli (store and track sit beneath run because run writes through
them); ``tests/test_architecture.py`` holds it.
"""
