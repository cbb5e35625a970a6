"""The standalone engine host tool: merging daemon.json and writing the engines' files."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools.test_engine_doctor import make_ca, make_leaf
from tools import engine_host

SOURCE = Path(engine_host.__file__)
ENTRY = "10.0.0.5:5000"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    arguments = list(argv)
    if "--image-store" not in arguments and arguments[0] != "--help":
        arguments += ["--image-store", "classic"]
    code = engine_host.main(arguments, prog="registry engine")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def daemon_json(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "docker" / "daemon.json"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- merging


def test_add_keeps_other_keys_their_order_values_and_indent(capsys, daemon_json):
    original = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "insecure-registries": ["a.example:5000"],
        "debug": True,
        "features": {"buildkit": True},
    }
    write(daemon_json, json.dumps(original, indent=4) + "\n")

    code, out, _ = run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))

    assert code == 0
    assert f"changed {daemon_json}: added {ENTRY} to insecure-registries" in out
    text = daemon_json.read_text()
    merged = json.loads(text)
    assert list(merged) == list(original)
    assert merged["insecure-registries"] == ["a.example:5000", ENTRY]
    assert {k: v for k, v in merged.items() if k != "insecure-registries"} == {
        k: v for k, v in original.items() if k != "insecure-registries"
    }
    assert text == json.dumps(merged, indent=4) + "\n"


def test_tab_indent_and_one_line_files_keep_their_shape(capsys, tmp_path):
    tabbed = write(tmp_path / "tab.json", '{\n\t"debug": true\n}\n')
    one_line = write(tmp_path / "one.json", '{"debug": true}')

    for path in (tabbed, one_line):
        assert run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(path))[0] == 0

    assert (
        tabbed.read_text()
        == f'{{\n\t"debug": true,\n\t"insecure-registries": [\n\t\t"{ENTRY}"\n\t]\n}}\n'
    )
    assert one_line.read_text() == f'{{"debug": true, "insecure-registries": ["{ENTRY}"]}}\n'


def test_empty_file_counts_as_empty_object(capsys, daemon_json):
    write(daemon_json, "")
    code, out, _ = run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))
    assert code == 0
    assert daemon_json.read_text() == f'{{\n  "insecure-registries": [\n    "{ENTRY}"\n  ]\n}}\n'
    assert "changed" in out


def test_missing_file_and_folder_are_created(capsys, daemon_json):
    assert not daemon_json.parent.exists()
    code, out, _ = run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))
    assert code == 0
    assert f"created {daemon_json}" in out
    assert json.loads(daemon_json.read_text()) == {"insecure-registries": [ENTRY]}
    assert daemon_json.stat().st_mode & 0o777 == 0o644
    assert not daemon_json.with_name("daemon.json.bak").exists()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{\n  "debug": true,\n  "insecure-registries": ["a:1",]\n}\n', ":3:33:"),
        ('{"debug": tru}', ":1:11:"),
        ("{\n", ":2:1:"),
    ],
)
def test_invalid_json_is_refused_and_left_byte_for_byte(capsys, daemon_json, text, where):
    write(daemon_json, text)
    before = daemon_json.read_bytes()

    code, out, err = run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))

    assert code == 1
    assert f"{daemon_json}{where} invalid JSON" in err
    assert "left as it is" in err
    assert "Traceback" not in err
    assert out == ""
    assert daemon_json.read_bytes() == before
    assert os.listdir(daemon_json.parent) == ["daemon.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["a:1"]', "the top level must be a JSON object, found list"),
        ('{"insecure-registries": "a:1"}', '"insecure-registries" must be a list of strings'),
        ('{"insecure-registries": [1]}', '"insecure-registries" must be a list of strings'),
    ],
)
def test_wrong_shapes_are_refused(capsys, daemon_json, text, message):
    write(daemon_json, text)
    code, _, err = run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))
    assert code == 1
    assert message in err
    assert daemon_json.read_text() == text


def test_duplicate_entry_changes_nothing_and_writes_nothing(capsys, daemon_json):
    write(daemon_json, json.dumps({"insecure-registries": [ENTRY]}))
    before = daemon_json.stat()

    for spelling in (ENTRY, " 10.0.0.5:5000 "):
        code, out, _ = run(capsys, "insecure", "add", spelling, "--daemon-json", str(daemon_json))
        assert code == 0
        assert f"unchanged {daemon_json}: insecure-registries already lists" in out
        assert "reload" not in out

    after = daemon_json.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not daemon_json.with_name("daemon.json.bak").exists()


def test_hostnames_are_compared_without_case(capsys, daemon_json):
    write(daemon_json, json.dumps({"insecure-registries": ["Registry.Example:5000"]}))
    code, out, _ = run(
        capsys, "insecure", "add", "registry.example:5000", "--daemon-json", str(daemon_json)
    )
    assert code == 0
    assert "unchanged" in out


def test_remove_absent_entry_is_a_no_op(capsys, daemon_json):
    write(daemon_json, json.dumps({"insecure-registries": ["a:1"]}))
    before = daemon_json.stat()
    code, out, _ = run(capsys, "insecure", "remove", ENTRY, "--daemon-json", str(daemon_json))
    assert code == 0
    assert "does not list" in out
    assert daemon_json.stat().st_mtime_ns == before.st_mtime_ns


def test_remove_on_missing_file_creates_nothing(capsys, daemon_json):
    code, out, _ = run(capsys, "insecure", "remove", ENTRY, "--daemon-json", str(daemon_json))
    assert code == 0
    assert "unchanged" in out
    assert not daemon_json.parent.exists()


def test_add_then_remove_leaves_an_empty_list_for_dockerd_to_reload(capsys, daemon_json):
    # dockerd forgets entries on reload only when the key is in the file.
    original = '{\n  "debug": true,\n  "registry-mirrors": [\n    "https://m.example"\n  ]\n}\n'
    write(daemon_json, original)
    assert run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))[0] == 0
    code, out, _ = run(capsys, "insecure", "remove", ENTRY, "--daemon-json", str(daemon_json))
    assert code == 0
    assert f"removed {ENTRY} from insecure-registries" in out
    assert daemon_json.read_text() == original[:-3] + ',\n  "insecure-registries": []\n}\n'


def test_list_prints_the_entries(capsys, daemon_json):
    write(daemon_json, json.dumps({"insecure-registries": ["a:1", "10.0.0.0/8"]}))
    code, out, _ = run(capsys, "insecure", "list", "--daemon-json", str(daemon_json))
    assert (code, out) == (0, "a:1\n10.0.0.0/8\n")


# --------------------------------------------------------------------------- entries


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("192.168.7.0/24", "192.168.7.0/24"),
        ("fd00::1/8", "fd00::/8"),
        ("[::1]:5000", "[::1]:5000"),
        ("[fe80::1%eth0]:5000", "[fe80::1%eth0]:5000"),
        ("registry.example", "registry.example"),
        ("registry.example:443", "registry.example:443"),
        ("localhost:5000", "localhost:5000"),
    ],
)
def test_valid_entries(capsys, daemon_json, given, stored):
    code, _, err = run(capsys, "insecure", "add", given, "--daemon-json", str(daemon_json))
    assert (code, err) == (0, "")
    assert json.loads(daemon_json.read_text())["insecure-registries"] == [stored]


def test_cidr_duplicates_are_found_by_network(capsys, daemon_json):
    write(daemon_json, json.dumps({"insecure-registries": ["10.0.0.0/8"]}))
    code, out, _ = run(capsys, "insecure", "add", "10.9.9.9/8", "--daemon-json", str(daemon_json))
    assert code == 0
    assert "unchanged" in out


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("http://h:5000", "without a scheme"),
        ("h:0", "port must be a number from 1 to 65535"),
        ("h:65536", "port must be a number from 1 to 65535"),
        ("h:port", "port must be a number"),
        ("bad_host:5000", "not a valid host name"),
        ("h-.example:5000", "not a valid host name"),
        ("300.1.1.1:5000", "not an IPv4 address"),
        ("fe80::1", "put an IPv6 address in brackets"),
        ("[zz::1]:5000", "not an IPv6 address"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("h:5000/path", "not a valid CIDR"),
    ],
)
def test_invalid_entries_are_usage_errors(capsys, daemon_json, given, message):
    code, _, err = run(capsys, "insecure", "add", given, "--daemon-json", str(daemon_json))
    assert code == 2
    assert message in err
    assert not daemon_json.exists()


def test_missing_entry_is_a_usage_error(capsys, daemon_json):
    code, _, err = run(capsys, "insecure", "add", "--daemon-json", str(daemon_json))
    assert code == 2
    assert "needs an entry" in err


def test_unknown_option_is_a_usage_error(capsys):
    assert engine_host.main(["insecure", "add", ENTRY, "--frobnicate"]) == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_mirrors(capsys, daemon_json):
    path = str(daemon_json)
    assert run(capsys, "mirror", "add", "https://mirror.example", "--daemon-json", path)[0] == 0
    code, out, _ = run(capsys, "mirror", "add", "https://mirror.example/", "--daemon-json", path)
    assert (code, "unchanged" in out) == (0, True)
    assert run(capsys, "mirror", "list", "--daemon-json", path)[1] == "https://mirror.example\n"
    assert run(capsys, "mirror", "remove", "https://mirror.example", "--daemon-json", path)[0] == 0
    assert json.loads(daemon_json.read_text()) == {"registry-mirrors": []}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://m.example",
        "m.example:5000",
        "https://u:p@m.example",
        "https://m.example/?q=1",
        # dockerd refuses a mirror with a path, and with it the whole daemon.json.
        "http://127.0.0.1:5999/docker.io",
    ],
)
def test_invalid_mirrors_are_usage_errors(capsys, daemon_json, url):
    code, _, err = run(capsys, "mirror", "add", url, "--daemon-json", str(daemon_json))
    assert code == 2
    assert "mirror" in err
    assert not daemon_json.exists() or "registry-mirrors" not in daemon_json.read_text()


# --------------------------------------------------------------------------- writing


def test_backup_holds_the_previous_version(capsys, daemon_json):
    write(daemon_json, '{"debug": true}\n')
    assert run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))[0] == 0
    assert daemon_json.with_name("daemon.json.bak").read_text() == '{"debug": true}\n'
    assert run(capsys, "insecure", "add", "b:1", "--daemon-json", str(daemon_json))[0] == 0
    assert ENTRY in daemon_json.with_name("daemon.json.bak").read_text()


def test_no_backup_option(capsys, daemon_json):
    write(daemon_json, "{}")
    argv = ("insecure", "add", ENTRY, "--daemon-json", str(daemon_json), "--no-backup")
    assert run(capsys, *argv)[0] == 0
    assert os.listdir(daemon_json.parent) == ["daemon.json"]


def test_owner_and_mode_survive(capsys, daemon_json):
    write(daemon_json, "{}")
    os.chown(daemon_json, 1234, 2345)
    daemon_json.chmod(0o640)
    assert run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json))[0] == 0
    for path in (daemon_json, daemon_json.with_name("daemon.json.bak")):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o640)


def test_a_symlink_is_followed_not_replaced(capsys, tmp_path):
    target = write(tmp_path / "real" / "daemon.json", "{}")
    link = tmp_path / "daemon.json"
    link.symlink_to(target)
    assert run(capsys, "insecure", "add", ENTRY, "--daemon-json", str(link))[0] == 0
    assert link.is_symlink()
    assert ENTRY in target.read_text()


def test_dry_run_prints_a_diff_and_changes_nothing(capsys, daemon_json):
    write(daemon_json, '{\n  "debug": true\n}\n')
    before = daemon_json.stat()
    code, out, _ = run(
        capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json), "--dry-run"
    )
    assert code == 0
    assert f"--- {daemon_json}\n+++ {daemon_json}\n" in out
    assert '-  "debug": true\n+  "debug": true,\n+  "insecure-registries": [\n' in out
    assert f"would have changed {daemon_json}" in out
    assert daemon_json.stat().st_mtime_ns == before.st_mtime_ns
    assert os.listdir(daemon_json.parent) == ["daemon.json"]


def test_dry_run_of_a_new_file_diffs_against_dev_null(capsys, daemon_json):
    code, out, _ = run(
        capsys, "insecure", "add", ENTRY, "--daemon-json", str(daemon_json), "--dry-run"
    )
    assert code == 0
    assert "--- /dev/null" in out
    assert not daemon_json.parent.exists()


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="engine-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to the user nobody, which needs root")
def test_permission_denied_says_to_use_sudo(world_readable_dir):
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (package util-linux) is missing")
    script = world_readable_dir / "engine_host.py"
    shutil.copyfile(SOURCE, script)
    script.chmod(0o644)
    daemon_json = write(world_readable_dir / "docker" / "daemon.json", "{}\n")
    daemon_json.parent.chmod(0o755)
    result = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            str(script),
            "insecure",
            "add",
            ENTRY,
            "--daemon-json",
            str(daemon_json),
            "--image-store",
            "classic",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=world_readable_dir,
    )
    assert result.returncode == 1, result
    assert "permission denied" in result.stderr
    assert "sudo python3 engine_host.py insecure add 10.0.0.5:5000" in result.stderr
    assert "Traceback" not in result.stderr
    assert daemon_json.read_text() == "{}\n"
    assert sorted(os.listdir(daemon_json.parent)) == ["daemon.json"]


# --------------------------------------------------------------------------- standalone


def old_pythons() -> list[str]:
    """Python 3.8 and 3.9 where installed (Debian's own, or pyenv's), the oldest we support."""
    found = {shutil.which(f"python3.{minor}") for minor in (8, 9)}
    found |= set(glob.glob(os.path.expanduser("~/.pyenv/versions/3.[89].*/bin/python3")))
    return sorted(path for path in found if path and "/shims/" not in path)


def test_the_source_is_python_3_8_syntax():
    ast.parse(SOURCE.read_text(), feature_version=(3, 8))
    imports = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(SOURCE.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert "tools" not in imports
    assert imports <= set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("python", [sys.executable, *old_pythons()])
def test_runs_as_a_script_without_the_package(tmp_path, python):
    daemon_json = tmp_path / "daemon.json"
    script = tmp_path / "engine_host.py"
    shutil.copyfile(SOURCE, script)
    result = subprocess.run(
        [
            python,
            "-I",
            str(script),
            "insecure",
            "add",
            ENTRY,
            "--daemon-json",
            str(daemon_json),
            "--image-store",
            "classic",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(daemon_json.read_text()) == {"insecure-registries": [ENTRY]}


@pytest.mark.parametrize("python", [sys.executable, *old_pythons()])
def test_runs_from_standard_input_as_over_ssh(tmp_path, python):
    daemon_json = write(tmp_path / "daemon.json", '{"debug": true}')
    result = subprocess.run(
        [
            python,
            "-I",
            "-",
            "insecure",
            "add",
            ENTRY,
            "--daemon-json",
            str(daemon_json),
            "--image-store",
            "classic",
        ],
        input=SOURCE.read_bytes(),
        capture_output=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert b"changed" in result.stdout
    assert json.loads(daemon_json.read_text()) == {"debug": True, "insecure-registries": [ENTRY]}
    usage = subprocess.run(
        [python, "-I", "-", "insecure", "add", "http://x"],
        input=SOURCE.read_bytes(),
        capture_output=True,
        check=False,
        cwd=tmp_path,
    )
    assert usage.returncode == 2
    assert b"registry engine: error:" in usage.stderr


# --------------------------------------------------------------------------- other engines


def test_containerd_hosts_toml_for_plain_http(capsys, tmp_path):
    code, out, _ = run(
        capsys, "insecure", "add", ENTRY, "--engine", "containerd", "--root", str(tmp_path)
    )
    hosts = tmp_path / "etc/containerd/certs.d" / ENTRY / "hosts.toml"
    assert code == 0
    assert f"created {hosts}" in out
    parsed = tomllib.loads(hosts.read_text())
    assert parsed == {
        "server": f"http://{ENTRY}",
        "host": {f"http://{ENTRY}": {"capabilities": ["pull", "resolve", "push"]}},
    }
    assert not (tmp_path / "etc/docker").exists()
    code, out, _ = run(
        capsys, "insecure", "list", "--engine", "containerd", "--root", str(tmp_path)
    )
    assert out == f"{ENTRY}\n"


def test_containerd_hosts_toml_for_unverified_https(capsys, tmp_path):
    run(
        capsys,
        "insecure",
        "add",
        ENTRY,
        "--engine",
        "containerd",
        "--scheme",
        "https",
        "--containerd-certs-dir",
        str(tmp_path),
    )
    parsed = tomllib.loads((tmp_path / ENTRY / "hosts.toml").read_text())
    assert parsed["server"] == f"https://{ENTRY}"
    assert parsed["host"][f"https://{ENTRY}"]["skip_verify"] is True


def test_podman_drop_in(capsys, tmp_path):
    code, _, _ = run(
        capsys,
        "insecure",
        "add",
        "[fd00::5]:5000",
        "--engine",
        "podman",
        "--containers-dir",
        str(tmp_path),
    )
    drop_in = tmp_path / "registries.conf.d" / "registry-fd00_5_5000.conf"
    assert code == 0
    assert tomllib.loads(drop_in.read_text()) == {
        "registry": [{"location": "[fd00::5]:5000", "insecure": True}]
    }
    out = run(capsys, "insecure", "list", "--engine", "podman", "--containers-dir", str(tmp_path))[
        1
    ]
    assert out == "[fd00::5]:5000\n"
    code, out, _ = run(
        capsys,
        "insecure",
        "remove",
        "[fd00::5]:5000",
        "--engine",
        "podman",
        "--containers-dir",
        str(tmp_path),
        "--no-backup",
    )
    assert code == 0
    assert f"removed {drop_in}" in out
    assert not drop_in.exists()


def test_all_engines_at_once_and_again_unchanged(capsys, tmp_path):
    argv = ("insecure", "add", ENTRY, "--engine", "all", "--root", str(tmp_path))
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out.count("created") == 3
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert out.count("unchanged") == 3


def test_a_cidr_is_for_docker_only(capsys, tmp_path):
    code, _, err = run(
        capsys, "insecure", "add", "10.0.0.0/8", "--engine", "containerd", "--root", str(tmp_path)
    )
    assert code == 2
    assert "only Docker's insecure-registries takes CIDRs" in err


def test_a_hosts_toml_written_by_hand_is_kept(capsys, tmp_path):
    hosts = write(tmp_path / ENTRY / "hosts.toml", 'server = "https://elsewhere"\n')
    base = ("--engine", "containerd", "--containerd-certs-dir", str(tmp_path))
    code, _, err = run(capsys, "insecure", "remove", ENTRY, *base)
    assert code == 1
    assert "was not written by registry engine" in err
    code, out, _ = run(capsys, "insecure", "add", ENTRY, *base)
    assert code == 0
    assert "replaced a file written by hand" in out
    assert hosts.with_name("hosts.toml.bak").read_text() == 'server = "https://elsewhere"\n'


def test_docker_with_the_containerd_image_store_gets_hosts_toml_too(capsys, tmp_path):
    code, out, _ = run(
        capsys, "insecure", "add", ENTRY, "--root", str(tmp_path), "--image-store", "containerd"
    )
    assert code == 0
    assert "dockerd uses the containerd image store" in out
    hosts = tmp_path / "etc/docker/certs.d" / ENTRY / "hosts.toml"
    assert tomllib.loads(hosts.read_text())["server"] == f"http://{ENTRY}"
    daemon = json.loads((tmp_path / "etc/docker/daemon.json").read_text())
    assert daemon == {"insecure-registries": [ENTRY]}


def test_rootless_paths(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    code, _, _ = run(capsys, "insecure", "add", ENTRY, "--rootless", "--engine", "all")
    assert code == 0
    assert (tmp_path / ".config/docker/daemon.json").is_file()
    assert (tmp_path / ".config/containerd/certs.d" / ENTRY / "hosts.toml").is_file()
    assert (tmp_path / ".config/containers/registries.conf.d/registry-10.0.0.5_5000.conf").is_file()


# --------------------------------------------------------------------------- trust


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca, ca_key = make_ca()
    client, client_key = make_leaf(ca, ca_key, ["client"])
    files = {"ca": ca, "client": client, "client_key": client_key}
    folder = tmp_path / "pki"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_trust_lays_out_docker_certs_d(capsys, tmp_path, pki):
    root = tmp_path / "root"
    argv = (
        "trust",
        ENTRY,
        "--ca",
        str(pki["ca"]),
        "--client-cert",
        str(pki["client"]),
        "--client-key",
        str(pki["client_key"]),
        "--root",
        str(root),
    )
    code, out, _ = run(capsys, *argv)
    folder = root / "etc/docker/certs.d" / ENTRY
    assert code == 0
    assert sorted(os.listdir(folder)) == ["ca.crt", "client.cert", "client.key"]
    assert (folder / "ca.crt").read_bytes() == pki["ca"].read_bytes()
    assert (folder / "client.cert").read_bytes() == pki["client"].read_bytes()
    assert (folder / "client.key").read_bytes() == pki["client_key"].read_bytes()
    modes = {name: (folder / name).stat().st_mode & 0o777 for name in os.listdir(folder)}
    assert modes == {"ca.crt": 0o644, "client.cert": 0o644, "client.key": 0o600}
    assert "no reload needed" in out
    code, out, _ = run(capsys, *argv)
    assert (code, out.count("unchanged")) == (0, 3)


def test_trust_for_containerd_and_podman(capsys, tmp_path, pki):
    code, _, _ = run(
        capsys,
        "trust",
        ENTRY,
        "--ca",
        str(pki["ca"]),
        "--client-cert",
        str(pki["client"]),
        "--client-key",
        str(pki["client_key"]),
        "--engine",
        "all",
        "--root",
        str(tmp_path),
    )
    assert code == 0
    containerd = tmp_path / "etc/containerd/certs.d" / ENTRY
    assert tomllib.loads((containerd / "hosts.toml").read_text()) == {
        "server": f"https://{ENTRY}",
        "host": {
            f"https://{ENTRY}": {
                "capabilities": ["pull", "resolve", "push"],
                "ca": "ca.crt",
                "client": [["client.cert", "client.key"]],
            }
        },
    }
    assert (containerd / "client.key").stat().st_mode & 0o777 == 0o600
    podman = tmp_path / "etc/containers/certs.d" / ENTRY
    assert sorted(os.listdir(podman)) == ["ca.crt", "client.cert", "client.key"]


def test_trust_remove_takes_it_all_away(capsys, tmp_path, pki):
    base = ("--engine", "all", "--root", str(tmp_path), "--no-backup")
    assert run(capsys, "trust", ENTRY, "--ca", str(pki["ca"]), *base)[0] == 0
    code, out, _ = run(capsys, "trust", ENTRY, "--remove", *base)
    assert code == 0
    assert out.count("removed") == 4  # three ca.crt and containerd's hosts.toml
    for folder in ("etc/docker/certs.d", "etc/containerd/certs.d", "etc/containers/certs.d"):
        assert not (tmp_path / folder / ENTRY).exists()


def test_trust_refuses_what_is_not_a_certificate(capsys, tmp_path, pki):
    code, _, err = run(
        capsys, "trust", ENTRY, "--ca", str(pki["client_key"]), "--root", str(tmp_path)
    )
    assert code == 2
    assert "holds no PEM certificate" in err
    other_key = tmp_path / "other.key"
    other_key.write_bytes(make_ca()[1])
    code, _, err = run(
        capsys,
        "trust",
        ENTRY,
        "--ca",
        str(pki["ca"]),
        "--client-cert",
        str(pki["client"]),
        "--client-key",
        str(other_key),
        "--root",
        str(tmp_path),
    )
    assert code == 2
    assert "do not form a pair" in err
    assert not (tmp_path / "etc").exists()
    code, _, err = run(capsys, "trust", ENTRY, "--ca", str(tmp_path / "missing.crt"))
    assert (code, "no such file" in err) == (2, True)


def test_trust_system_store(capsys, tmp_path, pki):
    (tmp_path / "usr/local/share/ca-certificates").mkdir(parents=True)
    code, out, _ = run(
        capsys, "trust", ENTRY, "--ca", str(pki["ca"]), "--system", "--root", str(tmp_path)
    )
    assert code == 0
    anchor = tmp_path / "usr/local/share/ca-certificates/registry-10.0.0.5_5000.crt"
    assert anchor.read_bytes() == pki["ca"].read_bytes()
    assert f"run `update-ca-certificates` inside {tmp_path}" in out


def test_trust_system_store_on_fedora(capsys, tmp_path, pki):
    (tmp_path / "etc/pki/ca-trust/source/anchors").mkdir(parents=True)
    code, out, _ = run(
        capsys, "trust", ENTRY, "--ca", str(pki["ca"]), "--system", "--root", str(tmp_path)
    )
    assert code == 0
    assert (tmp_path / "etc/pki/ca-trust/source/anchors/registry-10.0.0.5_5000.crt").is_file()
    assert "update-ca-trust extract" in out


def test_trust_dry_run_hides_the_private_key(capsys, tmp_path, pki):
    code, out, _ = run(
        capsys,
        "trust",
        ENTRY,
        "--ca",
        str(pki["ca"]),
        "--client-cert",
        str(pki["client"]),
        "--client-key",
        str(pki["client_key"]),
        "--root",
        str(tmp_path),
        "--dry-run",
    )
    assert code == 0
    assert "PRIVATE KEY" not in out
    assert "(secret content not shown)" in out
    assert "BEGIN CERTIFICATE" in out
    assert not (tmp_path / "etc").exists()


# --------------------------------------------------------------------------- engine state


# `docker info --format '{{json .}}'`, trimmed, from Docker 20.10 (overlay2) and from a
# Docker 28 engine with the containerd image store.
CLASSIC_INFO = {
    "Driver": "overlay2",
    "DriverStatus": [
        ["Backing Filesystem", "extfs"],
        ["Supports d_type", "true"],
        ["Native Overlay Diff", "true"],
        ["userxattr", "false"],
    ],
    "ServerVersion": "20.10.24+dfsg1",
}
CONTAINERD_INFO = {
    "Driver": "overlayfs",
    "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
    "ServerVersion": "28.2.2",
}


def test_containerd_image_store_detection():
    assert engine_host.uses_containerd_image_store(CONTAINERD_INFO)
    assert not engine_host.uses_containerd_image_store(CLASSIC_INFO)
    assert not engine_host.uses_containerd_image_store({"Driver": "vfs", "DriverStatus": None})
    assert not engine_host.uses_containerd_image_store(None)


def test_registry_config_checks():
    config = {
        "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8"],
        "IndexConfigs": {
            "docker.io": {"Name": "docker.io", "Secure": True, "Official": True},
            "h:5000": {"Name": "h:5000", "Secure": False, "Official": False},
        },
        "Mirrors": ["https://mirror.example/"],
    }
    assert engine_host.insecure_listed(config, "h:5000")
    assert engine_host.insecure_listed(config, "10.0.0.0/8")
    assert not engine_host.insecure_listed(config, "docker.io")
    assert not engine_host.insecure_listed(config, "other:5000")
    assert engine_host.mirror_listed(config, "https://mirror.example")
    assert not engine_host.mirror_listed(None, "https://mirror.example")


def test_reload_refuses_a_pid_that_is_not_dockerd(capsys, tmp_path):
    pidfile = write(tmp_path / "docker.pid", f"{os.getpid()}\n")
    code, _, err = run(
        capsys,
        "insecure",
        "add",
        ENTRY,
        "--daemon-json",
        str(tmp_path / "daemon.json"),
        "--reload",
        "--pidfile",
        str(pidfile),
    )
    assert code == 1
    assert "not dockerd (a stale pid file?)" in err
    code, _, err = run(
        capsys,
        "insecure",
        "add",
        ENTRY,
        "--daemon-json",
        str(tmp_path / "daemon.json"),
        "--reload",
        "--pidfile",
        str(tmp_path / "none.pid"),
    )
    assert code == 1
    assert "does not exist (is dockerd running?" in err


def test_reload_dry_run_does_not_signal(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "insecure",
        "add",
        ENTRY,
        "--daemon-json",
        str(tmp_path / "daemon.json"),
        "--reload",
        "--pidfile",
        str(tmp_path / "none.pid"),
        "--dry-run",
    )
    assert code == 0
    assert "would reload dockerd (dry run)" in out


def test_help_names_the_exit_codes(capsys):
    assert engine_host.main(["--help"]) == 0
    assert "0 done or unchanged, 1 failure, 2 usage error" in capsys.readouterr().out


def test_insecure_remove_leaves_the_hosts_toml_of_trust(capsys, tmp_path, pki):
    base = ("--engine", "containerd", "--root", str(tmp_path))
    assert run(capsys, "trust", ENTRY, "--ca", str(pki["ca"]), *base)[0] == 0
    hosts = tmp_path / "etc/containerd/certs.d" / ENTRY / "hosts.toml"
    before = hosts.read_bytes()
    code, out, _ = run(capsys, "insecure", "remove", ENTRY, *base)
    assert code == 0
    assert "holds the HTTPS settings of `trust`" in out
    assert hosts.read_bytes() == before
    assert run(capsys, "insecure", "list", *base)[1] == ""


def test_not_root_means_the_rootless_engines(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_host.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    code, out, _ = run(capsys, "insecure", "add", ENTRY)
    assert code == 0
    assert out.startswith("not running as root: configured the rootless engines of this user")
    assert (tmp_path / "config/docker/daemon.json").is_file()
