"""``parcelflow station``: the print agent of one packing station.

    export PARCELFLOW_STATION_TOKEN=...          # the station's token (labels role)
    parcelflow station run --receiver https://parcelflow.example --station PACK-01 \\
        --printer socket://192.168.1.50:9100 --format zpl
    parcelflow station reprint --box BOX-123 --printer ipp://localhost:631/printers/label
    parcelflow station status

The token is read from the environment, never from the command line (it would show in
the process list). ``run`` prints a status line every ``--status-every`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from parcelflow_station.agent import Agent, Config, reprint
from parcelflow_station.printers import printer_at
from parcelflow_station.state import State

DEFAULT_STATE = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="parcelflow station",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = root.add_subparsers(dest="action", required=True)
    for name in ("run", "reprint", "status"):
        p = sub.add_parser(name)
        p.add_argument(
            "--state-file", type=Path, default=DEFAULT_STATE / "parcelflow-station" / "state.json"
        )
        if name == "status":
            continue
        p.add_argument("--receiver", default=os.environ.get("PARCELFLOW_RECEIVER_URL", ""))
        p.add_argument(
            "--printer",
            default=os.environ.get("PARCELFLOW_STATION_PRINTER", ""),
            help="ipp://host:631/path or socket://host:9100",
        )
        p.add_argument(
            "--format",
            default=os.environ.get("PARCELFLOW_STATION_FORMAT", "zpl"),
            choices=["zpl", "pdf", "png"],
        )
        if name == "run":
            p.add_argument(
                "--station",
                default=os.environ.get("PARCELFLOW_STATION_ID", ""),
                help="its boxes only (default: every station of the token's warehouses)",
            )
            p.add_argument("--status-every", type=float, default=30.0)
            p.add_argument(
                "--metrics-port",
                type=int,
                default=0,
                help="serve Prometheus metrics on this port of 127.0.0.1 (0: none)",
            )
        else:
            p.add_argument("--box", required=True)
            p.add_argument("--warehouse", default="")
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.action == "status":
        state = State.load(args.state_file)
        print(
            json.dumps(
                {
                    "queue": len(state.queue),
                    "printed": len(state.printed),
                    "position": state.last_event_id,
                }
            )
        )
        return
    token = os.environ.get("PARCELFLOW_STATION_TOKEN", "")
    missing = [
        n
        for n, v in (
            ("--receiver", args.receiver),
            ("--printer", args.printer),
            ("PARCELFLOW_STATION_TOKEN", token),
        )
        if not v
    ]
    if missing:
        sys.exit(f"parcelflow station: set {', '.join(missing)}")
    try:
        printer = printer_at(args.printer)
    except ValueError as exc:
        sys.exit(f"parcelflow station: {exc}")
    config = Config(
        args.receiver.rstrip("/"), token, getattr(args, "station", ""), args.format, args.state_file
    )
    if args.action == "reprint":
        asyncio.run(reprint(config, printer, args.box, args.warehouse))
        print(f"reprinted {args.box}")
        return
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")
    asyncio.run(run(Agent(config, printer), args.status_every))


async def run(agent: Agent, status_every: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(agent.run(stop))
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), status_every)
        print(agent.status(), file=sys.stderr, flush=True)
    await running


if __name__ == "__main__":
    main()
