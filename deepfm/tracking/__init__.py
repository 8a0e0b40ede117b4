"""What runs leave for people to read.

runs    MLflow: one run per model version, its evaluation reports, tuning studies
report  plots, and the evaluation report (metrics.json, PNGs, one self-contained HTML page)
"""
