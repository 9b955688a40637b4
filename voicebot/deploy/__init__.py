"""Deployment files that ship with voicebot: the nginx configuration for a VM."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf")


def nginx_config(server_name: str, port: int | Sequence[int], *, listen: str = "443", cert: str = "",
                 key: str = "", access_log: str = "/var/log/nginx/access.log") -> str:
    """The nginx site for voicebot on 127.0.0.1:``port`` (or several instances, round robin); TLS when
    ``cert`` and ``key`` are given."""
    ports = [port] if isinstance(port, int) else list(port)
    upstreams = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in ports)
    if cert and key:
        listening = f"listen {listen} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};"
    else:
        listening = f"listen {listen};"
    return (NGINX_TEMPLATE.read_text().replace("@LISTEN@", listening)
            .replace("@SERVER_NAME@", server_name).replace("@UPSTREAMS@", upstreams)
            .replace("@ACCESS_LOG@", access_log))
