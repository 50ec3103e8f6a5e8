"""Present: what a reader sees, drawn from the analysis.

``study report`` (report.html, robustness.csv/json, PNGs, the terminal summary, the
MLflow attachment), the Plotly figures, ``study status``, the comparison page, and the
words of every "resume with:" line. It may import every stage beneath it (``define``,
``store``, ``track``, ``run`` for a plan computed in memory, ``analyse``), never the CLI.
"""
