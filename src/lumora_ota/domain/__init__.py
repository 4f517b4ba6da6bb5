"""Pure domain logic: no I/O, no database. Unit-tested directly."""
