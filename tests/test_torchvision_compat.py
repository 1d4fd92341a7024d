"""The torchvision compatibility step: open_clip imports, and the step is a no-op when nothing is missing."""

import subprocess
import sys

import torch


def test_open_clip_imports_after_wemoe():
    import wemoe._torchvision_compat as compat  # first: it must run before open_clip is imported  # isort: skip

    import open_clip
    import torchvision

    assert hasattr(open_clip, "create_model")
    assert hasattr(torchvision, "transforms")
    if compat.patched:  # CPU torch + CUDA torchvision wheel: the schemas were defined by us
        assert "iou_threshold" in str(torch.ops.torchvision.nms.default._schema)
        assert "iou_threshold" in str(torch.ops.torchvision.qnms.default._schema)


def test_second_call_is_a_no_op():
    import wemoe._torchvision_compat as compat

    library = compat._LIBRARY
    compat.ensure_torchvision()
    assert compat._LIBRARY is library


def test_fresh_process_imports_open_clip():
    code = "import wemoe, open_clip, torchvision.transforms; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
