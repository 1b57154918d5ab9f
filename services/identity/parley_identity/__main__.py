"""``python -m parley_identity``: runs the identity service until SIGTERM."""

from parley_identity.app import IdentitySettings, build_identity
from parley_runtime.server import run_service

if __name__ == "__main__":
    run_service("identity", IdentitySettings, build_identity)
