"""The Lumora OTA benchmark: ``python bench/run.py`` (or ``make bench``) runs it end to end."""
