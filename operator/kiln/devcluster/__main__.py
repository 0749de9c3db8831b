"""`python -m kiln.devcluster`: serve the dev cluster in the foreground."""

import argparse
import asyncio
import logging
import pathlib

from kiln.devcluster import cluster, config

parser = argparse.ArgumentParser(prog="python -m kiln.devcluster")
parser.add_argument("--data-dir", type=pathlib.Path, default=cluster.DEFAULT_HOME)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--in-memory", action="store_true", help="keep objects in memory only")
parser.add_argument("--config", type=pathlib.Path, default=None, help="a dev cluster config file (YAML)")
arguments = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = config.load(arguments.config)
asyncio.run(cluster.serve_forever(arguments.data_dir, arguments.port, not arguments.in_memory, settings))
