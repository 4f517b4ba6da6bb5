"""Lumora OTA: a self-hosted over-the-air update service speaking the Expo Updates protocol."""

__version__ = "0.1.0"
