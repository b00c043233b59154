"""Faces the scenes' annotations miss, on the tuning half, found by looking at the detector's boxes.

The build's ``no_face`` class learns from background patches cut from the tuning half of the
scenes, and its hardest examples are YuNet's own boxes away from every annotated face (hands, signs,
the backs of heads, animals: what the classifier must reject at a door). The annotations miss many
faces, though, so some of those boxes are faces, masked ones among them; trained as ``no_face``
they teach the classifier to reject masked faces.

These boxes were listed by eye: every YuNet box (:data:`REVIEWED_DETECTOR`: threshold 0.3, 50
candidate boxes kept before non-maximum suppression, OpenCV 4.14) on the tuning half that overlaps
no annotated face was looked at with its surroundings, and each one that shows a face
or might (a face in profile, half hidden by a hand or a camera, a blurred head, a face on a poster)
is here, 27 boxes in 21 scenes; the other 45 (hands, signs, objects, hair seen from behind,
hens, blur) stay hard negatives. Only coordinates are kept, no pixels. A patch that overlaps one of
these boxes is never used as ``no_face``.
"""

from __future__ import annotations

from maskgate.detector import DetectorSettings

Box = tuple[int, int, int, int]

REVIEWED_DETECTOR = DetectorSettings(score_threshold=0.3, top_k=50)
"""The detector whose boxes were reviewed; the build cuts its ``no_face`` patches with it, so every
detector box it trains on was looked at. The device's detector keeps 5000 candidates since
2026-11-24 and finds more boxes on these crowded photos, many of them faces the annotations miss
that nobody has reviewed: taking them as ``no_face`` would bring the flaw back."""

UNANNOTATED_FACES: dict[str, tuple[Box, ...]] = {
    "maksssksksss53": ((333, 61, 29, 39),),
    "maksssksksss73": ((236, 63, 34, 40),),
    "maksssksksss79": ((293, 123, 20, 24),),
    "maksssksksss157": ((151, 44, 26, 32),),
    "maksssksksss168": ((361, 177, 16, 21), (32, 52, 14, 18), (335, 50, 18, 24), (71, 65, 12, 15)),
    "maksssksksss267": ((138, 116, 8, 10),),
    "maksssksksss289": ((39, 206, 42, 54),),
    "maksssksksss301": ((320, 190, 66, 35), (356, 5, 14, 17)),
    "maksssksksss363": ((120, 63, 12, 15),),
    "maksssksksss386": ((111, 52, 15, 19),),
    "maksssksksss391": ((113, 134, 14, 16),),
    "maksssksksss435": ((377, 33, 15, 18),),
    "maksssksksss464": ((21, 68, 33, 45),),
    "maksssksksss475": ((268, 86, 20, 27), (18, 36, 18, 25)),
    "maksssksksss517": ((275, 171, 14, 17),),
    "maksssksksss591": ((371, 48, 29, 47),),
    "maksssksksss656": ((387, 43, 13, 17),),
    "maksssksksss662": ((380, 46, 9, 11), (300, 51, 9, 10)),
    "maksssksksss723": ((259, 26, 14, 17),),
    "maksssksksss796": ((385, 130, 9, 12),),
    "maksssksksss805": ((360, 1, 35, 43),),
}


def unannotated_faces(scene_name: str) -> tuple[Box, ...]:
    """The reviewed faces of one scene that its annotation lacks (empty for most scenes)."""
    return UNANNOTATED_FACES.get(scene_name, ())
