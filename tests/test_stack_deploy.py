"""The production configs in deploy/ as far as this machine can check them: `nginx -t` on the TLS proxy of the
team stack (Debian's nginx, $ARGML_NGINX as .ci/run unpacks it), `systemd-analyze verify` on the units, and
`python -m argml.stack configure` writing the files the units read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def nginx_binary() -> str:
    found = os.environ.get("ARGML_NGINX") or shutil.which("nginx")
    if not found:
        pytest.skip("no nginx: set ARGML_NGINX (.ci/run unpacks Debian's nginx into .cache/nginx)")
    return found


def test_nginx_accepts_the_team_tls_config(tmp_path):
    certificate, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=mlflow.argml.example.org", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    site = (DEPLOY / "nginx-team.conf").read_text().replace("/etc/ssl/argml/", f"{tmp_path}/")
    assert site.count(str(tmp_path)) == 4
    (tmp_path / "team.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        "pid nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n    access_log off;\n"
        # the unpacked binary's compiled-in temp folders (/var/lib/nginx) are not there: the prefix's instead
        + "".join(f"    {kind}_temp_path {kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    include {tmp_path}/team.conf;\n}}\n")
    result = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
    # the check can fail: a certificate that is not there is refused
    (tmp_path / "team.conf").write_text(site.replace(str(certificate), str(tmp_path / "missing.pem")))
    result = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "missing.pem" in result.stderr


def test_systemd_units_verify(tmp_path):
    """systemd-analyze checks each unit's syntax and that its programs exist: the venv's paths point at this
    environment's (the units say /opt/argml/venv), PostgreSQL's at the installed version's."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    postgres = Path(os.path.realpath(shutil.which("postgres") or shutil.which("pg_ctl"))).parent
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        text = unit.read_text().replace("/opt/argml/venv", sys.prefix).replace("/usr/lib/postgresql/15/bin", str(postgres))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(path) for path in tmp_path.iterdir())
    assert len(units) == 5
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    broken = tmp_path / "argml-seaweedfs.service"
    broken.write_text(broken.read_text().replace("ExecStart=", "ExecStrat="))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True)
    assert "ExecStrat" in result.stderr


def test_configure_writes_the_files_the_units_read(tmp_path):
    folder = tmp_path / "etc-argml"
    command = [sys.executable, "-m", "argml.stack", "configure", "--dir", str(folder)]
    subprocess.run(command, check=True, capture_output=True)
    state = json.loads((folder / "stack.json").read_text())
    identities = json.loads((folder / "s3-identities.json").read_text())["identities"]
    assert sorted(item["name"] for item in identities) == ["admin", "mlflow", "reader", "trainer"]
    env = dict(line.split("=", 1) for line in (folder / "mlflow.env").read_text().splitlines())
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith(f"@127.0.0.1:{state['ports']['postgres']}/mlflow")
    assert env["AWS_ACCESS_KEY_ID"] == state["s3_keys"]["mlflow"]["key"]
    assert "mlflow_auth" in (folder / "basic_auth.ini").read_text()
    for name in ("stack.json", "s3-identities.json", "mlflow.env", "basic_auth.ini"):
        assert (folder / name).stat().st_mode & 0o077 == 0, name
    # run again: the secrets stay (the databases and users' settings hold them)
    subprocess.run(command, check=True, capture_output=True)
    assert json.loads((folder / "stack.json").read_text())["s3_keys"] == state["s3_keys"]
    units = (DEPLOY / "systemd" / "argml-mlflow.service").read_text()
    assert "EnvironmentFile=/etc/argml/mlflow.env" in units and "${MLFLOW_BACKEND_STORE_URI}" in units
