"""lab.images without Docker: build arguments per tree source, build contexts, digests."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from lab.config import QemuSource
from lab.errors import ImageBuildError
from lab.images import IMAGES_DIR, BuildEvent, BuildStream, Context, add_checkout, build, local_tree, qemu_build_args
from lab.upstream.series import SeriesError


def test_debian_source_is_always_given_its_mirror() -> None:
    q = QemuSource(source="debian", version="1:10.2.2+ds-1", suite="sid")
    args = qemu_build_args("nfcl/base:x", q, "http://mirror.example/debian")
    assert args == {"BASE": "nfcl/base:x", "QEMU_SOURCE": "debian", "QEMU_DEBIAN_VERSION": "1:10.2.2+ds-1",
                    "QEMU_DEBIAN_SUITE": "sid", "MIRROR": "http://mirror.example/debian"}
    with pytest.raises(ImageBuildError, match="no Debian mirror"):
        qemu_build_args("nfcl/base:x", q, "")


def test_the_mirror_of_a_debootstrap_base_is_this_machines_or_the_configured_one(tmp_path: Path) -> None:
    from lab import apt
    from lab.config import parse
    from lab.images import ImageBuilder

    data = {"profiles": {"p": {}}, "scenarios": {"m": {"filter": "filter-mirror", "expect": {"p": "gap"}}}}
    configured = parse(data | {"images": {"mirror": "http://mirror.example/debian"}})
    assert ImageBuilder(None, configured, tmp_path).mirror() == "http://mirror.example/debian"  # type: ignore[arg-type]
    if not apt.APT_DIR.is_dir():
        pytest.skip("this machine has no apt configuration")
    assert ImageBuilder(None, parse(data), tmp_path).mirror() == apt.debian_mirror()  # type: ignore[arg-type]


def test_git_source_names_url_and_ref_and_lets_configure_fetch_subprojects() -> None:
    q = QemuSource(source="git", url="https://git.example/qemu.git", ref="092009a55c16")
    args = qemu_build_args("b", q, "")
    assert args["QEMU_SOURCE"] == "git" and args["QEMU_GIT_REF"] == "092009a55c16"
    assert args["QEMU_GIT_URL"] == "https://git.example/qemu.git"
    assert args["CONFIGURE_DOWNLOAD"] == "--enable-download" and "MIRROR" not in args


def test_every_source_is_known_to_the_fetch_script() -> None:
    script = (IMAGES_DIR / "qemu" / "fetch-qemu").read_text()
    for source in ("debian", "git", "local"):
        assert f"\n{source})\n" in script


def test_local_checkout_goes_into_the_context_as_it_is(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    (tree / "net").mkdir(parents=True)
    (tree / "VERSION").write_text("11.0.50\n")
    (tree / "net" / "filter-mirror.c").write_text("/* patched by hand */\n")
    (tree / ".gitignore").write_text("build/\n")
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "add", "VERSION", ".gitignore"], check=True)
    (tree / "build").mkdir()
    (tree / "build" / "qemu-system-x86_64").write_text("not for the context")
    ctx = Context(IMAGES_DIR / "qemu")
    add_checkout(ctx, tree)
    assert ctx.files["tree/VERSION"] == b"11.0.50\n"
    assert ctx.files["tree/net/filter-mirror.c"] == b"/* patched by hand */\n"  # untracked, not ignored
    assert "tree/build/qemu-system-x86_64" not in ctx.files  # ignored


def test_a_folder_that_is_no_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="not a git checkout"):
        add_checkout(Context(IMAGES_DIR / "qemu"), tmp_path)


def test_context_digest_follows_content_and_arguments() -> None:
    a, b = Context(IMAGES_DIR / "series"), Context(IMAGES_DIR / "series")
    assert a.digest("X=1") == b.digest("X=1") != b.digest("X=2")
    b.files["patches/0001-of-0001.patch"], b.modes["patches/0001-of-0001.patch"] = b"diff", 0o644
    assert a.digest("X=1") != b.digest("X=1")


def test_context_tar_keeps_names_modes_and_bytes() -> None:
    ctx = Context(IMAGES_DIR / "series")
    with tarfile.open(fileobj=io.BytesIO(ctx.tar().read())) as tar:
        member = tar.getmember("apply-series")
        assert member.mode & 0o111
        data = tar.extractfile(member)
        assert data is not None and data.read() == ctx.files["apply-series"]


def test_a_checkout_with_its_subprojects_configures_without_downloads(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    (tree / "subprojects" / "keycodemapdb").mkdir(parents=True)
    (tree / "subprojects" / "keycodemapdb" / "meson.build").write_text("project('keycodemapdb')\n")
    (tree / "VERSION").write_text("10.2.50\n")
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    ctx = Context(IMAGES_DIR / "qemu")
    version, args = local_tree(ctx, tree)
    assert (version, args) == ("10.2.50", {"CONFIGURE_DOWNLOAD": "--disable-download"})
    assert "tree/subprojects/keycodemapdb/meson.build" in ctx.files


def test_a_bare_checkout_lets_meson_fetch_its_subprojects(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    tree.mkdir()
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    assert local_tree(Context(IMAGES_DIR / "qemu"), tree) == ("", {})


def test_fetched_subprojects_come_along_although_ignored(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    (tree / "subprojects" / "keycodemapdb").mkdir(parents=True)
    (tree / "subprojects" / "keycodemapdb" / "meson.build").write_text("project('keycodemapdb')\n")
    (tree / ".gitignore").write_text("/subprojects/keycodemapdb\n/build\n")
    (tree / "build").mkdir()
    (tree / "build" / "config.h").write_text("ignored")
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    ctx = Context(IMAGES_DIR / "qemu")
    add_checkout(ctx, tree)
    assert "tree/subprojects/keycodemapdb/meson.build" in ctx.files
    assert "tree/build/config.h" not in ctx.files


# --- the build stream, as the legacy builder sends it (recorded from client.api.build) -------------------

def stream(*lines: str) -> list[dict[str, str]]:
    return [{"stream": line} for line in lines]


FIRST_BUILD = stream("Step 1/6 : FROM nfcl/qemu:35bb58b474fe", "\n", " ---> 3686d920a2cf\n",
                     "Step 2/6 : COPY apply-series /usr/local/bin/apply-series", "\n", " ---> 9b7e06cff4ff\n",
                     "Step 3/6 : COPY patches /tmp/series", "\n", " ---> Using cache\n", " ---> 41c0e2d9a7b3\n",
                     "Step 4/6 : RUN apply-series /src/qemu /tmp/series && rm -rf /tmp/series", "\n",
                     " ---> Running in 2a416a317898\n")
NONCE = "5eed"
APPLY_FAILED = stream("error: patch failed: net/filter-mirror.c:12\n",
                      f"SERIES-APPLY-FAILED:{NONCE} patch 1/1: [PATCH 1/1] net: x: hunks do not apply at "
                      "net/filter-mirror.c:12 (base: QEMU 10.2.2)\n",
                      "Removing intermediate container 2a416a317898\n")
ERROR = {"errorDetail": {"code": 1, "message": "The command '/bin/sh -c apply-series' returned a non-zero code: 1"},
         "error": "The command '/bin/sh -c apply-series' returned a non-zero code: 1"}


def read(chunks: list[dict[str, object]]) -> tuple[BuildStream, list[BuildEvent]]:
    reading = BuildStream("qemu-series", "nfcl/qemu-series:p-1", Path("/logs/p.log"))
    return reading, list(reading.events(chunks))


def test_a_series_that_does_not_apply_becomes_a_series_error_naming_the_patch() -> None:
    reading = BuildStream("qemu-series", "nfcl/qemu-series:p-1", Path("/logs/p.log"), nonce=NONCE)
    events = []
    with pytest.raises(SeriesError) as caught:
        events.extend(reading.events([*FIRST_BUILD, *APPLY_FAILED, ERROR]))
    assert str(caught.value) == ("the series does not apply: patch 1/1: [PATCH 1/1] net: x: hunks do not apply at "
                                 "net/filter-mirror.c:12 (base: QEMU 10.2.2); log: /logs/p.log")
    assert events[-1].kind == "error" and events[-1].line == ERROR["error"]  # written to the log before raising


def test_a_plain_error_is_an_image_build_error_naming_the_step() -> None:
    reading = BuildStream("qemu-series", "nfcl/qemu-series:p-1", Path("/logs/p.log"))
    with pytest.raises(ImageBuildError) as caught:
        list(reading.events([*FIRST_BUILD, ERROR]))
    message = str(caught.value)
    assert message.startswith("image qemu-series (nfcl/qemu-series:p-1) failed at step 4/6 (RUN apply-series")
    assert message.endswith("returned a non-zero code: 1; log: /logs/p.log") and "\n" not in message
    assert not isinstance(caught.value, SeriesError)


def test_an_error_before_any_step_names_the_first_step() -> None:
    with pytest.raises(ImageBuildError, match="failed at its first step: no such file"):
        read([{"error": "no such file\n"}])


def test_steps_and_ninja_lines_become_progress_events() -> None:
    _, events = read(stream("Step 9/12 : RUN ninja", "\n", "[1/2543] Compiling C object libqemuutil.a.p/util.c.o\n",
                            "[2/2543] Linking\nplain output\n"))
    assert [(e.kind, e.count) for e in events if e.line] == [
        ("step", (9, 12)), ("ninja", (1, 2543)), ("ninja", (2, 2543)), ("output", None)]
    assert all(e.image == "qemu-series" for e in events)


def test_the_images_a_build_committed_are_listed_not_cached_or_base_ones() -> None:
    reading, _ = read([*FIRST_BUILD, *stream("SERIES-APPLIED 1 patches\n", "Removing intermediate container 2a4\n",
                                             " ---> 5290c4341aa2\n")])
    assert reading.created == ["9b7e06cff4ff", "5290c4341aa2"]  # not the FROM image, not the cached COPY


def test_a_marker_without_the_builds_nonce_is_a_plain_build_failure() -> None:
    # What a patch's own build step prints: the marker as apply-series once printed it, and with a guess.
    reading = BuildStream("qemu-series", "nfcl/qemu-series:p-1", Path("/logs/p.log"), nonce=NONCE)
    for line in ("SERIES-APPLY-FAILED patch 1/1: [PATCH 1/1] fake: hunks do not apply at x.c:1",
                 "SERIES-APPLY-FAILED:guess patch 1/1: [PATCH 1/1] fake: hunks do not apply at x.c:1"):
        reading.read(line)
    failure = reading.failure("build-series exited with 1")
    assert isinstance(failure, ImageBuildError) and not isinstance(failure, SeriesError), failure


def test_a_dockerfile_build_never_reads_a_series_failure() -> None:
    with pytest.raises(ImageBuildError) as caught:
        read([*FIRST_BUILD, *APPLY_FAILED, ERROR])
    assert not isinstance(caught.value, SeriesError)


def test_engine_times_are_read_to_the_second() -> None:
    assert build.timestamp("2026-12-07T01:00:00.123456789Z") == 1796605200.0
    assert build.timestamp("2026-12-07T02:00:00+01:00") == 1796605200.0
    assert build.timestamp("yesterday") == 0.0
