"""`python -m devstack [--host H] [--port P] [--faults SPEC]`: what `make run` starts (PORT overrides
8000). `--faults` (or WEBIM_FAULTS) switches on the fault mode, devstack/faults.py."""
from __future__ import annotations

import argparse
import logging
import os

from devstack.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--faults", default=os.environ.get("WEBIM_FAULTS", ""),
                        help='AWS-level faults, e.g. "seed=1,error=0.02,death=0.01,dup_job=0.05,twice=0.01,gone=0.02"')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    serve(args.host, args.port, faults_spec=args.faults)


if __name__ == "__main__":
    main()
