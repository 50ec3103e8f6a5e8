"""Define: what a study is, before anything runs.

The YAML config (pydantic), the arms and their roles (contenders, controls), the claims
the verdict may make (each declared once with its statistic), the names a trial's
metrics share across Ray, MLflow and the tidy table, and where a study lives. Pure
declarations: this stage imports nothing else of ``study`` but ``study.errors``, and no
training code (torch is never imported here).
"""
