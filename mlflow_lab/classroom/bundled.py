"""The class's part of `invoke bundle --classroom` and of its `invoke load`.

The class images are keyed in a bundle's manifest by their repository's last part
(class-hub, ...), beside the lab's mlflow and jupyter. What `load` checks about them is
what `classroom.up --no-build` checks (classroom.images.stale): the inputs label each
was built with. docker save/load keeps image IDs, so the student image's label, which
follows the jupyter image's ID, still matches once both are loaded together.
"""

from __future__ import annotations

from mlflow_lab.classroom import images
from mlflow_lab.classroom import settings as class_settings
from mlflow_lab.core.errors import LabError
from mlflow_lab.core.settings import Settings

KEY_PREFIX = "class-"
KEYS = tuple(f"{KEY_PREFIX}{name}" for name in images.IMAGES)


def image_of(key: str) -> str:
    """The class image (hub, ...) a manifest key (class-hub, ...) names."""
    return key.removeprefix(KEY_PREFIX)


def ensure_built(lab: Settings) -> list[tuple[str, str]]:
    """Build the class images that are missing or out of date; (key, image name) of each."""
    room = class_settings.load(lab=lab)
    stale = images.stale(room)
    if stale:
        print(f"  the class's {', '.join(stale)} image(s) missing or out of date: building")
        images.build(room, stale)
        still = images.stale(room)
        if still:
            raise LabError(
                f"the class's {', '.join(still)} image(s) still do not match this checkout "
                "after the build (did docker/ change meanwhile?): run the command again"
            )
    return [(f"{KEY_PREFIX}{name}", room.image(name)) for name in images.IMAGES]


def expected_inputs(key: str, jupyter_id: str) -> str:
    """The inputs label `classroom.up` wants on image `key` beside this jupyter image."""
    return images.wanted_label(image_of(key), jupyter_id)
