"""``python -m parley_moderation``: runs the moderation service until SIGTERM."""

from parley_moderation.app import ModerationSettings, build_moderation
from parley_runtime.server import run_service

if __name__ == "__main__":
    run_service("moderation", ModerationSettings, build_moderation)
