"""Bad drift options fail with a message naming the offending item."""

from __future__ import annotations

import pytest

from churnops.data.generate import DriftSpec
from churnops.settings import SchemaSettings


def test_parse_reads_every_option(schema: SchemaSettings) -> None:
    spec = DriftSpec.parse(shifts=["Total_Trans_Ct=-0.5", "Customer_Age = 1"], scales=["Credit_Limit=1.5"],
                           mixes=["Income_Category=$120K +:0.2,Unknown:0.1"], schema=schema)
    assert spec.shifts == {"Total_Trans_Ct": -0.5, "Customer_Age": 1.0}
    assert spec.scales == {"Credit_Limit": 1.5}
    assert spec.mixes == {"Income_Category": {"$120K +": 0.2, "Unknown": 0.1}}
    assert spec and not DriftSpec()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shifts": ["Customer_Age"]}, r"--shift 'Customer_Age': expected COLUMN=SIGMAS"),
        ({"shifts": ["Customer_Age=abc"]}, r"--shift 'Customer_Age=abc': 'abc' is not a number"),
        ({"shifts": ["Customer_Age=nan"]}, r"'nan' is not a finite number"),
        ({"shifts": ["Customer_Age=1", "Customer_Age=2"]}, r"'Customer_Age' is shifted twice"),
        ({"shifts": ["Nope=1"]}, r"--shift Nope: unknown column 'Nope'"),
        ({"shifts": ["Gender=1"]}, r"--shift Gender: 'Gender' is categorical; use --mix"),
        ({"scales": ["Credit_Limit=-1"]}, r"--scale 'Credit_Limit=-1': the factor must be positive"),
        ({"scales": ["Credit_Limit=x2"]}, r"--scale 'Credit_Limit=x2': 'x2' is not a number"),
        ({"scales": ["Missing_Col=2"]}, r"--scale Missing_Col: unknown column 'Missing_Col'"),
        ({"mixes": ["Card_Category=Diamond:0.5"]}, r"--mix Card_Category: unknown category 'Diamond'"),
        ({"mixes": ["Card_Category=Blue"]}, r"--mix 'Card_Category=Blue': 'Blue' is not CATEGORY:WEIGHT"),
        ({"mixes": ["Card_Category=Blue:lots"]}, r"category 'Blue'.*'lots' is not a number"),
        ({"mixes": ["Card_Category=Blue:-0.1"]}, r"weight of 'Blue' must not be negative"),
        ({"mixes": ["Card_Category=Blue:1.5"]}, r"weights sum to 1.5 > 1 while other categories"),
        ({"mixes": ["Card_Category=Blue:0.8,Silver:0.5"]}, r"weights sum to 1.3 > 1"),
        ({"mixes": ["Card_Category=Blue:0,Silver:0,Gold:0,Platinum:0"]}, r"sum to 0"),
        ({"mixes": ["Card_Category=Blue:0.1,Blue:0.2"]}, r"category 'Blue' is given twice"),
        ({"mixes": ["Customer_Age=30:0.5"]}, r"--mix Customer_Age: 'Customer_Age' is numeric"),
        ({"mixes": ["Region=North:0.5"]}, r"--mix Region: unknown column 'Region'"),
    ],
)
def test_bad_items_are_refused_with_their_name(schema: SchemaSettings, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftSpec.parse(**kwargs, schema=schema)


def test_without_a_schema_only_the_syntax_is_checked(schema: SchemaSettings) -> None:
    spec = DriftSpec.parse(shifts=["Nope=1"])
    with pytest.raises(ValueError, match="unknown column 'Nope'"):
        spec.validate(schema)
