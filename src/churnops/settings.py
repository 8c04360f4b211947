"""Typed settings: `params.yaml` (what DVC tracks) plus environment variables (URIs and secrets).

Everything is validated once, here, so a bad configuration fails with a message that names the key.
Nothing happens at import: call :func:`load_settings`.

Environment variables
---------------------
CHURNOPS_HOME          project root holding data/, reports/, mlflow/ (default: current directory)
CHURNOPS_PARAMS        path of the params file (default: $CHURNOPS_HOME/params.yaml)
MLFLOW_TRACKING_URI    tracking/registry store (default: sqlite:///$CHURNOPS_HOME/mlflow/mlflow.db)
CHURNOPS_ARTIFACT_ROOT where new experiments keep artifacts (default: $CHURNOPS_HOME/mlflow/artifacts,
                       or an s3://bucket/prefix)
CHURNOPS_DVC_REMOTE    default DVC remote (default: $CHURNOPS_HOME/.dvc-storage, or s3://bucket/prefix)
REDIS_URL              feature store and prediction log (default: redis://127.0.0.1:6379/0)
CHURNOPS_DATABASE_URL  batch scores table and analytics marts (default: sqlite:///$CHURNOPS_HOME/data/scores/scores.db)
CHURNOPS_TRANSACTIONS_DATABASE_URL
                       PostgreSQL database that computes the transactional source's features (the clean lines
                       are loaded there first); unset: the embedded DuckDB does
CHURNOPS_AIRFLOW_URL, CHURNOPS_AIRFLOW_USER, CHURNOPS_AIRFLOW_PASSWORD
                       Airflow REST API that drift monitoring triggers retraining through (read by
                       monitoring.retrain when it triggers; secrets never enter Settings)
CHURNOPS_PREDICT_TOKENS(_FILE), CHURNOPS_OPERATOR_TOKENS(_FILE)
                       bearer tokens of the serving API (read by serving.auth; secrets never enter Settings)
monitoring.alerts.channels[].url_env
                       names the variable holding each alert webhook URL (e.g. CHURNOPS_SLACK_WEBHOOK_URL)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)


class SettingsError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericColumn(_Strict):
    min: float | None = None
    max: float | None = None
    integer: bool = False
    field: str | None = None  # API field name; default: column name in lower case

    @model_validator(mode="after")
    def _range(self) -> NumericColumn:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Target(_Strict):
    column: str
    positive: str
    negative: str

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _label_text(cls, value: Any) -> Any:
        if isinstance(value, bool):  # `positive: true` unquoted (Yes/No/On/Off stay text: see load_params)
            raise ValueError(f"YAML reads an unquoted {str(value).lower()} as a boolean, not a label: write "
                             f"the label as the data spells it, in quotes (e.g. positive: \"{value}\")")
        if isinstance(value, int):  # labels 1 / 0: the table holds them as the text "1" / "0"
            return str(value)
        return value


class MissingPolicy(_Strict):
    """What a feature column's blank cells become (params.yaml ``schema.missing.<column>``).

    Columns without a policy refuse blanks (validation error). With one, blanks are filled inside the model's
    preprocessing artefact (FeatureEncoder), from the training rows: ``median`` (numeric columns),
    ``most_frequent`` (any column) or ``constant`` (``value``); ``indicator: true`` adds a 0/1 feature
    ``<column>_missing``. /predict then accepts null (or no value) for the column and fills it the same way.
    """

    impute: Literal["median", "most_frequent", "constant"]
    value: float | str | None = None
    indicator: bool = False

    @model_validator(mode="after")
    def _value_with_constant(self) -> MissingPolicy:
        if (self.impute == "constant") != (self.value is not None):
            raise ValueError("impute: constant needs a value (and only constant takes one)")
        return self


class SchemaSettings(_Strict):
    """The data contract: which columns exist, what they may hold, which one is the label."""

    id_column: str
    target: Target
    drop_columns: list[str] = Field(default_factory=list)
    numeric: dict[str, NumericColumn]
    categorical: dict[str, list[str]]
    ratios: dict[str, tuple[str, str]] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)  # column -> API field name overrides
    missing: dict[str, MissingPolicy] = Field(default_factory=dict)  # column -> policy; absent: refuse blanks
    # a date column saying when a row was observed (a customer at a cut-off): kept through validation, never
    # a feature; with it an id may repeat at other dates and the hold-out is the latest date's rows
    time_column: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SchemaSettings:
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"columns declared both numeric and categorical: {sorted(overlap)}")
        for name, (num, den) in self.ratios.items():
            for col in (num, den):
                if col not in self.numeric:
                    raise ValueError(f"ratio {name!r} uses {col!r}, which is not a numeric column")
        for col, cats in self.categorical.items():
            if not cats:
                raise ValueError(f"categorical column {col!r} has no allowed categories")
            if len(set(cats)) != len(cats):
                raise ValueError(f"categorical column {col!r} lists a category twice")
        reserved = {self.id_column, self.target.column, *self.drop_columns}
        if self.time_column is not None:
            if self.time_column in reserved:
                raise ValueError(f"time_column {self.time_column!r} is also the id, target or a dropped "
                                 f"column")
            reserved.add(self.time_column)
        clash = reserved & (set(self.numeric) | set(self.categorical))
        if clash:
            raise ValueError(f"id/time/target/dropped columns cannot be features: {sorted(clash)}")
        for col, policy in self.missing.items():
            self._check_policy(col, policy)
        return self

    def _check_policy(self, col: str, policy: MissingPolicy) -> None:
        where = f"schema.missing.{col}"
        if col not in self.numeric and col not in self.categorical:
            keyed = col in (self.id_column, self.target.column)
            never = " (id and label are never optional)" if keyed else ""
            raise ValueError(f"{where}: {col!r} is not a feature column{never}")
        if col in self.categorical:
            if policy.impute == "median":
                raise ValueError(f"{where}: median needs a numeric column; use most_frequent or constant")
            if policy.value is not None and policy.value not in self.categorical[col]:
                raise ValueError(f"{where}: value {policy.value!r} is not one of {self.categorical[col]}")
            return
        if policy.value is None:
            return
        spec = self.numeric[col]
        if isinstance(policy.value, str):
            raise ValueError(f"{where}: value {policy.value!r} must be a number for a numeric column")
        low = -float("inf") if spec.min is None else spec.min
        high = float("inf") if spec.max is None else spec.max
        if not low <= policy.value <= high or (spec.integer and float(policy.value) != int(policy.value)):
            raise ValueError(f"{where}: value {policy.value} is not a valid {col} "
                             f"([{spec.min}, {spec.max}]{', integer' if spec.integer else ''})")

    @property
    def feature_columns(self) -> list[str]:
        """Raw feature columns, numeric first, in declaration order."""
        return [*self.numeric, *self.categorical]

    @property
    def key_columns(self) -> list[str]:
        """What names a row: the id, and the time column when there is one."""
        return [self.id_column, *([self.time_column] if self.time_column else [])]

    @property
    def required_columns(self) -> list[str]:
        return [*self.key_columns, *self.feature_columns, self.target.column]

    def api_field(self, column: str) -> str:
        """The name an application uses for a column (`Customer_Age` -> `customer_age`)."""
        spec = self.numeric.get(column)
        if spec is not None and spec.field:
            return spec.field
        return self.fields.get(column, column.lower())

    @property
    def api_fields(self) -> dict[str, str]:
        """API field name -> column, for every feature column."""
        return {self.api_field(c): c for c in self.feature_columns}


class DemoData(_Strict):
    rows: int = Field(10_000, gt=0)
    seed: int = 42


class DataSettings(_Strict):
    raw: Path
    validated: Path
    features_dir: Path
    reports_dir: Path
    demo: DemoData = DemoData()


class ValidateSettings(_Strict):
    min_rows: int = Field(200, ge=1)
    min_class_count: int = Field(30, ge=1)
    # a class this rare is flagged (a warning): its hold-out share is too small to judge a model on
    rare_class_count: int = Field(50, ge=1)
    rare_class_fraction: float = Field(0.02, ge=0, le=1)
    # rows repeating another row's features (under another id): reported; above this share an error
    max_duplicate_fraction: float = Field(0.05, ge=0, le=1)
    max_missing_fraction: float = Field(0.5, ge=0, le=1)  # columns with a missing-value policy only
    unknown_category: Literal["error", "warn"] = "error"
    max_examples: int = Field(5, ge=1)


class FeatureSettings(_Strict):
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


Candidate = Literal["logistic_regression", "random_forest", "xgboost"]


class SearchSettings(_Strict):
    """How the hyper-parameter search spends its budget (params.yaml ``train.search``; models/search.py)."""

    max_rows: int = Field(20_000, ge=100)  # the search sees a stratified sample of at most this many rows
    halving_factor: int = Field(3, ge=2)  # each round keeps the best 1/factor of the settings, factor x rows
    min_rows: int = Field(1_000, ge=50)  # rows of a halving round, at least
    early_stopping_rounds: int = Field(100, ge=1)  # XGBoost: trees without gain on the validation fold


class TrainSettings(_Strict):
    candidates: list[Candidate]
    cv_folds: int = Field(5, ge=2)
    seed: int = 42
    n_jobs: int = Field(2, ge=1)
    scoring: Literal["roc_auc", "average_precision", "f1"] = "average_precision"
    search_iterations: dict[Candidate, int]
    search_spaces: dict[Candidate, dict[str, dict[str, Any]]]
    search: SearchSettings = SearchSettings()

    @model_validator(mode="after")
    def _every_candidate_has_a_space(self) -> TrainSettings:
        if not self.candidates:
            raise ValueError("at least one candidate is required")
        for c in self.candidates:
            if c not in self.search_spaces:
                raise ValueError(f"candidate {c!r} has no search space under train.search_spaces")
            if self.search_iterations.get(c, 0) < 1:
                raise ValueError(f"candidate {c!r} needs train.search_iterations >= 1")
        return self


class EvaluateSettings(_Strict):
    tune_threshold: bool = True


class RegisterSettings(_Strict):
    model_name: str = "churn-classifier"
    metric: Literal["roc_auc", "average_precision", "f1"] = "roc_auc"
    promotion_margin: float = Field(0.001, ge=0)  # the smallest gain worth a new champion
    significance: float = Field(0.05, gt=0, lt=0.5)  # the gain's (1 - significance) interval must exceed 0
    min_positives: int = Field(30, ge=1)  # fewer hold-out rows of either class: the gate refuses to decide
    bootstrap_rounds: int = Field(1000, ge=100)  # paired bootstrap (metrics other than roc_auc)
    # a new table is flagged when it moved far from the champion's: a feature beyond this many times the
    # drift monitor's effect-size floors, or a positive-label rate changed by more than this share of itself
    data_shift_factor: float = Field(3.0, gt=0)
    max_label_rate_change: float = Field(0.5, gt=0)


class RiskLevels(_Strict):
    high: float = Field(0.7, gt=0, lt=1)
    medium: float = Field(0.4, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskLevels:
        if self.medium >= self.high:
            raise ValueError("serving.risk_levels.medium must be below serving.risk_levels.high")
        return self

    def level(self, probability: float) -> str:
        if probability > self.high:
            return "High"
        if probability > self.medium:
            return "Medium"
        return "Low"


class ServingSettings(_Strict):
    risk_levels: RiskLevels = RiskLevels()
    max_batch: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    reload_interval_s: float = Field(10, gt=0)
    prediction_log_maxlen: int = Field(1_000_000, ge=1000)
    prediction_log_buffer: int = Field(10_000, ge=1)  # rows held in memory while Redis is unreachable
    explain_top_k: int = Field(5, ge=1)  # features listed on each side by ?explain=true
    # gunicorn (`churnops serve`): sync workers when threads == 1, gthread otherwise
    workers: int = Field(2, ge=1)
    threads: int = Field(1, ge=1)
    timeout_s: int = Field(30, ge=1)  # a worker silent this long is killed and replaced
    graceful_timeout_s: int = Field(30, ge=1)  # in-flight requests get this long on shutdown/restart
    keepalive_s: int = Field(5, ge=0)
    # nginx buffers whole requests before the workers (serving/front.py); "none" only behind another
    # buffering proxy
    front: Literal["nginx", "none"] = "nginx"
    client_timeout_s: float = Field(10, gt=0)  # headers within this; the body with at most this between reads


class FeatureStoreSettings(_Strict):
    namespace: str = Field("churnops", pattern=r"^[A-Za-z0-9_.-]+$")
    chunk_size: int = Field(5000, ge=1)
    connect_timeout_s: float = Field(0.5, gt=0)
    read_timeout_s: float = Field(0.5, gt=0)  # per command on the serving path (lookups, prediction log)
    push_timeout_s: float = Field(60, gt=0)  # per command while pushing (a chunk's replies)


class BatchSettings(_Strict):
    """Batch scoring (`churnops score`, the churn_batch_scoring DAG): where scores go, what is logged."""

    table: str = Field("churn_scores", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # in CHURNOPS_DATABASE_URL
    export_dir: Path = Path("data/scores")  # Parquet export of every run
    top_n: int = Field(20, ge=0)  # highest-risk customers listed in the run's log
    keep_runs: int = Field(30, ge=1)  # scoring runs kept (table rows and Parquet files); older ones go
    chunk_size: int = Field(10_000, ge=100)  # rows per INSERT batch


class ActionRule(_Strict):
    """A retention action and the risk drivers that call for it (a driver: a feature column or a ratio)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # stable key (marts, exports)
    action: str  # what the retention team reads: "Engagement offer"
    priority: int = Field(ge=1)  # 1 first: among the rules a customer's drivers match, the lowest wins
    drivers: list[str] = Field(min_length=1)


# The retention playbook the analytics section defaults to, written for the reference schema (BankChurners).
# Names another schema lacks are skipped with a warning (Params._analytics_fit_the_schema), so a new table
# works by editing `schema` only; the same keys set in params.yaml replace these and must fit the schema.
DEFAULT_VALUE_COLUMN = "Total_Trans_Amt"  # yearly spend: revenue at risk = probability x spend
DEFAULT_BANDS: dict[str, list[float]] = {
    "Customer_Age": [30, 40, 50, 60], "Months_on_book": [24, 36, 48],
    "Credit_Limit": [2500, 5000, 10000, 20000]}
DEFAULT_ACTIONS: list[dict[str, Any]] = [
    {"name": "service_recovery", "action": "Service-recovery call", "priority": 1,
     "drivers": ["Contacts_Count_12_mon", "contacts_per_inactive_month"]},
    {"name": "engagement_offer", "action": "Engagement offer", "priority": 2,
     "drivers": ["Total_Trans_Ct", "Total_Ct_Chng_Q4_Q1", "Total_Trans_Amt", "Total_Amt_Chng_Q4_Q1",
                 "avg_trans_amt", "trans_ct_per_relationship", "ct_chng_per_amt_chng",
                 "trans_amt_per_limit"]},
    {"name": "reactivation_campaign", "action": "Reactivation campaign", "priority": 3,
     "drivers": ["Months_Inactive_12_mon"]},
    {"name": "cross_sell", "action": "Cross-sell a product", "priority": 4,
     "drivers": ["Total_Relationship_Count", "revolving_per_relationship"]},
    {"name": "credit_review", "action": "Credit-line review", "priority": 5,
     "drivers": ["Total_Revolving_Bal", "Avg_Utilization_Ratio", "revolving_per_limit", "Credit_Limit",
                 "Avg_Open_To_Buy"]},
]
DEFAULT_REASONS: dict[str, str] = {  # {value}: the driver's value; {change}: a Q4/Q1 ratio as "down 40%"
    "Total_Ct_Chng_Q4_Q1": "transactions {change} Q4 vs Q1",
    "Total_Amt_Chng_Q4_Q1": "spend {change} Q4 vs Q1",
    "Total_Trans_Ct": "{value:.0f} transactions in 12 months",
    "Total_Trans_Amt": "{value:,.0f} spent in 12 months",
    "avg_trans_amt": "{value:,.0f} per transaction",
    "Contacts_Count_12_mon": "{value:.0f} contacts in 12 months",
    "contacts_per_inactive_month": "{value:.1f} contacts per inactive month",
    "Months_Inactive_12_mon": "{value:.0f} months inactive in the last 12",
    "Total_Relationship_Count": "{value:.0f} products with the bank",
    "trans_ct_per_relationship": "{value:.0f} transactions per product",
    "revolving_per_relationship": "revolving balance {value:,.0f} per product",
    "Total_Revolving_Bal": "revolving balance {value:,.0f}",
    "Avg_Utilization_Ratio": "card utilisation {value:.0%}",
    "revolving_per_limit": "balance at {value:.0%} of the credit limit",
    "Credit_Limit": "credit limit {value:,.0f}",
    "Avg_Open_To_Buy": "{value:,.0f} open to buy",
    "Customer_Age": "aged {value:.0f}",
    "Months_on_book": "{value:.0f} months with the bank",
    "Dependent_count": "{value:.0f} dependants",
}


class AnalyticsSettings(_Strict):
    """Marts, retention actions and BI exports written with every batch-scoring run (docs/analytics.md).

    ``value_column``, ``bands``, ``actions`` and ``reasons`` name schema columns. Left out of params.yaml,
    they default to the playbook above, fitted to the schema: what the schema lacks is skipped (listed in
    :attr:`skipped`, logged as a warning by each scoring run). Set in params.yaml, they must fit the schema:
    a name it lacks is an error naming the key (a typo never silently turns a rule off)."""

    value_column: str | None = DEFAULT_VALUE_COLUMN  # numeric column: revenue at risk = probability x value
    bands: dict[str, list[float]] = Field(  # numeric column -> ascending band edges
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_BANDS.items()})
    top_drivers: int = Field(3, ge=1, le=10)  # risk drivers kept per customer
    driver_method: Literal["exact", "approx"] = "exact"  # XGBoost: exact SHAP (as ?explain=true) | approx
    action_levels: list[Literal["High", "Medium", "Low"]] = Field(default_factory=lambda: ["High"])
    default_action: str = "Retention review call"  # when no rule matches a customer's drivers
    actions: list[ActionRule] = Field(default_factory=lambda: [ActionRule(**a) for a in DEFAULT_ACTIONS])
    reasons: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_REASONS))  # driver -> phrase
    export_dir: Path = Path("data/exports")  # timestamped CSV + Parquet of the marts, and latest/
    export_formats: list[Literal["csv", "parquet"]] = Field(default_factory=lambda: ["csv", "parquet"])
    _skipped: tuple[str, ...] = PrivateAttr(default=())

    @property
    def skipped(self) -> tuple[str, ...]:
        """What of the default playbook the schema lacks and was left out, in words (empty: nothing)."""
        return self._skipped

    @model_validator(mode="after")
    def _consistent(self) -> AnalyticsSettings:
        for column, edges in self.bands.items():
            if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"bands of {column!r} must be a non-empty list of ascending edges")
        names = [r.name for r in self.actions]
        if len(set(names)) != len(names):
            raise ValueError("analytics.actions names must be unique")
        return self


class OutlierSettings(_Strict):
    n_estimators: int = Field(100, ge=1)
    max_samples: int = Field(256, ge=2)  # rows drawn per tree (the paper's psi)
    contamination: float = Field(0.01, gt=0, le=0.5)  # share of reference rows flagged (sets the threshold)
    range_margin: float = Field(0.1, ge=0)  # also flag values beyond the reference range +- this share of it


class AlertChannelSettings(_Strict):
    """One alert channel. HTTP channels read their URL from an environment variable (webhook URLs are
    secrets); a channel whose variable is unset is skipped with a warning."""

    name: str
    type: Literal["log", "webhook", "slack", "alertmanager"]
    url_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _http_needs_url(self) -> AlertChannelSettings:
        if self.type != "log" and not self.url_env:
            raise ValueError(f"alert channel {self.name!r} of type {self.type} needs url_env")
        return self


class AlertSettings(_Strict):
    channels: list[AlertChannelSettings] = Field(
        default_factory=lambda: [AlertChannelSettings(name="log", type="log")])
    cooldown_s: float = Field(21_600, ge=0)  # same alert again within this window: suppressed
    timeout_s: float = Field(5, gt=0)  # per HTTP request
    attempts: int = Field(3, ge=1)  # delivery attempts per run before the alert waits in the outbox
    backoff_s: float = Field(0.5, ge=0)  # first retry delay; doubles on every failed attempt
    max_backoff_s: float = Field(900, ge=0)  # cap of the persisted delay before the next attempt

    @model_validator(mode="after")
    def _unique_names(self) -> AlertSettings:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError("alert channel names must be unique")
        return self


class RetrainSettings(_Strict):
    enabled: bool = True
    cooldown_s: float = Field(86_400, ge=0)  # at most one retraining trigger per window
    dag_id: str = "churn_training"
    timeout_s: float = Field(10, gt=0)


class MonitoringSettings(_Strict):
    backend: Literal["alibi", "scipy"] = "scipy"
    p_value: float = Field(0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    min_window: int = Field(500, ge=2)
    min_shift_sd: float = Field(0.1, ge=0)  # numeric floor: Wasserstein-1 / reference std
    min_category_shift: float = Field(0.05, ge=0, le=1)
    window_last_n: int = Field(5000, ge=1)
    state_db: Path = Path("data/monitoring/state.sqlite")
    outliers: OutlierSettings = OutlierSettings()
    alerts: AlertSettings = AlertSettings()
    retrain: RetrainSettings = RetrainSettings()


class TransactionColumns(_Strict):
    """The raw file's header names for each role (Online Retail II's by default)."""

    invoice: str = "Invoice"  # a cancellation's invoice starts with "C"
    stock_code: str = "StockCode"
    description: str = "Description"
    quantity: str = "Quantity"
    invoice_date: str = "InvoiceDate"
    price: str = "Price"
    customer_id: str = "Customer ID"
    country: str = "Country"

    @model_validator(mode="after")
    def _distinct(self) -> TransactionColumns:
        names = list(self.model_dump().values())
        if len(set(names)) != len(names):
            raise ValueError("transactions.columns: two roles name the same column")
        return self

    @property
    def by_role(self) -> dict[str, str]:
        return dict(self.model_dump())


class TransactionRules(_Strict):
    """What validation does with each kind of doubtful row (transactions/validate.py): drop it (counted, a
    warning), keep it, or stop the run (an error)."""

    missing_customer_id: Literal["drop", "error"] = "drop"  # guest purchases: no customer to learn about
    unparseable_date: Literal["drop", "error"] = "error"
    unparseable_number: Literal["drop", "error"] = "error"  # quantity or price that is not a number
    negative_price: Literal["drop", "error"] = "drop"  # Online Retail's "Adjust bad debt" lines
    quantity_sign: Literal["drop", "error"] = "drop"  # a sale with quantity <= 0, a cancellation with > 0
    duplicate_line: Literal["drop", "keep", "error"] = "drop"  # a line repeating an earlier one exactly
    cancellation: Literal["keep", "drop", "error"] = "keep"  # keep: counted as returns (return_rate)
    max_dropped_fraction: float = Field(0.5, ge=0, le=1)  # more rows dropped than this: an error
    min_rows: int = Field(1000, ge=1)  # clean rows, at least
    max_examples: int = Field(5, ge=1)


class CutoffSettings(_Strict):
    """When features are computed. Explicit ``dates`` (the last one is held out), or a schedule: the hold-out
    cut-off is the latest whose horizon the history covers; ``count`` training cut-offs lie before it,
    ``every_days`` apart, the latest of them a whole horizon before the hold-out (no label window of a
    training row reaches past the hold-out's cut-off)."""

    dates: list[date] = Field(default_factory=list)
    count: int = Field(4, ge=1)
    every_days: int = Field(30, ge=1)

    @field_validator("dates")
    @classmethod
    def _ascending(cls, value: list[date]) -> list[date]:
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError("cut-off dates must be strictly ascending")
        if len(value) == 1:
            raise ValueError("give at least two cut-off dates (training ones, then the hold-out)")
        return value


class TransactionGenerate(_Strict):
    """What `churnops data generate --kind transactions` draws by default (transactions/generate.py)."""

    customers: int = Field(10_000, ge=1)
    seed: int = 42
    start: date = date(2009, 12, 1)
    end: date = date(2011, 12, 9)  # the last day with sales

    @model_validator(mode="after")
    def _period(self) -> TransactionGenerate:
        if (self.end - self.start).days < 60:
            raise ValueError("transactions.generate: end must be at least 60 days after start")
        return self


class TransactionSettings(_Strict):
    """The transactional source (params.yaml ``transactions``; docs/transactions.md)."""

    raw: Path = Path("data/raw/transactions.csv")  # CSV or Parquet, by extension
    validated: Path = Path("data/validated/transactions.parquet")  # silver: clean, typed lines
    columns: TransactionColumns = TransactionColumns()
    date_format: str | None = None  # strptime format of InvoiceDate (e.g. "%m/%d/%Y %H:%M"); None: ISO 8601
    horizon_days: int = Field(90, ge=1)  # churned: no purchase within this many days after the cut-off
    trend_days: int = Field(90, ge=1)  # the recent window of the trend features
    population_days: int | None = Field(365, ge=1)  # customers who bought within this before the cut-off
    min_history_days: int = Field(90, ge=1)  # the earliest cut-off lies this long after the first sale
    cutoffs: CutoffSettings = CutoffSettings()
    rules: TransactionRules = TransactionRules()
    generate: TransactionGenerate = TransactionGenerate()
    # the per-customer table this source yields: the schema validation, training and serving run on
    # (feature columns named as features.sql's; the id, the cut-off as time_column, the label as text)
    schema_: SchemaSettings | None = Field(None, alias="schema")
    model_name: str = "churn-classifier-transactions"  # its own registered model
    analytics: AnalyticsSettings = AnalyticsSettings()  # marts and actions on this source's features

    @model_validator(mode="after")
    def _schema_fits(self) -> TransactionSettings:
        if self.schema_ is not None and self.schema_.time_column is None:
            raise ValueError("transactions.schema needs time_column (the cut-off date of each row)")
        return self


class Params(_Strict):
    """The content of params.yaml."""

    model_config = ConfigDict(extra="allow", frozen=True)  # later sections (monitoring, ...) may add keys

    # where the customer table comes from: a table as received, or built from transactions
    source: Literal["customer_table", "transactions"] = "customer_table"
    schema_: SchemaSettings = Field(alias="schema")
    data: DataSettings
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    features: FeatureSettings = FeatureSettings()
    train: TrainSettings
    evaluate: EvaluateSettings = EvaluateSettings()
    register_: RegisterSettings = Field(RegisterSettings(), alias="register")
    serving: ServingSettings = ServingSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    batch: BatchSettings = BatchSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    transactions: TransactionSettings = TransactionSettings()

    @model_validator(mode="after")
    def _source_is_configured(self) -> Params:
        if self.source == "transactions" and self.transactions.schema_ is None:
            raise ValueError("source: transactions needs a transactions.schema section "
                             "(docs/transactions.md)")
        return self

    @property
    def active_schema(self) -> SchemaSettings:
        """The schema of the selected source's customer table."""
        if self.source == "transactions":
            assert self.transactions.schema_ is not None  # checked by _source_is_configured
            return self.transactions.schema_
        return self.schema_

    @model_validator(mode="after")
    def _analytics_fit_the_schema(self) -> Params:
        """Names the analytics section sets must be columns (or ratios) of the schema; names of the default
        playbook the schema lacks are left out, each rule or band with a note (AnalyticsSettings.skipped)."""
        fitted = _fit_analytics(self.analytics, self.schema_, "analytics")
        if fitted is not None:
            object.__setattr__(self, "analytics", fitted)  # frozen: replaced once, while validating
        if self.transactions.schema_ is not None:
            fitted = _fit_analytics(self.transactions.analytics, self.transactions.schema_,
                                    "transactions.analytics")
            if fitted is not None:
                object.__setattr__(self.transactions, "analytics", fitted)
        return self


def _fit_analytics(cfg: AnalyticsSettings, schema: SchemaSettings, where: str) -> AnalyticsSettings | None:
    """`cfg` fitted to `schema` (None: it fits as it is): names set in params.yaml must be columns (or ratios)
    of the schema; names of the default playbook the schema lacks are left out, with a note."""
    explicit = cfg.model_fields_set
    drivers = set(schema.feature_columns) | set(schema.ratios)
    skipped: list[str] = []
    update: dict[str, Any] = {}
    if cfg.value_column is not None and cfg.value_column not in schema.numeric:
        if "value_column" in explicit:
            raise ValueError(f"{where}.value_column {cfg.value_column!r} is not a numeric column "
                             f"of the schema")
        update["value_column"] = None
        skipped.append(f"value_column {cfg.value_column!r} (no revenue at risk: set "
                       f"{where}.value_column to a numeric column of the schema)")
    unknown = [c for c in cfg.bands if c not in schema.numeric]
    if unknown and "bands" in explicit:
        raise ValueError(f"{where}.bands: {unknown[0]!r} is not a numeric column of the schema")
    if unknown:
        update["bands"] = {c: e for c, e in cfg.bands.items() if c in schema.numeric}
        skipped += [f"band of {c!r}" for c in unknown]
    rules = []
    for rule in cfg.actions:
        missing = [d for d in rule.drivers if d not in drivers]
        if missing and "actions" in explicit:
            raise ValueError(f"{where}.actions {rule.name!r}: drivers {missing} are neither feature "
                             f"columns nor ratios of the schema")
        kept = [d for d in rule.drivers if d in drivers]
        if missing:
            skipped.append(f"action {rule.name!r} " + (f"without drivers {missing}" if kept
                                                       else "(none of its drivers is in the schema)"))
        if kept:
            rules.append(rule.model_copy(update={"drivers": kept}) if missing else rule)
    if rules != cfg.actions:
        update["actions"] = rules
    unknown = sorted(set(cfg.reasons) - drivers)
    if unknown and "reasons" in explicit:
        raise ValueError(f"{where}.reasons: {unknown} are neither feature columns nor ratios "
                         f"of the schema")
    if unknown:  # phrases of drivers that cannot occur: dropped without a note
        update["reasons"] = {d: r for d, r in cfg.reasons.items() if d in drivers}
    if not update:
        return None
    fitted = cfg.model_copy(update=update)
    fitted._skipped = tuple(skipped)
    return fitted


class Settings(BaseModel):
    """Params plus the environment, with every path resolved against the project home."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    home: Path
    params_path: Path
    params: Params
    raw_params: dict[str, Any]
    mlflow_tracking_uri: str
    artifact_root: str
    dvc_remote: str
    redis_url: str
    database_url: str
    transactions_database_url: str | None = None

    @property
    def schema(self) -> SchemaSettings:  # type: ignore[override]
        """The selected source's schema: ``schema``, or ``transactions.schema`` with
        ``source: transactions``."""
        return self.params.active_schema

    @property
    def source(self) -> str:
        return self.params.source

    @property
    def analytics(self) -> AnalyticsSettings:
        """The analytics section of the selected source (``analytics`` or ``transactions.analytics``)."""
        if self.params.source == "transactions":
            return self.params.transactions.analytics
        return self.params.analytics

    @property
    def model_name(self) -> str:
        """The registered model of the selected source."""
        if self.params.source == "transactions":
            return self.params.transactions.model_name
        return self.params.register_.model_name

    def path(self, relative: Path | str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.home / p

    @property
    def raw_path(self) -> Path:
        """The DVC-versioned raw file of the selected source (the customer table, or the transactions)."""
        if self.params.source == "transactions":
            return self.path(self.params.transactions.raw)
        return self.path(self.params.data.raw)

    @property
    def validated_path(self) -> Path:
        return self.path(self.params.data.validated)

    @property
    def features_dir(self) -> Path:
        return self.path(self.params.data.features_dir)

    @property
    def reports_dir(self) -> Path:
        return self.path(self.params.data.reports_dir)

    @cached_property
    def params_hash(self) -> str:
        """A stable hash of every parameter (tagged on each MLflow run)."""
        blob = json.dumps(self.raw_params, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def section(self, name: str) -> dict[str, Any]:
        """A params section that has no typed model yet (used by later stages)."""
        return dict(self.raw_params.get(name) or {})


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, key by key into nested mappings (neither argument is changed).

    How a run's overrides (the Airflow UI's config, a test's budget) are laid over params.yaml.
    """
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _format_validation_error(exc: ValidationError, source: Path) -> str:
    lines = [f"invalid settings in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p).rstrip("_") for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off (any case) as booleans, which
    turns labels such as `positive: Yes` into True; DVC (ruamel, YAML 1.2) reads them as text too."""


_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_params(path: Path) -> tuple[Params, dict[str, Any]]:
    if not path.is_file():
        raise SettingsError(f"params file not found: {path} (set CHURNOPS_PARAMS or CHURNOPS_HOME)")
    try:
        raw = yaml.load(path.read_text(), Loader=_ParamsLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise SettingsError(f"params file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"params file {path} must hold a mapping at the top level")
    try:
        return Params.model_validate(raw), raw
    except ValidationError as exc:
        raise SettingsError(_format_validation_error(exc, path)) from exc


def load_settings(
    home: Path | str | None = None,
    params_path: Path | str | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Read params.yaml and the environment. Explicit arguments win over environment variables."""
    env = dict(os.environ if env is None else env)
    home_path = Path(home or env.get("CHURNOPS_HOME") or Path.cwd()).resolve()
    p_path = Path(params_path or env.get("CHURNOPS_PARAMS") or home_path / "params.yaml").resolve()
    params, raw = load_params(p_path)
    mlflow_dir = home_path / "mlflow"
    return Settings(
        home=home_path,
        params_path=p_path,
        params=params,
        raw_params=raw,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        artifact_root=env.get("CHURNOPS_ARTIFACT_ROOT") or str(mlflow_dir / "artifacts"),
        dvc_remote=env.get("CHURNOPS_DVC_REMOTE") or str(home_path / ".dvc-storage"),
        redis_url=env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        database_url=env.get("CHURNOPS_DATABASE_URL")
        or f"sqlite:///{home_path / 'data' / 'scores' / 'scores.db'}",
        transactions_database_url=env.get("CHURNOPS_TRANSACTIONS_DATABASE_URL") or None,
    )
