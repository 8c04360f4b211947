"""Container health check: GET a URL; exit 0 on HTTP 2xx, 1 otherwise with the reason on stderr.

    python /app/deploy/healthcheck.py [URL]

Default URL: $CHURNOPS_HEALTHCHECK_URL, else http://127.0.0.1:8000/health (the serving app: 503 until a
@champion model is loaded, so a replica counts as healthy only once it can answer /predict).
Standard library only: the image has no curl, and this runs every 30 s in every container.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/health"


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed local URL)
            return 200 <= response.status < 300, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace").strip()
        return False, f"{url}: HTTP {exc.code} {body}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("CHURNOPS_HEALTHCHECK_URL") or DEFAULT_URL
    ok, detail = check(url)
    print(detail, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
