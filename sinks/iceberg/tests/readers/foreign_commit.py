"""Commits to a folder-catalog Iceberg table inlet writes as ANOTHER engine would: pyiceberg
plans and writes the change (data files, manifests, a metadata file), and the commit is the
folder catalog's own protocol, the one Iceberg's HadoopCatalog uses: the new metadata file is
published as `metadata/v<N+1>.metadata.json` create-if-absent (a hard link, so of two writers
of N+1 only one wins), then `version-hint.text` is updated. When inlet takes N+1 first, the
change is planned again on the newer table and retried.

    python foreign_commit.py <table folder> rewrite          # overwrite with the same rows
    python foreign_commit.py <table folder> delete <filter>  # pyiceberg row filter, e.g. "id < 10"
    python foreign_commit.py <table folder> expire           # expire every snapshot but main's
    python foreign_commit.py <table folder> loop <stop file> [<delete filter>]

`loop` commits one change after another, concurrently with inlet, until the stop file exists:
first the delete (once, when a filter is given), then rewrite, expire, rewrite, ... with a short
random pause between them. It counts the commits it lost to another writer (the race for
version N+1, planned again each time) and reports every commit it made, and every error; each
commit is also appended as a JSON line to `<stop file>.commits` as it is made.

With `--sql-catalog DB` the first argument is a table identifier (`namespace.table`) of the
sqlite SqlCatalog "inlet_test" in DB (the catalog behind the tests' REST catalog server), and
the change is committed through that catalog instead: inlet's next commit through the REST
catalog then meets HTTP 409.

Prints one JSON object: the operation, the version committed and the rows it touched.
"""

import datetime
import json
import os
import sys
import tempfile
import time


def current_version(metadata_dir):
    version = None
    try:
        with open(os.path.join(metadata_dir, "version-hint.text")) as f:
            version = int(f.read().strip())
    except (OSError, ValueError):
        pass
    if version is None:
        versions = [
            int(n[1:-len(".metadata.json")])
            for n in os.listdir(metadata_dir)
            if n.startswith("v") and n.endswith(".metadata.json")
        ]
        version = max(versions)
    # The hint may lag behind the newest version.
    while os.path.exists(os.path.join(metadata_dir, f"v{version + 1}.metadata.json")):
        version += 1
    return version


def change(catalog, name, op, args):
    """Runs `op` on the table `name` of `catalog`; the rows (or snapshots) it touched."""
    table = catalog.load_table(name)
    touched = 0
    if op == "rewrite":
        rows = table.scan().to_arrow()
        table.overwrite(rows)
        touched = rows.num_rows
    elif op == "delete":
        before = table.scan().to_arrow().num_rows
        table.delete(args[0])
        touched = before - catalog.load_table(name).scan().to_arrow().num_rows
    elif op == "expire":
        expiring = [
            s.snapshot_id
            for s in table.metadata.snapshots
            if s.snapshot_id != table.metadata.current_snapshot_id
        ]
        if expiring:
            table.maintenance.expire_snapshots().by_ids(expiring).commit()
        touched = len(expiring)
    else:
        raise SystemExit(f"unknown operation {op}")
    return touched


_catalogs = 0


def attempt(table_dir, op, args, scratch):
    from pyiceberg.catalog.sql import SqlCatalog

    metadata_dir = os.path.join(table_dir, "metadata")
    global _catalogs
    _catalogs += 1
    version = current_version(metadata_dir)
    base = os.path.join(metadata_dir, f"v{version}.metadata.json")
    catalog = SqlCatalog(
        "foreign",
        # One scratch catalog per attempt: a loop plans on the same version more than once.
        uri=f"sqlite:///{scratch}/catalog-{_catalogs}-{os.getpid()}.db",
        warehouse=f"file://{scratch}",
    )
    catalog.create_namespace_if_not_exists("ns")
    name = ("ns", f"t{version}")
    catalog.register_table(name, base)
    touched = change(catalog, name, op, args)
    new = catalog.load_table(name).metadata_location
    if new == base:
        return {"op": op, "version": version, "touched": touched, "committed": False}
    new_path = new.removeprefix("file://")
    try:
        os.link(new_path, os.path.join(metadata_dir, f"v{version + 1}.metadata.json"))
    except FileExistsError:
        return None  # another writer (inlet) took version + 1 first: plan again
    with open(os.path.join(metadata_dir, "version-hint.text"), "w") as f:
        f.write(str(version + 1))
    return {"op": op, "version": version + 1, "touched": touched, "committed": True}


def through_sql_catalog(db, name, op, args):
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("inlet_test", uri=f"sqlite:///{db}")
    before = catalog.load_table(name).metadata_location
    touched = change(catalog, name, op, args)
    after = catalog.load_table(name).metadata_location
    return {"op": op, "touched": touched, "committed": after != before, "metadata": after}


def run_loop(table_dir, stop_file, delete_filter):
    """Commits until `stop_file` exists; returns the report (see the module doc)."""
    import random
    import traceback

    rng = random.Random(os.getpid())
    commits, errors = [], []
    conflicts = 0
    cycle = ["rewrite", "expire"]
    turn = 0
    pending_delete = delete_filter is not None
    with tempfile.TemporaryDirectory() as scratch:
        while not os.path.exists(stop_file):
            if pending_delete:
                op, args = "delete", [delete_filter]
            else:
                op, args = cycle[turn % len(cycle)], []
            try:
                done = attempt(table_dir, op, args, scratch)
            except Exception:  # reported to the test, which fails with it
                errors.append(traceback.format_exc())
                if len(errors) >= 5:
                    break
                continue
            if done is None:
                conflicts += 1
                continue
            if op == "delete":
                pending_delete = False
            else:
                turn += 1
            if done["committed"]:
                done["at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
                commits.append(done)
                # Progress, for a test that waits for a number of commits.
                with open(stop_file + ".commits", "a") as f:
                    f.write(json.dumps(done) + "\n")
            time.sleep(rng.uniform(0.0, 0.2))
    return {"commits": commits, "conflicts": conflicts, "errors": errors}


def main():
    argv = sys.argv[1:]
    if len(argv) >= 3 and argv[1] == "loop":
        table_dir, stop_file = argv[0], argv[2]
        delete_filter = argv[3] if len(argv) > 3 else None
        print(json.dumps(run_loop(table_dir, stop_file, delete_filter)))
        return
    if argv[0] == "--sql-catalog":
        db, name, op, args = argv[1], argv[2], argv[3], argv[4:]
        print(json.dumps(through_sql_catalog(db, name, op, args)))
        return
    table_dir, op, args = argv[0], argv[1], argv[2:]
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(50):
            done = attempt(table_dir, op, args, scratch)
            if done is not None:
                done["at"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
                print(json.dumps(done))
                return
    raise SystemExit("lost the race for the next version 50 times")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # As read_table.py: native extension destructors can abort at interpreter shutdown.
    os._exit(0)
