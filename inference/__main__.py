"""``python -m inference``: the inference server in the foreground (uvicorn, one process; the engine holds the
models). Settings come from ``SPARSEGRAD_*`` variables as for every service process; the options override the
data dir and the engine."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from sparsegrad_service.settings import DEFAULT_INFERENCE_PORT, Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_INFERENCE_PORT)
    parser.add_argument("--data-dir", default=None, help="the service's data dir (SPARSEGRAD_DATA_DIR)")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default=None,
                        help="the engine (SPARSEGRAD_INFERENCE_BACKEND; default transformers)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"data_dir": args.data_dir, "inference_backend": args.backend}.items() if v}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .app import create_app
    from .vllm_backend import VllmMissing

    try:
        app = create_app(settings)
    except VllmMissing as exc:
        parser.exit(2, f"error: {exc}\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
