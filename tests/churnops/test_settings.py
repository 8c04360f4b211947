"""The schema section of params.yaml: labels written Yes/No, missing-value policies checked when loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from churnops.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def params_with(tmp_path: Path, schema_text: str) -> Path:
    """params.yaml with the `schema.target` / `schema.missing` lines replaced by `schema_text` (raw YAML, so
    unquoted words reach the loader exactly as a user writes them)."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    start = lines.index("  target:")
    out = [*lines[:start], *schema_text.strip("\n").splitlines(), *lines[start + 4:]]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize("positive,negative", [("Yes", "No"), ("yes", "no"), ("1", "0")])
def test_labels_written_unquoted_are_read_as_the_text_the_table_holds(tmp_path: Path, positive: str,
                                                                     negative: str) -> None:
    path = params_with(tmp_path, f"""
  target:
    column: Churn
    positive: {positive}
    negative: {negative}
""")
    settings = load_settings(home=tmp_path, params_path=path, env={})
    assert (settings.schema.target.positive, settings.schema.target.negative) == (positive, negative)
    assert settings.params.evaluate.tune_threshold is True  # true/false stay booleans
    assert yaml.safe_load(path.read_text())["schema"]["target"]["positive"] in (True, 1)  # what YAML 1.1 does


def test_a_label_written_true_says_it_must_be_quoted(tmp_path: Path) -> None:
    path = params_with(tmp_path, """
  target:
    column: Churn
    positive: true
    negative: false
""")
    with pytest.raises(SettingsError, match=r'target.positive: .*boolean.*quotes \(e.g. positive: "True"'):
        load_settings(home=tmp_path, params_path=path, env={})


@pytest.mark.parametrize("policy,message", [
    ("Gender: {impute: median}", "median needs a numeric column"),
    ("Gender: {impute: constant, value: X}", "value 'X' is not one of"),
    ("Customer_Age: {impute: constant, value: 7}", "value 7.0 is not a valid Customer_Age"),
    ("Customer_Age: {impute: constant, value: 30.5}", "is not a valid Customer_Age"),
    ("Customer_Age: {impute: constant}", "constant needs a value"),
    ("CLIENTNUM: {impute: most_frequent}", "never optional"),
    ("Credit_Limit: {impute: mean}", "Input should be 'median', 'most_frequent' or 'constant'"),
])
def test_missing_value_policies_are_checked_when_loaded(tmp_path: Path, policy: str, message: str) -> None:
    path = params_with(tmp_path, f"""
  target:
    column: Attrition_Flag
    positive: Attrited Customer
    negative: Existing Customer
  missing:
    {policy}
""")
    with pytest.raises(SettingsError, match="schema") as err:
        load_settings(home=tmp_path, params_path=path, env={})
    assert message in str(err.value)


def test_the_transactions_section_is_typed_and_a_bad_value_names_its_key(tmp_path: Path) -> None:
    settings = load_settings(home=REPO, env={})
    cfg = settings.params.transactions
    assert cfg.columns.customer_id == "Customer ID" and cfg.horizon_days == 90
    assert cfg.rules.cancellation == "keep" and settings.transactions_database_url is None
    assert load_settings(home=REPO, env={"CHURNOPS_TRANSACTIONS_DATABASE_URL": "postgresql://h/db"}
                         ).transactions_database_url == "postgresql://h/db"

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["transactions"]["rules"]["cancellation"] = "ignore"
    params["transactions"]["columns"]["price"] = "Quantity"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(SettingsError) as caught:
        load_settings(home=tmp_path, env={})
    assert "transactions.rules.cancellation" in str(caught.value)
    assert "transactions.columns: two roles name the same column" in str(caught.value)


def test_params_yaml_holds_only_values_dvc_can_read_as_vars() -> None:
    """dvc.yaml reads params.yaml as its `vars`: a YAML date (an unquoted 2011-06-01) makes every `dvc`
    command fail ("Unsupported value of type 'date'"). Dates are written quoted."""
    def scalars(node: object, where: str):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from scalars(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from scalars(value, f"{where}[{i}]")
        else:
            yield where, node

    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    odd = [(where, type(v).__name__) for where, v in scalars(doc, "")
           if v is not None and not isinstance(v, str | int | float | bool)]
    assert not odd, f"params.yaml values DVC cannot read: {odd}"
