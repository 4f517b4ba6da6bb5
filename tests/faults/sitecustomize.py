"""Loaded at start by every Python process a test runs with this folder on ``PYTHONPATH``
(``fault_helpers.fault_env``): installs the faults ``LUMORA_FAULTS`` names. Test-only: the
package carries no fault hooks, and nothing here runs unless a test asks for it."""

import os

if os.environ.get("LUMORA_FAULTS"):
    import lumora_faults

    lumora_faults.install(os.environ["LUMORA_FAULTS"])
