"""Every k8s/ overlay (and each opt-in component on top of the base) renders, and each rendered resource is valid for
the pinned Kubernetes version under strict schemas (unknown fields are errors; so are warnings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.manifests import COMPONENTS, K8S, OVERLAYS, kustomize_missing, render

# The oldest Kubernetes the manifests promise to run on (native gRPC probes, the preStop sleep action).
KUBERNETES_VERSION = "1.33.0"

pytestmark = pytest.mark.skipif(kustomize_missing() is not None, reason=str(kustomize_missing()))


def _validate(resources: list[dict[str, object]], tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(resources))
    # kubernetes-validate from this virtualenv on a file the test wrote.
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith(("WARN", "ERROR"))], result.stdout


def test_overlays_and_components_exist() -> None:
    assert OVERLAYS == ["dev", "prod"]
    assert {"otel", "redis-statefulset"} <= set(COMPONENTS)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_resources(overlay: str, tmp_path: Path) -> None:
    resources = render(K8S / "overlays" / overlay)
    kinds = {resource["kind"] for resource in resources}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    _validate(resources, tmp_path)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("component", COMPONENTS)
def test_component_on_the_base_renders_valid_resources(component: str, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes only relative paths.
                "resources": [os.path.relpath(K8S / "base", tmp_path)],
                "components": [os.path.relpath(K8S / "components" / component, tmp_path)],
            }
        )
    )
    _validate(render(tmp_path), tmp_path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_probed_and_drain_in_time(overlay: str) -> None:
    resources = render(K8S / "overlays" / overlay)
    config = next(
        r["data"] for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("parley-config")
    )
    drain_s = float(config["PARLEY_SHUTDOWN_GRACE_S"])
    deployments = [r for r in resources if r["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"identity", "keydir", "relay", "moderation", "notification"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["topologySpreadConstraints"]
        (container,) = pod["containers"]
        hardening = container["securityContext"]
        assert hardening["readOnlyRootFilesystem"] is True
        assert hardening["allowPrivilegeEscalation"] is False
        assert hardening["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
        grpc_port = container["ports"][0]["containerPort"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == grpc_port
        pre_stop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        # Kubernetes kills at the grace period: the preStop pause and the drain must both fit into it.
        assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain_s
    services = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Service"}
    assert services["relay"]["spec"]["clusterIP"] == "None"
    assert {r["metadata"]["name"] for r in resources if r["kind"] == "PodDisruptionBudget"} >= {
        d["metadata"]["name"] for d in deployments
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_each_service_only_from_its_callers_and_the_edge(overlay: str) -> None:
    resources = render(K8S / "overlays" / overlay)
    policies = {r["metadata"]["name"]: r["spec"] for r in resources if r["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    callers = {"identity": {"keydir", "relay", "moderation", "notification"}, "moderation": {"relay"}}
    for service in ("identity", "keydir", "relay", "moderation", "notification"):
        rules = policies[f"{service}-ingress"]["ingress"]
        grpc_rules = [rule for rule in rules if rule["ports"] == [{"port": "grpc"}]]
        peers = [peer for rule in grpc_rules for peer in rule["from"]]
        pods = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in peers if "podSelector" in peer}
        edges = [peer["namespaceSelector"]["matchLabels"] for peer in peers if "namespaceSelector" in peer]
        assert pods == callers.get(service, set()), service
        assert edges == [{"parley.dev/edge": "true"}], service
