"""`python benchmarks/heatmap_buckets.py [--variables N --records N --seconds S]`: heatmap bucket-count load.

Issue #13 item 17: clients sending heatmap requests with bucket counts not
seen before must not slow the other clients down. Four "random" threads ask
for the heatmap of one tag with a random `buckets` in 1..1000; one "victim"
thread asks for the dashboard's usual request (buckets=100, cached after its
first answer). Prints the victim's p50/p99 with and without the random
clients, and the random clients' own p50/p99. In-process through werkzeug
over the Python loader, so the same script times any commit: run it from
that commit's tree.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import backend  # noqa: E402  (its synthetic record writer)

from tb_varupdate import plugin  # noqa: E402
from tb_varupdate.format import metadata as md  # noqa: E402


def _client(logdir):
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={md.PLUGIN_NAME: 0})
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(data_provider=provider, logdir=logdir, sampling_hints={md.PLUGIN_NAME: 0})
    app = application.TensorBoardWSGI([plugin.VarUpdatePlugin(context)], data_provider=provider)
    return lambda: werkzeug_test.Client(app)


def _percentiles(samples):
    samples = sorted(samples)
    return statistics.median(samples) * 1e3, samples[min(len(samples) - 1, int(0.99 * len(samples)))] * 1e3


def _victim(make_client, seconds, out):
    client = make_client()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        response = client.get("/data/plugin/varupdate/heatmap?run=run&tag=%s&buckets=100" % md.updates_tag("model"))
        assert response.status_code == 200, response.status_code
        out.append(time.perf_counter() - start)
        # A dashboard reloading its heatmap now and then, not a tight loop.
        time.sleep(0.05)


def _random(make_client, seconds, out, seed):
    client = make_client()
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        response = client.get("/data/plugin/varupdate/heatmap?run=run&tag=%s&buckets=%d"
                              % (md.updates_tag("model"), rng.randint(1, 1000)))
        assert response.status_code == 200, response.status_code
        out.append(time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variables", type=int, default=1000)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "tb-varupdate-heatmap-load"))
    args = parser.parse_args()
    run_dir = os.path.join(args.logdir, "%dx%d" % (args.variables, args.records), "run")
    if not os.path.isdir(run_dir):
        backend.write_run(run_dir, args.variables, args.records, seed=0)
    make_client = _client(os.path.dirname(run_dir))
    alone, crowded, randoms = [], [], []
    _victim(make_client, 1.0, [])  # the first answer reads and caches the tag
    _victim(make_client, args.seconds / 3, alone)
    threads = [threading.Thread(target=_random, args=(make_client, args.seconds, randoms, seed)) for seed in range(4)]
    threads.append(threading.Thread(target=_victim, args=(make_client, args.seconds, crowded)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("%d variables x %d records, %.0f s" % (args.variables, args.records, args.seconds))
    for label, samples in (("victim alone", alone), ("victim beside 4 random clients", crowded),
                           ("random clients", randoms)):
        p50, p99 = _percentiles(samples)
        print("%-32s n=%5d  p50 %8.1f ms  p99 %8.1f ms" % (label, len(samples), p50, p99))


if __name__ == "__main__":
    main()
