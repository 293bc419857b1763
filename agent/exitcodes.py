"""Process exit codes. systemd's unit lists CONFIG in RestartPreventExitStatus= so that a bad
config, a missing model or a mismatched profile never crash-loops."""

from __future__ import annotations

__all__ = ["CONFIG", "FAILURE", "OK", "REGRESSION", "USAGE"]

OK: int = 0
#: Runtime failure worth a restart (a worker died, an unexpected exception).
FAILURE: int = 1
#: Command-line usage error (argparse).
USAGE: int = 2
#: A check failed on purpose: `bench --compare` regression or a failed `stress` gate.
REGRESSION: int = 3
#: Configuration error (EX_CONFIG from sysexits.h): bad config, missing model or source file, mismatched profile.
CONFIG: int = 78
