"""B7 — evidence limits: at most 6 files; images JPG/JPEG/PNG ≤ 5 MiB, videos MP4/FLV/MOV/AVI/MKV/WEBM
≤ 200 MiB; the type is judged by the file's leading bytes, never by its name alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_EVIDENCE_FILES = 6
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_VIDEO_BYTES = 200 * 1024 * 1024
SNIFF_BYTES = 16
"""How many leading bytes ``sniff_media`` needs."""

MediaKind = Literal["image", "video"]
IMAGE_FORMATS = ("jpg", "jpeg", "png")
VIDEO_FORMATS = ("mp4", "flv", "mov", "avi", "mkv", "webm")
"""File name extensions of the allowed types, for pickers that filter by name (the type itself
is judged by content, ``sniff_media``)."""


@dataclass(frozen=True)
class MediaType:
    kind: MediaKind
    format: str  # jpeg, png, mp4, mov, flv, avi, mkv, webm

    @property
    def max_bytes(self) -> int:
        return MAX_IMAGE_BYTES if self.kind == "image" else MAX_VIDEO_BYTES


MP4_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso8", b"mp41", b"mp42", b"avc1", b"dash",
     b"M4V ", b"M4VH", b"M4VP", b"mmp4", b"MSNV"}
)  # fmt: skip
"""Major brands of MP4 video (ISO/IEC 14496-12 and -14, and the common players' own)."""


def sniff_media(head: bytes) -> MediaType | None:
    """The allowed media type the leading bytes show, or None when they show none."""
    if head.startswith(b"\xff\xd8\xff"):
        return MediaType("image", "jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType("image", "png")
    if len(head) >= 12 and head[4:8] == b"ftyp":
        # An ISO media file says what it is in its major brand: an HEIC photo or an M4A recording
        # has an ftyp box too, and is not a video.
        brand = head[8:12]
        if brand == b"qt  ":
            return MediaType("video", "mov")
        return MediaType("video", "mp4") if brand in MP4_BRANDS else None
    if head.startswith(b"FLV\x01"):
        return MediaType("video", "flv")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return MediaType("video", "avi")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # Matroska and WebM share the EBML header; the DocType that tells them apart is further in.
        return MediaType("video", "mkv/webm")
    return None


@dataclass(frozen=True)
class MediaRefusal:
    reason: Literal["type", "size", "count"]
    limit: int | None = None


def media_refusal(head: bytes, size: int) -> MediaRefusal | None:
    """Why one file may not be sent as evidence (or as a chat image), or None when it may."""
    media = sniff_media(head)
    if media is None:
        return MediaRefusal("type")
    if size > media.max_bytes:
        return MediaRefusal("size", media.max_bytes)
    return None


def evidence_count_refusal(count: int) -> MediaRefusal | None:
    """More than MAX_EVIDENCE_FILES files are refused as a whole."""
    return MediaRefusal("count", MAX_EVIDENCE_FILES) if count > MAX_EVIDENCE_FILES else None


def evidence_limits() -> dict[str, int | str]:
    """B7's limits as people read them (MB, the formats), to fill in texts and pickers."""
    mib = 1024 * 1024
    return {"max_files": MAX_EVIDENCE_FILES, "image_mb": MAX_IMAGE_BYTES // mib, "video_mb": MAX_VIDEO_BYTES // mib,
            "images": "/".join(f.upper() for f in IMAGE_FORMATS if f != "jpeg"),
            "videos": "/".join(f.upper() for f in VIDEO_FORMATS)}  # fmt: skip


def evidence_refusals(files: list[tuple[bytes, int]]) -> list[tuple[int, MediaRefusal]]:
    """Every file that may not go, with its index; more than MAX_EVIDENCE_FILES is refused as a whole
    (index -1) before any file is looked at."""
    if (too_many := evidence_count_refusal(len(files))) is not None:
        return [(-1, too_many)]
    return [(i, r) for i, (head, size) in enumerate(files) if (r := media_refusal(head, size)) is not None]
