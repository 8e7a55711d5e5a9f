"""Real document files for tests, written by real writers: PDFs by fpdf2 (several pages, an
encrypted one, one with only an image), DOCX by python-docx, and crafted broken files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

PAGE_SENTENCES = {
    1: "The pump manual opens with safety rules for every operator.",
    2: "Priming the pump requires filling the casing with water first.",
    3: "The impeller bearing must be greased every four hundred hours of running.",
}


def pdf_pages(path: Path, pages: dict[int, str] = PAGE_SENTENCES, title: str = "Pump manual",
              password: str | None = None) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for number in sorted(pages):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Page {number}. {pages[number]} " + "Routine checks follow. " * 10)
    if password is not None:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    pdf.output(str(path))
    return path


def scanned_pdf(path: Path) -> Path:
    """A PDF whose pages hold only an image of text, as a scanner makes them."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(image).text((10, 40), "scanned text, no text layer", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(io.BytesIO(buffer.getvalue()), x=10, y=10, w=150)
    pdf.output(str(path))
    return path


def docx_with_headings(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Installation guide"
    document.add_heading("Installation guide", level=0)
    document.add_paragraph("This guide covers the installation of the unit.")
    document.add_heading("Electrical", level=1)
    document.add_paragraph("Power comes from a dedicated circuit.")
    document.add_heading("Wiring the terminal block", level=2)
    document.add_paragraph("Connect the brown conductor to terminal L and the blue one to N.")
    document.add_heading("Plumbing", level=1)
    document.add_paragraph("Use flexible hoses rated for ten bar of pressure.")
    document.save(str(path))
    return path


def zip_bomb_docx(path: Path, unpacked_bytes: int = 64 * 1024**2) -> Path:
    """A DOCX-shaped ZIP whose one part declares `unpacked_bytes` of zeros: a few MB on disk.

    The member is written by streaming compressed zeros, so that making it costs seconds, not
    the gigabytes it declares."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\x00" * (1024 * 1024)
            for _ in range(unpacked_bytes // len(block)):
                member.write(block)
    return path


HTML_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Filter maintenance</title></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/products">Products</a></li>
<li><a href="/support">Support</a></li><li><a href="http://tracker.invalid/x.js">Login</a></li></ul></nav>
<div class="sidebar">Subscribe to our newsletter for weekly deals and discount codes</div>
<main><article>
<h1>Filter maintenance</h1>
<p>Filters keep debris out of the pump and protect the seals from wear over the years.</p>
<h2>Cleaning</h2>
<p>Rinse the mesh filter under running water once a month and let it dry in the air.</p>
<h3>Drying</h3>
<p>Never use a heat gun on the mesh, because the plastic frame deforms above sixty degrees.</p>
<h2>Replacement</h2>
<p>Replace the cartridge after two years, or sooner when the flow drops noticeably.</p>
</article></main>
<footer>Copyright 2026 Example Pumps Ltd. All rights reserved. Privacy. Cookies. Imprint.</footer>
<script>fetch("http://tracker.invalid/beacon")</script>
</body></html>
"""


def bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each kind that must fail alone; returns name -> a phrase its reason
    holds."""
    folder.mkdir(parents=True, exist_ok=True)
    pdf_pages(folder / "locked.pdf", password="secret")
    scanned_pdf(folder / "scan.pdf")
    whole = pdf_pages(folder / "whole.pdf").read_bytes()
    (folder / "truncated.pdf").write_bytes(whole[: len(whole) // 3])
    (folder / "whole.pdf").unlink()
    (folder / "data.xyz").write_bytes(b"\x00\x01\x02binary")
    zip_bomb_docx(folder / "bomb.docx")
    (folder / "latin.html").write_bytes(
        b'<html><head><meta charset="utf-8"><title>x</title></head><body><p>caf\xe9 cr\xe8me</p>'
        b"</body></html>")
    (folder / "klingon.html").write_bytes(
        b'<html><head><meta charset="x-klingon"><title>x</title></head><body><p>qapla</p></body></html>')
    return {
        "locked.pdf": "encrypted PDF",
        "scan.pdf": "no extractable text; OCR is not built in",
        "truncated.pdf": "truncated or corrupt",
        "data.xyz": "binary file of unknown type",
        "bomb.docx": "zip bomb",
        "latin.html": "wrong encoding",
        "klingon.html": "unknown encoding",
    }
