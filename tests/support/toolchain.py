"""What the Python running the tests can import."""

import subprocess
import sys


def triton_import_error() -> str | None:
    """Why `import triton` fails here, or None. Asked in a subprocess: this process keeps triton unimported, for
    the unit tests that import it under the interpreter."""
    proc = subprocess.run([sys.executable, "-c", "import triton"], capture_output=True, text=True, timeout=120)
    return (proc.stderr.strip().splitlines() or ["failed"])[-1] if proc.returncode else None
