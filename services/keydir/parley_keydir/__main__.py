"""``python -m parley_keydir``: runs the key directory until SIGTERM."""

from parley_keydir.app import KeyDirectorySettings, build_keydir
from parley_runtime.server import run_service

if __name__ == "__main__":
    run_service("keydir", KeyDirectorySettings, build_keydir)
