"""``python -m parley_notification``: runs the notification service until SIGTERM."""

from parley_notification.app import NotificationSettings, build_notification
from parley_runtime.server import run_service

if __name__ == "__main__":
    run_service("notification", NotificationSettings, build_notification)
