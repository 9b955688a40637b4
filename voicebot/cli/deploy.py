"""``voicebot nginx-config``: the nginx site for a VM."""

from __future__ import annotations

import argparse
import sys

from .base import Command


def register(command: Command) -> None:
    """Add this module's commands to the voicebot command."""
    nginx = command("nginx-config", "print the nginx site that keeps slow clients away from voicebot on a VM",
                    "Prints an nginx server block for voicebot listening on 127.0.0.1:PORT. Save it as "
                    "/etc/nginx/sites-enabled/voicebot and raise worker_connections as it says.")
    nginx.add_argument("--server-name", required=True, help="the public host name, e.g. bot.example.com")
    nginx.add_argument("--port", type=int, action="append",
                       help="voicebot's PORT on this machine (8000); again for each instance behind this nginx")
    nginx.add_argument("--listen", default="", help="what nginx listens on: 443 with a certificate, 80 without")
    nginx.add_argument("--tls-cert", default="", help="certificate file, e.g. certbot's fullchain.pem")
    nginx.add_argument("--tls-key", default="", help="its private key file, e.g. certbot's privkey.pem")
    nginx.set_defaults(run=run_nginx_config)


def run_nginx_config(args: argparse.Namespace) -> int:
    from ..deploy import SiteError, nginx_config

    try:
        site = nginx_config(args.server_name, args.port or [8000], listen=args.listen, cert=args.tls_cert,
                            key=args.tls_key)
    except SiteError as exc:
        print(f"voicebot nginx-config: {exc}", file=sys.stderr)
        return 2
    print(site, end="")
    return 0
