"""Real media files generated for the tests: images with EXIF, tagged audio, videos, documents."""

from __future__ import annotations

import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def image(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (96, 64), *,
          camera: tuple[str, str] | None = None, taken: str | None = None, orientation: int | None = None,
          gps: tuple[float, float] | None = None, pattern: bool = False, fmt: str | None = None) -> Path:
    img = Image.new("RGB", size, colour)
    if pattern:
        pixels = np.array(img)
        pixels[::8, :] = 255 - pixels[::8, :]
        pixels[:, ::8] = 255 - pixels[:, ::8]
        img = Image.fromarray(pixels)
    exif = Image.Exif()
    if camera:
        exif[271], exif[272] = camera
    if orientation:
        exif[274] = orientation
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    if gps:
        lat, lon = gps
        exif.get_ifd(0x8825).update({1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)})
    from peerlight.embeddings.media import register_image_plugins

    register_image_plugins()  # HEIC
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"exif": exif.tobytes()} if len(exif) or taken or gps else {}
    img.save(path, format=fmt, **kwargs)
    return path


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 2)
    return (float(degrees), float(minutes), seconds)


def tone(path: Path, *, seconds: float = 1.0, frequency: float = 440.0, codec: str | None = None,
         tags: dict[str, str] | None = None) -> Path:
    """A sine tone written with PyAV (mp3, flac, ogg/vorbis, opus, wav, m4a/aac), tagged with mutagen."""
    import av

    suffix = path.suffix.lower()
    codec = codec or {".mp3": "libmp3lame", ".flac": "flac", ".ogg": "libopus", ".opus": "libopus",
                      ".wav": "pcm_s16le", ".m4a": "aac"}[suffix]
    rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".m4a": "mp4", ".opus": "ogg"}.get(suffix)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        fmt_name = stream.codec_context.format.name
        for start in range(0, len(samples), frame_size):
            chunk = samples[start : start + frame_size]
            if fmt_name.startswith("s16"):
                data = (chunk * 32767).astype(np.int16)
            elif fmt_name.startswith("s32"):
                data = (chunk * 2147483647).astype(np.int32)
            else:
                data = chunk
            frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt_name, layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    if tags:
        _tag(path, tags)
    return path


def _tag(path: Path, tags: dict[str, str]) -> None:
    import mutagen
    from mutagen.easyid3 import EasyID3
    from mutagen.id3 import ID3NoHeaderError

    if path.suffix.lower() == ".mp3":
        try:
            audio = EasyID3(path)
        except ID3NoHeaderError:
            audio = mutagen.File(path, easy=True)
            audio.add_tags()
    else:
        audio = mutagen.File(path, easy=True)
        if audio.tags is None:
            audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def video(path: Path, segments: list[tuple[float, Image.Image]], *, fps: int = 10, codec: str | None = None) -> Path:
    """A video made of still scenes: (seconds, image) each, written with PyAV."""
    import av

    suffix = path.suffix.lower()
    codec = codec or {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".mov": "mpeg4"}[suffix]
    width, height = segments[0][1].size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"g": str(fps)}  # a keyframe every second
        index = 0
        for seconds, picture in segments:
            for _ in range(int(seconds * fps)):
                frame = av.VideoFrame.from_image(picture)
                frame.pts = index
                index += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def pdf(path: Path, lines: list[str], title: str | None = None) -> Path:
    """A minimal one-page PDF with a real text layer (Helvetica), written by hand."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(f"({escape(line)}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(f"<< /Title ({escape(title)}) >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


def epub(path: Path, title: str, chapters: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>',
        )
        items = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(len(chapters)))
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        book.writestr(
            "OEBPS/content.opf",
            f'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></metadata>'
            f"<manifest>{items}</manifest><spine>{spine}</spine></package>",
        )
        for i, text in enumerate(chapters):
            book.writestr(f"OEBPS/c{i}.xhtml", f"<html><head><title>c{i}</title></head><body><p>{text}</p></body></html>")
    return path


def tiny_clap(folder: Path) -> Path:
    """A randomly initialised, very small CLAP model saved as a local checkpoint folder.

    It has the real architecture and files (config, safetensors weights, processor and a
    byte-level BPE tokenizer over a-z), so the node's real CLAP loading and encoding run.
    """
    import json

    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for char in [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["\u0120"]:
        vocab[char] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    # Windows of at most 10 s are never truncated, so "rand_trunc" stays deterministic here.
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer)
    config = ClapConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=80),
        audio_config=dict(hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2],
                          window_size=8, spec_size=256),
        projection_dim=16,
    )
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
