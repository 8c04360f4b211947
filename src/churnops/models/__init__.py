"""The model library: candidate pipelines, hyper-parameter search, evaluation, plots, training.

Modules (import them directly; this package imports nothing heavy):

- :mod:`churnops.models.candidates`  the candidate model pipelines (encoder -> [scaler] -> estimator)
- :mod:`churnops.models.search`      search spaces from params.yaml, randomized CV search, threshold choice
- :mod:`churnops.models.evaluation`  hold-out metrics, confusion matrix, report, feature importance
- :mod:`churnops.models.plots`       ROC / PR / calibration / confusion / importance PNGs
- :mod:`churnops.models.candidate_run`  what one candidate's MLflow run records (``log_candidate_run()``)
- :mod:`churnops.models.training`    ``train_candidates()``: every candidate, tracked in MLflow
"""

LABEL_COLUMN = "churn"  # gold layer: the target as 0/1 (1 = churned)
