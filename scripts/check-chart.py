#!/usr/bin/env python3
"""Lints and renders deploy/helm/osprey with the real Helm engine (helm-python-sdk's libhelm),
then checks the rendered manifests: every object well-formed, selectors that select, probes on
declared ports, GPU workers asking for nvidia.com/gpu, KEDA and PDBs pointing at real targets.

Run with the venv scripts/test creates: .venv-helm/bin/python scripts/check-chart.py
"""

import sys
from pathlib import Path

import yaml
from helm_python import chart as helm

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "osprey"

VARIANTS = {
    "defaults": {},
    "cpu and gpu workers": {"worker": {"cpu": {"enabled": True}}},
    "cpu only, no autoscaling": {"worker": {"gpu": {"enabled": False}, "cpu": {"enabled": True}, "autoscaling": {"enabled": False}}},
    "no notifier, no scrape": {"notifier": {"enabled": False}, "prometheus": {"scrape": False}},
    "model groups": {
        "worker": {"gpu": {"enabled": False}},
        "modelGroups": [
            {"name": "people", "gpu": True, "concurrency": 8, "maxBatch": 16, "autoscaling": {"enabled": True, "maxReplicas": 6},
             "resources": {"requests": {"cpu": "4"}, "limits": {"memory": "16Gi"}}},
            {"name": "plates", "gpu": False, "concurrency": 2, "image": "registry.example/plates:3",
             "modelVolume": {"persistentVolumeClaim": {"claimName": "plate-model"}},
             "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "4Gi"}}},
        ],
    },
}


def fail(variant, message):
    sys.exit(f"chart check failed ({variant}): {message}")


def check(variant, docs):
    by_kind = {}
    for d in docs:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in d:
                fail(variant, f"an object has no {field}: {d}")
        if not d["metadata"].get("name"):
            fail(variant, f"a {d['kind']} has no name")
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    if not any(n.endswith("-vault") for n in deployments):
        fail(variant, "no vault Deployment")
    for name, d in deployments.items():
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        selector = spec["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(variant, f"{name}: selector {selector} does not select its pods {labels}")
        for c in spec["template"]["spec"]["containers"]:
            if ":" not in c["image"]:
                fail(variant, f"{name}: image {c['image']!r} has no tag")
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                get = c.get(probe, {}).get("httpGet")
                if not get or get["path"] != "/healthz" or get["port"] not in ports:
                    fail(variant, f"{name}: {probe} must GET /healthz on a declared port")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("OSPREY_CONFIG_FILE") != "/etc/osprey/osprey.toml":
                fail(variant, f"{name}: the config file is not mounted")
            gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            groups = {f"test-osprey-worker-{g['name']}": g for g in VARIANTS[variant].get("modelGroups", [])}
            group = groups.get(name)
            is_gpu = name.endswith("-worker-gpu") or bool(group and group.get("gpu"))
            if group is not None:
                if c["args"] != ["worker", "--group", group["name"]]:
                    fail(variant, f"{name}: runs {c['args']}, not its group")
                if group.get("image") and c["image"] != group["image"]:
                    fail(variant, f"{name}: image {c['image']} is not the group's {group['image']}")
                if group.get("modelVolume"):
                    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
                    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
                    if mounts.get("model", {}).get("mountPath") != f"/models/{group['name']}" or "persistentVolumeClaim" not in volumes.get("model", {}):
                        fail(variant, f"{name}: the model volume is not mounted at /models/{group['name']}")
            if is_gpu != (gpus is not None):
                fail(variant, f"{name}: nvidia.com/gpu limit {gpus} on a {'GPU' if is_gpu else 'CPU'} pod")
            if is_gpu and (spec["template"]["spec"].get("runtimeClassName") != "nvidia" or env.get("OSPREY_DETECT__DEVICE") != "cuda"):
                fail(variant, f"{name}: GPU workers need runtimeClassName nvidia and detect.device cuda")
            if "-worker-" in name:
                # The same bounds `osprey worker` checks at start: better caught at render time.
                for key, top in (("OSPREY_WORKER__CONCURRENCY", 4096), ("OSPREY_DETECT__MAX_BATCH", 1024)):
                    value = env.get(key, "1")
                    if not (value.isdigit() and 1 <= int(value) <= top):
                        fail(variant, f"{name}: {key} is {value!r}, not a whole number within 1..={top}")
        annotations = spec["template"]["metadata"].get("annotations", {})
        if VARIANTS[variant].get("prometheus", {}).get("scrape", True) and annotations.get("prometheus.io/scrape") != "true":
            fail(variant, f"{name}: no Prometheus scrape annotations")
    for g in VARIANTS[variant].get("modelGroups", []):
        if f"test-osprey-worker-{g['name']}" not in deployments:
            fail(variant, f"model group {g['name']} has no Deployment among {sorted(deployments)}")
    for kind in ("PodDisruptionBudget", "Service"):
        for d in by_kind.get(kind, []):
            selector = d["spec"]["selector"].get("matchLabels", d["spec"]["selector"])
            if not any(all(t["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items()) for t in deployments.values()):
                fail(variant, f"{kind} {d['metadata']['name']} selects no pods")
    for d in by_kind.get("ScaledObject", []):
        target = d["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            fail(variant, f"ScaledObject scales {target}, which does not exist")
        trigger = d["spec"]["triggers"][0]
        if trigger["type"] != "kafka" or not {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= trigger["metadata"].keys():
            fail(variant, f"ScaledObject trigger incomplete: {trigger}")
        for g in VARIANTS[variant].get("modelGroups", []):
            if target.endswith(f"-worker-{g['name']}") and trigger["metadata"]["consumerGroup"] != f"osprey-detectors-{g['name']}":
                fail(variant, f"{target} scales on {trigger['metadata']['consumerGroup']}, not its group's lag")
    return {k: len(v) for k, v in by_kind.items()}


def main():
    report = helm.lint(str(CHART), strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    if problems:
        sys.exit(f"helm lint: {problems}")
    loaded = helm.Chart.load(str(CHART))
    for variant, values in VARIANTS.items():
        rendered = loaded.render(values, name="test", namespace="video")
        docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
        counts = check(variant, docs)
        print(f"{variant}: {counts}")
    print("chart ok")


if __name__ == "__main__":
    main()
