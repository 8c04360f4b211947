-- Customer features as of each cut-off, and the churn label: one SQL text for DuckDB and PostgreSQL.
--
-- Reads two relations:
--   tx       the clean lines (transactions/validate.py): customer_id, invoice, stock_code, quantity, price,
--            is_return, t (days since 1970-01-01, fractional), day_number (whole days)
--   cutoffs  one row per cut-off (transactions/cutoffs.py): cutoff_t, horizon_end_t, trend_start_t,
--            population_start_t, all on the t scale
-- Features read only lines with t < cutoff_t; the label only purchases with cutoff_t <= t < horizon_end_t.
-- Portable on purpose: numbers instead of dialect date arithmetic, explicit casts before every division,
-- standard aggregates with FILTER.
WITH purchase_lines AS (
    SELECT customer_id, invoice, stock_code, quantity, quantity * price AS amount, t, day_number
    FROM tx
    WHERE NOT is_return
),
invoices AS (                -- one row per purchase invoice
    SELECT customer_id, invoice, MIN(t) AS t, SUM(quantity) AS items, SUM(amount) AS amount
    FROM purchase_lines
    GROUP BY customer_id, invoice
),
customer_days AS (           -- the days a customer bought something
    SELECT DISTINCT customer_id, day_number FROM purchase_lines
),
first_buys AS (              -- when a customer first bought each product
    SELECT customer_id, stock_code, MIN(t) AS t FROM purchase_lines GROUP BY customer_id, stock_code
),
returns AS (                 -- one row per cancelled invoice: the value returned
    SELECT customer_id, invoice, MIN(t) AS t, SUM(-quantity * price) AS amount
    FROM tx
    WHERE is_return
    GROUP BY customer_id, invoice
),
history AS (
    SELECT c.cutoff_t, i.customer_id,
           COUNT(*) AS frequency,
           SUM(i.amount) AS monetary,
           SUM(i.items) AS items,
           MIN(i.t) AS first_t,
           MAX(i.t) AS last_t,
           COUNT(*) FILTER (WHERE i.t >= c.trend_start_t) AS recent_invoices,
           COALESCE(SUM(i.amount) FILTER (WHERE i.t >= c.trend_start_t), 0) AS recent_amount
    FROM cutoffs c
    JOIN invoices i ON i.t < c.cutoff_t
    GROUP BY c.cutoff_t, i.customer_id
),
active AS (
    SELECT c.cutoff_t, d.customer_id, COUNT(*) AS active_days
    FROM cutoffs c
    JOIN customer_days d ON d.day_number < c.cutoff_t
    GROUP BY c.cutoff_t, d.customer_id
),
products AS (
    SELECT c.cutoff_t, f.customer_id, COUNT(*) AS distinct_products
    FROM cutoffs c
    JOIN first_buys f ON f.t < c.cutoff_t
    GROUP BY c.cutoff_t, f.customer_id
),
returned AS (
    SELECT c.cutoff_t, r.customer_id, SUM(r.amount) AS returned_amount
    FROM cutoffs c
    JOIN returns r ON r.t < c.cutoff_t
    GROUP BY c.cutoff_t, r.customer_id
),
future AS (                  -- the label's window; never joined into a feature
    SELECT c.cutoff_t, i.customer_id, COUNT(*) AS invoices
    FROM cutoffs c
    JOIN invoices i ON i.t >= c.cutoff_t AND i.t < c.horizon_end_t
    GROUP BY c.cutoff_t, i.customer_id
)
SELECT
    h.customer_id,
    h.cutoff_t,
    CAST(c.cutoff_t - h.last_t AS DOUBLE PRECISION) AS recency_days,
    h.frequency,
    CAST(h.monetary AS DOUBLE PRECISION) AS monetary,
    CAST(h.monetary AS DOUBLE PRECISION) / h.frequency AS avg_basket_value,
    CAST(h.items AS DOUBLE PRECISION) / h.frequency AS avg_items_per_invoice,
    COALESCE(p.distinct_products, 0) AS distinct_products,
    COALESCE(a.active_days, 0) AS active_days,
    CAST(c.cutoff_t - h.first_t AS DOUBLE PRECISION) AS tenure_days,
    h.recent_invoices,
    -- invoices per day in the recent window over invoices per day since the first purchase (1: steady)
    (CAST(h.recent_invoices AS DOUBLE PRECISION) / (c.cutoff_t - c.trend_start_t))
        / (CAST(h.frequency AS DOUBLE PRECISION)
           / GREATEST(c.cutoff_t - h.first_t, c.cutoff_t - c.trend_start_t)) AS invoice_trend,
    CASE WHEN h.monetary > 0 THEN
        (CAST(h.recent_amount AS DOUBLE PRECISION) / (c.cutoff_t - c.trend_start_t))
            / (CAST(h.monetary AS DOUBLE PRECISION)
               / GREATEST(c.cutoff_t - h.first_t, c.cutoff_t - c.trend_start_t))
        ELSE 0 END AS spend_trend,
    CASE WHEN h.monetary > 0 THEN CAST(COALESCE(r.returned_amount, 0) AS DOUBLE PRECISION) / h.monetary
        ELSE 0 END AS return_rate,
    CASE WHEN f.invoices IS NULL THEN 1 ELSE 0 END AS churned
FROM history h
JOIN cutoffs c ON c.cutoff_t = h.cutoff_t
LEFT JOIN active a ON a.cutoff_t = h.cutoff_t AND a.customer_id = h.customer_id
LEFT JOIN products p ON p.cutoff_t = h.cutoff_t AND p.customer_id = h.customer_id
LEFT JOIN returned r ON r.cutoff_t = h.cutoff_t AND r.customer_id = h.customer_id
LEFT JOIN future f ON f.cutoff_t = h.cutoff_t AND f.customer_id = h.customer_id
WHERE h.last_t >= c.population_start_t
ORDER BY h.cutoff_t, h.customer_id
