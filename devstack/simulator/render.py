"""Labels that look like labels: a 4x6 in shipping label per parcel, as PDF (reportlab),
PNG (Pillow, 203 dpi as thermal printers print) or ZPL (the printers' own language).

Each shows "TikTok Shop", the ship-from and ship-to addresses, the service, the weight,
the order id, the box id (multi-parcel shipments name their boxes), "box n of N", a
Code128 barcode of the tracking id and the box's TikTok item ids. The barcode's module
is as wide as the label allows (at most 1.1 pt, 4 dots at 203 dpi) with a quiet zone of
at least 10 modules each side, so it fits and scans whatever the tracking id.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib.units import inch
from reportlab.pdfgen import canvas

WIDTH_IN, HEIGHT_IN = 4, 6
DPI = 203
QUIET_MODULES = 10  # Code128's quiet zone, each side


@dataclass(frozen=True)
class Label:
    tracking: str
    service: str
    order_id: str
    box_id: str  # the caller's package id; "" when the request named none (one parcel)
    index: int  # 1-based
    count: int
    weight: str
    ship_from: list[str]
    ship_to: list[str]
    item_ids: list[str] = field(default_factory=list)


def address_lines(address: dict[str, Any]) -> list[str]:
    city = ", ".join(x for x in (address.get("city", ""), address.get("state", "")) if x)
    lines = [
        address.get("name", ""),
        address.get("street1", ""),
        address.get("street2", ""),
        f"{city} {address.get('postalCode', '')}".strip(),
        address.get("countryCode", ""),
    ]
    return [str(line)[:40] for line in lines if line]


def items_text(label: Label, most: int = 12) -> list[str]:
    shown = label.item_ids[:most]
    more = len(label.item_ids) - len(shown)
    return shown + ([f"+{more} more"] if more else [])


def pdf(label: Label) -> bytes:
    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=(WIDTH_IN * inch, HEIGHT_IN * inch))
    page.setTitle(f"label {label.tracking}")
    w, h = WIDTH_IN * inch, HEIGHT_IN * inch
    page.setFont("Helvetica-Bold", 16)
    page.drawString(12, h - 24, "TikTok Shop")
    page.setFont("Helvetica", 8)
    page.drawRightString(w - 12, h - 22, label.service)
    page.line(8, h - 32, w - 8, h - 32)
    page.setFont("Helvetica", 7)
    page.drawString(12, h - 44, "FROM")
    for n, line in enumerate(label.ship_from):
        page.drawString(40, h - 44 - 9 * n, line)
    page.line(8, h - 92, w - 8, h - 92)
    page.drawString(12, h - 102, "SHIP TO")
    page.setFont("Helvetica-Bold", 12)
    for n, line in enumerate(label.ship_to):
        page.drawString(40, h - 118 - 14 * n, line)
    page.line(8, h - 190, w - 8, h - 190)
    modules = sum(m for _, m in bars(label.tracking))
    module = min(1.1, (w - 16) / (modules + 2 * QUIET_MODULES))
    barcode = Code128(label.tracking, barHeight=60, barWidth=module, quiet=0)
    barcode.drawOn(page, (w - barcode.width) / 2, h - 262)
    page.setFont("Courier", 9)
    page.drawCentredString(w / 2, h - 275, label.tracking)
    page.setFont("Helvetica", 8)
    details = [
        f"Tracking {label.tracking}",
        f"Order {label.order_id}",
        box_line(label),
        f"Weight {label.weight}",
    ]
    for n, line in enumerate(details):
        page.drawString(12, h - 292 - 11 * n, line)
    page.line(8, h - 340, w - 8, h - 340)
    page.setFont("Helvetica", 6)
    page.drawString(12, h - 350, "TikTok item ids in this box:")
    for n, line in enumerate(items_text(label)):
        page.drawString(12 + 140 * (n % 2), h - 360 - 8 * (n // 2), line)
    page.showPage()
    page.save()
    return out.getvalue()


def bars(value: str) -> list[tuple[bool, int]]:
    """Code128 as (is a bar, modules) runs, from reportlab's encoder."""
    code = Code128(value)
    code.validate()
    code.encode()
    code.decompose()
    return [(ch.isupper(), ord(ch.lower()) - ord("a") + 1) for ch in code.decomposed]


def png(label: Label) -> bytes:
    w, h = WIDTH_IN * DPI, HEIGHT_IN * DPI
    image = Image.new("1", (w, h), 1)
    draw = ImageDraw.Draw(image)
    big, mid, small = (ImageFont.load_default(size=s) for s in (44, 30, 20))
    draw.text((24, 16), "TikTok Shop", font=big, fill=0)
    draw.text((w - 24, 28), label.service, font=small, fill=0, anchor="ra")
    draw.line((16, 76, w - 16, 76), fill=0, width=3)
    y = 90
    for line in ["FROM", *label.ship_from]:
        draw.text((24, y), line, font=small, fill=0)
        y += 24
    draw.line((16, y + 6, w - 16, y + 6), fill=0, width=3)
    y += 16
    draw.text((24, y), "SHIP TO", font=small, fill=0)
    y += 26
    for line in label.ship_to:
        draw.text((40, y), line, font=mid, fill=0)
        y += 36
    draw.line((16, y + 8, w - 16, y + 8), fill=0, width=3)
    runs = bars(label.tracking)
    module = max(1, min(4, w // (sum(m for _, m in runs) + 2 * QUIET_MODULES)))
    x = (w - module * sum(m for _, m in runs)) // 2
    top = y + 30
    for is_bar, modules in runs:
        if is_bar:
            draw.rectangle((x, top, x + modules * module - 1, top + 160), fill=0)
        x += modules * module
    y = top + 170
    draw.text((w // 2, y), label.tracking, font=mid, fill=0, anchor="ma")
    y += 50
    for line in (
        f"Order {label.order_id}",
        box_line(label),
        f"Weight {label.weight}",
    ):
        draw.text((24, y), line, font=small, fill=0)
        y += 26
    draw.text((24, y + 8), "TikTok item ids in this box:", font=small, fill=0)
    for n, line in enumerate(items_text(label, most=10)):
        draw.text((24 + 390 * (n % 2), y + 36 + 24 * (n // 2)), line, font=small, fill=0)
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(DPI, DPI))
    return out.getvalue()


def zpl_text(text: str) -> str:
    """ZPL field data: the control characters ^ and ~ cannot appear in a field."""
    return text.replace("^", " ").replace("~", " ")


def zpl(label: Label) -> bytes:
    lines = ["^XA", "^CI28", "^PW812", "^LL1218"]
    lines += [
        "^CF0,50",
        "^FO30,30^FDTikTok Shop^FS",
        f"^CF0,24^FO520,45^FD{zpl_text(label.service)}^FS",
    ]
    lines += ["^FO20,95^GB772,3,3^FS", "^CF0,22", "^FO30,110^FDFROM^FS"]
    lines += [f"^FO110,{110 + 26 * n}^FD{zpl_text(s)}^FS" for n, s in enumerate(label.ship_from)]
    lines += ["^FO20,250^GB772,3,3^FS", "^FO30,265^FDSHIP TO^FS", "^CF0,34"]
    lines += [f"^FO110,{265 + 40 * n}^FD{zpl_text(s)}^FS" for n, s in enumerate(label.ship_to)]
    width = 812
    modules = sum(m for _, m in bars(label.tracking))
    module = max(1, min(3, width // (modules + 2 * QUIET_MODULES)))
    left = (width - module * modules) // 2
    lines += [
        "^FO20,480^GB772,3,3^FS",
        f"^BY{module},2,160",
        f"^FO{left},510^BCN,160,Y,N,N^FD{zpl_text(label.tracking)}^FS",
    ]
    lines += [
        "^CF0,26",
        f"^FO30,740^FDOrder {zpl_text(label.order_id)}^FS",
        f"^FO30,775^FD{zpl_text(box_line(label))}^FS",
        f"^FO30,810^FDWeight {zpl_text(label.weight)}^FS",
        "^FO20,850^GB772,3,3^FS",
        "^CF0,20^FO30,865^FDTikTok item ids in this box:^FS",
    ]
    lines += [
        f"^FO{30 + 390 * (n % 2)},{895 + 24 * (n // 2)}^FD{zpl_text(s)}^FS"
        for n, s in enumerate(items_text(label, most=10))
    ]
    lines.append("^XZ")
    return ("\n".join(lines) + "\n").encode("utf-8")


RENDERERS = {"pdf": pdf, "png": png, "zpl": zpl}


def box_line(label: Label) -> str:
    """Which parcel this is: its box id where the request named one (Shipium's
    single-parcel request has no package id, so such a label says only its place)."""
    if label.box_id:
        return f"Box {label.box_id}  ({label.index} of {label.count})"
    return f"Parcel {label.index} of {label.count}"
