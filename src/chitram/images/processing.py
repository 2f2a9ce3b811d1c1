"""Where pixels are touched: decode an upload, refuse what we won't host, re-encode what we will.

Nothing the uploader sent is stored verbatim. The original is decoded and written out again, which
drops metadata (EXIF, GPS, XMP, IPTC, comments, text chunks) and anything appended after the image
data (polyglots). Size limits are enforced from headers, before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import pathlib
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from PIL import (
    ExifTags,
    Image,
    ImageCms,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
)

from chitram.metrics import observe_image_processing

logger = logging.getLogger(__name__)

ALLOWED_FORMATS: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
}
EXTENSIONS: dict[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/avif": "avif",
}

THUMBNAIL_BOX = (320, 320)
PREVIEW_BOX = (1280, 1280)
# Ordinary progressive JPEGs have about 10 scans; thousands make a small file take minutes to decode.
MAX_JPEG_SCANS = 100

_ACCEPTED = "Upload a JPEG, PNG, GIF, WebP or AVIF image."
_CORRUPT = "the file is truncated or corrupt; check that it opens on your device and upload it again."
_TIMES = "\u00d7"  # multiplication sign, escaped so linters don't mistake it for an "x"

# Pillow opens JPEG files carrying an MP index as MPO; we keep only their first picture.
_FORMAT_ALIASES = {"MPO": "JPEG"}

_JPEG_FALLBACK_QUALITY = 92
_WEBP_LOSSY_QUALITY = 90
_AVIF_QUALITY = 90
_AVIF_SPEED = 6
_THUMBNAIL_QUALITY = 80
_PREVIEW_QUALITY = 85

# Every writer gets these explicitly: some fall back to the image's own info dict otherwise.
_NO_METADATA: dict[str, Any] = {"exif": b"", "xmp": b"", "comment": b""}

_ORIENTATION_FIXES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = {
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
}

# What Pillow's parsers raise on malformed input (open() itself swallows the last four).
_DECODE_ERRORS = (OSError, ValueError, EOFError, KeyError, SyntaxError, IndexError, TypeError, struct.error)

_Fix = Image.Transpose | None  # the transpose that makes an image upright, if any
_Options = dict[str, Any]  # keyword arguments for Image.save


@dataclass(frozen=True)
class ImageLimits:
    """Refusal thresholds; checked against headers before anything is decoded."""

    max_pixels: int = 50_000_000  # per frame
    max_frames: int = 1000
    max_total_pixels: int = 250_000_000  # across all frames

    def __post_init__(self) -> None:
        if min(self.max_pixels, self.max_frames, self.max_total_pixels) < 1:
            raise ValueError("image limits must be positive")


@dataclass(frozen=True)
class Variant:
    """A downscaled rendition for display."""

    data: bytes
    width: int
    height: int
    content_type: str = "image/webp"


@dataclass(frozen=True)
class ProcessedImage:
    """The result of a successful upload: what to store and what we learnt decoding it."""

    original: bytes
    content_type: str
    extension: str
    width: int
    height: int
    frames: int
    sha256: str
    thumbnail: Variant
    preview: Variant


class ImageRejected(Exception):
    """An upload we refuse; carries what a problem-details response needs."""

    status_code: int = 422
    problem_type: str = "image-rejected"
    title: str = "Image rejected"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsupportedImageType(ImageRejected):
    """Not one of the formats in ALLOWED_FORMATS (judged by decoding, not by name)."""

    status_code = 415
    problem_type = "unsupported-image-type"
    title = "Unsupported image type"


class ImageDimensionsTooLarge(ImageRejected):
    """Too many pixels per frame, too many frames, or too many pixels across frames."""

    status_code = 422
    problem_type = "image-too-large"
    title = "Image too large"


class CorruptImage(ImageRejected):
    """Claims to be a supported format but cannot be decoded."""

    status_code = 422
    problem_type = "corrupt-image"
    title = "Corrupt image"

    def __init__(self, detail: str = _CORRUPT) -> None:
        super().__init__(detail)


@dataclass
class _Decoded:
    kind: str  # Pillow format name, with MPO folded into JPEG
    frames: list[Image.Image]  # upright, all the same size, info dicts emptied
    durations: list[int]
    options: dict[str, Any]  # format-specific save arguments, free of metadata
    icc_profile: bytes | None
    still: Image.Image  # first frame in RGB or RGBA, the base for the WebP variants
    still_icc: bytes | None


def process_image(source: pathlib.Path, *, limits: ImageLimits) -> ProcessedImage:
    """Decode, check and re-encode an upload; raise an ImageRejected subclass for bad input."""
    # Outside the try: a missing temp file is our bug, not a bad upload.
    data = source.read_bytes()
    try:
        return _process(data, limits)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDimensionsTooLarge(_too_many_pixels(None, limits)) from exc
    except Exception as exc:
        # Hostile files can drive Pillow's pure-Python parsers into nearly any exception type
        # (OSError, SyntaxError, struct.error, IndexError, zlib.error...). They all mean the
        # same thing to the uploader; the traceback stays in our logs.
        logger.info("rejected undecodable upload", exc_info=True)
        raise CorruptImage() from exc


def measure_image(source: pathlib.Path, *, limits: ImageLimits) -> int:
    """Pixels the decode will hold (frames × canvas), from headers only; refuses what process_image would."""
    data = source.read_bytes()
    try:
        with _open(data, limits) as im:
            kind = _FORMAT_ALIASES.get(str(im.format), str(im.format))
            if kind not in ALLOWED_FORMATS:
                raise UnsupportedImageType(_unsupported_detail(data[:32]))
            _check_frame(im.size, limits)
            return _count_frames(im, kind, data, limits) * im.size[0] * im.size[1]
    except ImageRejected:
        raise
    except Exception as exc:
        logger.info("rejected unreadable upload header", exc_info=True)
        raise CorruptImage() from exc


class PixelBudget:
    """Bounds the decoded pixels held at once: small images share it, a huge animation waits."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0
        self._changed = anyio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(max(pixels, 1), self.total)  # one job larger than the budget runs alone
        async with self._changed:
            while self.in_use + pixels > self.total:
                await self._changed.wait()
            self.in_use += pixels
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._changed:
                    self.in_use -= pixels
                    self._changed.notify_all()


class ImageProcessor:
    """Runs process_image off the event loop: a bounded number at once (CPU), within a pixel
    budget (memory: a decoded frame costs about 4 bytes a pixel, an animation holds them all)."""

    def __init__(self, *, limits: ImageLimits, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._limits = limits
        self._limiter = anyio.CapacityLimiter(concurrency)
        self.budget = PixelBudget(max(limits.max_total_pixels, limits.max_pixels))

    async def process(self, source: pathlib.Path) -> ProcessedImage:
        """Process one upload in a worker thread, waiting for a free slot and enough budget."""
        measure = functools.partial(measure_image, source, limits=self._limits)
        pixels = await anyio.to_thread.run_sync(measure, limiter=self._limiter)
        async with self.budget.reserve(pixels):
            job = functools.partial(_timed_process_image, source, limits=self._limits)
            return await anyio.to_thread.run_sync(job, limiter=self._limiter)


def _timed_process_image(source: pathlib.Path, *, limits: ImageLimits) -> ProcessedImage:
    """process_image, timed in its worker thread: the work itself, not the wait for a free slot."""
    started = time.perf_counter()
    image_format = "rejected"
    try:
        processed = process_image(source, limits=limits)
        image_format = processed.content_type.removeprefix("image/")
        return processed
    finally:
        observe_image_processing(image_format, time.perf_counter() - started)


def _process(data: bytes, limits: ImageLimits) -> ProcessedImage:
    with _open(data, limits) as im:
        kind = _FORMAT_ALIASES.get(str(im.format), str(im.format))
        if kind not in ALLOWED_FORMATS:
            raise UnsupportedImageType(_unsupported_detail(data[:32]))
        _check_frame(im.size, limits)
        count = _count_frames(im, kind, data, limits)
        decoded = _decode(im, kind, count, data)
    original = _encode_original(decoded)
    preview = _shrink(decoded.still, PREVIEW_BOX)
    thumbnail = _shrink(preview, THUMBNAIL_BOX)
    content_type = ALLOWED_FORMATS[kind]
    width, height = decoded.frames[0].size
    return ProcessedImage(
        original=original,
        content_type=content_type,
        extension=EXTENSIONS[content_type],
        width=width,
        height=height,
        frames=_frames_in(original, kind),
        sha256=hashlib.sha256(original).hexdigest(),
        thumbnail=_variant(thumbnail, decoded.still_icc, _THUMBNAIL_QUALITY),
        preview=_variant(preview, decoded.still_icc, _PREVIEW_QUALITY),
    )


# --- Opening and refusing -------------------------------------------------------------------


def _open(data: bytes, limits: ImageLimits) -> ImageFile.ImageFile:
    """Open with only our plugins, so Pillow never tries to parse SVG, PDF, TIFF, EPS..."""
    try:
        return Image.open(io.BytesIO(data), formats=tuple(ALLOWED_FORMATS))
    except UnidentifiedImageError as exc:
        if _claims_allowed_format(data[:16]):
            raise CorruptImage() from exc
        raise UnsupportedImageType(_unsupported_detail(data[:32])) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses huge headers inside open(), before we can see the size; read it
        # again without the guard so the message can say what was uploaded.
        raise ImageDimensionsTooLarge(_too_many_pixels(_declared_size(data), limits)) from exc


def _claims_allowed_format(head: bytes) -> bool:
    """Whether the magic bytes say JPEG/PNG/GIF/WebP/AVIF, so failing to open means corrupt."""
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"))
    )


def _declared_size(data: bytes) -> tuple[int, int] | None:
    for name in ALLOWED_FORMATS:
        if (registered := Image.OPEN.get(name)) is None:
            continue
        factory, accept = registered
        if accept is not None and accept(data[:16]) is not True:
            continue
        try:
            with factory(io.BytesIO(data), "") as im:
                return im.size
        except (*_DECODE_ERRORS, Image.DecompressionBombError):
            continue  # only for the message: any failure just means "size unknown"
    return None


_OTHER_SIGNATURES = (
    (b"%PDF-", "a PDF document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"PK\x03\x04", "a ZIP archive"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def _unsupported_detail(head: bytes) -> str:
    if not head:
        return f"the file is empty. {_ACCEPTED}"
    what = _describe(head)
    if what is None:
        return f"this file is not an image type we can host. {_ACCEPTED}"
    return f"this looks like {what}, which we can't host. {_ACCEPTED}"


def _describe(head: bytes) -> str | None:
    """Name common wrong uploads so the message helps (iPhone HEIC photos above all)."""
    for signature, what in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return what
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIC/HEIF image"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")):
        return "an SVG or XML document"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML document"
    return None


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:g}"


def _too_many_pixels(size: tuple[int, int] | None, limits: ImageLimits) -> str:
    limit = f"the limit is {_megapixels(limits.max_pixels)} megapixels per frame"
    if size is None:
        return f"image is too large; {limit}. Scale it down and upload it again."
    width, height = size
    found = f"{width}{_TIMES}{height} pixels ({width * height / 1_000_000:.1f} megapixels)"
    return f"image is {found}; {limit}. Scale it down and upload it again."


def _check_frame(size: tuple[int, int], limits: ImageLimits) -> None:
    if size[0] * size[1] > limits.max_pixels:
        raise ImageDimensionsTooLarge(_too_many_pixels(size, limits))


def _check_animation(frames: int, size: tuple[int, int], limits: ImageLimits, *, exact: bool) -> None:
    """Refuse on frame count or on total decoded pixels (each frame decodes to a full canvas)."""
    _check_frame(size, limits)
    counted = f"{frames}" if exact else f"at least {frames}"
    if frames > limits.max_frames:
        found = f"animation has {counted} frames; the limit is {limits.max_frames} frames"
        raise ImageDimensionsTooLarge(f"{found}. Shorten it and upload it again.")
    total = frames * size[0] * size[1]
    if total > limits.max_total_pixels:
        width, height = size
        raise ImageDimensionsTooLarge(
            f"animation has {counted} frames of {width}{_TIMES}{height} pixels "
            f"({total / 1_000_000:.1f} megapixels in all); the limit is "
            f"{_megapixels(limits.max_total_pixels)} megapixels across all frames. "
            "Use fewer or smaller frames and upload it again."
        )


def _count_frames(im: ImageFile.ImageFile, kind: str, data: bytes, limits: ImageLimits) -> int:
    if kind == "JPEG":
        _check_jpeg_scans(data)
        return 1  # an MPO's further pictures are never decoded
    if kind == "GIF":
        # Pillow's n_frames walks every frame with no way to stop early.
        return _count_gif_frames(data, limits)
    # PNG (acTL), WebP (demuxer) and AVIF (container) state the count without decoding.
    count = int(getattr(im, "n_frames", 1))
    _check_animation(count, im.size, limits, exact=True)
    return count


def _check_jpeg_scans(data: bytes) -> None:
    """Refuse progressive JPEGs with absurd scan counts: every scan is another pass over every pixel.

    Entropy-coded data never contains FF DA (an 0xFF there is always followed by 0x00), so counting
    bytes only over-counts by embedded thumbnails and the like.
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ImageDimensionsTooLarge(
            f"the JPEG is stored as {scans} scans, each one more pass over every pixel; the limit is "
            f"{MAX_JPEG_SCANS}. Save it again as an ordinary JPEG and upload it again."
        )


def _count_gif_frames(data: bytes, limits: ImageLimits) -> int:
    """Walk GIF block headers (no LZW decoding), stopping as soon as a limit is crossed.

    Also tracks frames that stick out of the logical screen: Pillow grows the canvas to fit
    them, so a 1x1 GIF can otherwise turn into a 65535x65535 one on its second frame.
    """
    width, height = struct.unpack_from("<HH", data, 6)
    pos = _skip_colour_table(data, 13, data[10])
    frames = 0
    while pos < len(data):
        introducer = data[pos]
        pos += 1
        if introducer == 0x3B:  # trailer
            break
        if introducer == 0x21:  # extension: label byte, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 1)
        elif introducer == 0x2C:  # image descriptor
            if pos + 9 > len(data):
                break
            left, top, frame_width, frame_height, flags = struct.unpack_from("<4HB", data, pos)
            pos = _skip_sub_blocks(data, _skip_colour_table(data, pos + 9, flags) + 1)
            frames += 1
            width, height = max(width, left + frame_width), max(height, top + frame_height)
            _check_animation(frames, (width, height), limits, exact=False)
        # Anything else is junk Pillow skips one byte at a time, and so do we.
    return max(frames, 1)


def _skip_colour_table(data: bytes, pos: int, flags: int) -> int:
    return pos + (3 << ((flags & 7) + 1)) if flags & 0x80 else pos


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


# --- Decoding -------------------------------------------------------------------------------


def _decode(im: ImageFile.ImageFile, kind: str, count: int, data: bytes) -> _Decoded:
    fix = _orientation_fix(im)
    icc = im.info.get("icc_profile") or None
    options = _save_options(im, kind, data, fix)
    canvas = im.size
    frames: list[Image.Image] = []
    durations: list[int] = []
    for index in range(count):
        if index and not _seek(im, index):
            break  # the header promised more frames than the file holds
        im.load()
        durations.append(round(im.info.get("duration", 0)))
        frames.append(_upright(im, canvas, fix))
    if kind == "GIF" and len(frames) > 1:
        frames, options = _gif_animation(frames, options)
    still, still_icc = _web_ready(frames[0], icc)
    for frame in frames:
        frame.info.clear()  # copies carry EXIF/XMP/comments, and some writers read them
    return _Decoded(kind, frames, durations, options, icc, still, still_icc)


def _gif_animation(frames: list[Image.Image], options: _Options) -> tuple[list[Image.Image], _Options]:
    """Frames and options that make Pillow's GIF writer reproduce every composited frame exactly.

    Pillow hands us composited frames (P first, RGB/RGBA after) and re-derives each frame's
    rectangle when writing, so the source's disposal codes no longer fit (restore-to-previous and
    partial restore-to-background come out wrong), and palette optimisation can drop the
    transparent index of a first frame that doesn't use it. For see-through animations, writing
    RGBA frames that clear the canvas after each one is exact; opaque ones need neither.
    """
    if not any(frame.has_transparency_data for frame in frames):
        return frames, options
    rgba = [frame if frame.mode == "RGBA" else frame.convert("RGBA") for frame in frames]
    options = {key: value for key, value in options.items() if key != "transparency"}
    return rgba, {**options, "disposal": 2, "optimize": False}


def _seek(im: ImageFile.ImageFile, index: int) -> bool:
    try:
        im.seek(index)
    except EOFError:
        return False
    return True


def _orientation_fix(im: ImageFile.ImageFile) -> _Fix:
    """The transpose that makes the image upright, from EXIF (AVIF irot/imir arrive as EXIF).

    Done once rather than with ImageOps.exif_transpose per frame: one parse serves every
    frame of an animation, and malformed EXIF (which browsers ignore) costs nothing.
    """
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except (*_DECODE_ERRORS, Warning):  # Pillow warns about broken EXIF; under -W error that raises
        return None  # whatever is wrong with it, the EXIF is dropped anyway
    return _ORIENTATION_FIXES.get(orientation) if isinstance(orientation, int) else None


def _upright(im: Image.Image, canvas: tuple[int, int], fix: _Fix) -> Image.Image:
    # A GIF frame that sticks out of the logical screen grows Pillow's canvas mid-animation;
    # clip it back, as browsers do.
    frame = im.copy() if im.size == canvas else im.crop((0, 0, *canvas))
    return frame.transpose(fix) if fix is not None else frame


def _web_ready(frame: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """The first frame as RGB(A) for WebP, and the ICC profile that still describes it."""
    if frame.mode == "CMYK":
        return _cmyk_to_srgb(frame, icc), None
    if frame.mode == "P":
        # convert() from P writes the transparency into the *source's* palette (making it RGBA),
        # which then garbles the colours when that frame is saved as the original.
        frame = frame.copy()
    if frame.mode in ("I", "F") or frame.mode.startswith("I;16"):
        # convert("L") clips 16-bit values at 255 instead of scaling them.
        frame = frame.point(lambda value: value / 256, "L")
    target = "RGBA" if frame.has_transparency_data else "RGB"
    converted = frame if frame.mode == target else frame.convert(target)
    # A grey profile can't describe RGB pixels; browsers then assume sRGB, which is close.
    return converted, icc if icc is not None and icc[16:20] == b"RGB " else None


def _cmyk_to_srgb(frame: Image.Image, icc: bytes | None) -> Image.Image:
    if icc is not None:
        try:
            # Fresh profiles per call: LittleCMS profile handles aren't safe to share across threads.
            profile, srgb = ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(frame, profile, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None  # unusable profile: fall back to Pillow's naive conversion
        if converted is not None:
            return converted
    return frame.convert("RGB")


# --- Encoding -------------------------------------------------------------------------------


def _save_options(im: ImageFile.ImageFile, kind: str, data: bytes, fix: _Fix) -> dict[str, Any]:
    """Format-specific writer arguments, read from the source before its info is dropped."""
    if kind == "JPEG":
        return _jpeg_options(im, fix)
    if kind == "WEBP":
        return _webp_options(im, data)
    if kind == "AVIF":
        return {"quality": _AVIF_QUALITY, "speed": _AVIF_SPEED}
    options: dict[str, Any] = {}
    if (transparency := im.info.get("transparency")) is not None:
        options["transparency"] = transparency
    if "loop" in im.info:  # absent in a GIF means "play once"; keep it absent
        options["loop"] = im.info["loop"]
    if kind == "PNG":
        options.update(_png_options(im))
    return options


def _jpeg_options(im: ImageFile.ImageFile, fix: _Fix) -> dict[str, Any]:
    """Reuse the source's quantisation tables so re-encoding costs as little quality as possible.

    This is what quality="keep" does, but that only works on the untouched JpegImageFile.
    """
    options: dict[str, Any] = {
        "optimize": True,
        "progressive": bool(im.info.get("progressive") or im.info.get("progression")),
    }
    tables = getattr(im, "quantization", None)
    if not tables:
        options["quality"] = _JPEG_FALLBACK_QUALITY
        return options
    sampling = JpegImagePlugin.get_sampling(im)
    quarter_turn = fix in _QUARTER_TURNS
    if quarter_turn:
        # Rows become columns, so coefficient (u, v) becomes (v, u): transpose the tables.
        tables = {index: _transpose_table(table) for index, table in tables.items()}
    if im.mode == "RGB" and (sampling == -1 or (quarter_turn and sampling == 1)):
        # An unknown layout, or 4:2:2 turned sideways (which libjpeg can't write): don't
        # throw chroma away, use 4:4:4.
        sampling = 0
    options.update(qtables=tables, subsampling=sampling)
    return options


def _transpose_table(table: list[int]) -> list[int]:
    return [table[(i % 8) * 8 + i // 8] for i in range(64)]


def _webp_options(im: ImageFile.ImageFile, data: bytes) -> dict[str, Any]:
    options: dict[str, Any] = {"method": 4, "loop": im.info.get("loop", 0)}
    if "background" in im.info:
        options["background"] = im.info["background"]
    if _webp_is_lossless(data):
        options.update(lossless=True, quality=80, exact=True)
    else:
        options["quality"] = _WEBP_LOSSY_QUALITY
    return options


def _webp_is_lossless(data: bytes) -> bool:
    """True when every image bitstream is VP8L; Pillow doesn't say which kind it decoded."""
    kinds: set[bytes] = set()
    for fourcc, start, end in _riff_chunks(data, 12, len(data)):
        if fourcc == b"ANMF":  # animation frame: 16 bytes of geometry, then its own chunks
            kinds.update(inner for inner, _, _ in _riff_chunks(data, start + 16, end))
        else:
            kinds.add(fourcc)
    return b"VP8L" in kinds and b"VP8 " not in kinds


def _riff_chunks(data: bytes, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    while pos + 8 <= end:
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        yield fourcc, pos + 8, min(pos + 8 + size, end)
        pos += 8 + size + (size & 1)


def _png_options(im: ImageFile.ImageFile) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if getattr(im, "default_image", False):
        # APNG whose IDAT is a still fallback rather than the first animation frame.
        options["default_image"] = True
    if "icc_profile" not in im.info and (colour := _png_colour_chunks(im.info)) is not None:
        options["pnginfo"] = colour
    return options


def _png_colour_chunks(info: dict[str | tuple[int, int], Any]) -> PngImagePlugin.PngInfo | None:
    """gAMA/cHRM/sRGB describe colours, not people; browsers honour them, so keep them."""
    chunks = PngImagePlugin.PngInfo()
    if "gamma" in info:
        chunks.add(b"gAMA", struct.pack(">I", round(info["gamma"] * 100_000)))
    if "chromaticity" in info:
        chunks.add(b"cHRM", struct.pack(">8I", *(round(v * 100_000) for v in info["chromaticity"])))
    if "srgb" in info:
        chunks.add(b"sRGB", bytes([info["srgb"]]))
    return chunks if chunks.chunks else None


def _encode_original(decoded: _Decoded) -> bytes:
    options = {**decoded.options, **_NO_METADATA, "icc_profile": decoded.icc_profile}
    if len(decoded.frames) > 1:
        options.update(_animation_options(decoded))
    buffer = io.BytesIO()
    decoded.frames[0].save(buffer, decoded.kind, **options)
    return buffer.getvalue()


def _animation_options(decoded: _Decoded) -> dict[str, Any]:
    frames, durations = decoded.frames, decoded.durations
    options: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": durations}
    if decoded.options.get("default_image"):
        options["duration"] = durations[1:]  # the still fallback has no place in the timeline
    return options


def _shrink(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    smaller = image.copy()
    smaller.thumbnail(box, Image.Resampling.LANCZOS)  # keeps aspect ratio, never enlarges
    return smaller


def _variant(image: Image.Image, icc: bytes | None, quality: int) -> Variant:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=quality, method=4, icc_profile=icc, **_NO_METADATA)
    return Variant(data=buffer.getvalue(), width=image.width, height=image.height)


def _frames_in(original: bytes, kind: str) -> int:
    """Count frames in what we wrote: writers merge identical consecutive frames."""
    with Image.open(io.BytesIO(original), formats=(kind,)) as im:
        return int(getattr(im, "n_frames", 1))
