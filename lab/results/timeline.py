"""The timeline picture of a scenario: sequence number against arrival time, in three lanes of one
axis: what the generator sent, what arrived on the mirror stream, and what reached the guest (on
the hosts' clock), with the window in which the source VM was stopped shaded and lost frames marked
at their send time. A gap is visible at a glance: a lane stops at the shaded band."""

from __future__ import annotations

from pathlib import Path

from lab.results.analysis import Analysis, Frame, GuestAnalysis, Sent, StopWindow


def load() -> None:
    """Imports what drawing needs (half a second of the first picture), ahead of it."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def draw(path: Path, title: str, sent: Sent, stream: list[Frame], window: StopWindow, analysis: Analysis,
         guest: GuestAnalysis | None = None, resumed: float | None = None, verdict: str = "",
         view: str = "stream") -> Path:
    """``view``: the capture point the verdict looks at (stream or guest): its lost frames are marked."""
    # A Figure of its own, not pyplot's: drawn in a thread while the hosts go, with no global state
    # (and no display: savefig picks the Agg canvas from the file name).
    from matplotlib.figure import Figure

    t0 = sent.frames[0].time if sent.frames else (stream[0].time if stream else window.resume)
    fig = Figure(figsize=(10, 4.5), dpi=100)
    ax = fig.subplots()
    if window.stop is not None:
        ax.axvspan(window.stop - t0, window.resume - t0, color="tab:orange", alpha=0.18,
                   label=f"source stopped ({analysis.stopped_window_ms:.0f} ms)")
    ax.axvline(window.resume - t0, color="tab:orange", lw=1, ls="--")
    if resumed is not None:
        ax.axvline(resumed - t0, color="tab:green", lw=1, ls=":", label="destination resumed")
    ax.plot([f.time - t0 for f in sent.frames], [f.seq for f in sent.frames], color="0.75", lw=1,
            label=f"sent ({analysis.frames_sent})")
    ax.scatter([f.time - t0 for f in stream], [f.seq for f in stream], s=2, color="tab:blue",
               label=f"arrived on the stream ({analysis.frames_captured})")
    lost, lost_label = set(analysis.lost_seqs), f"lost on the stream ({analysis.lost})"
    if view == "guest" and guest is not None:
        lost, lost_label = set(guest.lost_seqs), f"never reached the guest ({guest.lost})"
    if guest is not None:
        ax.scatter([f.time - t0 for f in guest.arrivals], [f.seq for f in guest.arrivals], s=2, marker="s",
                   color="tab:purple", label=f"reached the guest ({guest.received})")
    if lost:
        ax.scatter([f.time - t0 for f in sent.frames if f.seq in lost], [f.seq for f in sent.frames if f.seq in lost],
                   s=4, marker="x", color="tab:red", label=lost_label)
    ax.set_xlabel("seconds since the first frame")
    ax.set_ylabel("sequence number")
    gap = f"stream gap {analysis.max_gap_ms:.0f} ms"
    if guest is not None and guest.max_gap_ms is not None:
        gap += f", guest gap {guest.max_gap_ms:.0f} ms"
    ax.set_title(f"{title}: {verdict or analysis.verdict} ({gap})")
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
