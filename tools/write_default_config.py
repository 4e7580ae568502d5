"""Write configs/default.yml from the key table in utils/config_schema.py (``KEYS``), after adding or changing a key.

    python tools/write_default_config.py

tests/test_config_schema.py fails while the file and the table differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/ is not a package

from utils.atomic_files import write_atomic  # noqa: E402
from utils.config_schema import default_config_text  # noqa: E402

if __name__ == "__main__":
    path = ROOT / "configs" / "default.yml"
    write_atomic(path, default_config_text())
    print(f"wrote {path.relative_to(ROOT)}")
