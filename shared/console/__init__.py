"""The console: server-rendered pages for supervisors and data managers, at the hub and at nodes."""

from .app import PREFIX, console_app
from .routes import CONSOLE_ROUTES, HUB_CONSOLE_ROUTES, NODE_CONSOLE_ROUTES

__all__ = ["CONSOLE_ROUTES", "HUB_CONSOLE_ROUTES", "NODE_CONSOLE_ROUTES", "PREFIX", "console_app"]
