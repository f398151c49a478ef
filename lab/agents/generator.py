"""Traffic generator: sequence-numbered test frames into a tap at a fixed rate.

Frames are written with an AF_PACKET socket bound to the tap, so they reach the QEMU reading that tap
as frames from the network. Runs until SIGTERM/SIGINT or --max-seconds, then writes its record: the
send time of every frame, which the analysis uses to judge loss and the timeline.
"""

from __future__ import annotations

import argparse
import socket
import time

from lab.agents import StopFlag, frames, write_record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ifname", required=True)
    ap.add_argument("--dst", required=True, help="destination MAC (the guest's)")
    ap.add_argument("--rate", type=int, required=True, help="frames per second")
    ap.add_argument("--run-id", type=int, required=True)
    ap.add_argument("--record", required=True, help="JSON record written at the end")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()

    stop = StopFlag()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.ifname, 0))
    dst, src = frames.mac_bytes(args.dst), frames.mac_bytes(frames.SOURCE_MAC)
    interval = 1.0 / args.rate
    sent: list[tuple[int, float]] = []
    errors = 0
    start = time.monotonic()
    seq = 0
    while not stop.set and time.monotonic() - start < args.max_seconds:
        # Pace on an absolute schedule so that a late wake-up is caught up, not accumulated.
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            sock.send(frames.build(dst, src, args.run_id, seq))
            sent.append((seq, time.time()))
        except OSError:
            errors += 1
        seq += 1
    sock.close()
    record = {"run_id": args.run_id, "rate": args.rate, "ifname": args.ifname, "dst": args.dst,
              "frames_sent": len(sent), "send_errors": errors, "sent": sent}
    write_record(args.record, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
