"""The timeline picture of a scenario: sequence number against arrival time on the mirror stream,
with the window in which the source VM was stopped shaded and lost frames marked at their send time.
A gap is visible at a glance: the stream's line stops at the shaded band."""

from __future__ import annotations

from pathlib import Path

from lab.analysis import Analysis, Frame, Sent, StopWindow


def draw(path: Path, title: str, sent: Sent, stream: list[Frame], window: StopWindow, analysis: Analysis) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    t0 = sent.frames[0].time if sent.frames else (stream[0].time if stream else window.resume)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    if window.stop is not None:
        ax.axvspan(window.stop - t0, window.resume - t0, color="tab:orange", alpha=0.18,
                   label=f"source stopped ({analysis.stopped_window_ms:.0f} ms)")
    ax.axvline(window.resume - t0, color="tab:orange", lw=1, ls="--")
    ax.plot([f.time - t0 for f in sent.frames], [f.seq for f in sent.frames], color="0.75", lw=1,
            label=f"sent ({analysis.frames_sent})")
    ax.scatter([f.time - t0 for f in stream], [f.seq for f in stream], s=2, color="tab:blue",
               label=f"arrived on the stream ({analysis.frames_captured})")
    lost = set(analysis.lost_seqs)
    if lost:
        ax.scatter([f.time - t0 for f in sent.frames if f.seq in lost], [f.seq for f in sent.frames if f.seq in lost],
                   s=4, marker="x", color="tab:red", label=f"lost ({analysis.lost})")
    ax.set_xlabel("seconds since the first frame")
    ax.set_ylabel("sequence number")
    ax.set_title(f"{title}: {analysis.verdict} (max gap {analysis.max_gap_ms:.0f} ms)")
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
