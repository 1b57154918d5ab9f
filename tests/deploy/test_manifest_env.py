"""The environment every deployment gives each service matches that service's settings class: each required
setting present, no ``PARLEY_*`` name the class does not read, and the whole set valid. The settings classes are
the one source of truth (STYLE.md 10); a renamed or added setting fails here until the manifests follow."""

from __future__ import annotations

import base64

import pytest
from pydantic import BaseModel
from support.docker_engine import compose_binary
from support.manifests import (
    K8S,
    OVERLAYS,
    accepted,
    compose_environments,
    deployment_environments,
    kustomize_missing,
    overrides,
    render,
    required,
    settings_classes,
)

from parley_launcher import service_environments
from parley_runtime.config import ENV_PREFIX, load_settings
from parley_runtime.credentials import deployment_variables, new_credentials, peers_line

# A value every setting that a manifest fills from a Secret or the pod's metadata accepts (base64 of 32 bytes),
# but the service credentials, which have a shape of their own.
_REFERENCED = base64.b64encode(bytes(range(32))).decode()
_CREDENTIALS = new_credentials()
_REFERENCED_BY_NAME = {
    "PARLEY_INTERNAL_TOKEN": _CREDENTIALS["relay"],
    "PARLEY_INTERNAL_PEERS": peers_line(_CREDENTIALS),
    # Must differ from the current session key it is the predecessor of.
    "PARLEY_SESSION_PREVIOUS_KEY": base64.b64encode(bytes(range(32, 64))).decode(),
}


def _check(where: str, module: str, environment: dict[str, str]) -> None:
    cls = settings_classes()[module]
    names = {name for name in environment if name.startswith(ENV_PREFIX)}
    assert not names - accepted(cls), f"{where}: {module} does not read {sorted(names - accepted(cls))}"
    assert not required(cls) - names, f"{where}: {module} needs {sorted(required(cls) - names)}"
    values = {
        name: _REFERENCED_BY_NAME.get(name, _REFERENCED) if value == "<from a reference>" else value
        for name, value in environment.items()
    }
    settings: BaseModel = load_settings(cls, **overrides(values))  # raises ConfigError naming a bad value
    assert settings.model_dump()


def test_required_settings_come_from_the_classes() -> None:
    classes = settings_classes()
    assert set(classes) == {
        "parley_identity",
        "parley_keydir",
        "parley_relay",
        "parley_moderation",
        "parley_notification",
    }
    assert "PARLEY_FRANKING_KEY" in required(classes["parley_moderation"])
    assert "PARLEY_ADMIN_TOKEN" in required(classes["parley_identity"])
    assert "PARLEY_IDENTITY_TARGET" not in accepted(classes["parley_identity"])


@pytest.mark.skipif(kustomize_missing() is not None, reason=str(kustomize_missing()))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_environment_matches_its_settings(overlay: str) -> None:
    environments = deployment_environments(render(K8S / "overlays" / overlay))
    assert set(environments) == {"identity", "keydir", "relay", "moderation", "notification"}
    for name, (module, environment) in environments.items():
        _check(f"k8s/overlays/{overlay} Deployment {name}", module, environment)


@pytest.mark.timeout(60)
def test_every_compose_service_environment_matches_its_settings() -> None:
    secrets = {
        "PARLEY_ADMIN_TOKEN": "admin",
        **deployment_variables(_CREDENTIALS),
        "PARLEY_FRANKING_KEY": _REFERENCED,
        "PATH": "/usr/bin:/bin",
    }
    environments = compose_environments(compose_binary(), secrets)
    assert {module for module, _ in environments.values()} == set(settings_classes())
    for name, (module, environment) in environments.items():
        _check(f"docker-compose.yml service {name}", module, environment)


def test_every_launcher_process_environment_matches_its_settings() -> None:
    ports = {
        name: 7000 + n
        for n, name in enumerate(["identity", "keydir", "moderation", "notification", "relay-1", "relay-2"])
    }
    secrets = {"PARLEY_ADMIN_TOKEN": "admin", "PARLEY_FRANKING_KEY": _REFERENCED, **deployment_variables(_CREDENTIALS)}
    environments = service_environments(
        ports, {name: port + 2000 for name, port in ports.items()}, "redis://127.0.0.1:7179/0", secrets
    )
    assert {module for module, _ in environments.values()} == set(settings_classes())
    for name, (module, environment) in environments.items():
        _check(f"parley_launcher process {name}", module, environment)
