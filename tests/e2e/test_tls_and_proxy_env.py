"""TLS to providers and proxies from the environment, through `modelux serve` (docs/executor.md,
"Transport"): certificates are verified against the system store by default (here pointed at a
CA the test makes with `trustme`, through OpenSSL's SSL_CERT_FILE), SNI names the host, a
certificate for another host name is refused, and HTTPS goes through an HTTPS_PROXY CONNECT
tunnel unless NO_PROXY names the host. The provider is the mock behind a local TLS front."""

from __future__ import annotations

import openai
import pytest
import trustme

from e2e_support import MESSAGES, MOCK_TEXT, base_config
from net_support import ConnectProxy, TlsFront, start_proxy_with_env


@pytest.fixture
def ca(tmp_path):
    authority = trustme.CA()
    path = tmp_path / "test-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, str(path)


@pytest.fixture
def fronts():
    started = []

    def start(cert, upstream_port):
        f = TlsFront(cert, upstream_port)
        started.append(f)
        return f

    yield start
    for f in started:
        f.close()


def https_config(mock, tmp_path, front_port: int) -> dict:
    cfg = base_config(mock.url, tmp_path / "traces.db")
    cfg["providers"]["openai"]["base_url"] = f"https://localhost:{front_port}/v1"
    return cfg


def test_trusted_ca_succeeds_and_sni_names_the_host(mock, tmp_path, ca, fronts):
    authority, ca_file = ca
    front = fronts(authority.issue_cert("localhost"), mock.port)
    proxy = start_proxy_with_env(https_config(mock, tmp_path, front.port), tmp_path, "tls-ok", {"SSL_CERT_FILE": ca_file})
    try:
        r = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert r.choices[0].message.content == MOCK_TEXT
        assert front.sni and front.sni[0] == "localhost"
        assert mock.requests_for("gpt-4o-mini") == 1
    finally:
        proxy.proc.stop()


def test_unknown_ca_is_a_clear_certificate_error_not_a_crash(mock, tmp_path, ca, fronts):
    authority, _ = ca
    front = fronts(authority.issue_cert("localhost"), mock.port)
    proxy = start_proxy_with_env(https_config(mock, tmp_path, front.port), tmp_path, "tls-unknown-ca", {})
    try:
        with pytest.raises(openai.APIStatusError) as exc:
            proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert exc.value.status_code in (502, 503), exc.value
        assert "certificate verify failed" in exc.value.message, exc.value.message
        trace = proxy.trace(exc.value.response.headers["x-request-id"])
        assert trace["attempts"][0]["outcome"] == "connection", trace["attempts"]
        assert mock.requests_for("gpt-4o-mini") == 0  # nothing went past the TLS front
        assert proxy.proc.alive()
        assert proxy.request("GET", "/healthz").status == 200
    finally:
        proxy.proc.stop()


def test_certificate_for_another_host_name_is_refused(mock, tmp_path, ca, fronts):
    authority, ca_file = ca
    front = fronts(authority.issue_cert("other.example"), mock.port)
    proxy = start_proxy_with_env(https_config(mock, tmp_path, front.port), tmp_path, "tls-wrong-host", {"SSL_CERT_FILE": ca_file})
    try:
        with pytest.raises(openai.APIStatusError) as exc:
            proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert "TLS handshake with localhost" in exc.value.message, exc.value.message
        assert mock.requests_for("gpt-4o-mini") == 0
    finally:
        proxy.proc.stop()


@pytest.mark.parametrize("bypass", [False, True], ids=["tunnel", "no_proxy"])
def test_https_proxy_from_the_environment_and_no_proxy(mock, tmp_path, ca, fronts, bypass):
    authority, ca_file = ca
    front = fronts(authority.issue_cert("localhost"), mock.port)
    tunnel = ConnectProxy()
    env = {"SSL_CERT_FILE": ca_file, "HTTPS_PROXY": f"http://127.0.0.1:{tunnel.port}"}
    if bypass:
        env["NO_PROXY"] = "example.org, localhost"
    proxy = start_proxy_with_env(https_config(mock, tmp_path, front.port), tmp_path, f"tls-proxy-{bypass}", env)
    try:
        client = proxy.client()
        for _ in range(2):
            r = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert r.choices[0].message.content == MOCK_TEXT
        if bypass:
            assert tunnel.tunnels == []
        else:
            # One tunnel, kept alive in the pool for the second request; TLS ran end to end
            # through it (the front saw the SNI name, not the proxy).
            assert tunnel.tunnels == [f"localhost:{front.port}"]
        assert front.sni == ["localhost"]
        assert mock.requests_for("gpt-4o-mini") == 2
    finally:
        proxy.proc.stop()
        tunnel.close()
