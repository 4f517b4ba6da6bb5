"""The ASGI server: device-facing routes, the management API and the dashboard."""
