"""Follow docs/user-guide.md: its shell blocks from step 2 on, in order, in one bash session.

CI runs it against `make dev`'s stack before fuzzing that stack (.github/workflows/ci.yml, job
`api-fuzz`), so every command of the guide keeps working and the fuzzer meets real targets, runs
and tenants::

    .venv/bin/python -m tests.deploy.user_guide docs/user-guide.md

The first failing command stops it (``set -eu``: the last command of a pipeline decides, so
``grep -q`` may end a pipeline early) with its exit code; background
processes a block starts (the webhook receiver) are stopped at the end. A block that prints a
secret (the dev users' passwords) is left out.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

START = "### 2. "
SKIP = ("secrets.json",)


def shell_blocks(text: str) -> list[str]:
    """The guide's ```sh blocks from step 2 on (step 1 starts the stack and moves ports)."""
    body = text[text.index(START) :]
    blocks = re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL)
    return [block for block in blocks if not any(word in block for word in SKIP)]


def script(text: str) -> str:
    """One bash script running every block, stopping at the first failure."""
    parts = [
        "set -eu",
        # Whatever a block started in the background ends with the script.
        "trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT",
    ]
    for number, block in enumerate(shell_blocks(text), start=1):
        parts.append(f"echo '--- user guide block {number}' >&2")
        parts.append(block)
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    """Run the guide named by ``argv[1]`` from the current directory; its exit code."""
    guide = Path(argv[1] if len(argv) > 1 else "docs/user-guide.md")
    return subprocess.run(["bash", "-c", script(guide.read_text("utf-8"))], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
