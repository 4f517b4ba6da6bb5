"""The ``lumora`` command line: a Typer + Rich front end over the management API."""
