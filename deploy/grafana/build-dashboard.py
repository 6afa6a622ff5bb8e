#!/usr/bin/env python3
"""Writes deploy/grafana/soko-dashboard.json, the Grafana dashboard, from the panel list below.

Generated rather than hand-edited so that every panel has the same shape and the list reads as
documentation. Run it after changing a panel; CI checks that the JSON is up to date and that every
metric it queries is one a running Soko exports (tests/it/dashboard.rs).
"""
import json
import pathlib
import sys

SERVER_ERRORS = 'code=~"INTERNAL|UNKNOWN|DATA_LOSS|UNAVAILABLE|DEADLINE_EXCEEDED"'

# (row, title, unit, [(legend, expr)], description)
PANELS = [
    ("Calls", "Request rate by method", "reqps",
     [("{{method}}", 'sum by (method) (rate(soko_grpc_server_handled_total{instance=~"$instance"}[$__rate_interval]))')],
     "Calls finished per second, by method (from the policy table; unknown paths are `other`)."),
    ("Calls", "Server error ratio by method", "percentunit",
     [("{{method}}", f'sum by (method) (rate(soko_grpc_server_handled_total{{instance=~"$instance",{SERVER_ERRORS}}}[$__rate_interval])) '
                     '/ sum by (method) (rate(soko_grpc_server_handled_total{instance=~"$instance"}[$__rate_interval]))')],
     "Share of calls that failed by the server's doing. The SLO allows 0.1 %. Client refusals are in the next panel."),
    ("Calls", "Latency p99 by method", "s",
     [("{{method}}", 'histogram_quantile(0.99, sum by (le, method) (rate(soko_grpc_server_handling_seconds_bucket{instance=~"$instance"}[$__rate_interval])))')],
     "99th percentile of server-side latency. The SLO: 99 % of calls within 250 ms (image search and logins are slow by design)."),
    ("Calls", "Latency p50 by method", "s",
     [("{{method}}", 'histogram_quantile(0.5, sum by (le, method) (rate(soko_grpc_server_handling_seconds_bucket{instance=~"$instance"}[$__rate_interval])))')],
     "Median server-side latency."),
    ("Calls", "Answers by status", "reqps",
     [("{{code}}", 'sum by (code) (rate(soko_grpc_server_handled_total{instance=~"$instance",code!="OK"}[$__rate_interval]))')],
     "Every non-OK answer by status: refusals of bad input, credentials and rate limits as well as failures."),
    ("Load", "Limiter decisions", "reqps",
     [("{{class}} {{outcome}} ({{backend}})", 'sum by (class, outcome, backend) (rate(soko_ratelimit_decisions_total{instance=~"$instance"}[$__rate_interval])) > 0')],
     "Rate-limit decisions by class and outcome, and whether Redis or the in-process fallback decided."),
    ("Load", "Shed, overloaded and late calls", "reqps",
     [("shed (in-flight limit)", 'sum(rate(soko_requests_shed_total{instance=~"$instance"}[$__rate_interval]))'),
      ("past their deadline", 'sum(rate(soko_requests_deadline_exceeded_total{instance=~"$instance"}[$__rate_interval]))'),
      ("{{class}} {{outcome}}", 'sum by (class, outcome) (rate(soko_admission_total{instance=~"$instance"}[$__rate_interval]))')],
     "Calls refused to protect the server: the global in-flight limit, deadlines, and admission of expensive work."),
    ("Database", "Pool connections", "short",
     [("{{state}}", 'sum by (state) (soko_db_pool_connections{instance=~"$instance"})'),
      ("waiting", 'sum(soko_db_pool_waiting{instance=~"$instance"})')],
     "Connections in use and idle, and calls waiting for one. Waiting that does not fall means SOKO_DB_POOL_SIZE is too small or the database is slow."),
    ("Database", "Pool checkouts", "reqps",
     [("{{outcome}}", 'sum by (outcome) (rate(soko_db_pool_checkouts_total{instance=~"$instance"}[$__rate_interval]))'),
      ("mean wait (s)", 'sum(rate(soko_db_pool_wait_seconds_total{instance=~"$instance"}[$__rate_interval])) / sum(rate(soko_db_pool_checkouts_total{instance=~"$instance"}[$__rate_interval]))')],
     "Checkouts that got a connection at once, after waiting, or not at all (answered UNAVAILABLE)."),
    ("Caches", "Cache hit ratio", "percentunit",
     [("product cache", 'sum(rate(soko_product_cache_lookups_total{instance=~"$instance",outcome="hit"}[$__rate_interval])) / sum(rate(soko_product_cache_lookups_total{instance=~"$instance"}[$__rate_interval]))'),
      ("search cache", 'sum(rate(soko_search_cache_lookups_total{instance=~"$instance",outcome="hit"}[$__rate_interval])) / sum(rate(soko_search_cache_lookups_total{instance=~"$instance"}[$__rate_interval]))')],
     "Share of product reads and searches answered from a cache (this process's or Redis)."),
    ("Caches", "Product cache entries", "short",
     [("{{instance}}", 'soko_product_cache_entries{instance=~"$instance"}'),
      ("evictions/s", 'sum(rate(soko_product_cache_evictions_total{instance=~"$instance"}[$__rate_interval]))')],
     "Products held in each replica's cache, and evictions (raise SOKO_PRODUCT_CACHE_ENTRIES if they persist)."),
    ("Search index", "Follower lag", "s",
     [("{{instance}} seconds", 'soko_search_lag_seconds{instance=~"$instance"}'),
      ("{{instance}} since last read", 'time() - soko_search_last_sync_timestamp_seconds{instance=~"$instance"}')],
     "How far each replica's search index is behind the outbox, and how long since its follower last read it."),
    ("Search index", "Follower lag (events)", "short",
     [("{{instance}}", 'soko_search_lag_events{instance=~"$instance"}'),
      ("{{instance}} products indexed", 'soko_search_index_products{instance=~"$instance"}')],
     "Outbox events not yet applied, and products in the text index."),
    ("Search index", "Snapshot age", "s",
     [("{{instance}}", 'time() - soko_search_snapshot_timestamp_seconds{instance=~"$instance"}')],
     "Age of the on-disk vector index snapshot: a restart replays the outbox from it."),
    ("Milvus", "Milvus sync lag", "s",
     [("{{instance}} seconds", 'soko_milvus_sync_lag_seconds{instance=~"$instance"}'),
      ("{{instance}} events", 'soko_milvus_sync_lag_events{instance=~"$instance"}')],
     "Age of the oldest outbox event Milvus has not received, and how many there are, as each replica measures it. Past 30 s GetSyncStatus reports Milvus degraded; vector search falls back to the local index while Milvus fails."),
    ("Milvus", "Milvus sync throughput and errors", "ops",
     [("events applied/s", 'sum(rate(soko_milvus_sync_events_total{instance=~"$instance"}[$__rate_interval]))'),
      ("errors/s", 'sum(rate(soko_milvus_sync_errors_total{instance=~"$instance"}[$__rate_interval]))'),
      ("repaired by reconciliation", 'sum(increase(soko_milvus_reconcile_repairs_total{instance=~"$instance"}[$__range]))')],
     "Outbox events the lease holder wrote to Milvus, failed turns of the sync (it backs off and retries), and entities a reconciliation had to fix: any at all means drift, see deploy/INCIDENTS.md."),
    ("Dependencies", "Circuit breakers", "short",
     [("{{dependency}}", 'max by (dependency) (soko_circuit_breaker_state{instance=~"$instance"})')],
     "0 closed, 1 open, 2 half-open. Open database = automatic read-only mode; open redis = in-process fallbacks."),
    ("Dependencies", "Degraded modes", "short",
     [("redis degraded", 'max(soko_redis_degraded{instance=~"$instance"})'),
      ("read-only mode", 'max(soko_read_only_mode{instance=~"$instance"})')],
     "1 while Redis is failing (limits and caches are per replica) or the read-only switch is on."),
    ("Dependencies", "Dependency errors", "reqps",
     [("{{dependency}}", 'sum by (dependency) (rate(soko_dependency_errors_total{instance=~"$instance"}[$__rate_interval]))'),
      ("redis", 'sum(rate(soko_redis_errors_total{instance=~"$instance"}[$__rate_interval]))')],
     "Calls that failed because a dependency was unavailable, and failed Redis calls and pings."),
    ("Telemetry", "Error tracking and traces", "short",
     [("sentry {{outcome}}", 'sum by (outcome) (increase(soko_sentry_events_total{instance=~"$instance"}[$__range]))'),
      ("spans exported/s", 'sum(rate(soko_trace_spans_exported_total{instance=~"$instance"}[$__rate_interval]))')],
     "Events sent to Sentry (sent, refused, failed) and spans exported over OTLP."),
    ("Telemetry", "Panics and dropped error events", "short",
     [("panics", 'sum(increase(soko_panics_total{instance=~"$instance"}[$__range]))'),
      ("sentry dropped {{reason}}", 'sum by (reason) (increase(soko_sentry_events_dropped_total{instance=~"$instance"}[$__range]))')],
     "Calls whose handler panicked (answered INTERNAL), and Sentry events not sent: over a failure's budget, queue full, or rate limited by Sentry."),
]


def panel(index, title, unit, targets, description, x, y):
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard():
    panels, y, row, column = [], 0, None, 0
    for index, (row_title, title, unit, targets, description) in enumerate(PANELS):
        if row_title != row:
            if column:
                y += 8
            row, column = row_title, 0
            panels.append({"type": "row", "title": row_title, "collapsed": False, "id": 100 + index,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            y += 1
        panels.append(panel(index, title, unit, targets, description, 12 * column, y))
        column += 1
        if column == 2:
            column, y = 0, y + 8
    return {
        "uid": "soko-overview",
        "title": "Soko",
        "description": "Soko's calls, load protection, database pool, caches, search index, Milvus sync and dependencies. deploy/MONITORING.md explains each panel's alert.",
        "tags": ["soko"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "instance", "type": "query", "label": "Replica",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(soko_build_info, instance)", "includeAll": True, "multi": True,
             "allValue": ".*", "current": {"text": "All", "value": "$__all"}},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    out = pathlib.Path(__file__).with_name("soko-dashboard.json")
    text = json.dumps(dashboard(), indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        if out.read_text() != text:
            sys.exit(f"{out} is out of date: run python3 {__file__}")
        print(f"{out}: up to date")
    else:
        out.write_text(text)
        print(f"wrote {out}")
