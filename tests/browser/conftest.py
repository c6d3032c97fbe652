import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE.parent / "host"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
