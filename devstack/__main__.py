"""`python -m devstack [--host H] [--port P]`: what `make run` starts (PORT overrides 8000)."""
from __future__ import annotations

import argparse
import logging
import os

from devstack.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
