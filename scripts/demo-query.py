#!/usr/bin/env python3
"""Last step of `make demo`: query the Parquet files inlet wrote, with DuckDB.

    .venv/bin/python scripts/demo-query.py [WAREHOUSE]     (default ./warehouse)

Reads WAREHOUSE/public/<table>/*.parquet and prints order totals per status and the best
selling products. Exits 1 if a table's files are missing.
"""

import os
import sys

import duckdb


def main():
    warehouse = sys.argv[1] if len(sys.argv) > 1 else "warehouse"
    con = duckdb.connect()

    for table in ("orders", "order_items", "products", "customers"):
        folder = os.path.join(warehouse, "public", table)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet")) if os.path.isdir(folder) else []
        if not files:
            print(f"demo-query: no Parquet files in {folder}/", file=sys.stderr)
            return 1
        glob = os.path.join(folder, "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}')")
        n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        print(f"{table:<12} {n:>7} rows in {len(files)} file(s): {', '.join(files)}")

    print("\nOrder totals per status (from warehouse/public/orders + order_items):")
    con.sql(
        """
        SELECT o.status::VARCHAR                                                 AS status,
               count(DISTINCT o.id)                                              AS orders,
               sum(i.quantity)::BIGINT                                           AS items,
               round(sum(i.quantity * i.unit_price * (1 - i.discount)), 2)       AS revenue,
               (sum(i.quantity * i.unit_price * (1 - i.discount))
                / count(DISTINCT o.id))::DECIMAL(12, 2)                          AS avg_order,
               min(o.ordered_at)::DATE                                           AS first_order,
               max(o.ordered_at)::DATE                                           AS last_order
        FROM orders AS o
        JOIN order_items AS i ON i.order_id = o.id
        GROUP BY ALL
        ORDER BY revenue DESC
        """
    ).show()

    print("Top 5 products by revenue (delivered orders):")
    con.sql(
        """
        SELECT p.sku,
               p.name,
               p.price,
               p.tags,
               sum(i.quantity)::BIGINT                                       AS sold,
               round(sum(i.quantity * i.unit_price * (1 - i.discount)), 2)   AS revenue
        FROM order_items AS i
        JOIN orders   AS o ON o.id = i.order_id
        JOIN products AS p ON p.id = i.product_id
        WHERE o.status = 'delivered'
        GROUP BY ALL
        ORDER BY revenue DESC
        LIMIT 5
        """
    ).show(max_width=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
