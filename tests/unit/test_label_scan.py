"""The simulator's labels scan: each format's Code128 decodes to the tracking id with a
real decoder (zxing-cpp; the PDF rasterised by PDFium at 300 dpi), fits the 4x6 label with
its quiet zones, and every label names its box."""

from __future__ import annotations

import dataclasses
import io
import itertools
import re

import pypdfium2
import pytest
import zxingcpp
from PIL import Image
from pypdf import PdfReader

from devstack.simulator.render import QUIET_MODULES, Label, bars, pdf, png, zpl
from tests.unit.factories import LABEL

TRACKING_IDS = [
    "TT0123456789ABCDEF01",  # the simulator's form: TT and 18 hex digits
    "TTA1B2C3D4E5F6G7H8J9",  # letters and digits in turn: no compact digit pairs
    "1ZX9Y8W7V6U5T4S3R2Q1P0N9M8L7K6",  # 30 characters, as long as carriers make them
]


def label(tracking: str) -> Label:
    return dataclasses.replace(LABEL, tracking=tracking)  # a box of a three-box shipment


def decoded(image: Image.Image) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format.name == "Code128"]


def bar_extent(image: Image.Image) -> tuple[int, int, int]:
    """The first and last dark column of a row through the bars (many edges and the most
    ink: not a rule, not a line of text), and the image width."""
    gray = image.convert("L")
    width, height = gray.size
    pixels = gray.tobytes()
    rows = [[p < 128 for p in pixels[y * width : (y + 1) * width]] for y in range(height)]

    def edges(row: list[bool]) -> int:
        return sum(1 for a, b in itertools.pairwise(row) if a != b)

    row = max((r for r in rows if edges(r) >= 60), key=sum)
    dark = [x for x, on in enumerate(row) if on]
    return dark[0], dark[-1], width


@pytest.mark.parametrize("tracking", TRACKING_IDS)
def test_the_pdf_label_scans_and_fits_with_its_quiet_zones(tracking: str) -> None:
    document = pdf(label(tracking))
    page = pypdfium2.PdfDocument(document)[0]
    image = page.render(scale=300 / 72).to_pil()
    assert decoded(image) == [tracking]
    first, last, width = bar_extent(image)
    module_px = (last - first) / sum(m for _, m in bars(tracking))
    assert first >= QUIET_MODULES * module_px and width - last >= QUIET_MODULES * module_px
    text = PdfReader(io.BytesIO(document)).pages[0].extract_text()
    assert f"Box {LABEL.box_id}" in text and tracking in text


@pytest.mark.parametrize("tracking", TRACKING_IDS)
def test_the_png_label_scans_and_fits_with_its_quiet_zones(tracking: str) -> None:
    image = Image.open(io.BytesIO(png(label(tracking))))
    assert image.size == (812, 1218)  # 4x6 in at 203 dpi
    assert decoded(image) == [tracking]
    first, last, width = bar_extent(image)
    module_px = (last - first + 1) / sum(m for _, m in bars(tracking))
    assert first >= QUIET_MODULES * module_px and width - last >= QUIET_MODULES * module_px


@pytest.mark.parametrize("tracking", TRACKING_IDS)
def test_the_zpl_barcode_fits_the_label_with_its_quiet_zones(tracking: str) -> None:
    """No ZPL renderer runs here: the barcode's extent is computed from its commands, as
    the printer lays it out (^BY module width in dots, ^FO origin, ^PW label width)."""
    text = zpl(label(tracking)).decode()
    module = int(re.search(r"\^BY(\d+),", text).group(1))  # type: ignore[union-attr]
    left = int(re.search(r"\^FO(\d+),\d+\^BC", text).group(1))  # type: ignore[union-attr]
    page = int(re.search(r"\^PW(\d+)", text).group(1))  # type: ignore[union-attr]
    right = left + module * sum(m for _, m in bars(tracking))
    assert left >= QUIET_MODULES * module and page - right >= QUIET_MODULES * module
    assert f"^FD{tracking}^FS" in text and f"Box {LABEL.box_id}" in text
