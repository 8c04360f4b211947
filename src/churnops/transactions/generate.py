"""A synthetic retailer's transactions in the Online Retail II layout, deterministic per seed.

One row per invoice line: invoice, stock code, description, quantity, invoice date-time, unit price,
customer id, country (the header names of ``transactions.columns``). What is drawn, all vectorised:

- a catalogue of products (stock codes, descriptions, unit prices) whose popularity falls off like Zipf's law;
- customers, each with a country, a first day (some were there from the start), a purchase rate (invoices per
  day, log-normal: a few buy weekly, most a few times a year), a basket size (lines per invoice) and a
  quantity scale (retail and wholesale buyers);
- a share of customers who stop buying (``churn_share``, more often the rare buyers): their rate fades over
  the 120 days before they stop, as a real customer's does;
- invoice times by thinning a Poisson process with seasonality (a November peak, no Saturday sales, fewer on
  Sundays) and business hours;
- guest invoices without a customer id (``guest_share`` of the invoices);
- cancellations: an invoice "C<number>" a few days after a purchase, returning some of its lines with
  negative quantities (``return_share`` of the purchases, by each customer's propensity);
- with ``dirty`` (the default), what real exports hold too: exact duplicate lines, stock adjustments
  (a sale's invoice with a negative quantity and price 0) and "Adjust bad debt" lines with a negative price.

Invoices are numbered in time order from 489434, as Online Retail II's. Drift (:class:`TransactionDrift`)
multiplies the purchase rate, basket size, quantities, prices or return share, or sets the churn share.

≈ 100 lines per customer over the default two years: 100,000 customers give ≈ 10M rows
(benchmarks/bench_transactions.py; figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from churnops.io import atomic_path
from churnops.logs import get_logger
from churnops.settings import TransactionColumns

log = get_logger(__name__)

FIRST_INVOICE = 489_434
FIRST_CUSTOMER = 12_346
DAY_S = 86_400
FADE_DAYS = 120.0  # a leaving customer's purchase rate falls to FADE_FLOOR over this many days
FADE_FLOOR = 0.15
# Monday .. Sunday: Online Retail has no Saturday sales and quiet Sundays
WEEKDAY_WEIGHT = np.array([1.1, 1.15, 1.2, 1.25, 0.9, 0.0, 0.6])
SEASON_PEAK_DAY, SEASON_WIDTH, SEASON_GAIN = 320.0, 30.0, 0.8  # mid-November, about a month wide, +80%
COUNTRIES = ["United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Switzerland",
             "Portugal", "Australia", "Norway", "Italy", "Sweden", "Denmark", "Japan"]
COUNTRY_WEIGHTS = np.array([88.0, 2.2, 2.0, 1.8, 0.9, 0.8, 0.8, 0.6, 0.6, 0.5, 0.4, 0.4, 0.4, 0.3, 0.3])
_ADJECTIVES = ["WHITE", "RED", "PINK", "BLUE", "GREEN", "VINTAGE", "RETRO", "REGENCY", "PARTY", "JUMBO",
               "SMALL", "LARGE", "HEART", "STAR", "SPOTTY", "PAPER", "GLASS", "WOODEN", "ENAMEL", "LACE"]
_THEMES = ["HANGING", "CHRISTMAS", "GARDEN", "KITCHEN", "BIRD", "SKULL", "FLORAL", "ROSE", "POLKADOT",
           "CAKE", "LOVE", "CAT", "OWL", "TEA", "PICNIC", "CIRCUS", "RABBIT", "SPACEBOY", "DOLLY", "FAIRY"]
_NOUNS = ["T-LIGHT HOLDER", "LANTERN", "BAG", "MUG", "CANDLE", "BUNTING", "SIGN", "BOX", "CUSHION COVER",
          "DOORMAT", "TEACUP AND SAUCER", "CAKESTAND", "NAPKINS", "CARD", "WRAP", "PHOTO FRAME", "CLOCK",
          "LUNCH BOX", "PURSE", "HOT WATER BOTTLE"]
DRIFT_NAMES = ("purchase_rate", "basket_size", "quantity", "unit_price", "returns", "churn_share")


@dataclass(frozen=True)
class TransactionDrift:
    """Factors applied to the whole table (1: as calibrated); ``churn_share`` replaces the share."""

    purchase_rate: float = 1.0
    basket_size: float = 1.0
    quantity: float = 1.0
    unit_price: float = 1.0
    returns: float = 1.0
    churn_share: float | None = None

    @classmethod
    def parse(cls, items: tuple[str, ...] | list[str]) -> TransactionDrift:
        """``NAME=VALUE`` items (the CLI's ``--drift``), e.g. ``purchase_rate=0.7``."""
        values: dict[str, float] = {}
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip()
            if not sep or name not in DRIFT_NAMES:
                raise ValueError(f"--drift {item!r}: expected NAME=VALUE with NAME one of "
                                 f"{list(DRIFT_NAMES)}")
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"--drift {item!r}: {text.strip()!r} is not a number") from None
            if not math.isfinite(value) or value <= 0 or (name == "churn_share" and value >= 1):
                bound = "in (0, 1)" if name == "churn_share" else "above 0"
                raise ValueError(f"--drift {item!r}: the value must be {bound}")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class RetailerProfile:
    """The synthetic retailer; the defaults give tables shaped like Online Retail II."""

    customers: int = 10_000
    start: date = date(2009, 12, 1)
    end: date = date(2011, 12, 9)  # the last day with sales
    products: int = 4_000
    churn_share: float = 0.35  # customers who stop buying at some point of the period (or soon after)
    present_share: float = 0.4  # customers already buying on the first day
    rate_median_days: float = 75.0  # median days between a customer's invoices
    rate_sigma: float = 1.0
    basket_median: float = 8.0  # lines per invoice
    quantity_median: float = 4.0
    guest_share: float = 0.2  # invoices without a customer id
    return_share: float = 0.1  # purchases followed by a cancellation
    dirty: bool = True
    duplicate_share: float = 0.003  # lines listed twice
    adjustment_share: float = 0.0005  # stock adjustments (negative quantity, price 0, no customer)

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        if (self.end - self.start).days < 60:
            raise ValueError(f"the period {self.start} to {self.end} is shorter than 60 days")
        if not 0 <= self.churn_share < 1:
            raise ValueError(f"churn_share {self.churn_share} must be in [0, 1)")

    def drifted(self, drift: TransactionDrift) -> RetailerProfile:
        return replace(
            self,
            rate_median_days=self.rate_median_days / drift.purchase_rate,
            basket_median=self.basket_median * drift.basket_size,
            quantity_median=self.quantity_median * drift.quantity,
            return_share=min(0.9, self.return_share * drift.returns),
            churn_share=self.churn_share if drift.churn_share is None else drift.churn_share,
        )


@dataclass
class GeneratedTransactions:
    """Columns by role; ``stock`` indexes the catalogue (``stock_codes``, ``descriptions``)."""

    invoice: np.ndarray  # int64 number
    cancelled: np.ndarray  # bool: invoice "C<number>"
    bad_debt: np.ndarray  # bool: invoice "A<number>"
    stock: np.ndarray  # int32 index into the catalogue; -1: the bad-debt line
    quantity: np.ndarray  # int64
    seconds: np.ndarray  # int64 since the epoch
    price: np.ndarray  # float64
    customer: np.ndarray  # int64, -1: none
    country: np.ndarray  # int16 index into COUNTRIES
    stock_codes: list[str]
    descriptions: list[str]
    unit_price_factor: float = 1.0

    @property
    def rows(self) -> int:
        return int(self.invoice.size)

    def to_arrow(self, columns: TransactionColumns):  # -> pyarrow.Table
        import pyarrow as pa
        import pyarrow.compute as pc

        number = pc.cast(pa.array(self.invoice), pa.string())
        prefix = np.where(self.cancelled, "C", np.where(self.bad_debt, "A", ""))
        invoice = pc.binary_join_element_wise(pa.array(prefix), number, "")
        codes = pa.array([*self.stock_codes, "B"])
        stock = np.where(self.stock < 0, len(self.stock_codes), self.stock).astype(np.int32)
        # products may share a description: a dictionary of the distinct ones
        texts, text_of = np.unique(np.array([*self.descriptions, "Adjust bad debt"]), return_inverse=True)
        customer = pc.cast(pa.array(self.customer + FIRST_CUSTOMER, mask=self.customer < 0), pa.string())
        roles = {
            "invoice": invoice,
            "stock_code": pa.DictionaryArray.from_arrays(pa.array(stock), codes),
            "description": pa.DictionaryArray.from_arrays(pa.array(text_of.astype(np.int32)[stock]),
                                                          pa.array(texts.tolist())),
            "quantity": pa.array(self.quantity),
            "invoice_date": pa.array(self.seconds.astype("datetime64[s]")),
            "price": pa.array(self.price),
            "customer_id": customer,
            "country": pa.DictionaryArray.from_arrays(pa.array(self.country.astype(np.int32)),
                                                      pa.array(COUNTRIES)),
        }
        names = columns.by_role
        return pa.table({names[role]: array for role, array in roles.items()})


# ------------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------------
def _catalogue(rng: np.random.Generator, n: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Stock codes, descriptions, unit prices and popularity (a CDF) of `n` products."""
    base = 10_002 + np.sort(rng.choice(80_000, size=n, replace=False))
    suffix = rng.choice(["", "", "", "A", "B", "C", "D"], size=n)
    codes, seen = [], set()
    for number, letter in zip(base.tolist(), suffix.tolist(), strict=True):
        code = f"{number}{letter}"
        codes.append(code if code not in seen else str(number))
        seen.add(codes[-1])
    words = rng.integers(0, 20, size=(n, 3))
    descriptions = [f"{_ADJECTIVES[a]} {_THEMES[b]} {_NOUNS[c]}" for a, b, c in words.tolist()]
    prices = np.round(np.clip(rng.lognormal(math.log(2.5), 0.9, size=n), 0.1, 300.0), 2)
    weight = 1.0 / (np.arange(n) + 10.0) ** 1.1
    popularity = np.cumsum(rng.permutation(weight))
    return codes, descriptions, prices, popularity / popularity[-1]


def _intensity(day: np.ndarray) -> np.ndarray:
    """Relative sales intensity of a day number (days since the epoch): weekday x season."""
    day = np.asarray(day, dtype=np.int64)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (3)
    doy = (day - _days(date(1970, 1, 1))) % 365.25
    season = 1.0 + SEASON_GAIN * np.exp(-(((doy - SEASON_PEAK_DAY) / SEASON_WIDTH) ** 2))
    return WEEKDAY_WEIGHT[weekday] * season


_MAX_INTENSITY = float(WEEKDAY_WEIGHT.max() * (1.0 + SEASON_GAIN))


def _days(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _thin(rng: np.random.Generator, owner: np.ndarray, lo: np.ndarray, hi: np.ndarray, rate: np.ndarray,
          fade_end: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Invoice days per owner: a Poisson process of `rate` per day on [lo, hi), thinned by the intensity
    (and a fade to FADE_FLOOR over the FADE_DAYS before `fade_end`). Returns (owner, day) arrays."""
    span = np.maximum(hi - lo, 0.0)
    counts = rng.poisson(rate * _MAX_INTENSITY * span)
    who = np.repeat(owner, counts)
    at = np.repeat(lo, counts) + rng.random(who.size) * np.repeat(span, counts)
    keep = _intensity(np.floor(at)) / _MAX_INTENSITY
    if fade_end is not None:
        end = np.repeat(fade_end, counts)
        left = np.clip((end - at) / FADE_DAYS, 0.0, 1.0)
        keep = keep * (FADE_FLOOR + (1.0 - FADE_FLOOR) * left)
    kept = rng.random(who.size) < keep
    return who[kept], np.floor(at[kept]).astype(np.int64)


def _weekday(day: np.ndarray) -> np.ndarray:
    """Days without sales (Saturdays) move to the next day."""
    return np.where(_intensity(day) > 0, day, day + 1)


def _clock(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds into the day: business hours 7:00-20:00, busiest around midday, whole minutes."""
    hours = np.clip(rng.normal(12.5, 2.3, size=n), 7.0, 19.99)
    return (np.floor(hours * 60.0) * 60.0).astype(np.int64)


def generate_transactions(profile: RetailerProfile, seed: int = 42,
                          drift: TransactionDrift | None = None) -> GeneratedTransactions:
    """Draw the retailer's invoice lines (see the module doc); the same arguments give the same lines."""
    started = time.perf_counter()
    if drift is not None:
        profile = profile.drifted(drift)
    rng = np.random.default_rng(seed)
    codes, descriptions, unit_prices, popularity = _catalogue(rng, profile.products)
    if drift is not None and drift.unit_price != 1.0:
        unit_prices = np.round(unit_prices * drift.unit_price, 2)
    first_day, last_day = _days(profile.start), _days(profile.end)
    n = profile.customers

    # -- customers ------------------------------------------------------------------------------------
    present = rng.random(n) < profile.present_share  # already customers before the first day
    joined = np.where(present, first_day - rng.random(n) * 365.0,
                      first_day + rng.random(n) * (last_day - 30 - first_day))
    rate = np.exp(rng.normal(0.0, profile.rate_sigma, size=n)) / profile.rate_median_days
    basket = np.exp(rng.normal(math.log(profile.basket_median), 0.6, size=n))
    qscale = np.exp(rng.normal(math.log(profile.quantity_median), 0.8, size=n))
    returns = profile.return_share * np.exp(rng.normal(-0.5, 1.0, size=n))  # mean ~ return_share
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum()).astype(np.int16)
    # rare buyers leave more often: the odds scale with (median rate / rate)^0.5, normalised to the share
    tilt = np.sqrt(np.clip(1.0 / (rate * profile.rate_median_days), 0.05, 20.0))
    leave_p = np.clip(profile.churn_share * tilt / tilt.mean(), 0.0, 0.97)
    leaves = rng.random(n) < leave_p
    stop = np.where(leaves, joined + 30.0 + rng.random(n) * (last_day + 120 - joined - 30.0), np.inf)
    lo, hi = np.maximum(joined, first_day), np.minimum(stop, last_day + 1.0)

    who, day = _thin(rng, np.arange(n), lo, hi, rate, fade_end=stop)
    # a new customer buys on the day they join (a customer already there has no such day in the period)
    new = (joined >= first_day) & (joined < hi)
    who = np.concatenate([np.arange(n)[new], who])
    day = np.concatenate([np.floor(joined[new]).astype(np.int64), day])
    day = np.minimum(_weekday(day), last_day)

    # -- guest invoices ---------------------------------------------------------------------------------
    guest_invoices = int(round(who.size * profile.guest_share / (1.0 - profile.guest_share)))
    g_rate = np.array([guest_invoices / max(1, last_day + 1 - first_day) / 0.55])  # 0.55: mean intensity
    _, g_day = _thin(rng, np.zeros(1, dtype=np.int64), np.array([float(first_day)]),
                     np.array([last_day + 1.0]), g_rate)
    g_day = g_day[:guest_invoices] if g_day.size > guest_invoices else g_day

    inv_customer = np.concatenate([who, np.full(g_day.size, -1, dtype=np.int64)])
    inv_day = np.concatenate([day, g_day])
    inv_seconds = inv_day * DAY_S + _clock(rng, inv_day.size)
    guest = inv_customer < 0
    inv_basket = np.where(guest, profile.basket_median * 0.6, basket[np.maximum(inv_customer, 0)])
    inv_lines = 1 + rng.poisson(np.maximum(inv_basket - 1.0, 0.0))
    inv_country = np.where(guest, 0, country[np.maximum(inv_customer, 0)]).astype(np.int16)

    # -- lines of the purchases -------------------------------------------------------------------------
    line_inv = np.repeat(np.arange(inv_day.size), inv_lines)
    stock = np.searchsorted(popularity, rng.random(line_inv.size), side="right").astype(np.int32)
    stock = np.minimum(stock, profile.products - 1)
    owner = inv_customer[line_inv]
    scale = np.where(owner < 0, 2.0, qscale[np.maximum(owner, 0)])
    quantity = np.maximum(1, np.round(np.exp(rng.normal(np.log(scale), 0.5)))).astype(np.int64)
    pack = quantity >= 6
    quantity = np.where(pack, (quantity // 6) * 6, quantity)  # wholesale lines come in sixes
    price = unit_prices[stock]

    # -- cancellations: some lines of a purchase returned a few days later --------------------------------
    p_return = np.where(guest, profile.return_share * 0.3, returns[np.maximum(inv_customer, 0)])
    cancelled_of = np.flatnonzero(rng.random(inv_day.size) < np.clip(p_return, 0.0, 0.9))
    c_day = _weekday(inv_day[cancelled_of] + rng.integers(0, 31, size=cancelled_of.size))
    c_seconds = np.maximum(c_day * DAY_S + _clock(rng, c_day.size), inv_seconds[cancelled_of] + 600)
    in_period = c_seconds < (last_day + 1) * DAY_S
    cancelled_of, c_seconds = cancelled_of[in_period], c_seconds[in_period]
    c_lines = np.minimum(1 + rng.poisson(0.8, size=cancelled_of.size), inv_lines[cancelled_of])
    first_line = np.concatenate([[0], np.cumsum(inv_lines)[:-1]])
    c_src = np.repeat(first_line[cancelled_of], c_lines) + _ranks(c_lines)
    c_qty = -np.maximum(1, np.ceil(quantity[c_src] * rng.random(c_src.size))).astype(np.int64)

    # -- every invoice in time order, numbered ---------------------------------------------------------
    all_seconds = np.concatenate([inv_seconds, c_seconds])
    order = np.lexsort((np.arange(all_seconds.size), all_seconds))
    number = np.empty(all_seconds.size, dtype=np.int64)
    number[order] = FIRST_INVOICE + np.arange(all_seconds.size)
    n_inv = inv_seconds.size
    c_owner = inv_customer[cancelled_of]

    lines_invoice = np.concatenate([number[line_inv], np.repeat(number[n_inv:], c_lines)])
    lines = GeneratedTransactions(
        invoice=lines_invoice,
        cancelled=np.concatenate([np.zeros(line_inv.size, bool), np.ones(c_src.size, bool)]),
        bad_debt=np.zeros(lines_invoice.size, bool),
        stock=np.concatenate([stock, stock[c_src]]),
        quantity=np.concatenate([quantity, c_qty]),
        seconds=np.concatenate([inv_seconds[line_inv], np.repeat(c_seconds, c_lines)]),
        price=np.concatenate([price, price[c_src]]),
        customer=np.concatenate([owner, np.repeat(c_owner, c_lines)]),
        country=np.concatenate([inv_country[line_inv], inv_country[cancelled_of].repeat(c_lines)]),
        stock_codes=codes,
        descriptions=descriptions,
    )
    if profile.dirty:
        lines = _dirty(rng, lines, profile)
    # file order: by invoice number, lines in the order drawn
    final = np.lexsort((np.arange(lines.rows), lines.invoice))
    lines = _take(lines, final)
    log.info("generate.transactions", customers=n, rows=lines.rows, invoices=int(all_seconds.size),
             cancellations=int(cancelled_of.size), leaving=int(leaves.sum()),
             seconds=round(time.perf_counter() - started, 3))
    return lines


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, .., count-1 for every count, concatenated."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _take(lines: GeneratedTransactions, index: np.ndarray) -> GeneratedTransactions:
    arrays = {name: getattr(lines, name)[index] for name in
              ("invoice", "cancelled", "bad_debt", "stock", "quantity", "seconds", "price", "customer",
               "country")}
    return replace(lines, **arrays)


def _dirty(rng: np.random.Generator, lines: GeneratedTransactions,
           profile: RetailerProfile) -> GeneratedTransactions:
    """Duplicate lines, stock adjustments and bad-debt lines, as real exports have them."""
    n = lines.rows
    # stock adjustments: guest sale lines turned into a negative quantity at price 0
    guest_sales = np.flatnonzero((lines.customer < 0) & ~lines.cancelled)
    k = min(guest_sales.size, int(round(n * profile.adjustment_share)))
    adjusted = rng.choice(guest_sales, size=k, replace=False) if k else np.zeros(0, dtype=np.int64)
    lines.quantity[adjusted] = -np.abs(lines.quantity[adjusted]) - 1
    lines.price[adjusted] = 0.0
    # exact duplicates of some lines, listed right after them
    dup = np.flatnonzero(rng.random(n) < profile.duplicate_share)
    index = np.sort(np.concatenate([np.arange(n), dup]), kind="stable")
    lines = _take(lines, index)
    # "Adjust bad debt": about two lines per million, at least one, with a negative price
    bad = max(1, int(round(n * 2e-6)))
    at = rng.choice(lines.rows, size=bad, replace=False)
    extra = _take(lines, at)
    extra.bad_debt[:] = True
    extra.stock[:] = -1
    extra.quantity[:] = 1
    extra.price[:] = -np.round(rng.uniform(1_000, 12_000, size=bad), 2)
    extra.customer[:] = -1
    return _concat(lines, extra)


def _concat(a: GeneratedTransactions, b: GeneratedTransactions) -> GeneratedTransactions:
    arrays = {name: np.concatenate([getattr(a, name), getattr(b, name)]) for name in
              ("invoice", "cancelled", "bad_debt", "stock", "quantity", "seconds", "price", "customer",
               "country")}
    return replace(a, **arrays)


# ------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------
def write_transactions(lines: GeneratedTransactions, out: Path | str, columns: TransactionColumns) -> Path:
    """Write the lines atomically: Parquet for a ``.parquet`` path, CSV otherwise."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = Path(out)
    table = lines.to_arrow(columns)
    with atomic_path(out) as tmp:
        if out.suffix.lower() in (".parquet", ".pq"):
            pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 20)
        else:
            pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="needed"))
    return out


def generate_to_file(out: Path | str, columns: TransactionColumns, *, profile: RetailerProfile,
                     seed: int = 42, drift: TransactionDrift | None = None) -> dict[str, Any]:
    """Generate and write; returns a summary (rows, customers, period, seconds)."""
    started = time.perf_counter()
    lines = generate_transactions(profile, seed=seed, drift=drift)
    path = write_transactions(lines, out, columns)
    summary = {
        "path": str(path), "rows": lines.rows,
        "customers": int(np.unique(lines.customer[lines.customer >= 0]).size),
        "first": _when(lines.seconds.min()), "last": _when(lines.seconds.max()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("generate.transactions.written", **summary)
    return summary


def _when(seconds: Any) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).replace(tzinfo=None).isoformat(sep=" ")
