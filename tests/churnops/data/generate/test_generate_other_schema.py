"""Another schema: a clear refusal with the packaged calibration, and a working `calibrate` for it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from churnops.cli import main
from churnops.data.calibrate import (
    Calibration,
    CalibrationError,
    calibrate,
    calibrate_frame,
    default_calibration_path,
    read_source,
)
from churnops.data.generate import generate
from churnops.settings import SchemaSettings


def variant(schema: SchemaSettings, **changes: Any) -> SchemaSettings:
    doc = schema.model_dump(by_alias=True)
    doc.update(changes)
    return SchemaSettings.model_validate(doc)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (lambda s: {"numeric": {**s.model_dump()["numeric"], "Tenure_Years": {"min": 0, "max": 50}}},
         r"numeric columns not calibrated: \['Tenure_Years'\]"),
        (lambda s: {"categorical": {**s.categorical, "Region": ["North", "South"]}},
         r"categorical columns not calibrated: \['Region'\]"),
        (lambda s: {"categorical": {**s.categorical, "Card_Category": ["Blue", "Silver", "Gold", "Black"]}},
         r"categories of 'Card_Category' differ \(not calibrated: \['Black'\]; calibrated but no longer "
         r"allowed: \['Platinum'\]\)"),
        (lambda s: {"target": {"column": "Churn", "positive": "yes", "negative": "no"}},
         r"target 'Churn' \('yes'/'no'\) is calibrated as 'Attrition_Flag'"),
    ],
)
def test_an_uncovered_schema_is_refused_with_the_way_out(schema: SchemaSettings, changes: Callable,
                                                         message: str) -> None:
    with pytest.raises(CalibrationError, match=message) as info:
        generate(variant(schema, **changes(schema)), 100, seed=1)
    assert "churnops data calibrate --source" in str(info.value)
    assert str(default_calibration_path()) in str(info.value)


def test_the_cli_refuses_an_uncovered_schema(make_home: Callable[..., Path], tmp_path: Path) -> None:
    home = make_home({"schema": {"numeric": {"Tenure_Years": {"min": 0, "max": 50}}}})
    result = CliRunner().invoke(main, ["--home", str(home), "data", "generate", "--rows", "10",
                                       "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert "Tenure_Years" in result.output and "churnops data calibrate --source" in result.output


def test_a_schema_with_fewer_columns_uses_the_packaged_calibration(schema: SchemaSettings) -> None:
    numeric = {k: v for k, v in schema.model_dump()["numeric"].items()
               if k not in ("Avg_Open_To_Buy", "Customer_Age")}
    categorical = {k: v for k, v in schema.categorical.items() if k != "Education_Level"}
    small = variant(schema, numeric=numeric, categorical=categorical, ratios={})
    frame = generate(small, 2000, seed=3)
    assert set(frame.columns) == set(small.required_columns)
    util = (frame["Total_Revolving_Bal"] / frame["Credit_Limit"]).round(3)
    assert np.allclose(frame["Avg_Utilization_Ratio"], util)
    assert (frame["Total_Revolving_Bal"] <= frame["Credit_Limit"] - 3).all()


OTHER_SCHEMA = {
    "id_column": "customer_id",
    "target": {"column": "churned", "positive": "yes", "negative": "no"},
    "numeric": {"age": {"min": 18, "max": 100, "integer": True}, "limit": {"min": 0, "max": 100000},
                "balance": {"min": 0, "max": 100000}, "headroom": {"min": 0, "max": 100000},
                "purchases": {"min": 0, "max": 10000, "integer": True}},
    "categorical": {"plan": ["basic", "plus", "premium"], "channel": ["web", "shop"]},
}


@pytest.fixture(scope="module")
def other_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table in a different schema: the limit splits into balance + headroom; churners buy less."""
    rng = np.random.default_rng(0)
    n = 3000
    churn = rng.random(n) < 0.25
    limit = np.round(rng.lognormal(8, 0.6, n), 2)
    balance = np.floor(limit * rng.beta(2, 3, n))
    frame = pd.DataFrame({
        "customer_id": rng.choice(10**6, n, replace=False) + 10**6,
        "churned": np.where(churn, "yes", "no"),
        "age": rng.integers(18, 80, n),
        "plan": rng.choice(["basic", "plus", "premium"], n, p=[0.6, 0.3, 0.1]),
        "limit": limit,
        "balance": balance,
        "headroom": np.round(limit - balance, 2),
        "purchases": np.maximum(0, np.round(rng.normal(np.where(churn, 20, 45), 8))).astype(int),
        "channel": rng.choice(["web", "shop"], n),
    })
    path = tmp_path_factory.mktemp("other") / "their.csv"
    frame.to_csv(path, index=False)
    return path


def test_calibrate_learns_another_schema_and_generate_follows_it(other_source: Path, tmp_path: Path) -> None:
    schema = SchemaSettings.model_validate(OTHER_SCHEMA)
    out = calibrate(other_source, schema, out=tmp_path / "cal.json", sample=5000)
    doc = json.loads(out.read_text())
    assert doc["derived"] == {"headroom": {"op": "difference", "of": ["limit", "balance"], "decimals": 2,
                                           "min": doc["derived"]["headroom"]["min"]}}
    frame = generate(schema, 5000, seed=2, calibration=out)
    source = pd.read_csv(other_source)
    assert list(frame.columns) == list(source.columns)
    assert np.allclose(frame["headroom"], frame["limit"] - frame["balance"])
    assert frame["customer_id"].is_unique
    assert (frame["churned"] == "yes").mean() == pytest.approx((source["churned"] == "yes").mean(), abs=0.02)
    is_churn = frame["churned"] == "yes"
    assert frame.loc[is_churn, "purchases"].mean() == pytest.approx(20, abs=1.5)
    assert frame.loc[~is_churn, "purchases"].mean() == pytest.approx(45, abs=1.5)
    assert frame["plan"].value_counts(normalize=True)["premium"] == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns=["plan"]), r"lacks columns of the configured schema: \['plan'\]"),
        (lambda f: f.assign(churned="maybe"), r"column 'churned' holds labels other than"),
        (lambda f: f.assign(age="old"), r"numeric column 'age' has values that are not numbers"),
        (lambda f: f.assign(plan="gold"),
         r"column 'plan' has categories the schema does not allow: \['gold'\]"),
        (lambda f: f.assign(churned="no"), r"only 0 rows labelled 'yes'"),
    ],
)
def test_calibrate_refuses_a_bad_source_saying_what_is_wrong(other_source: Path, tmp_path: Path,
                                                              edit: Callable, message: str) -> None:
    bad = tmp_path / "bad.csv"
    edit(pd.read_csv(other_source)).to_csv(bad, index=False)
    out = tmp_path / "cal.json"
    with pytest.raises(CalibrationError, match=message):
        calibrate(bad, SchemaSettings.model_validate(OTHER_SCHEMA), out=out)
    assert not out.exists()


def test_a_damaged_calibration_file_is_refused(schema: SchemaSettings, tmp_path: Path) -> None:
    broken = tmp_path / "cal.json"
    broken.write_text('{"format": 99}')
    with pytest.raises(CalibrationError, match=r"has format 99 \(expected 1\).*churnops data calibrate"):
        generate(schema, 10, seed=1, calibration=broken)
    with pytest.raises(CalibrationError, match="calibration file not found"):
        Calibration.load(tmp_path / "missing.json")


def _close(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _close(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _close(x, y, f"{where}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


@pytest.mark.slow
def test_the_packaged_calibration_is_what_calibrate_computes_on_the_real_table(
        schema: SchemaSettings, real_data: Path) -> None:
    fresh = calibrate_frame(read_source(real_data, schema), schema, source_name=real_data.name,
                            source_sha256=json.loads(default_calibration_path().read_text())["source"]["sha256"])
    packaged = json.loads(default_calibration_path().read_text())
    differences = _close(json.loads(json.dumps(fresh)), packaged)
    assert not differences, f"{len(differences)} differences, e.g. {differences[:5]}; re-run " \
                            "`churnops data calibrate --source ../shared/data/BankChurners.csv`"
