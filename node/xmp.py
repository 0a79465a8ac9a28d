"""XMP sidecars: the star ratings that photo tools (Lightroom, darktable, digiKam) keep beside images.

A sidecar is ``photo.jpg.xmp`` (darktable, digiKam) or ``photo.xmp`` (Lightroom); its
``xmp:Rating`` is 0-5 stars, or -1 for a rejected photo, as an attribute of
``rdf:Description`` or as an element. Stars map to Peerlight's 0-10 as stars x 2, a rejection
to 0. Sidecars are the user's files from other programs: read at most ``MAX_SIDECAR_BYTES``,
parsed by the standard library's expat (no external entities; expat refuses entity expansion
bombs), and never overwritten unless Peerlight wrote them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

MAX_SIDECAR_BYTES = 1 << 20
XMP_NS = "http://ns.adobe.com/xap/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
WRITER_MARK = "Peerlight"

_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="{mark}">
 <rdf:RDF xmlns:rdf="{rdf}">
  <rdf:Description rdf:about="" xmlns:xmp="{xmp}" xmp:Rating="{stars}"/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


class SidecarError(ValueError):
    """A sidecar that cannot be read as XMP."""


def sidecars_of(image: Path) -> list[Path]:
    """Where a sidecar of ``image`` may be, in the order they are preferred."""
    return [image.with_name(image.name + ".xmp"), image.with_suffix(".xmp")]


def parse_rating(data: bytes) -> float | None:
    """The sidecar's rating on Peerlight's 0-10 scale; None when it has none."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"larger than {MAX_SIDECAR_BYTES} bytes")
    if b"<!ENTITY" in data or b"<!DOCTYPE" in data:
        raise SidecarError("declares entities or a DOCTYPE, which XMP never needs")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise SidecarError(f"not XML: {exc}") from None
    key = f"{{{XMP_NS}}}Rating"
    for element in root.iter():
        value = element.get(key)
        if value is None and element.tag == key:
            value = element.text
        if value is not None:
            return _stars_to_rating(value)
    return None


def _stars_to_rating(value: str) -> float:
    try:
        stars = float(value.strip())
    except ValueError:
        raise SidecarError(f"xmp:Rating is not a number: {value[:20]!r}") from None
    if stars == -1:
        return 0.0  # rejected
    if not 0 <= stars <= 5:
        raise SidecarError(f"xmp:Rating must be -1 or within 0..5, got {stars:g}")
    return stars * 2


def rating_to_stars(rating: float) -> int:
    return max(0, min(5, round(rating / 2)))


def written_by_us(data: bytes) -> bool:
    return f'x:xmptk="{WRITER_MARK}"'.encode() in data[:4096]


def sidecar(rating: float) -> bytes:
    """A minimal sidecar holding ``rating`` as stars (rounded to the nearest half of a 0-10 rating)."""
    return _TEMPLATE.format(mark=WRITER_MARK, rdf=RDF_NS, xmp=XMP_NS, stars=rating_to_stars(rating)).encode()
