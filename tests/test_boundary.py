"""The device package never imports TensorFlow or the build package, not even as a fallback."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import importlib, json, pkgutil, sys
import maskgate
names = sorted(m.name for m in pkgutil.walk_packages(maskgate.__path__, "maskgate.") if not m.name.endswith("__main__"))
for n in names:
    importlib.import_module(n)
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf_keras", "maskgate_convert"))
print(json.dumps({"modules": names, "bad": bad}))
"""


def test_device_code_never_imports_tensorflow() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "maskgate.classifier" in res["modules"] and "maskgate.cli" in res["modules"]
    assert res["bad"] == []
