"""lab.config: parsing and validating lab.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.config import LabConfig, MigrationSettings, Timeouts, Traffic, load, parse
from lab.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "lab.yaml"


def minimal() -> dict[str, Any]:
    return {
        "profiles": {"baseline": {"qemu": {"version": "1:10.2.2+ds-1"}}},
        "scenarios": {"mirror": {"filter": "filter-mirror", "expect": {"baseline": "gap"}}},
    }


def config_error(data: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value


# --- the repository's lab.yaml ---------------------------------------------------------------

def test_repo_config_loads_its_profiles_and_scenarios() -> None:
    cfg = load(REPO_CONFIG)
    assert list(cfg.profiles) == ["baseline", "control", "series-491379-offline", "series-491379-offline-1-11",
                                  "series-491379"]
    assert list(cfg.scenarios) == ["mirror", "redirector", "redirector-when-stopped", "guest-plain",
                                   "guest-redirect-qmp", "guest-when-stopped", "guest-redirect-early"]
    assert cfg.path == REPO_CONFIG


def test_repo_config_scenarios() -> None:
    cfg = load(REPO_CONFIG)
    assert cfg.scenarios["mirror"].filter == "filter-mirror"
    assert cfg.scenarios["mirror"].expect == {"baseline": "gap", "control": "continuous",
                                              "series-491379-offline": "gap", "check": "continuous",
                                              "baseline->control": "gap", "control->baseline": "continuous"}
    # What `lab check` expects of a series: every filter keeps the stream flowing through the stop,
    # and a redirector switched on while stopped delivers to the guest.
    assert all(s.expect["check"] == "continuous" for s in cfg.scenarios.values() if s.filter != "none"
               and s.switch_on != "before-migrate")
    plain, qmp = cfg.scenarios["guest-plain"], cfg.scenarios["guest-redirect-qmp"]
    assert (plain.filter, plain.path) == ("none", "guest")
    assert (qmp.filter, qmp.path, qmp.switch_on) == ("filter-redirector", "guest", "at-stop")
    assert cfg.scenarios["guest-when-stopped"].properties == (("enable_when_stopped", "on"),)
    assert cfg.scenarios["guest-redirect-early"].switch_on == "before-migrate"
    assert cfg.scenarios["redirector"].filter == "filter-redirector"
    assert cfg.scenarios["redirector"].expect["baseline"] == "continuous"


def test_repo_config_baseline_profile() -> None:
    qemu = load(REPO_CONFIG).profiles["baseline"].qemu
    assert (qemu.source, qemu.version, qemu.suite) == ("debian", "1:10.2.2+ds-1", "sid")
    assert qemu.upstream_version == "10.2.2"


def test_repo_config_states_the_defaults() -> None:
    cfg = load(REPO_CONFIG)
    assert cfg.traffic == Traffic()
    assert cfg.migration == MigrationSettings()
    assert cfg.timeouts == Timeouts()
    assert (cfg.name, cfg.accel, cfg.images.mirror) == ("nfcl", "auto", "auto")


# --- parse on dicts ---------------------------------------------------------------------------

def test_minimal_config_gets_the_defaults() -> None:
    cfg = parse(minimal())
    assert isinstance(cfg, LabConfig)
    assert cfg.traffic.rate == 1000
    assert cfg.migration.hold_s == 3.0
    assert cfg.guest.mac == "52:54:00:12:34:56"
    assert cfg.images.base == "debootstrap"


def test_values_are_read() -> None:
    data = minimal() | {"traffic": {"rate": 250, "warmup_s": 0}, "migration": {"hold_s": 0.5},
                        "images": {"mirror": "http://mirror.example/debian"}, "lab": {"accel": "tcg"}}
    cfg = parse(data)
    assert (cfg.traffic.rate, cfg.traffic.warmup_s) == (250, 0)
    assert cfg.migration.hold_s == 0.5
    assert cfg.images.mirror == "http://mirror.example/debian"
    assert cfg.accel == "tcg"


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    assert parse(minimal() | {"timeouts": {"boot_s": 90}}).timeouts.boot_s == 90


def test_top_level_must_be_a_mapping() -> None:
    err = config_error(["profiles"])
    assert str(err) == "top level: expected a mapping, found a list"


def test_unknown_top_level_key() -> None:
    err = config_error(minimal() | {"trafic": {}})
    assert err.where == "trafic"
    assert str(err).startswith("trafic: unknown key")


def test_unknown_key_inside_traffic() -> None:
    err = config_error(minimal() | {"traffic": {"rate": 10, "burst": 3}})
    assert err.where == "traffic.burst"
    assert "unknown key" in str(err)
    assert "rate" in err.hint and "warmup_s" in err.hint


def test_section_must_be_a_mapping() -> None:
    err = config_error(minimal() | {"traffic": None})
    assert str(err) == "traffic: expected a mapping, found nothing"


def test_rate_of_the_wrong_type() -> None:
    err = config_error(minimal() | {"traffic": {"rate": "fast"}})
    assert str(err) == "traffic.rate: expected an integer, found a string"


def test_rate_must_be_an_integer() -> None:
    err = config_error(minimal() | {"traffic": {"rate": 10.5}})
    assert str(err) == "traffic.rate: expected an integer, found a number"


def test_boolean_is_not_a_number() -> None:
    err = config_error(minimal() | {"migration": {"hold_s": True}})
    assert str(err) == "migration.hold_s: expected a number, found a boolean"


def test_rate_out_of_range() -> None:
    err = config_error(minimal() | {"traffic": {"rate": 0}})
    assert err.where == "traffic.rate"
    assert "out of range" in str(err)


def test_hold_out_of_range() -> None:
    err = config_error(minimal() | {"migration": {"hold_s": -1}})
    assert err.where == "migration.hold_s"
    assert str(err).startswith("migration.hold_s: -1 is out of range")


def test_unknown_filter() -> None:
    data = minimal()
    data["scenarios"]["mirror"]["filter"] = "filter-rewriter"
    err = config_error(data)
    assert err.where == "scenarios.mirror.filter"
    assert "'filter-rewriter' is not allowed" in str(err)
    assert "filter-mirror" in err.hint


def test_expect_naming_an_unknown_profile() -> None:
    data = minimal()
    data["scenarios"]["mirror"]["expect"]["patched"] = "continuous"
    err = config_error(data)
    assert err.where == "scenarios.mirror.expect.patched"
    assert "unknown profile" in str(err)


def test_expect_may_name_check_which_is_not_a_profile() -> None:
    data = minimal()
    data["scenarios"]["mirror"]["expect"]["check"] = "continuous"
    cfg = parse(data)
    assert cfg.scenarios["mirror"].expect == {"baseline": "gap", "check": "continuous"}
    assert list(cfg.profiles) == ["baseline"]


def test_expect_check_must_be_a_verdict() -> None:
    data = minimal()
    data["scenarios"]["mirror"]["expect"]["check"] = "green"
    assert config_error(data).where == "scenarios.mirror.expect.check"


def test_a_profile_may_not_be_named_check() -> None:
    data = minimal()
    data["profiles"]["check"] = {}
    err = config_error(data)
    assert err.where == "profiles.check" and "reserved" in str(err)


def test_check_section_defaults_and_values() -> None:
    assert parse(minimal()).check.context == "netfilter-continuity"
    cfg = parse(minimal() | {"check": {"context": "nfcl-ci", "target_url": "https://ci.example/runs/1",
                                       "token_file": "token", "patchwork": "https://patchwork.example"}})
    assert (cfg.check.context, cfg.check.target_url, cfg.check.token_file, cfg.check.patchwork) == (
        "nfcl-ci", "https://ci.example/runs/1", "token", "https://patchwork.example")


@pytest.mark.parametrize(("key", "value", "where"), [
    ("context", "two words", "check.context"), ("context", "", "check.context"),
    ("target_url", "file:///tmp/x", "check.target_url"), ("patchwork", "patchwork.ozlabs.org", "check.patchwork"),
    ("token", "secret", "check.token"),
])
def test_check_section_refuses(key: str, value: str, where: str) -> None:
    err = config_error(minimal() | {"check": {key: value}})
    assert err.where == where and "secret" not in str(err).replace("check.token", "")


def test_images_prefix_names_the_image_tags() -> None:
    assert parse(minimal()).image_prefix == "nfcl"
    assert parse(minimal() | {"lab": {"name": "other"}}).image_prefix == "other"
    assert parse(minimal() | {"lab": {"name": "other"}, "images": {"prefix": "nfcl"}}).image_prefix == "nfcl"
    assert config_error(minimal() | {"images": {"prefix": "Bad/Prefix"}}).where == "images.prefix"


@pytest.mark.parametrize("registry", ["ghcr.io/owner/lab", "127.0.0.1:5015/lab", "localhost/lab/images",
                                      "registry.example:443/a_b/c-d", "docker.io/user/lab"])
def test_images_registry_takes_a_host_and_a_path(registry: str) -> None:
    assert parse(minimal() | {"images": {"registry": registry}}).images.registry == registry


def test_images_registry_is_none_by_default() -> None:
    assert parse(minimal()).images.registry == ""


@pytest.mark.parametrize(("registry", "hint"), [
    ("ghcr.io", "HOST[:PORT]/PATH"),  # no path
    ("ghcr.io/Owner/lab", "lowercase"),
    ("https://ghcr.io/owner/lab", "docker login"),
    ("user:secret@ghcr.io/owner/lab", "docker login"),
    ("owner/lab", "dot or a port"),  # Docker would take it for a Docker Hub repository
    ("ghcr.io/owner/lab:tag", "HOST[:PORT]/PATH"),
    ("ghcr.io/owner//lab", "HOST[:PORT]/PATH"),
])
def test_images_registry_refuses_what_is_no_registry_path(registry: str, hint: str) -> None:
    err = config_error(minimal() | {"images": {"registry": registry}})
    assert err.where == "images.registry" and hint in str(err)
    assert "secret" not in str(err).replace(registry, "")


def test_a_bad_registry_is_one_line_naming_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(REPO_CONFIG.read_text().replace("images:\n", "images:\n  registry: ghcr.io\n", 1))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: images.registry: 'ghcr.io' is not HOST[:PORT]/PATH")
    assert "\n" not in str(info.value)


def test_scenario_missing_an_expectation_for_a_profile() -> None:
    data = minimal()
    data["profiles"]["patched"] = {}
    err = config_error(data)
    assert err.where == "scenarios.mirror.expect"
    assert "'patched'" in str(err)


def test_scenario_without_expect() -> None:
    data = minimal()
    del data["scenarios"]["mirror"]["expect"]
    assert str(config_error(data)) == "scenarios.mirror.expect: missing"


@pytest.mark.parametrize("verdict", ["maybe", "error", "Gap"])
def test_expect_value_must_be_a_verdict(verdict: str) -> None:
    data = minimal()
    data["scenarios"]["mirror"]["expect"]["baseline"] = verdict
    err = config_error(data)
    assert err.where == "scenarios.mirror.expect.baseline"
    assert "continuous" in err.hint and "gap" in err.hint


def test_missing_profiles() -> None:
    data = minimal()
    del data["profiles"]
    assert str(config_error(data)) == "profiles: missing"


def test_empty_profiles() -> None:
    err = config_error(minimal() | {"profiles": {}})
    assert err.where == "profiles"
    assert "no profile defined" in str(err)


def test_missing_scenarios() -> None:
    data = minimal()
    del data["scenarios"]
    assert str(config_error(data)) == "scenarios: missing"


def test_malformed_profile_name() -> None:
    err = config_error(minimal() | {"profiles": {"Base_Line": {}}})
    assert err.where == "profiles.Base_Line"


def test_unknown_key_in_a_profile_qemu() -> None:
    err = config_error(minimal() | {"profiles": {"baseline": {"qemu": {"branch": "master"}}}})
    assert err.where == "profiles.baseline.qemu.branch"


@pytest.mark.parametrize("mirror", ["deb.debian.org/debian", "ftp://deb.debian.org/debian", "http://"])
def test_bad_mirror_url(mirror: str) -> None:
    err = config_error(minimal() | {"images": {"mirror": mirror}})
    assert err.where == "images.mirror"
    assert "is not a URL" in str(err)


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52-54-00-12-34-56", "52:54:00:12:34:5G"])
def test_bad_guest_mac(mac: str) -> None:
    assert config_error(minimal() | {"guest": {"mac": mac}}).where == "guest.mac"


# --- load on files ----------------------------------------------------------------------------

def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("profiles:\n  baseline: {}\nscenarios:\n  mirror:\n"
                    "    filter: filter-mirror\n    expect: {baseline: continuous}\n")
    cfg = load(path)
    assert cfg.path == path
    assert cfg.scenarios["mirror"].expect == {"baseline": "continuous"}


def test_load_reports_the_file_and_line_of_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("lab:\n  name: nfcl\n  accel: kvm: tcg\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.where == f"{path}:3"
    assert str(info.value).startswith(f"{path}:3: not valid YAML")


def test_load_prefixes_validation_errors_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(REPO_CONFIG.read_text().replace("rate: 1000", "rate: fast"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: traffic.rate: expected an integer, found a string"


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.where == str(path)
    assert "cannot read" in str(info.value)


def test_load_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: top level: expected a mapping, found nothing"


# --- selections -------------------------------------------------------------------------------

def two_of_each() -> LabConfig:
    data = minimal()
    data["profiles"]["patched"] = {}
    data["scenarios"]["mirror"]["expect"]["patched"] = "continuous"
    data["scenarios"]["redirector"] = {"filter": "filter-redirector",
                                       "expect": {"baseline": "continuous", "patched": "continuous"}}
    return parse(data)


def test_select_nothing_means_all() -> None:
    cfg = two_of_each()
    assert [p.name for p in cfg.select_profiles(None)] == ["baseline", "patched"]
    assert [s.name for s in cfg.select_scenarios([])] == ["mirror", "redirector"]


def test_select_keeps_the_given_order_without_repeats() -> None:
    cfg = two_of_each()
    assert [p.name for p in cfg.select_profiles(["patched", "baseline", "patched"])] == ["patched", "baseline"]


def test_select_unknown_profile_names_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        two_of_each().select_profiles(["baseline", "nope"])
    assert info.value.where == "--profile"
    assert "'nope'" in str(info.value)
    assert "baseline, patched" in info.value.hint


def test_select_unknown_scenario_names_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        two_of_each().select_scenarios(["mirorr"])
    assert str(info.value).startswith("--scenario: unknown name 'mirorr'")


# --- series, sources and defaults ---------------------------------------------------------------

def test_repo_config_runs_baseline_control_and_the_offline_series_by_default_not_the_upstream_one() -> None:
    cfg = load(REPO_CONFIG)
    assert [p.name for p in cfg.select_profiles(None)] == ["baseline", "control", "series-491379-offline"]
    assert [p.name for p in cfg.select_profiles(["series-491379"])] == ["series-491379"]


def test_repo_config_upstream_profile_is_patchwork_491379_on_git() -> None:
    p = load(REPO_CONFIG).profiles["series-491379"]
    assert p.series is not None and p.series.ref == "491379" and p.series.patchwork.startswith("https://")
    assert (p.qemu.source, p.qemu.ref) == ("git", "092009a55c16")


def test_repo_config_control_is_a_local_series_labelled_as_the_labs_own() -> None:
    p = load(REPO_CONFIG).profiles["control"]
    assert p.series is not None and p.series.mbox == "series/control"
    assert "not upstream" in p.series.note and "NOT an upstream" in p.description


def test_scenario_properties_are_spelled_for_qemu() -> None:
    data = minimal()
    data["scenarios"]["mirror"]["properties"] = {"enable_when_stopped": True, "status": "off"}
    assert parse(data).scenarios["mirror"].properties == (("enable_when_stopped", "on"), ("status", "off"))


def test_series_needs_exactly_one_source() -> None:
    data = minimal()
    data["profiles"]["baseline"]["series"] = {"mbox": "a.mbox", "ref": "https://pw.example/api/series/1/"}
    assert config_error(data).where == "profiles.baseline.series"
    data["profiles"]["baseline"]["series"] = {}
    assert config_error(data).where == "profiles.baseline.series"


def test_bare_series_id_needs_the_patchwork_server() -> None:
    data = minimal()
    data["profiles"]["baseline"]["series"] = {"ref": 491379}
    assert config_error(data).where == "profiles.baseline.series.patchwork"


def test_git_source_needs_url_and_ref() -> None:
    data = minimal()
    data["profiles"]["baseline"]["qemu"] = {"source": "git", "url": "https://git.example/qemu.git"}
    assert "url and ref" in str(config_error(data))


def test_profile_default_must_be_a_boolean() -> None:
    data = minimal()
    data["profiles"]["baseline"]["default"] = "no"
    assert config_error(data).where == "profiles.baseline.default"


def test_profiles_that_are_all_left_out_of_plain_runs_are_refused() -> None:
    data = minimal()
    data["profiles"]["other"] = {"default": False}
    data["profiles"]["baseline"]["default"] = False
    data["scenarios"]["mirror"]["expect"]["other"] = "gap"
    err = config_error(data)
    assert err.where == "profiles" and "default: false" in err.problem and "\n" not in str(err)
    data["profiles"]["other"]["default"] = True
    assert [p.name for p in parse(data).select_profiles(None)] == ["other"]


def with_properties(properties: dict[Any, Any]) -> dict[str, Any]:
    data = minimal()
    data["scenarios"]["mirror"]["properties"] = properties
    return data


@pytest.mark.parametrize("value", ["x,netdev=n1", "a=b", "two words", "tab\there", "", "nul\x00", "bell\x07",
                                   "line\nbreak", "nbsp\u00a0", None, [1], {"a": 1}])
def test_property_values_that_would_change_the_object_option_are_refused(value: object) -> None:
    err = config_error(with_properties({"status": value}))
    assert err.where == "scenarios.mirror.properties.status"
    assert "not a property value" in err.problem and "\n" not in str(err)


@pytest.mark.parametrize("key", ["Status", "1st", "a,b", "a=b", "with space", "_x", "", 3, True])
def test_property_names_must_be_qom_names(key: object) -> None:
    err = config_error(with_properties({key: "on"}))
    shown = key if key in ("Status", "1st", "a,b", "a=b", "_x") else repr(key)  # quoted unless a plain word
    assert err.where == f"scenarios.mirror.properties.{shown}"
    assert "malformed property name" in err.problem


@pytest.mark.parametrize("key", ["netdev", "queue", "id", "outdev"])
def test_properties_the_lab_sets_itself_are_refused(key: str) -> None:
    assert config_error(with_properties({key: "n1"})).where == f"scenarios.mirror.properties.{key}"


def test_numbers_and_words_are_property_values() -> None:
    props = parse(with_properties({"max-size": 65536, "ratio_x": 0.5, "mode": "rx-only"})).scenarios["mirror"]
    assert props.properties == (("max-size", "65536"), ("ratio_x", "0.5"), ("mode", "rx-only"))


def git_profile(url: str, ref: str) -> dict[str, Any]:
    data = minimal()
    data["profiles"]["baseline"]["qemu"] = {"source": "git", "url": url, "ref": ref}
    return data


@pytest.mark.parametrize("url", ["https://gitlab.example/qemu.git", "http://git.example/q", "git://git.example/q",
                                 "ssh://git@git.example/q.git", "/srv/git/qemu"])
def test_git_urls_of_network_transports_or_absolute_paths(url: str) -> None:
    assert parse(git_profile(url, "v10.2.2")).profiles["baseline"].qemu.url == url


@pytest.mark.parametrize("url", ["-uhttps://x", "--upload-pack=touch /tmp/x", "file:///srv/qemu", "ext::sh -c x",
                                 "ftp://x/q", "relative/path", "https://x/q w", "https://x/q\n", "ssh://-oProxyCommand=x/q",
                                 "git@git.example:qemu.git"])
def test_other_git_urls_are_refused(url: str) -> None:
    err = config_error(git_profile(url, "main"))
    assert err.where == "profiles.baseline.qemu.url" and "not a git URL" in err.problem


@pytest.mark.parametrize("ref", ["092009a55c16", "v10.2.2", "stable-10.2", "feature/x_y.z", "HEAD"])
def test_git_refs_hash_tag_or_branch(ref: str) -> None:
    assert parse(git_profile("https://x/q.git", ref)).profiles["baseline"].qemu.ref == ref


@pytest.mark.parametrize("ref", ["-b", "--orphan=x", "main..evil", "a b", "main\n", "main~1", "main^{tree}", "@{-1}",
                                 ".hidden", "/abs", "ref:x"])
def test_other_git_refs_are_refused(ref: str) -> None:
    err = config_error(git_profile("https://x/q.git", ref))
    assert err.where == "profiles.baseline.qemu.ref" and "not a commit, tag or branch name" in err.problem


@pytest.mark.parametrize(("key", "value"), [("lab", {"name": "nfcl\n"}), ("images", {"mirror": "http://m/debian\n"})])
def test_a_trailing_newline_does_not_pass_a_pattern(key: str, value: dict[str, str]) -> None:
    assert config_error(minimal() | {key: value}).where == f"{key}.{next(iter(value))}"


def test_a_property_name_with_a_trailing_newline_is_refused() -> None:
    assert "malformed property name" in config_error(with_properties({"status\n": "on"})).problem


@pytest.mark.parametrize(("key", "shown"), [("trafic\n", "'trafic\\n'"), ("two words", "'two words'"), (7, "7"),
                                           (None, "None"), ("", "''")])
def test_a_key_that_is_no_plain_word_is_quoted_in_the_key_path(key: object, shown: str) -> None:
    err = config_error(minimal() | {key: {}})
    assert err.where == shown and "unknown key" in err.problem and "\n" not in str(err)


@pytest.mark.parametrize(("text", "problem"), [
    (b"\x80profiles: {}", "not UTF-8 text (byte 0 is 0x80)"),
    (b"lab: {name: \x00}", "character '\\x00' is not allowed in YAML"),
    (b"profiles: 2001-02-30", "not valid YAML: day is out of range for month"),
    (b"? [a]\n: 1", "not valid YAML: found unhashable key"),
    (b"[" * 5000, "not valid YAML"),
])
def test_load_of_text_that_is_no_yaml_is_one_line(tmp_path: Path, text: bytes, problem: str) -> None:
    path = tmp_path / "lab.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(str(path)) and problem in str(info.value) and "\n" not in str(info.value)


# --- the guest's path, switches, migrations between builds --------------------------------------

def two_profiles(scenario: dict[str, Any]) -> dict[str, Any]:
    data = minimal()
    data["profiles"]["control"] = {"qemu": {"version": "1:10.2.2+ds-1"}}
    data["scenarios"] = {"s": scenario}
    return data


def test_a_guest_scenario_may_go_without_a_filter() -> None:
    cfg = parse(two_profiles({"filter": "none", "path": "guest", "expect": {"baseline": "gap", "control": "gap"}}))
    s = cfg.scenarios["s"]
    assert (s.filter, s.path, s.switch_on) == ("none", "guest", "start")


@pytest.mark.parametrize(("scenario", "where", "problem"), [
    ({"filter": "none"}, "scenarios.s.filter", "none needs path: guest"),
    ({"filter": "none", "path": "guest", "switch_on": "at-stop"}, "scenarios.s.switch_on", "no filter"),
    ({"filter": "none", "path": "guest", "properties": {"a": 1}}, "scenarios.s.properties", "no filter"),
    ({"filter": "filter-redirector", "switch_on": "at-stop", "properties": {"status": "on"}},
     "scenarios.s.properties.status", "set by the lab"),
    ({"filter": "filter-redirector", "path": "tap"}, "scenarios.s.path", "'tap' is not allowed"),
    ({"filter": "filter-redirector", "switch_on": "later"}, "scenarios.s.switch_on", "'later' is not allowed"),
])
def test_guest_path_and_switch_mistakes_are_named(scenario: dict[str, Any], where: str, problem: str) -> None:
    scenario = {"expect": {"baseline": "gap", "control": "gap"}} | scenario
    err = config_error(two_profiles(scenario))
    assert err.where == where and problem in err.problem


def test_an_expectation_may_name_a_pair_of_builds() -> None:
    cfg = parse(two_profiles({"filter": "filter-redirector", "path": "guest", "switch_on": "at-stop",
                              "expect": {"baseline": "gap", "control": "gap", "baseline->control": "continuous"}}))
    s = cfg.scenarios["s"]
    assert s.expected("baseline") == "gap"
    assert s.expected("baseline", "baseline") == "gap"
    assert s.expected("baseline", "control") == "continuous"
    assert s.expected("control", "baseline") == ""  # nothing expected: the row reports without judging


@pytest.mark.parametrize(("pair", "problem"), [
    ("baseline->nope", "unknown profile 'nope'"),
    ("baseline->baseline", "a pair of one profile"),
    ("baseline->control->baseline", "unknown profile"),
])
def test_a_bad_pair_is_named(pair: str, problem: str) -> None:
    err = config_error(two_profiles({"filter": "filter-mirror",
                                     "expect": {"baseline": "gap", "control": "gap", pair: "gap"}}))
    assert err.where == f"scenarios.s.expect.{pair}" and problem in err.problem


def test_the_guest_may_dirty_its_memory() -> None:
    data = minimal() | {"guest": {"dirty_mb_s": 64}}
    assert parse(data).guest.dirty_mb_s == 64
    err = config_error(minimal() | {"guest": {"dirty_mb_s": -1}})
    assert err.where == "guest.dirty_mb_s"


def test_a_scenario_may_accept_losses_at_named_points() -> None:
    data = minimal()
    data["scenarios"]["mirror"]["accept_loss"] = ["destination", "guest", "destination"]
    assert parse(data).scenarios["mirror"].accept_loss == ("destination", "guest")
    data["scenarios"]["mirror"]["accept_loss"] = ["queue"]
    err = config_error(data)
    assert err.where == "scenarios.mirror.accept_loss" and "points: generator, stream, destination, guest" in err.hint


def test_limits_are_stated_read_and_must_hold_the_guest() -> None:
    from lab.config import Limits
    assert load(REPO_CONFIG).limits == Limits()
    assert parse({**minimal(), "limits": {"build_pids": 500}}).limits.build_pids == 500
    error = config_error({**minimal(), "guest": {"memory_mb": 2048}})
    assert error.args and "limits.host_memory_mb" in str(error) and "2560" in str(error)
    assert parse({**minimal(), "guest": {"memory_mb": 2048}, "limits": {"host_memory_mb": 2560}})
