"""The web UI served to other machines (``ui.remote_listen``), in a network namespace of its own:
a real daemon listens on a non-loopback address there over TLS, and clients in the same
namespace (separate processes) log in with the password, are throttled when guessing, are
refused for another host name or origin, and find each door's connections capped."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import PEERLIGHT, DaemonProcess, cli, cli_json, new_node, write_config

ADDRESS = "10.77.0.1"
PORT = 7781
PASSWORD = "correct horse battery staple"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace with loopback and an interface holding ``ADDRESS``."""
    name = f"pl-ui-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        for command in (
            ("link", "set", "lo", "up"),
            ("link", "add", "u0", "type", "veth", "peer", "name", "u1"),  # both ends inside: an interface that is not loopback
            ("addr", "add", f"{ADDRESS}/24", "dev", "u0"),
            ("link", "set", "u0", "up"),
            ("link", "set", "u1", "up"),
        ):
            _ip("netns", "exec", name, "ip", *command)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _certificate(folder: Path) -> None:
    """A self-signed certificate for ``ADDRESS`` (the clients trust exactly it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerlight test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ADDRESS)), x509.DNSName("nas.example")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "ui.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "ui.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def in_namespace(namespace: str, certificate: Path, code: str) -> Any:
    """Run ``code`` as another process in the namespace, with ``client`` (an httpx client of the
    remote UI trusting only its certificate) at hand; what it assigns to ``result`` comes back."""
    prelude = f"""
import json, socket, time, httpx
client = httpx.Client(base_url="https://{ADDRESS}:{PORT}", verify={str(certificate)!r}, timeout=30)
result = None
"""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", prelude + textwrap.dedent(code) + "\nprint(json.dumps(result))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_other_machines_log_in_with_the_password_only(namespace, tmp_path) -> None:
    data_dir = new_node(tmp_path / "node")
    _certificate(data_dir)
    certificate = data_dir / "ui.crt"
    write_config(data_dir, f'[ui]\nremote_listen = "{ADDRESS}"\nremote_port = {PORT}\ntls_certificate = "ui.crt"\ntls_key = "ui.key"\nmax_connections = 4\nremote_hosts = ["nas.example"]\n')
    daemon = DaemonProcess(data_dir, wrapper=("ip", "netns", "exec", namespace))
    try:
        assert daemon.wait_ready() == "ready", daemon.stderr()
        link = cli_json(data_dir, "ui", "--no-browser")
        assert link["remote"] == f"https://{ADDRESS}:{PORT}"

        # No password yet: nobody gets in, and the login page says how to set one.
        before = in_namespace(namespace, certificate, """
            result = [client.get("/").status_code, client.get("/login").text]
        """)
        assert before[0] == 401 and "peerlight ui password" in before[1]
        refused = cli(data_dir, "ui", "password", "--stdin", "--json")
        assert refused.returncode != 0 and "at least 12" in refused.stdout
        set_done = subprocess.run([str(PEERLIGHT), "ui", "password", "--stdin", "--data-dir", str(data_dir)], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert set_done.returncode == 0, set_done.stderr
        stored = (data_dir / "ui-password").read_text()
        assert PASSWORD not in stored and '"kdf": "scrypt"' in stored and (os.stat(data_dir / "ui-password").st_mode & 0o777) == 0o600

        session = in_namespace(namespace, certificate, f"""
            origin = {{"Origin": "https://{ADDRESS}:{PORT}"}}
            other_host = client.get("/login", headers={{"Host": "rebound.example:{PORT}"}}).status_code
            named_host = client.get("/login", headers={{"Host": "nas.example:{PORT}"}}).status_code
            cross_site = client.post("/login", data={{"password": {PASSWORD!r}}}, headers={{"Origin": "https://evil.example"}}).status_code
            wrong = client.post("/login", data={{"password": "not it at all"}}, headers=origin)
            right = client.post("/login", data={{"password": {PASSWORD!r}}}, headers=origin)
            cookie = right.headers.get("set-cookie", "")
            home = client.get("/")
            status = client.get("/status")
            no_token = client.post("/logout", headers=origin).status_code
            devices = client.get("/devices").text
            import re
            token = {{**origin, "X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]+)"', devices).group(1)}}
            handing_on = [client.post("/devices/pair", data={{"scope": "global"}}, headers=token).status_code,
                          client.post("/shares", data={{"name": "x", "scope": "global", "permission": "public"}}, headers=token).status_code,
                          client.post("/shares/local/invite", data={{"can": "fetch"}}, headers=token).status_code]
            loopback_host = client.get("/login", headers={{"Host": "127.0.0.1:{PORT}"}}).status_code
            result = {{"other_host": other_host, "named_host": named_host, "cross_site": cross_site, "wrong": [wrong.status_code, "Wrong password" in wrong.text],
                      "right": right.status_code, "cookie": cookie, "home": home.status_code, "status": status.status_code, "no_token": no_token,
                      "session": dict(client.cookies), "pair_form": "/devices/pair" in devices, "handing_on": handing_on, "loopback_host": loopback_host}}
        """)
        assert session["other_host"] == 421 and session["named_host"] == 200 and session["cross_site"] == 403
        assert session["wrong"] == [401, True] and session["right"] == 303
        cookie = session["cookie"].lower()
        # What outlives a password (a paired device, a share, an invite) is made on the node only.
        assert not session["pair_form"] and session["handing_on"] == [403, 403, 403]
        assert session["loopback_host"] == 421  # a cookie set at 127.0.0.1 would reach every program there
        assert cookie.startswith(f"__host-peerlight_session_{PORT}=") and "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert session["home"] == 200 and session["status"] == 200 and session["no_token"] == 403
        loopback_only = in_namespace(namespace, certificate, f"""
            client.cookies.update({{"peerlight_session_{link['address'].rsplit(':', 1)[1]}": "x"}})
            result = client.get("/", headers={{"Host": "{link['address'].removeprefix('http://')}"}}).status_code
        """)
        assert loopback_only == 421  # the loopback name is not served at the door for other machines

        # Each door holds at most max_connections (4): a fifth is closed at once, and a freed slot serves again.
        capped = in_namespace(namespace, certificate, f"""
            time.sleep(6)  # the connections of the clients before are released within hypercorn's keep-alive time (5 s)
            held = [socket.create_connection(("{ADDRESS}", {PORT}), timeout=10) for _ in range(4)]
            time.sleep(0.5)
            fifth = socket.create_connection(("{ADDRESS}", {PORT}), timeout=10)
            fifth.settimeout(10)
            try:
                closed = fifth.recv(1) == b""
            except ConnectionResetError:
                closed = True
            held.pop().close()
            tries = []
            for _ in range(20):
                time.sleep(0.25)
                try:
                    tries.append(client.get("/login").status_code)
                    break
                except httpx.HTTPError as exc:
                    tries.append(repr(exc))
            result = [closed, tries[-1]]
        """)
        assert capped == [True, 200]

        # A new password (or none) logs out every browser of other machines.
        cli_json(data_dir, "ui", "password", "--clear")
        assert not (data_dir / "ui-password").exists()
        after = in_namespace(namespace, certificate, f"""
            client.cookies.update({session["session"]!r})
            result = client.get("/").status_code
        """)
        assert after == 401

        # Guessing is throttled before any password is checked: five wrong tries from one address
        # (one was made above), then even the right password waits.
        subprocess.run([str(PEERLIGHT), "ui", "password", "--stdin", "--data-dir", str(data_dir)], input=PASSWORD + "\n", check=True, capture_output=True, text=True, timeout=60)
        throttled = in_namespace(namespace, certificate, f"""
            origin = {{"Origin": "https://{ADDRESS}:{PORT}"}}
            codes = [client.post("/login", data={{"password": f"guess {{n}}"}}, headers=origin).status_code for n in range(4)]
            last = client.post("/login", data={{"password": {PASSWORD!r}}}, headers=origin)
            result = [codes, last.status_code, last.headers.get("retry-after")]
        """)
        assert throttled[0] == [401] * 4 and throttled[1] == 429 and int(throttled[2]) > 60
    finally:
        daemon.stop()


def test_guessing_is_bounded_per_address_and_in_all() -> None:
    from peerlight.node.webui.passwords import ALL_FAILURES, CLIENT_FAILURES, WINDOW_SECONDS, LoginThrottle, Throttled

    clock = [1000.0]
    throttle = LoginThrottle(now=lambda: clock[0])
    for _ in range(CLIENT_FAILURES):
        throttle.check("a")
        throttle.failed("a")
    with pytest.raises(Throttled):
        throttle.check("a")
    throttle.check("b")  # another address still may
    clock[0] += WINDOW_SECONDS + 1
    throttle.check("a")  # the window passed
    for n in range(ALL_FAILURES):  # many addresses, one attacker
        throttle.failed(f"10.0.{n // 250}.{n % 250}")
    with pytest.raises(Throttled) as waited:
        throttle.check("never seen")
    assert 0 < waited.value.retry_after <= WINDOW_SECONDS
    throttle.succeeded("b")  # but an address that logged in before is not locked out by strangers
    throttle.check("b")


async def test_a_tampered_password_file_costs_nothing_and_opens_nothing(tmp_path) -> None:
    from peerlight.node.webui.passwords import PasswordError, UiPassword

    password = UiPassword(tmp_path / "ui-password")
    assert not await password.check("anything at all", "a")  # none set: nobody logs in
    with pytest.raises(PasswordError):
        password.set("short")
    password.set("a long enough secret")
    assert await password.check("a long enough secret", "a") and not await password.check("a long enough secreT", "a")
    record = json.loads(password.path.read_text())
    password.path.write_text(json.dumps({**record, "n": 2**30}))  # 1 TB of scrypt memory, if obeyed
    assert not await password.check("a long enough secret", "a")


def test_logins_at_one_door_never_log_out_the_other() -> None:
    from peerlight.node.webui.sessions import MAX_SESSIONS, Sessions

    sessions = Sessions(3600)
    local_id, _ = sessions.redeem(sessions.login_token())
    remote = [sessions.open("remote")[0] for _ in range(MAX_SESSIONS + 5)]
    assert sessions.get(local_id) is not None  # 69 remote logins later
    assert sessions.get(remote[0], "remote") is None and sessions.get(remote[-1], "remote") is not None
    assert sessions.get(remote[-1]) is None and sessions.get(local_id, "remote") is None  # each valid at its own door only
