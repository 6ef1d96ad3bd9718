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

    keys = {"orders": "id", "order_items": "order_id, line_no", "products": "id", "customers": "id"}
    changes = 0
    for table, key in keys.items():
        folder = os.path.join(warehouse, "public", table)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet")) if os.path.isdir(folder) else []
        loads = [f for f in files if f.startswith("LOAD")]
        if not loads:
            print(f"demo-query: no LOAD files in {folder}/", file=sys.stderr)
            return 1
        load_glob = os.path.join(folder, "LOAD*.parquet").replace("'", "''")
        change_files = [f for f in files if not f.startswith("LOAD")]
        # The table as it is now: the full load, then every change replayed; per key the last
        # change wins (by commit position, then file, then row), and a delete removes the row.
        if change_files:
            change_glob = os.path.join(folder, "2*.parquet").replace("'", "''")
            con.execute(f"""
                CREATE VIEW {table} AS
                SELECT * EXCLUDE (Op, _inlet_commit_ts, _inlet_lsn, _inlet_txid, filename, file_row_number, rn)
                FROM (
                    SELECT *, row_number() OVER (
                        PARTITION BY {key} ORDER BY _inlet_lsn DESC, filename DESC, file_row_number DESC) AS rn
                    FROM (
                        SELECT 'I' AS Op, NULL::TIMESTAMPTZ AS _inlet_commit_ts, 0::BIGINT AS _inlet_lsn,
                               0::BIGINT AS _inlet_txid, *
                        FROM read_parquet('{load_glob}', filename = true, file_row_number = true)
                        UNION ALL BY NAME
                        SELECT * FROM read_parquet('{change_glob}', union_by_name = true, filename = true,
                                                   file_row_number = true)
                    )
                )
                WHERE rn = 1 AND Op <> 'D'
            """)
            n_changes = con.execute(f"SELECT count(*) FROM read_parquet('{change_glob}')").fetchone()[0]
            changes += n_changes
        else:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{load_glob}')")
            n_changes = 0
        n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        print(f"{table:<12} {n:>7} rows now: {len(loads)} LOAD file(s), {len(change_files)} change file(s) with {n_changes} changes")

    if changes:
        print("\nChanges captured (change files, DMS layout):")
        glob = os.path.join(warehouse, "public", "*", "2*.parquet").replace("'", "''")
        con.sql(f"""
            SELECT regexp_extract(filename, 'public/([^/]+)/', 1) AS "table", Op, count(*) AS changes
            FROM read_parquet('{glob}', union_by_name = true, filename = true)
            GROUP BY ALL ORDER BY 1, 2
        """).show()

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
