"""Small requests beside big ones (issue 15, part 3): single-row latency of `openknn serve`
with single-row traffic alone, then with 581-row requests on other connections at the same
time, on the Kaggle covtype rows, from one run.

For each index (default Flat, where a 581-row search is longest): ``--small`` keep-alive
connections (default 28) POST one test row each, as fast as answers come, for ``--seconds``;
then the same again while ``--big`` more connections (default 4; 32 in all) POST 581 test
rows each. The load is two wrk processes (Debian's package), each with its own latency
histogram, so the single-row figures are the single rows' own. Printed: single-row
requests/s, p50 and p99 alone and mixed, the p99 ratio (the issue's goal: <= 2), and the
581-row requests' rate and latency while mixed.

    .venv/bin/python benchmarks/serving_mixed.py [--path covtype.csv.gz] [--seconds 20]
        [--index faiss.Flat ...] [--small 28] [--big 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from serving_floor import (  # noqa: E402
    DEFAULT_DATA,
    INDEXES,
    openknn_command,
    serving,
    set_up,
    wrk,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--index", action="append", choices=list(INDEXES))
    parser.add_argument("--small", type=int, default=28)
    parser.add_argument("--big", type=int, default=4)
    args = parser.parse_args()
    index_types = args.index or ["faiss.Flat"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = set_up(root, args.path, index_types)
        split, bodies, models, probe = setup.split, setup.bodies, setup.models, setup.probe
        for index_type in index_types:
            with serving(openknn_command(models[index_type]), root / f"{index_type}.log",
                         probe) as url:
                wrk(url, bodies["single"][1], args.small, 2)  # warm up
                alone = wrk(url, bodies["single"][1], args.small, args.seconds)
                with ThreadPoolExecutor(2) as pool:
                    small = pool.submit(wrk, url, bodies["single"][1], args.small,
                                        args.seconds)
                    big = pool.submit(wrk, url, bodies["581"][1], args.big, args.seconds)
                    mixed, heavy = small.result(), big.result()
            rows.append((index_type, alone, mixed, heavy))
    print(f"covtype rows: {len(split.train_y)} train; {args.small} single-row connections, "
          f"{args.big} 581-row connections; wrk {args.seconds:g} s each")
    print(f"{'index':<15}{'single alone r/s':>17}{'p50':>8}{'p99':>8}{'mixed r/s':>11}"
          f"{'p50':>8}{'p99':>8}{'p99 ratio':>10}{'581 r/s':>9}{'p50':>8}{'p99':>8}")
    for index_type, alone, mixed, heavy in rows:
        print(f"{index_type:<15}{alone[0]:17.0f}{alone[1]:8.2f}{alone[2]:8.2f}{mixed[0]:11.0f}"
              f"{mixed[1]:8.2f}{mixed[2]:8.2f}{mixed[2] / alone[2]:10.2f}{heavy[0]:9.1f}"
              f"{heavy[1]:8.2f}{heavy[2]:8.2f}")
    print("(p50 / p99 in ms; goal: single-row p99 mixed <= 2x alone)")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"wrk failed: {exc.stderr}") from exc
