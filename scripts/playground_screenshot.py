"""Refresh docs/img/playground.png: the dashboard's chat playground, a fine-tuned SmolLM2 answering next to its base
model, taken from the real page with real answers.

    python scripts/playground_screenshot.py

It runs the playground's chat test (tests/dashboard/test_dashboard_playground.py), which trains the small models,
serves them through the API and an inference server and drives Debian's chromium, with
SPARSEGRAD_REFRESH_DOCS_IMAGES set: the test then saves the panel to docs/img/playground.png as well. Needs what
the tests need (the project's virtual environment and /usr/bin/chromium); a few minutes on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/dashboard/test_dashboard_playground.py::test_chat_streams_the_fine_tuned_and_the_base_model_side_by_side"


def main() -> int:
    env = {**os.environ, "SPARSEGRAD_REFRESH_DOCS_IMAGES": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST], cwd=REPO, env=env)
    if done.returncode == 0:
        print(f"wrote {REPO / 'docs' / 'img' / 'playground.png'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
