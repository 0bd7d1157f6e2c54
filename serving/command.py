"""`linnet serve`: the online categorization service over a model directory (docs/operations.md)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from aiohttp import web

from pipelines.embed import NO_CACHE, EmbedConfig, EmbeddingOptions
from pipelines.partitions import new_attempt
from pipelines.usage import ArgumentParser, UsageError
from serving.app import Limits, create_app
from serving.categorizer import OnlineCategorizer

LOGGER = logging.getLogger(__name__)


def parser() -> ArgumentParser:
    defaults = Limits()
    parser = ArgumentParser(prog="linnet serve", description=__doc__)
    parser.add_argument("--model", required=True, help="model directory (`linnet train`), local or gs://")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--store_context", "--store-context", dest="store_context", default=None,
                        help="the store-context tables the nightly `linnet score --store_context DIR` keeps: "
                             "a product gets the context, and so the decision, it gets in the nightly table; "
                             "default: a request's products give each other context")
    parser.add_argument("--image_root", "--image-root", dest="image_root", default=None,
                        help="relative image paths resolve against it, and local paths must lie under it "
                             "(default: remote URIs and inline base64 photos only)")
    parser.add_argument("--max_batch", "--max-batch", dest="max_batch", type=int, default=defaults.max_batch,
                        help="products per model call (concurrent requests are batched together)")
    parser.add_argument("--max_wait_ms", "--max-wait-ms", dest="max_wait_ms", type=float,
                        default=defaults.max_wait_s * 1000, help="how long a request waits for company")
    parser.add_argument("--max_queue", "--max-queue", dest="max_queue", type=int, default=defaults.max_queue,
                        help="products waiting at most; more are refused with 503")
    parser.add_argument("--max_products", "--max-products", dest="max_products", type=int,
                        default=defaults.max_products, help="products per request at most (413 past it)")
    parser.add_argument("--max_body_mb", "--max-body-mb", dest="max_body_mb", type=float,
                        default=defaults.max_body_bytes / 2**20, help="request body size limit (413 past it)")
    parser.add_argument("--timeout_s", "--timeout-s", dest="timeout_s", type=float,
                        default=defaults.timeout_s, help="per-request timeout (504 past it)")
    parser.add_argument("--drain_s", "--drain-s", dest="drain_s", type=float, default=30.0,
                        help="on SIGTERM, how long in-flight requests may take to finish")
    EmbeddingOptions._add_argparse_args(parser)
    # Online, most texts are new and a disk cache would only grow (in memory, on Cloud Run's filesystem).
    parser.set_defaults(embedding_cache=NO_CACHE)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests and exit 0."""
    flags = parser().parse_args(list(argv or []))
    if flags.embedding_table:
        raise UsageError("--embedding_table is for the batch pipelines: the service embeds what it is sent")
    limits = Limits(max_products=flags.max_products, max_body_bytes=int(flags.max_body_mb * 2**20),
                    timeout_s=flags.timeout_s, max_batch=flags.max_batch, max_wait_s=flags.max_wait_ms / 1000,
                    max_queue=flags.max_queue)
    run_id = f"serve-{new_attempt()}"
    embed = EmbedConfig.from_flags(flags, flags.model)

    def load() -> OnlineCategorizer:
        return OnlineCategorizer(flags.model, embed, flags.store_context, run_id, max(limits.max_batch, 1))

    app = create_app(load, limits, flags.image_root)
    LOGGER.info("serving %s on http://%s:%d (run %s)", flags.model, flags.host, flags.port, run_id)
    web.run_app(app, host=flags.host, port=flags.port, shutdown_timeout=flags.drain_s, print=None,
                access_log=None)
    # Drained: every answer is sent and nothing is left to write. The native runtimes' own teardown
    # (TensorFlow's and ONNX Runtime's thread pools) takes tens of seconds at interpreter exit, time an
    # orchestrator's grace period should not spend, so the process ends here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
