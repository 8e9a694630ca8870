"""The station's print agent against a real receiver and real printers: a raw socket
(the port 9100 of a thermal printer: ZPL bytes) and CUPS's ``ippeveprinter`` (an IPP
Everywhere printer: PDF). Each label prints once, across a printer outage and a restart
of the agent; its bytes hold the tracking number."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from parcelflow_station.agent import Agent, Config
from parcelflow_station.printers import IppPrinter, RawPrinter
from prometheus_client import REGISTRY

from devstack.broker.embedded import BrokerError, free_port, wait_for_port
from devstack.printer import SocketPrinter
from devstack.simulator.render import Label, pdf, zpl
from schemas.codec import encode
from schemas.topics import LABELS
from tests.integration.kafka_helpers import produce, provisioned
from tests.unit.factories import LABEL, label_result
from workers.labels.store import FolderStore, manifest_name, put_document
from workers.receiver.app import create_app
from workers.settings import Settings

TOKEN = "station-pack1-token-0123"
BARCODE = re.compile(rb"\^BCN,[^^]*\^FD([^^]+)\^FS")  # a ZPL label's Code 128 field
PRINCIPALS = {"pack-1": {"token": TOKEN, "roles": ["labels"], "warehouses": ["A"]}}


async def labeled(settings: Settings, store: FolderStore, order_id: str, station: str) -> str:
    """A label as the labeler makes it (documents stored, then labels.v1); its tracking."""
    made = label_result(order_id, f"{order_id}-B1", "A")
    tracking = f"TT{order_id}0000000000"[:20]
    parcel = made.parcels[0].model_copy(update={"station_id": station, "tracking_id": tracking})
    made = made.model_copy(update={"parcels": [parcel]})
    drawn = Label(
        **{**LABEL.__dict__, "tracking": tracking, "order_id": order_id, "box_id": parcel.box_id}
    )
    await put_document(store, made.job_id, parcel.box_id, "zpl", zpl(drawn))
    await put_document(store, made.job_id, parcel.box_id, "pdf", pdf(drawn))
    await store.put(manifest_name(made.job_id), encode(made), "application/json")
    await produce(settings, LABELS, order_id, made)
    return tracking


@pytest.fixture
async def receiver(
    make_settings: Callable[..., Settings], serve: Any
) -> tuple[str, Settings, FolderStore]:
    settings = make_settings(principals=PRINCIPALS, label_formats=["zpl", "pdf"])
    await provisioned(settings)
    return await serve(create_app(settings)), settings, FolderStore(settings.label_dir)


async def until(check: Callable[[], bool], timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (polling what another task changes)
            await asyncio.sleep(0.05)


async def test_each_label_prints_once_across_a_printer_outage_and_a_restart(
    receiver: tuple[str, Settings, FolderStore], tmp_path: Path
) -> None:
    url, settings, store = receiver
    printed_before = REGISTRY.get_sample_value("parcelflow_station_printed_total") or 0.0
    printer = SocketPrinter()
    config = Config(url, TOKEN, "PACK-1", "zpl", tmp_path / "state.json", retry_s=0.2)
    stop = asyncio.Event()
    agent = Agent(config, RawPrinter("127.0.0.1", printer.port))
    running = asyncio.create_task(agent.run(stop))
    # the printer is away (nothing listens): the labels wait in the agent's queue
    first = [await labeled(settings, store, f"S{n}", "PACK-1") for n in range(3)]
    await labeled(settings, store, "OTHER", "PACK-2")  # another station's box
    await until(lambda: len(agent.state.queue) == 3)
    assert agent.stats.printer_away >= 1 and printer.jobs == []
    await printer.on()  # back
    await until(lambda: len(printer.jobs) == 3)
    # the agent restarts; a label made while it is down prints when it is back, once
    stop.set()
    await running
    second = await labeled(settings, store, "S9", "PACK-1")
    stop = asyncio.Event()
    again = Agent(config, RawPrinter("127.0.0.1", printer.port))
    running = asyncio.create_task(again.run(stop))
    await until(lambda: len(printer.jobs) == 4)
    await asyncio.sleep(1.0)  # nothing more comes
    stop.set()
    await running
    await printer.off()
    printed = [job for _, job in printer.jobs]
    assert len(printed) == 4 and all(job.startswith(b"^XA") for job in printed)
    barcodes = [m.group(1).decode() for job in printed for m in BARCODE.finditer(job)]
    assert sorted(barcodes) == sorted([*first, second])  # each label once, its barcode right
    assert not any(b"OTHER" in job for job in printed)  # another station's box
    # the agent's metrics say the same
    printed_now = REGISTRY.get_sample_value("parcelflow_station_printed_total") or 0.0
    assert printed_now - printed_before == 4
    assert (REGISTRY.get_sample_value("parcelflow_station_printer_away_total") or 0) >= 1
    assert REGISTRY.get_sample_value("parcelflow_station_queue") == 0
    assert again.stats.agent_ms and max(again.stats.agent_ms) < 30_000


@pytest.mark.skipif(
    shutil.which("ippeveprinter") is None,
    reason="CUPS's ippeveprinter is not installed: apt install cups-ipp-utils",
)
async def test_a_pdf_label_prints_on_an_ipp_everywhere_printer(
    receiver: tuple[str, Settings, FolderStore], tmp_path: Path
) -> None:
    url, settings, store = receiver
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    command = [str(shutil.which("ippeveprinter")), "-k", "-d", str(spool)]
    command += ["-f", "application/pdf,image/png", "-p", str(port), "-n", "localhost"]
    ipp = subprocess.Popen(
        [*command, "parcelflow-test"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        try:
            wait_for_port("127.0.0.1", port, 20.0, ipp)
        except BrokerError:
            pytest.skip("ippeveprinter cannot start here: it needs a DNS-SD daemon (avahi)")
        config = Config(url, TOKEN, "PACK-1", "pdf", tmp_path / "state.json", retry_s=0.2)
        stop = asyncio.Event()
        agent = Agent(config, IppPrinter(f"ipp://localhost:{port}/ipp/print"))
        running = asyncio.create_task(agent.run(stop))
        tracking = await labeled(settings, store, "P1", "PACK-1")
        await until(lambda: agent.stats.printed == 1)
        await until(lambda: any(spool.rglob("*.pdf")))
        stop.set()
        await running
    finally:
        ipp.send_signal(signal.SIGTERM)
        ipp.wait(10)
    import pypdfium2
    import zxingcpp

    [kept] = list(spool.rglob("*.pdf"))  # what the printer got: it scans
    image = pypdfium2.PdfDocument(kept.read_bytes())[0].render(scale=300 / 72).to_pil()
    scanned = [r.text for r in zxingcpp.read_barcodes(image) if r.format.name == "Code128"]
    assert scanned == [tracking]
