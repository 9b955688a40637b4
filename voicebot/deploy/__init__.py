"""Deployment files that ship with voicebot: the nginx configuration for a VM."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf")


class SiteError(ValueError):
    """The site asked for cannot be written (a TLS port without a certificate)."""


def nginx_config(server_name: str, port: int | Sequence[int], *, listen: str = "", cert: str = "",
                 key: str = "", access_log: str = "/var/log/nginx/access.log", service: str = "",
                 resolver: str = "") -> str:
    """The nginx site for voicebot on 127.0.0.1:``port`` (or several instances, round robin); TLS when
    ``cert`` and ``key`` are given (listening on 443 unless ``listen`` says), plain HTTP on 80 otherwise.
    With ``service`` (``voicebot:8000``) the instances are whatever that name resolves to, asked of
    ``resolver`` again as instances come and go (``docker compose --scale``).

    Raises SiteError for a site that would not do what it says: a certificate without its key (or the
    other way round), or port 443 without TLS (a client speaking TLS to plain HTTP gets nothing it can read).
    """
    if bool(cert) != bool(key):
        raise SiteError("give both --tls-cert and --tls-key, or neither")
    tls = bool(cert and key)
    listen = listen or ("443" if tls else "80")
    if not tls and listen.rsplit(":", 1)[-1].split()[0] == "443":
        raise SiteError("port 443 is for TLS: give --tls-cert and --tls-key, or --listen another port "
                        "(80 behind a TLS terminator)")
    ports = [port] if isinstance(port, int) else list(port)
    if service:
        upstreams = f"    zone voicebot 64k;\n    server {service} resolve;"
        listen_extra = f"\n    resolver {resolver} valid=5s ipv6=off;"
    else:
        upstreams = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in ports)
        listen_extra = ""
    if tls:
        listening = f"listen {listen} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};"
    else:
        listening = f"listen {listen};"
    return (NGINX_TEMPLATE.read_text().replace("@LISTEN@", listening + listen_extra)
            .replace("@SERVER_NAME@", server_name).replace("@UPSTREAMS@", upstreams)
            .replace("@ACCESS_LOG@", access_log))


def compose_nginx_config() -> str:
    """compose.yaml's nginx site: every scaled voicebot container, found through Docker's DNS."""
    return nginx_config("_", [], listen="80", service="voicebot:8000", resolver="127.0.0.11")
