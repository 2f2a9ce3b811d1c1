"""process_image and ImageProcessor against hostile, awkward and ordinary files."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from PIL import (
    AvifImagePlugin,
    BmpImagePlugin,
    GifImagePlugin,
    IcoImagePlugin,
    Image,
    ImageChops,
    ImageFile,
    ImageOps,
    ImageStat,
    JpegImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from chitram.images import processing
from chitram.images.processing import (
    ALLOWED_FORMATS,
    EXTENSIONS,
    CorruptImage,
    ImageDimensionsTooLarge,
    ImageLimits,
    ImageProcessor,
    ImageRejected,
    ProcessedImage,
    UnsupportedImageType,
    process_image,
)
from tests.images import hostile

Process = Callable[..., ProcessedImage]
Refuse = Callable[..., tuple[ImageRejected, float]]

DEFAULT_LIMITS = ImageLimits()
ACCEPTED = "Upload a JPEG, PNG, GIF, WebP or AVIF image."
TIMES = "\u00d7"
# Generous for CI: a refusal from the header takes milliseconds here.
REFUSAL_SECONDS = 1.0


@pytest.fixture
def process(tmp_path: Path) -> Process:
    def run(data: bytes, limits: ImageLimits = DEFAULT_LIMITS, name: str = "upload.bin") -> ProcessedImage:
        source = tmp_path / name
        source.write_bytes(data)
        return process_image(source, limits=limits)

    return run


@pytest.fixture
def refuse(process: Process) -> Refuse:
    """Run a file that must be refused; return the exception and how long the refusal took."""

    def run(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[ImageRejected, float]:
        started = time.perf_counter()
        with pytest.raises(ImageRejected) as caught:
            process(data, limits)
        return caught.value, time.perf_counter() - started

    return run


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def same_pixels(first: Image.Image, second: Image.Image) -> bool:
    """Pixel-identical as seen: the colour of a fully transparent pixel doesn't count."""
    if first.mode == second.mode == "RGBA":
        first, second = first.convert("RGBa"), second.convert("RGBa")
    difference = ImageChops.difference(first, second) if first.size == second.size else None
    return difference is not None and difference.getbbox(alpha_only=False) is None


def mean_difference(first: Image.Image, second: Image.Image) -> float:
    difference = ImageChops.difference(first.convert("RGB"), second.convert("RGB")).convert("L")
    return float(ImageStat.Stat(difference).mean[0])


def quantization(data: bytes) -> dict[int, list[int]]:
    image = opened(data)
    assert isinstance(image, JpegImagePlugin.JpegImageFile)
    return image.quantization


# --- The contract ----------------------------------------------------------------------------


def test_formats_and_extensions_are_the_public_contract() -> None:
    assert ALLOWED_FORMATS == {
        "JPEG": "image/jpeg",
        "PNG": "image/png",
        "GIF": "image/gif",
        "WEBP": "image/webp",
        "AVIF": "image/avif",
    }
    assert EXTENSIONS == {
        "image/jpeg": "jpg",
        "image/png": "png",
        "image/gif": "gif",
        "image/webp": "webp",
        "image/avif": "avif",
    }
    assert (DEFAULT_LIMITS.max_pixels, DEFAULT_LIMITS.max_frames) == (50_000_000, 1000)
    assert DEFAULT_LIMITS.max_total_pixels == 250_000_000


@pytest.mark.parametrize(
    ("rejection", "status", "kind"),
    [
        (UnsupportedImageType("x"), 415, "unsupported-image-type"),
        (ImageDimensionsTooLarge("x"), 422, "image-too-large"),
        (CorruptImage(), 422, "corrupt-image"),
    ],
)
def test_rejections_carry_problem_details(rejection: ImageRejected, status: int, kind: str) -> None:
    assert isinstance(rejection, ImageRejected)
    assert (rejection.status_code, rejection.problem_type) == (status, kind)
    assert rejection.title and rejection.detail
    assert str(rejection) == rejection.detail


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_frames=0)


# --- Not an image we accept --------------------------------------------------------------------

Make = Callable[[], bytes]

UNSUPPORTED: dict[str, tuple[Make, str]] = {
    "svg": (hostile.svg_with_script, "SVG"),
    "html": (hostile.html_file, "HTML"),
    "pdf": (hostile.pdf_file, "PDF"),
    "tiff": (hostile.tiff_file, "TIFF"),
    "bmp": (hostile.bmp_file, "BMP"),
    "ico": (hostile.ico_file, "ICO"),
    "heic": (hostile.heic_header, "HEIC"),
    "text": (hostile.text_file, "not an image type"),
    "empty": (hostile.empty_file, "empty"),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_other_file_types_are_unsupported(name: str, refuse: Refuse) -> None:
    make, named = UNSUPPORTED[name]
    rejection, elapsed = refuse(make())
    assert type(rejection) is UnsupportedImageType
    assert rejection.status_code == 415
    assert named in rejection.detail and rejection.detail.endswith(ACCEPTED)
    assert elapsed < REFUSAL_SECONDS


def test_other_decoders_are_never_even_tried(monkeypatch: pytest.MonkeyPatch, process: Process) -> None:
    tried: list[str] = []
    for plugin in (TiffImagePlugin.TiffImageFile, BmpImagePlugin.BmpImageFile, IcoImagePlugin.IcoImageFile):

        def spy(self: Any, name: str = plugin.__name__) -> None:
            tried.append(name)
            raise SyntaxError("spy")

        monkeypatch.setattr(plugin, "_open", spy)
    for make in (hostile.tiff_file, hostile.bmp_file, hostile.ico_file):
        with pytest.raises(UnsupportedImageType):
            process(make())
    assert tried == []


def test_type_comes_from_decoding_not_from_the_name(process: Process) -> None:
    processed = process(hostile.png(), name="holiday.jpg")
    assert (processed.content_type, processed.extension) == ("image/png", "png")


# --- Broken files -----------------------------------------------------------------------------

CORRUPT: dict[str, Make] = {
    "truncated-jpeg": hostile.truncated_jpeg,
    "truncated-png": hostile.truncated_png,
    "truncated-gif": hostile.truncated_gif,
    "truncated-webp": hostile.truncated_webp,
    "png-header-only": hostile.png_header_only,
    "garbage-after-png-magic": hostile.garbage_after_png_magic,
}


@pytest.mark.parametrize("name", CORRUPT)
def test_truncated_and_corrupt_files_are_corrupt(name: str, refuse: Refuse) -> None:
    rejection, elapsed = refuse(CORRUPT[name]())
    assert type(rejection) is CorruptImage
    assert rejection.status_code == 422
    assert "truncated or corrupt" in rejection.detail
    assert elapsed < REFUSAL_SECONDS


FUZZ_SOURCES: dict[str, Make] = {
    "jpeg": lambda: hostile.jpeg((48, 32)),
    "png": hostile.transparent_png,
    "gif": hostile.animated_gif,
    "webp": hostile.animated_webp,
    "webp-lossy": lambda: hostile.webp_image(lossless=False),
    "apng": hostile.apng,
    "avif": hostile.avif_image,
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken EXIF it skips
@pytest.mark.parametrize("name", FUZZ_SOURCES)
def test_mangled_files_never_raise_anything_but_a_rejection(name: str, process: Process) -> None:
    source = FUZZ_SOURCES[name]()
    rng = random.Random(f"fuzz-{name}")
    outcomes = {"accepted": 0, "rejected": 0}
    for case in range(40):
        data = bytearray(source)
        if case % 4 == 0:
            del data[rng.randrange(8, len(data)) :]
        else:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(8, len(data))] = rng.randrange(256)
        try:
            processed = process(bytes(data))
        except ImageRejected:
            outcomes["rejected"] += 1
        else:
            outcomes["accepted"] += 1
            opened(processed.original)  # whatever we accept, we store something that decodes
    assert outcomes["rejected"] > 0


# --- Bombs -------------------------------------------------------------------------------------

BOMBS: dict[str, tuple[Make, str]] = {
    "png-100000x100000": (
        lambda: hostile.png_bomb(100_000, 100_000),
        f"image is 100000{TIMES}100000 pixels (10000.0 megapixels); the limit is 50 megapixels per frame",
    ),
    "png-8000x8000": (lambda: hostile.png_bomb(8000, 8000), f"8000{TIMES}8000 pixels (64.0 megapixels)"),
    "jpeg-24000x24000": (
        lambda: hostile.jpeg_claiming_size(24_000, 24_000),
        f"image is 24000{TIMES}24000 pixels (576.0 megapixels); the limit is 50 megapixels per frame",
    ),
    "gif-5000-frames": (lambda: hostile.gif_many_frames(5000), "the limit is 1000 frames"),
    "gif-100000-frames": (lambda: hostile.gif_many_frames(100_000), "the limit is 1000 frames"),
    "gif-300-frames-of-1000x1000": (
        lambda: hostile.gif_many_frames(300, canvas=(1000, 1000)),
        "the limit is 250 megapixels across all frames",
    ),
    "gif-frame-bigger-than-canvas": (hostile.gif_with_giant_frame, f"65535{TIMES}65535 pixels"),
    "webp-16383x16383": (lambda: hostile.webp_animation((16383, 16383), 1), "the limit is 50 megapixels"),
    "webp-8000x8000": (lambda: hostile.webp_animation((8000, 8000), 1), f"8000{TIMES}8000 pixels"),
    "webp-5000-frames": (lambda: hostile.webp_animation((2, 2), 5000), "has 5000 frames; the limit is 1000"),
    "webp-300-frames-of-1000x1000": (
        lambda: hostile.webp_animation((1000, 1000), 300),
        "the limit is 250 megapixels across all frames",
    ),
    "apng-claiming-5000-frames": (lambda: hostile.apng_claiming_frames(5000), "the limit is 1000 frames"),
    # 270 kB; unguarded, 1000 scans of 7000x7000 took 34 s to decode
    "jpeg-5000-scans": (lambda: hostile.jpeg_with_many_scans(5000), "stored as 5000 scans"),
}


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_from_the_header_quickly(name: str, refuse: Refuse) -> None:
    make, message = BOMBS[name]
    rejection, elapsed = refuse(make())
    assert type(rejection) is ImageDimensionsTooLarge
    assert rejection.status_code == 422
    assert message in rejection.detail
    assert elapsed < REFUSAL_SECONDS, f"refusal took {elapsed:.3f} s"


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_before_any_pixel_is_decoded(
    name: str, monkeypatch: pytest.MonkeyPatch, refuse: Refuse
) -> None:
    decoded: list[str] = []
    for owner in (ImageFile.ImageFile, WebPImagePlugin.WebPImageFile, AvifImagePlugin.AvifImageFile):

        def spy(self: Image.Image, owner: type = owner) -> None:
            decoded.append(owner.__name__)
            raise AssertionError("decoded")

        monkeypatch.setattr(owner, "load", spy)
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "seek", spy)  # seeking a GIF decodes
    rejection, _ = refuse(BOMBS[name][0]())
    assert type(rejection) is ImageDimensionsTooLarge
    assert decoded == []


def test_png_bomb_is_a_real_one() -> None:
    """The generator's output is a valid PNG that inflates to the size it claims."""
    bomb = hostile.png_bomb(100_000, 100_000)
    assert 1_000_000 < len(bomb) < 2_000_000
    small = opened(hostile.png_bomb(3000, 2000))
    assert small.size == (3000, 2000) and small.getextrema() == (0, 0)


def test_bomb_refused_even_when_pillow_warnings_are_errors(refuse: Refuse) -> None:
    # 100 MP is past Pillow's warning threshold but not its error threshold.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rejection, _ = refuse(hostile.png_bomb(10_000, 10_000))
    assert type(rejection) is ImageDimensionsTooLarge
    assert f"10000{TIMES}10000 pixels" in rejection.detail


def test_scan_limit_is_exact(process: Process) -> None:
    limit = processing.MAX_JPEG_SCANS
    assert process(hostile.jpeg_with_many_scans(limit, (64, 64))).width == 64
    with pytest.raises(ImageDimensionsTooLarge, match=f"the limit is {limit}"):
        process(hostile.jpeg_with_many_scans(limit + 1, (64, 64)))


def test_pixel_limit_is_exact(process: Process) -> None:
    limits = ImageLimits(max_pixels=60 * 30)
    assert process(hostile.png((60, 30)), limits).width == 60
    with pytest.raises(ImageDimensionsTooLarge, match=r"the limit is 0\.0018 megapixels per frame"):
        process(hostile.png((61, 30)), limits)


@pytest.mark.parametrize(
    "make", [hostile.animated_gif, hostile.apng, hostile.animated_webp], ids=["gif", "apng", "webp"]
)
def test_frame_and_total_pixel_limits_are_exact(make: Callable[[], bytes], process: Process) -> None:
    data = make()
    frames = int(getattr(opened(data), "n_frames", 1))
    canvas = 40 * 30
    assert process(data, ImageLimits(max_frames=frames, max_total_pixels=frames * canvas)).frames == frames
    with pytest.raises(ImageDimensionsTooLarge, match="frames"):
        process(data, ImageLimits(max_frames=frames - 1))
    with pytest.raises(ImageDimensionsTooLarge, match="across all frames"):
        process(data, ImageLimits(max_total_pixels=frames * canvas - 1))


# --- Metadata ----------------------------------------------------------------------------------

METADATA_SOURCES: dict[str, Make] = {
    "jpeg-gps-orientation": hostile.jpeg_with_gps_and_orientation,
    "jpeg-xmp-comment-iptc": hostile.jpeg_with_xmp_and_comment,
    "mpo": hostile.mpo_image,
    "png-text-chunks": hostile.png_with_text_chunks,
    "apng": hostile.apng,
    "gif-comment": hostile.animated_gif,
    "webp-lossless": lambda: hostile.webp_image(lossless=True),
    "webp-lossy": lambda: hostile.webp_image(lossless=False),
    "webp-animated": hostile.animated_webp,
    "avif": hostile.avif_image,
    "polyglot-png": hostile.polyglot_png_with_html,
    "polyglot-jpeg-zip": hostile.jpeg_with_zip_appended,
    "polyglot-gif-script": hostile.gif_with_script_appended,
}
PNG_CHUNKS_ALLOWED = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"iCCP", b"gAMA", b"cHRM", b"sRGB"}
APNG_CHUNKS = {b"acTL", b"fcTL", b"fdAT"}
WEBP_CHUNKS_ALLOWED = {b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
JPEG_SEGMENTS_ALLOWED = {0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xDA, 0xEE}  # JFIF, tables, frame, scan, Adobe


def is_icc(payload: bytes) -> bool:
    return payload.startswith(b"ICC_PROFILE")


def assert_no_metadata(data: bytes) -> None:
    for marker in (*hostile.MARKERS, b"<script", b"<html", b"PK\x03\x04"):
        assert marker not in data, marker
    image = opened(data)
    assert not image.getexif()
    assert not {"exif", "xmp", "comment", "photoshop", "XML:com.adobe.xmp", "Author"} & set(image.info)
    if image.format == "PNG":
        assert set(hostile.png_chunk_types(data)) <= PNG_CHUNKS_ALLOWED | APNG_CHUNKS
    elif image.format == "WEBP":
        assert set(hostile.riff_chunk_types(data)) <= WEBP_CHUNKS_ALLOWED
    elif image.format == "JPEG":
        segments = hostile.jpeg_marker_segments(data)
        unexpected = {m for m, payload in segments if m not in JPEG_SEGMENTS_ALLOWED and not is_icc(payload)}
        assert not unexpected, [hex(m) for m in unexpected]


@pytest.mark.parametrize("name", METADATA_SOURCES)
def test_metadata_and_trailing_data_are_gone(name: str, process: Process) -> None:
    source = METADATA_SOURCES[name]()
    assert any(marker in source for marker in hostile.MARKERS), "the source must carry something to remove"
    processed = process(source)
    for output in (processed.original, processed.thumbnail.data, processed.preview.data):
        assert_no_metadata(output)


def test_gps_camera_data_gone_from_jpeg_bytes(process: Process) -> None:
    source = hostile.jpeg_with_gps_and_orientation()
    assert b"GPS" not in process(source).original
    assert opened(source).getexif().get_ifd(0x8825), "the source has a GPS IFD"


def test_polyglot_tail_is_cut_off(process: Process) -> None:
    png = process(hostile.polyglot_png_with_html()).original
    assert png.endswith(hostile.png_chunk(b"IEND", b""))
    jpeg = process(hostile.jpeg_with_zip_appended()).original
    assert jpeg.endswith(b"\xff\xd9")
    gif = process(hostile.gif_with_script_appended()).original
    assert gif.endswith(b";")


def test_mpo_becomes_its_first_picture_as_plain_jpeg(process: Process) -> None:
    source = hostile.mpo_image()
    assert opened(source).format == "MPO"
    processed = process(source)
    assert (processed.content_type, processed.frames) == ("image/jpeg", 1)
    assert (processed.width, processed.height) == (60, 30)
    output = opened(processed.original)
    assert output.format == "JPEG"
    segments = hostile.jpeg_marker_segments(processed.original)
    assert not any(payload.startswith(b"MPF") for _, payload in segments)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken EXIF it skips
def test_broken_exif_does_not_cost_the_upload(process: Process) -> None:
    processed = process(hostile.jpeg_with_broken_exif())
    assert (processed.width, processed.height) == (60, 30)
    assert_no_metadata(processed.original)


# --- Orientation -------------------------------------------------------------------------------


def test_jpeg_orientation_is_applied(process: Process) -> None:
    processed = process(hostile.jpeg_with_gps_and_orientation())
    assert (processed.width, processed.height) == (30, 60)
    for data in (processed.original, processed.preview.data, processed.thumbnail.data):
        image = opened(data).convert("RGB")
        assert image.size == (30, 60)
        top, bottom = image.getpixel((15, 10)), image.getpixel((15, 50))
        assert isinstance(top, tuple) and isinstance(bottom, tuple)
        # orientation 6 means "turn clockwise": the red left half ends up on top
        assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_exif_transpose(orientation: int, process: Process) -> None:
    source = hostile.png_with_orientation(orientation)
    expected = ImageOps.exif_transpose(opened(source))
    processed = process(source)
    assert (processed.width, processed.height) == expected.size
    assert same_pixels(opened(processed.original).convert("RGB"), expected.convert("RGB"))


def test_avif_orientation_is_applied(process: Process) -> None:
    processed = process(hostile.avif_image(orientation=6))
    assert (processed.width, processed.height) == (30, 60)
    assert opened(processed.original).size == (30, 60)


# --- Colour and transparency -------------------------------------------------------------------

ICC_SOURCES: dict[str, Make] = {
    "png": hostile.png_with_icc,
    "jpeg": hostile.jpeg_with_icc,
    "webp": lambda: hostile.webp_image(lossless=True),
    "avif": hostile.avif_image,
}


@pytest.mark.parametrize("name", ICC_SOURCES)
def test_icc_profile_is_kept_in_original_and_variants(name: str, process: Process) -> None:
    source = ICC_SOURCES[name]()
    profile = opened(source).info.get("icc_profile")
    assert profile == hostile.srgb_profile()
    processed = process(source)
    for data in (processed.original, processed.preview.data, processed.thumbnail.data):
        assert opened(data).info.get("icc_profile") == profile


def test_png_gamma_is_kept(process: Process) -> None:
    assert opened(process(hostile.png_with_gamma()).original).info["gamma"] == pytest.approx(0.45455)


def test_rgba_png_keeps_exact_alpha(process: Process) -> None:
    source = opened(hostile.transparent_png())
    processed = process(hostile.transparent_png())
    original = opened(processed.original)
    assert original.mode == "RGBA" and same_pixels(original, source)
    preview = opened(processed.preview.data)
    assert preview.mode == "RGBA"
    alpha, expected = preview.getchannel("A"), source.getchannel("A")
    assert mean_difference(alpha, expected) < 2
    assert alpha.crop((0, 19, 40, 20)).getextrema() == (0, 0)  # the fully transparent row


def test_palette_png_keeps_its_palette_and_transparency(process: Process) -> None:
    source = opened(hostile.palette_png_with_transparency())
    processed = process(hostile.palette_png_with_transparency())
    original = opened(processed.original)
    assert original.mode == "P" and "transparency" in original.info
    assert same_pixels(original.convert("RGBA"), source.convert("RGBA"))
    thumbnail = opened(processed.thumbnail.data)
    assert thumbnail.mode == "RGBA"
    corner = thumbnail.getpixel((0, 0))
    assert isinstance(corner, tuple) and corner[3] == 0  # index 0 was transparent
    red = thumbnail.getpixel((10, 10))
    assert isinstance(red, tuple) and red[0] > 200 > 40 > red[2] and red[3] == 255


def test_lossless_webp_stays_lossless_with_alpha(process: Process) -> None:
    source = hostile.webp_image(lossless=True, alpha=True)
    processed = process(source)
    assert b"VP8L" in hostile.riff_chunk_types(processed.original)
    assert same_pixels(opened(processed.original), opened(source))


def test_lossy_webp_stays_lossy(process: Process) -> None:
    source = hostile.webp_image(lossless=False)
    processed = process(source)
    assert b"VP8 " in hostile.riff_chunk_types(processed.original)
    assert mean_difference(opened(processed.original), opened(source)) < 3


MODES: dict[str, tuple[Make, str, str]] = {
    "cmyk-jpeg": (hostile.cmyk_jpeg, "CMYK", "RGB"),
    "grey-jpeg": (hostile.grayscale_jpeg, "L", "RGB"),
    "grey-alpha-png": (hostile.grayscale_alpha_png, "LA", "RGBA"),
    "palette-png": (hostile.palette_png_with_transparency, "P", "RGBA"),
    "16-bit-png": (hostile.png_16bit_grayscale, "I;16", "RGB"),
    "bilevel-png": (hostile.bilevel_png, "1", "RGB"),
}


@pytest.mark.parametrize("name", MODES)
def test_awkward_modes_are_kept_in_originals_and_converted_for_variants(name: str, process: Process) -> None:
    make, original_mode, variant_mode = MODES[name]
    processed = process(make())
    assert opened(processed.original).mode == original_mode
    assert opened(processed.thumbnail.data).mode == variant_mode


def test_cmyk_colours_survive_into_variants(process: Process) -> None:
    thumbnail = opened(process(hostile.cmyk_jpeg()).thumbnail.data)
    left, right = thumbnail.getpixel((10, 15)), thumbnail.getpixel((50, 15))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > left[2] and right[2] > right[0]


def test_16_bit_grey_is_scaled_not_clipped(process: Process) -> None:
    processed = process(hostile.png_16bit_grayscale())
    assert opened(processed.original).tobytes() == opened(hostile.png_16bit_grayscale()).tobytes()
    ramp = opened(processed.preview.data).convert("L")
    dark, middle = ramp.getpixel((0, 1)), ramp.getpixel((128, 1))
    assert isinstance(dark, int) and isinstance(middle, int)
    assert dark < 10 and 110 < middle < 150


# --- Animation ---------------------------------------------------------------------------------

ANIMATIONS: dict[str, tuple[Make, int, int]] = {
    "gif": (hostile.animated_gif, 4, 0),
    "webp": (hostile.animated_webp, 3, 3),
    "apng": (hostile.apng, 3, 2),
}


@pytest.mark.parametrize("name", ANIMATIONS)
def test_animation_keeps_frames_durations_and_loop(name: str, process: Process) -> None:
    make, frames, loop = ANIMATIONS[name]
    source = make()
    processed = process(source)
    assert processed.frames == frames
    assert hostile.durations(processed.original) == hostile.ANIMATION_DURATIONS[:frames]
    assert opened(processed.original).info["loop"] == loop
    expected, actual = hostile.composited_frames(source), hostile.composited_frames(processed.original)
    assert len(actual) == frames and all(same_pixels(a, b) for a, b in zip(actual, expected, strict=True))
    # variants show the first frame (lossy WebP, so nearly the same)
    assert mean_difference(opened(processed.thumbnail.data).convert("RGBa"), expected[0].convert("RGBa")) < 2


@pytest.mark.parametrize(
    "disposal", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (3, 3, 3, 3), (1, 2, 3, 1), (2, 3, 1, 2)]
)
def test_gif_disposal_is_reproduced_frame_for_frame(disposal: tuple[int, ...], process: Process) -> None:
    source = hostile.animated_gif(disposal=disposal)
    expected = hostile.composited_frames(source)
    actual = hostile.composited_frames(process(source).original)
    assert len(actual) == len(expected)
    assert all(same_pixels(a, b) for a, b in zip(actual, expected, strict=True))


@pytest.mark.parametrize(
    ("seed", "transparent"), [(0, True), (12, True), (16, True), (20, True), (0, False), (12, False)]
)
def test_gif_with_local_palettes_comes_out_exact(seed: int, transparent: bool, process: Process) -> None:
    # These seeds came out wrong when frames were written as Pillow composites them (P, then RGBA)
    source = hostile.gif_with_local_palettes(seed, transparent=transparent)
    expected = hostile.composited_frames(source)
    actual = hostile.composited_frames(process(source).original)
    assert len(actual) == len(expected) == 5
    assert all(same_pixels(a, b) for a, b in zip(actual, expected, strict=True))


def test_gif_that_plays_once_still_plays_once(process: Process) -> None:
    processed = process(hostile.animated_gif(loop=None))
    assert "loop" not in opened(processed.original).info


def test_lossy_animated_webp_stays_lossy(process: Process) -> None:
    processed = process(hostile.animated_webp(lossless=False))
    assert processed.frames == 3
    assert b"VP8 " in hostile.riff_chunk_types(processed.original)


def test_animated_avif_keeps_its_frames(process: Process) -> None:
    processed = process(hostile.animated_avif())
    assert processed.frames == 3
    assert hostile.durations(processed.original) == hostile.ANIMATION_DURATIONS[:3]


# --- Variants and what we record ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "preview", "thumbnail"),
    [
        ((2000, 1000), (1280, 640), (320, 160)),
        ((1000, 3000), (427, 1280), (107, 320)),
        ((320, 320), (320, 320), (320, 320)),
        ((100, 50), (100, 50), (100, 50)),
        ((1, 1), (1, 1), (1, 1)),
    ],
)
def test_variants_fit_their_box_keep_aspect_and_never_grow(
    size: tuple[int, int],
    preview: tuple[int, int],
    thumbnail: tuple[int, int],
    process: Process,
) -> None:
    processed = process(hostile.png(size))
    for variant, expected in ((processed.preview, preview), (processed.thumbnail, thumbnail)):
        assert (variant.width, variant.height) == expected
        assert variant.content_type == "image/webp"
        image = opened(variant.data)
        assert image.format == "WEBP" and image.size == expected


def test_record_describes_the_stored_original(process: Process) -> None:
    processed = process(hostile.png((64, 48)))
    assert (processed.content_type, processed.extension) == ("image/png", "png")
    assert (processed.width, processed.height, processed.frames) == (64, 48, 1)
    assert processed.sha256 == hashlib.sha256(processed.original).hexdigest()
    assert opened(processed.original).size == (64, 48)


@pytest.mark.parametrize(
    "make",
    [
        hostile.jpeg_with_gps_and_orientation,
        hostile.png_with_text_chunks,
        hostile.animated_gif,
        hostile.animated_webp,
        hostile.avif_image,
    ],
    ids=["jpeg", "png", "gif", "webp", "avif"],
)
def test_same_upload_gives_same_bytes(make: Callable[[], bytes], process: Process) -> None:
    # blobs are deduplicated by the sha256 of the re-encoded original
    data = make()
    assert process(data).sha256 == process(data).sha256


# --- JPEG quality ---------------------------------------------------------------------------------


def test_jpeg_reuses_the_source_quantisation_and_subsampling(process: Process) -> None:
    source = hostile.jpeg((64, 48), quality=60, subsampling=1)
    original = opened(process(source).original)
    assert isinstance(original, JpegImagePlugin.JpegImageFile)
    assert original.quantization == quantization(source)
    assert JpegImagePlugin.get_sampling(original) == 1


def test_jpeg_turned_sideways_keeps_transposed_tables_and_full_chroma(process: Process) -> None:
    source = hostile.jpeg((64, 48), quality=60, subsampling=1, orientation=6)
    tables = quantization(source)
    original = opened(process(source).original)
    assert isinstance(original, JpegImagePlugin.JpegImageFile)
    assert original.size == (48, 64)
    assert original.quantization == {
        index: [table[(i % 8) * 8 + i // 8] for i in range(64)] for index, table in tables.items()
    }
    assert original.quantization != tables
    assert JpegImagePlugin.get_sampling(original) == 0


def test_progressive_jpeg_stays_progressive(process: Process) -> None:
    assert opened(process(hostile.jpeg_with_icc(progressive=True)).original).info.get("progressive")
    assert not opened(process(hostile.jpeg_with_icc()).original).info.get("progressive")


# --- ImageProcessor ---------------------------------------------------------------------------------


def test_processor_processes_and_rejects_off_the_event_loop(tmp_path: Path) -> None:
    processor = ImageProcessor(limits=DEFAULT_LIMITS, concurrency=2)  # built outside any event loop
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(hostile.png())
    bad.write_bytes(hostile.svg_with_script())

    async def main() -> ProcessedImage:
        with pytest.raises(UnsupportedImageType):
            await processor.process(bad)
        return await processor.process(good)

    assert asyncio.run(main()).content_type == "image/png"
    assert asyncio.run(main()).content_type == "image/png"  # the same processor in a second event loop


def test_processor_refuses_zero_concurrency() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ImageProcessor(limits=DEFAULT_LIMITS, concurrency=0)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_processor_runs_at_most_concurrency_jobs_at_once(
    concurrency: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lock, release = threading.Lock(), threading.Event()
    state = {"active": 0, "peak": 0, "started": 0}
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def instrumented(source: Path, *, limits: ImageLimits) -> Any:
        with lock:
            state["active"] += 1
            state["started"] += 1
            state["peak"] = max(state["peak"], state["active"])
            threads.add(threading.get_ident())
        try:
            release.wait(timeout=10)
        finally:
            with lock:
                state["active"] -= 1
        # Enough of a ProcessedImage for the processor's timing (it reads the content type).
        return SimpleNamespace(name=source.name, content_type="image/png")

    monkeypatch.setattr(processing, "process_image", instrumented)
    monkeypatch.setattr(processing, "measure_image", lambda source, *, limits: 1)  # tiny jobs: budget never binds
    processor = ImageProcessor(limits=DEFAULT_LIMITS, concurrency=concurrency)
    jobs = 3
    results: list[Any] = []

    def saturated() -> bool:
        queued = processor._limiter.statistics().tasks_waiting
        return state["started"] == concurrency and queued == jobs - concurrency

    async def run_one(index: int) -> None:
        results.append(await processor.process(tmp_path / f"job-{index}"))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for index in range(jobs):
                group.start_soon(run_one, index)
            try:
                # Wait (bounded) until `concurrency` jobs are inside and the rest are queued.
                for _ in range(5000):
                    if saturated():
                        break
                    await anyio.sleep(0.001)
                assert saturated()
                assert state["active"] == concurrency
            finally:
                release.set()

    asyncio.run(main())
    assert state["peak"] == concurrency
    assert sorted(result.name for result in results) == [f"job-{index}" for index in range(jobs)]
    assert loop_thread not in threads
