#!/usr/bin/env python3
"""Checks the Kubernetes packaging in deploy/ offline (`make validate-deploy`, run by `make test`).

    .venv/bin/python scripts/validate-deploy.py [CHART_DIR]

1. `helm lint --strict` of the chart (deploy/helm/inlet) with each value set
   deploy/helm/inlet/ci/*-values.yaml (the chart's defaults hold no task group). Helm is Helm's Go SDK through the PyPI package
   helm-python-sdk (no helm binary can be downloaded on the build machines).
2. `helm template` of the same value sets, and every rendered object validated against the
   Kubernetes OpenAPI schemas of the oldest and newest versions the chart supports, strictly
   (an unknown field is an error): the PyPI package kubernetes-validate, which ships the schemas,
   so nothing is fetched.
3. What a schema cannot see: each task file is TOML named *.toml; each workload runs its pods
   (one or more: each task runs in the pod holding its lease) with a Recreate or StatefulSet
   rollout, probes /healthz and /readyz on the port it listens on, is
   scraped on that port, mounts its group's ConfigMap where `inlet run -c` reads and a writable
   /tmp under a read-only root; the Service and PodDisruptionBudget select its pods.
4. Values the chart must refuse (replicas below 1, a group name Kubernetes refuses, a task file
   inlet would not read, a misspelt key that values.schema.json does not know) fail to render
   with a message naming the key.
5. The validator itself rejects a known-broken Deployment, so a check that silently passes
   everything cannot go unnoticed.

Exits 0 when all hold, 1 with one line per failure otherwise.
"""

import glob
import os
import sys
import tomllib

import helm_python as helm
import kubernetes_validate
import yaml

KUBE_VERSIONS = ["1.25.0", "1.37.0"]
RELEASE = "inlet-ci"
NAMESPACE = "cdc"

failures = []


def fail(msg):
    failures.append(msg)
    print(f"validate-deploy: FAIL {msg}", file=sys.stderr)


def render(chart, values):
    """The rendered objects, as (template path, object) pairs."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def schema_errors(doc):
    """Kubernetes schema errors of one object, over every version checked."""
    errors = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top)"
            errors.append(f"Kubernetes {version}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"Kubernetes {version}: no schema for {doc.get('apiVersion')}/{doc.get('kind')}: {e}")
    return errors


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_objects(label, objects):
    """Schema and cross-object checks of one rendering."""
    by_kind = {}
    for path, doc in objects:
        name = f"{label}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')} ({path})"
        for err in schema_errors(doc):
            fail(f"{name}: {err}")
        by_kind.setdefault(doc.get("kind"), []).append(doc)

    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    services = by_kind.get("Service", [])
    budgets = by_kind.get("PodDisruptionBudget", [])
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    if not workloads:
        fail(f"{label}: no Deployment or StatefulSet rendered")
    for w in workloads:
        name = f"{label}: {w['kind']}/{w['metadata']['name']}"
        spec = w["spec"]
        pod = spec["template"]
        labels = pod["metadata"].get("labels", {})
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 1:
            fail(f"{name}: replicas {spec.get('replicas')}, not a count of pods")
        if w["kind"] == "Deployment" and spec.get("strategy", {}).get("type") != "Recreate":
            fail(f"{name}: strategy is not Recreate: a rollout would run the old and new pod together")
        if not selects(spec["selector"]["matchLabels"], labels):
            fail(f"{name}: its selector does not select its own pod template")
        containers = pod["spec"]["containers"]
        if len(containers) != 1:
            fail(f"{name}: {len(containers)} containers, expected inlet alone")
            continue
        c = containers[0]
        args = c.get("args", [])
        listen = args[args.index("--listen") + 1] if "--listen" in args else None
        port = next((p["containerPort"] for p in c.get("ports", []) if p.get("name") == "http"), None)
        if args[:2] != ["--log-format", "json"] or "run" not in args or "-c" not in args:
            fail(f"{name}: args {args} do not run `inlet --log-format json run -c DIR`")
            continue
        task_dir = args[args.index("-c") + 1]
        if listen != f"0.0.0.0:{port}":
            fail(f"{name}: --listen {listen} is not 0.0.0.0 on the http port {port}: the kubelet's probes could not reach it")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") not in ("http", port):
                fail(f"{name}: {probe} is not GET {path} on the http port ({get})")
        ann = pod["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port) \
                or ann.get("prometheus.io/path") != "/metrics":
            fail(f"{name}: Prometheus annotations do not scrape /metrics on port {port}: {ann}")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory"):
            fail(f"{name}: no memory request and limit")
        sc = c.get("securityContext", {})
        psc = pod["spec"].get("securityContext", {})
        if not (psc.get("runAsNonRoot") or sc.get("runAsNonRoot")) or not sc.get("readOnlyRootFilesystem") \
                or sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{name}: not non-root with a read-only root filesystem and no privilege escalation")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for path, volume in mounts.items():
            if volume not in volumes:
                fail(f"{name}: {path} mounts volume {volume}, which the pod does not have")
        tasks_volume = volumes.get(mounts.get(task_dir), {})
        cm_name = tasks_volume.get("configMap", {}).get("name")
        if cm_name not in configmaps:
            fail(f"{name}: the task folder {task_dir} is not a ConfigMap this chart renders ({cm_name})")
        else:
            data = configmaps[cm_name].get("data", {})
            if not data:
                fail(f"{name}: ConfigMap {cm_name} holds no task file")
            for file, text in data.items():
                if not file.endswith(".toml"):
                    fail(f"{name}: ConfigMap {cm_name}: {file} does not end in .toml; inlet would not read it")
                try:
                    task = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    fail(f"{name}: ConfigMap {cm_name}: {file} is not TOML: {e}")
                    continue
                if not task.get("task", {}).get("name"):
                    fail(f"{name}: ConfigMap {cm_name}: {file} has no task.name")
        if "emptyDir" not in volumes.get(mounts.get("/tmp"), {}):
            fail(f"{name}: no writable /tmp (cdc.spool_dir) under the read-only root filesystem")
        if not any(selects(s["spec"].get("selector", {}), labels) for s in services):
            fail(f"{name}: no Service selects its pods")
        if w["kind"] == "StatefulSet" and spec.get("serviceName") not in {s["metadata"]["name"] for s in services}:
            fail(f"{name}: serviceName {spec.get('serviceName')} is not a rendered Service")
        if not any(selects(b["spec"]["selector"]["matchLabels"], labels) for b in budgets):
            fail(f"{name}: no PodDisruptionBudget selects its pods")
    return sum(len(v) for v in by_kind.values())


def lint(chart_dir, label, values):
    report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            fail(f"{label}: helm lint: {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []) or []:
        fail(f"{label}: helm lint: {e}")


# Values the chart must refuse, and a phrase its message must hold.
REFUSED = [
    ({}, "groups: empty"),
    ({"replicas": 0, "groups": {"main": {"tasks": {"a.toml": "[task]\nname = \"a\"\n"}}}}, "replicas"),
    ({"workload": "DaemonSet"}, "workload"),
    ({"groups": {"Main_Group": {"tasks": {"a.toml": "[task]\nname = \"a\"\n"}}}}, "groups.Main_Group"),
    ({"groups": {"main": {"tasks": {"a.conf": "[task]\nname = \"a\"\n"}}}}, "must end in .toml"),
    ({"groups": {"main": {"tasks": {}}}}, "groups.main.tasks: empty"),
    # values.schema.json: a misspelt key is refused rather than ignored
    ({"replica": 2, "groups": {"main": {"tasks": {"a.toml": "[task]\nname = \"a\"\n"}}}}, "replica"),
    ({"groups": {"main": {"task": {"a.toml": "[task]\nname = \"a\"\n"}}}}, "task"),
]

BROKEN_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "broken"},
    "spec": {
        "replica": 1,  # unknown field (replicas)
        "selector": {"matchLabels": {"app": "x"}},
        "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "x", "image": "x", "ports": [{"containerPort": "http"}]}]},
        },
    },
}


def main(argv):
    chart_dir = argv[0] if argv else os.path.join(os.path.dirname(__file__), "..", "deploy", "helm", "inlet")
    chart_dir = os.path.abspath(chart_dir)

    if not schema_errors(BROKEN_DEPLOYMENT):
        fail("the schema validator accepted a Deployment with an unknown field and a string port")

    # The chart's own values run no task (groups is empty): each CI value set adds its groups.
    value_sets = []
    for path in sorted(glob.glob(os.path.join(chart_dir, "ci", "*-values.yaml"))):
        with open(path) as f:
            value_sets.append((os.path.relpath(path, chart_dir), yaml.safe_load(f) or {}))

    objects = 0
    with helm.Chart.load(chart_dir) as chart:
        for label, values in value_sets:
            lint(chart_dir, label, values)
            try:
                objects += check_objects(label, render(chart, values))
            except helm.HelmError as e:
                fail(f"{label}: helm template failed: {e}")
        for values, phrase in REFUSED:
            try:
                render(chart, values)
                fail(f"values {values} rendered; the chart must refuse them")
            except helm.HelmError as e:
                if phrase not in str(e):
                    fail(f"values {values} refused, but the message does not say {phrase!r}: {e}")

    if not value_sets:
        fail(f"no value set {chart_dir}/ci/*-values.yaml to render")
    if failures:
        print(f"validate-deploy: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    print(f"validate-deploy: ok: helm lint --strict and {objects} rendered objects of {len(value_sets)} value sets "
          f"valid against Kubernetes {' and '.join(KUBE_VERSIONS)}; {len(REFUSED)} bad value sets refused")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
