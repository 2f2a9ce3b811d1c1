"""Hostile and awkward image files, generated in memory (no binary fixtures in the repository).

Every generator returns the file's bytes. Files that carry metadata plant the marker strings in
MARKERS, so a test can grep any output for all of them. Bombs are crafted by hand so that they
cost milliseconds to build however large they claim to be.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence

from PIL import ExifTags, Image, ImageCms, ImageDraw, PngImagePlugin, TiffImagePlugin

CAMERA_SERIAL = "SECRET-CAMERA-SERIAL"
CAMERA_MAKE = "SECRET-CAMERA-MAKE"
OWNER = "SECRET-OWNER-NAME"
GPS_DATUM = "SECRET-GPS-DATUM"
XMP_CREATOR = "SECRET-XMP-CREATOR"
COMMENT = "SECRET-COMMENT"
PNG_TEXT = "SECRET-PNG-TEXT"
IPTC_BYLINE = "SECRET-IPTC-BYLINE"
PRIVATE_CHUNK = "SECRET-PRIVATE-CHUNK"
POLYGLOT_PAYLOAD = "SECRET-POLYGLOT-PAYLOAD"

MARKERS: tuple[bytes, ...] = tuple(
    marker.encode()
    for marker in (
        CAMERA_SERIAL,
        CAMERA_MAKE,
        OWNER,
        GPS_DATUM,
        XMP_CREATOR,
        COMMENT,
        PNG_TEXT,
        IPTC_BYLINE,
        PRIVATE_CHUNK,
        POLYGLOT_PAYLOAD,
    )
)

Size = tuple[int, int]
RED = (220, 20, 20)
BLUE = (20, 20, 220)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

XMP_PACKET = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="' + XMP_CREATOR + '"/>'
    '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
).encode()


# --- Building blocks ------------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def two_tone(size: Size = (60, 30), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: after a quarter turn you can tell which way it went."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image if mode == "RGB" else image.convert(mode)


def four_corners(size: Size = (12, 6)) -> Image.Image:
    """Red, blue, green and yellow quadrants: every flip and turn gives a different picture."""
    image = Image.new("RGB", size, (240, 240, 0))
    half_width, half_height = size[0] // 2, size[1] // 2
    image.paste(RED, (0, 0, half_width, half_height))
    image.paste(BLUE, (half_width, 0, size[0], half_height))
    image.paste((0, 200, 0), (0, half_height, half_width, size[1]))
    return image


def noise(size: Size, mode: str = "RGB", seed: int = 7) -> Image.Image:
    """Incompressible pixels, so encoded files are big enough to cut in the middle of the data."""
    data = bytes((i * 2654435761 + seed) >> 13 & 0xFF for i in range(size[0] * size[1] * len(mode)))
    return Image.frombytes(mode, size, data)


def secret_exif(orientation: int = 1) -> Image.Exif:
    """EXIF that identifies and locates someone: camera make and serial, owner, GPS."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = CAMERA_MAKE
    exif[ExifTags.Base.Model] = "Model 7"
    exif[ExifTags.Base.Artist] = OWNER
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.BodySerialNumber] = CAMERA_SERIAL
    details[ExifTags.Base.DateTimeOriginal] = "2024:05:01 10:00:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = tuple(TiffImagePlugin.IFDRational(v) for v in (51, 30, 26))
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = tuple(TiffImagePlugin.IFDRational(v) for v in (0, 7, 39))
    gps[ExifTags.GPS.GPSMapDatum] = GPS_DATUM
    return exif


@functools.cache  # the profile header holds its creation time: build it once, compare equal
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


# --- Inspection helpers (for asserting on outputs) -----------------------------------------------


def png_chunk_types(data: bytes) -> list[bytes]:
    types = []
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        types.append(kind)
        pos += 12 + length
    return types


def riff_chunk_types(data: bytes) -> list[bytes]:
    """Top-level WebP chunks plus those inside animation frames."""
    return list(_riff_walk(data, 12, len(data)))


def _riff_walk(data: bytes, pos: int, end: int) -> Iterator[bytes]:
    while pos + 8 <= end:
        fourcc, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        yield fourcc
        if fourcc == b"ANMF":
            yield from _riff_walk(data, pos + 8 + 16, pos + 8 + size)
        pos += 8 + size + (size & 1)


def jpeg_marker_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) for each header segment up to the start of scan."""
    segments = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = struct.unpack_from(">H", data, pos + 2)[0]
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        if marker == 0xDA:
            break
        pos += 2 + length
    return segments


def composited_frames(data: bytes) -> list[Image.Image]:
    """Every frame as Pillow composites it, in RGBA."""
    with Image.open(io.BytesIO(data)) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(image.convert("RGBA"))
        return frames


def durations(data: bytes) -> list[int]:
    with Image.open(io.BytesIO(data)) as image:
        result = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()
            result.append(round(image.info.get("duration", 0)))
        return result


# --- Photos with things to hide -------------------------------------------------------------


def jpeg_with_gps_and_orientation() -> bytes:
    """A 60x30 JPEG stored sideways (EXIF orientation 6: upright it is 30x60), with GPS and serial."""
    return _save(two_tone((60, 30)), "JPEG", quality=90, exif=secret_exif(orientation=6))


def jpeg_with_xmp_and_comment() -> bytes:
    """XMP packet, COM comment and a Photoshop/IPTC APP13 segment with a by-line."""
    byline = IPTC_BYLINE.encode()
    iptc = b"\x1c\x02\x50" + struct.pack(">H", len(byline)) + byline
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    app13 = b"Photoshop 3.0\0" + resource + (b"\0" if len(iptc) % 2 else b"")
    extra = b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13
    metadata = {"xmp": XMP_PACKET, "comment": COMMENT, "extra": extra, "exif": secret_exif()}
    return _save(two_tone(), "JPEG", quality=90, **metadata)


def jpeg_with_broken_exif() -> bytes:
    """An APP1 Exif segment full of junk: browsers ignore it, so must we (not reject the photo)."""
    good = _save(two_tone(), "JPEG", quality=90)
    junk = b"Exif\0\0MM\0*\xff\xff\xff\xff" + b"\xee" * 40
    return good[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + good[2:]


def jpeg_with_icc(progressive: bool = False) -> bytes:
    return _save(two_tone(), "JPEG", quality=85, icc_profile=srgb_profile(), progressive=progressive)


def jpeg(size: Size = (64, 48), *, quality: int = 75, subsampling: int = 2, orientation: int = 1) -> bytes:
    """Noise (so every coefficient matters) with a given quality, subsampling and orientation."""
    exif = secret_exif(orientation)
    return _save(noise(size), "JPEG", quality=quality, subsampling=subsampling, exif=exif)


def cmyk_jpeg() -> bytes:
    return _save(two_tone(mode="CMYK"), "JPEG", quality=90)


def grayscale_jpeg() -> bytes:
    return _save(two_tone(mode="L"), "JPEG", quality=90)


def mpo_image() -> bytes:
    """A stereo MPO: a 60x30 first picture and a 20x10 second one we must not serve."""
    first, second = two_tone((60, 30)), Image.new("RGB", (20, 10), (0, 200, 0))
    return _save(first, "MPO", save_all=True, append_images=[second], exif=secret_exif())


def png_with_text_chunks() -> bytes:
    """tEXt, zTXt, iTXt (incl. XMP), eXIf, tIME and a private chunk, some after IDAT."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", PNG_TEXT)
    info.add_text("Comment", COMMENT, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode(), zip=False)
    info.add_itxt("Description", OWNER, lang="en", zip=True)
    info.add(b"eXIf", secret_exif().tobytes())
    info.add(b"tIME", struct.pack(">HBBBBB", 2024, 5, 1, 10, 0, 0))
    info.add(b"prVt", PRIVATE_CHUNK.encode())
    info.add(b"tEXt", b"Software\0" + CAMERA_SERIAL.encode(), after_idat=True)
    return _save(two_tone(), "PNG", pnginfo=info)


def png_with_orientation(orientation: int) -> bytes:
    """A lossless source for checking all eight EXIF orientations (PNG eXIf chunk)."""
    return _save(four_corners(), "PNG", exif=secret_exif(orientation))


def png_with_icc() -> bytes:
    return _save(two_tone(), "PNG", icc_profile=srgb_profile())


def png_with_gamma() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 45455))
    return _save(two_tone(), "PNG", pnginfo=info)


def png(size: Size = (64, 48), mode: str = "RGB") -> bytes:
    return _save(two_tone(size, mode), "PNG")


def transparent_png() -> bytes:
    """RGBA with an alpha ramp left to right and a fully transparent bottom row."""
    image = two_tone((40, 20)).convert("RGBA")
    alpha = Image.linear_gradient("L").rotate(90).resize((40, 20))
    ImageDraw.Draw(alpha).rectangle((0, 19, 39, 19), fill=0)
    image.putalpha(alpha)
    return _save(image, "PNG")


def palette_png_with_transparency() -> bytes:
    """Three-colour palette image whose index 0 is fully transparent (a tRNS chunk)."""
    image = Image.new("P", (30, 20), 0)
    image.putpalette([0, 0, 0, *RED, *BLUE])
    ImageDraw.Draw(image).rectangle((5, 5, 14, 14), fill=1)
    ImageDraw.Draw(image).rectangle((15, 5, 24, 14), fill=2)
    return _save(image, "PNG", transparency=0)


def grayscale_alpha_png() -> bytes:
    image = two_tone((30, 20), "L")
    return _save(Image.merge("LA", (image, Image.new("L", image.size, 128))), "PNG")


def png_16bit_grayscale() -> bytes:
    """I;16 with a horizontal ramp over the full 0..65535 range."""
    image = Image.new("I;16", (256, 4))
    image.frombytes(b"".join(struct.pack("<H", x * 257) for x in range(256)) * 4, "raw", "I;16")
    return _save(image, "PNG")


def bilevel_png() -> bytes:
    return _save(two_tone(mode="1"), "PNG")


def webp_image(*, lossless: bool, alpha: bool = False) -> bytes:
    image = two_tone()
    if alpha:
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    return _save(
        image,
        "WEBP",
        lossless=lossless,
        quality=90,
        exif=secret_exif(),
        xmp=XMP_PACKET,
        icc_profile=srgb_profile(),
    )


def avif_image(orientation: int = 1) -> bytes:
    """AVIF with EXIF secrets and XMP; orientation != 1 is stored as irot/imir by libavif."""
    metadata = {"exif": secret_exif(orientation), "xmp": XMP_PACKET, "icc_profile": srgb_profile()}
    return _save(two_tone(), "AVIF", quality=90, **metadata)


# --- Animations -----------------------------------------------------------------------------


def _moving_square(count: int, size: Size = (40, 30)) -> list[Image.Image]:
    frames = []
    for index in range(count):
        frame = Image.new("P", size, 0)
        frame.putpalette([0, 0, 0, *RED, *BLUE, 0, 200, 0, 240, 240, 0])
        left, top = index * 6, index * 4
        ImageDraw.Draw(frame).rectangle((left, top, left + 10, top + 8), fill=1 + index % 4)
        frames.append(frame)
    return frames


ANIMATION_DURATIONS = [100, 150, 200, 250]


def animated_gif(*, loop: int | None = 0, disposal: Sequence[int] = (2, 3, 1, 2)) -> bytes:
    """Four distinct frames on a transparent background, mixed disposal methods, a comment."""
    frames = _moving_square(len(ANIMATION_DURATIONS))
    options: dict[str, object] = {} if loop is None else {"loop": loop}
    return _save(
        frames[0],
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=ANIMATION_DURATIONS,
        disposal=list(disposal),
        transparency=0,
        comment=COMMENT,
        optimize=False,
        **options,
    )


def gif_with_local_palettes(seed: int, *, transparent: bool = True) -> bytes:
    """Five frames of random rectangles, some frames with their own colour table, random disposal
    methods and a random transparent index (often unused by the first frame)."""
    rng = random.Random(seed)
    shared = [channel for i in range(16) for channel in (i * 16, 255 - i * 16, i * 97 % 256)]
    frames = []
    for _ in range(5):
        frame = Image.new("P", (40, 30), 0)
        frame.putpalette(shared if rng.random() < 0.7 else [rng.randrange(256) for _ in range(48)])
        for _ in range(rng.randint(1, 3)):
            left, top = rng.randrange(35), rng.randrange(25)
            box = (left, top, left + rng.randint(1, 15), top + rng.randint(1, 12))
            ImageDraw.Draw(frame).rectangle(box, fill=rng.randrange(16))
        frames.append(frame)
    disposal = [rng.choice([0, 1, 2, 3]) for _ in frames]
    options: dict[str, object] = {"transparency": rng.randrange(16)} if transparent else {}
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], disposal=disposal, **options)


def animated_webp(*, lossless: bool = True) -> bytes:
    frames = [frame.convert("RGBA") for frame in _moving_square(3)]
    return _save(
        frames[0],
        "WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=ANIMATION_DURATIONS[:3],
        loop=3,
        lossless=lossless,
        quality=90,
        exif=secret_exif(),
        xmp=XMP_PACKET,
    )


def apng() -> bytes:
    frames = [frame.convert("RGBA") for frame in _moving_square(3)]
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", PNG_TEXT)
    return _save(
        frames[0],
        "PNG",
        save_all=True,
        append_images=frames[1:],
        duration=ANIMATION_DURATIONS[:3],
        loop=2,
        pnginfo=info,
    )


def animated_avif() -> bytes:
    frames = [frame.convert("RGB") for frame in _moving_square(3)]
    return _save(frames[0], "AVIF", save_all=True, append_images=frames[1:], duration=ANIMATION_DURATIONS[:3])


# --- Decompression bombs (all crafted, all fast to build) ------------------------------------


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG whose IDAT really inflates to width x height.

    100000x100000 is 1.25 GB of scanlines in about 1.2 MB of file.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    raw_size = (1 + (width + 7) // 8) * height  # a filter byte, then packed bits, per row
    idat = deflate_zeros(raw_size)
    return PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def deflate_zeros(total: int, block: int = 1 << 20) -> bytes:
    """A zlib stream of `total` zero bytes without compressing all of them.

    After a full flush, a deflate encoder forgets everything, so one compressed block of zeros
    can be repeated as often as needed; all-zero input makes the Adler-32 trivial.
    """
    full, rest = divmod(total, block)
    parts = [b"\x78\xda", _flushed_zeros(block) * full]
    if rest:
        parts.append(_flushed_zeros(rest))
    parts.append(b"\x03\x00")  # final, empty fixed-Huffman block
    parts.append(struct.pack(">I", ((total % 65521) << 16) | 1))
    return b"".join(parts)


@functools.cache
def _flushed_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(bytes(size)) + compressor.flush(zlib.Z_FULL_FLUSH)


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF header is patched to claim width x height."""
    data = bytearray(_save(two_tone((16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def jpeg_with_many_scans(scans: int, size: Size = (4000, 4000)) -> bytes:
    """A flat progressive JPEG whose last scan is repeated: tiny file, one pass per scan to decode."""
    data = _save(Image.new("L", size, 128), "JPEG", progressive=True)
    last_scan = data[data.rindex(b"\xff\xda") : -2]  # up to the EOI marker
    return data[:-2] + last_scan * (scans - data.count(b"\xff\xda")) + data[-2:]


_ONE_PIXEL_LZW = b"\x02\x02\x44\x01\x00"  # min code size 2; clear, 0, end; terminator


def gif_many_frames(count: int, canvas: Size = (1, 1)) -> bytes:
    """`count` 1x1 frames on a canvas of the given size; each decodes to a whole canvas."""
    header = b"GIF89a" + struct.pack("<HHBBB", *canvas, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    control = b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # 100 ms, no transparency
    frame = control + b"\x2c" + struct.pack("<4HB", 0, 0, 1, 1, 0) + _ONE_PIXEL_LZW
    return header + loop + frame * count + b"\x3b"


def gif_with_giant_frame() -> bytes:
    """A 1x1 GIF whose second frame claims 65535x65535: Pillow grows the canvas to fit it."""
    small = gif_many_frames(1)[:-1]
    giant = b"\x2c" + struct.pack("<4HB", 0, 0, 65535, 65535, 0) + _ONE_PIXEL_LZW
    return small + giant + b"\x3b"


def webp_animation(canvas: Size, frames: int) -> bytes:
    """An animated WebP of 1x1 lossless frames on a canvas of the given size."""
    tiny = _save(Image.new("RGBA", (1, 1), (*RED, 255)), "WEBP", lossless=True)[12:]
    width, height = canvas
    flags = bytes([0x12, 0, 0, 0])  # animation + alpha
    vp8x = riff_chunk(b"VP8X", flags + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little"))
    anim = riff_chunk(b"ANIM", struct.pack("<IH", 0, 0))
    geometry = bytes(12) + (100).to_bytes(3, "little") + b"\0"
    body = b"WEBP" + vp8x + anim + riff_chunk(b"ANMF", geometry + tiny) * frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def apng_claiming_frames(count: int) -> bytes:
    """A real three-frame APNG whose acTL chunk claims `count` frames."""
    data = apng()
    pos = data.index(b"acTL") - 4
    fixed = png_chunk(b"acTL", struct.pack(">II", count, 0))
    return data[:pos] + fixed + data[pos + len(fixed) :]


# --- Polyglots: a valid image with something else riding along -------------------------------


def polyglot_png_with_html() -> bytes:
    html = f"<html><body><script>alert('{POLYGLOT_PAYLOAD}')</script></body></html>"
    return png() + html.encode()


def jpeg_with_zip_appended() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("payload.txt", POLYGLOT_PAYLOAD)
    return _save(two_tone(), "JPEG") + archive.getvalue()


def gif_with_script_appended() -> bytes:
    return _save(two_tone().convert("P"), "GIF") + f"<script>{POLYGLOT_PAYLOAD}</script>".encode()


# --- Not images we accept --------------------------------------------------------------------


def svg_with_script() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<script>alert(document.cookie)</script><rect width="10" height="10"/></svg>'
    )


def html_file() -> bytes:
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def pdf_file() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def tiff_file() -> bytes:
    return _save(two_tone(), "TIFF")


def bmp_file() -> bytes:
    return _save(two_tone(), "BMP")


def ico_file() -> bytes:
    return _save(two_tone((32, 32)), "ICO")


def text_file() -> bytes:
    return b"just some text, not a picture\n" * 4


def empty_file() -> bytes:
    return b""


def heic_header() -> bytes:
    """The start of an iPhone HEIC: an ftyp box with the heic brand, then junk."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(64)


# --- Broken files ----------------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = _save(noise((64, 64)), "JPEG", quality=95)
    return data[: len(data) * 6 // 10]


def truncated_png() -> bytes:
    data = _save(noise((64, 64)), "PNG")
    return data[: len(data) * 6 // 10]


def truncated_gif() -> bytes:
    data = _save(noise((64, 64)).convert("P"), "GIF")
    return data[: len(data) * 6 // 10]


def truncated_webp() -> bytes:
    data = _save(noise((64, 64)), "WEBP", quality=90)
    return data[: len(data) * 6 // 10]


def png_header_only() -> bytes:
    return png()[:20]


def garbage_after_png_magic() -> bytes:
    return PNG_MAGIC + bytes(range(256)) * 4
