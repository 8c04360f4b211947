"""The outlier detector lives in the core, :mod:`churnops.outliers`, so that serving (which may not import
monitoring) can score with it; this name stays for callers written against it before the move."""

from churnops.outliers import Anomaly, OutlierDetector, fit_from_settings, fit_outlier_detector

__all__ = ["Anomaly", "OutlierDetector", "fit_from_settings", "fit_outlier_detector"]
