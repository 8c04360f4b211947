"""Write a `.env` for docker-compose from `.env.example`, with a fresh random value for every empty secret.

    python3 deploy/make_env.py > .env          # standard library only: any Python 3.8+
    python3 deploy/make_env.py --example path/to/.env.example

Secrets are the empty variables whose names contain PASSWORD, SECRET, FERNET_KEY or TOKENS. Passwords are
URL-safe (they sit inside connection URLs); AIRFLOW_FERNET_KEY is a valid Fernet key (urlsafe base64 of
32 random bytes). Non-secret values and comments are copied unchanged; a secret that already has a value
is kept. Nothing is written to disk by this script: redirect its output.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET_KEY|TOKENS")
ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def new_secret(name: str) -> str:
    if name.endswith("FERNET_KEY"):
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(24)  # 32 characters from [A-Za-z0-9_-]: URL-safe, > MinIO's 8 minimum


def render(example: str) -> str:
    out = []
    for line in example.splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match and SECRET_NAME.search(match["name"]) and not match["value"].strip():
            line = f"{match['name']}={new_secret(match['name'])}"
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--example",
        type=Path,
        default=Path(__file__).resolve().parents[1] / ".env.example",
        help="template to fill (default: the repository's .env.example)",
    )
    args = parser.parse_args(argv)
    if not args.example.is_file():
        print(f"make_env: no template at {args.example}", file=sys.stderr)
        return 1
    sys.stdout.write(render(args.example.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
