"""What `import topiq_loss` loads: not torch._dynamo, not torchvision, not huggingface_hub.

Both come in only when needed (a network is built, a call is compiled): together they were
more than half of the 5.5 s an `import topiq_loss` took here, paid by every CLI start
(`topiq-loss --help` included) and every worker process. huggingface_hub is imported when a
file is looked for beyond this library's and pyiqa's caches (issue #35).
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import contextlib, io, json, sys
import topiq_loss
from topiq_loss.cli import main
after_import = sorted(m for m in ("torch._dynamo", "torchvision", "huggingface_hub") if m in sys.modules)
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
after_help = sorted(m for m in ("torch._dynamo", "torchvision", "huggingface_hub") if m in sys.modules)
print(json.dumps([after_import, after_help, "torch" in sys.modules]))
"""


def test_import_and_cli_help_load_neither_dynamo_nor_torchvision():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after_import, after_help, sees_torch = json.loads(proc.stdout.strip().splitlines()[-1])
    assert after_import == [], f"`import topiq_loss` loaded {after_import}"
    assert after_help == [], f"the CLI's --help loaded {after_help}"
    assert sees_torch  # the probe reads sys.modules as it should
