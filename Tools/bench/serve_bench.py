"""`lorafuse serve` against `lorafuse generate` on the toy world, CPU backend, release build.

1. Latency: `lorafuse generate` (the anchor: it loads the models, samples, decodes, exits)
   and the same request served by an embedded `lorafuse serve` (SQLite queue, models loaded
   once), interleaved; each served job's latency is from POST /jobs to the `succeeded` event,
   as a client sees it (medians). The ratio compares it with the work generate does
   after loading (encode + sampling + decode) and with generate's sampling alone.
2. The same through PostgreSQL: an API-only server and one idle worker (woken by LISTEN/NOTIFY).
3. Throughput on PostgreSQL: an API-only server and 1, 2, 4 `lorafuse worker` processes on
   one queue; N jobs submitted at once, jobs/second from the first submit to the last result.

  usage: python3 Tools/bench/serve_bench.py BIN POSTGRES_URL [--repeat 5] [--jobs 40] [--steps 20]
Prints one JSON object per line and a summary.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

WORLD = "Examples/toyworld"
REQUEST = {"prompt": "a zorbo in lumeq style", "width": 32, "height": 32, "seed": 7,
           "loras": [{"name": "content-zorbo"}, {"name": "style-lumeq"}]}


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as reply:
        return json.loads(reply.read() or b"{}")


def start_server(binary, arguments):
    process = subprocess.Popen([binary, "serve", "--port", "0", *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://[0-9.]+:[0-9]+", line)
    if not match:
        process.kill()
        sys.exit(f"serve did not start: {line} {process.stderr.read()}")
    return process, match.group(0)


def start_shared(binary, database):
    """An API-only server on a PostgreSQL queue in a schema of its own: (process, base URL, queue URL)."""
    queue = f"{database}{'&' if '?' in database else '?'}schema=bench_{uuid.uuid4().hex[:12]}"
    process, base = start_server(binary, ["--model", f"{WORLD}/pipeline", "--queue", queue, "--api-only", "--lora-dir", f"{WORLD}/loras"])
    return process, base, queue


def start_worker(binary, queue):
    """A `lorafuse worker` on `queue`, returned once it says it is running (its job lines are dropped)."""
    worker = subprocess.Popen([binary, "worker", "--model", f"{WORLD}/pipeline", "--queue", queue, "--lora-dir", f"{WORLD}/loras",
                               "--backend", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if "lorafuse worker:" not in worker.stderr.readline():
        worker.kill()
        sys.exit("a worker did not start")
    return worker


def wait_finished(base, job_id):
    """Reads the job's event stream until it ends; returns the last job."""
    with urllib.request.urlopen(base + f"/jobs/{job_id}/events", timeout=600) as stream:
        last = None
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data:"):
                last = json.loads(line[5:])
        return last


def latency(binary, repeat, steps):
    """generate and served runs interleaved (generate, then one served job, REPEAT times), so
    drift in the machine's speed falls on both; medians compared."""
    request = dict(REQUEST, steps=steps)
    loras = [f"{WORLD}/loras/{lora['name']}.safetensors" for lora in request["loras"]]
    command = [binary, "generate", "--model", f"{WORLD}/pipeline", "--prompt", request["prompt"], "--width", "32", "--height", "32",
               "--steps", str(steps), "--seed", "7", "--output", os.path.join(tempfile.gettempdir(), "serve-bench.png"), "--json",
               *sum([["--lora", path] for path in loras], [])]
    generated, served = [], []
    with tempfile.TemporaryDirectory() as folder:
        process, base = start_server(binary, ["--model", f"{WORLD}/pipeline", "--queue", os.path.join(folder, "jobs.sqlite"),
                                              "--lora-dir", f"{WORLD}/loras"])
        try:
            # A first job warms the LoRA cache, as a running server's would be.
            assert wait_finished(base, call(base, "POST", "/jobs", request)["id"])["state"] == "succeeded"
            for _ in range(repeat):
                out = subprocess.run(command, check=True, capture_output=True, text=True)
                generated.append(json.loads(out.stdout.strip().splitlines()[-1]))
                started = time.perf_counter()
                final = wait_finished(base, call(base, "POST", "/jobs", request)["id"])
                served.append(time.perf_counter() - started)
                assert final["state"] == "succeeded", final
        finally:
            process.terminate()
            process.wait()
    median = statistics.median
    total = median(row["seconds"] for row in generated)
    after_load = median(row["encode_seconds"] + row["sampling_seconds"] + row["decode_seconds"] for row in generated)
    sampling = median(row["sampling_seconds"] for row in generated)
    row = {"command": "serve-latency", "backend": "cpu", "steps": steps, "repeat": repeat,
           "generate_seconds": total, "generate_after_load_seconds": after_load, "generate_sampling_seconds": sampling,
           "served_seconds": median(served), "served_seconds_best": min(served),
           "served_over_generate_after_load": median(served) / after_load,
           "served_over_generate_sampling": median(served) / sampling,
           "served_over_generate_total": median(served) / total}
    print(json.dumps(row), flush=True)
    return row


def postgres_latency(binary, database, repeat, steps, embedded):
    """The same request through an API-only server and one idle `lorafuse worker` on
    PostgreSQL: what the shared queue adds (the worker is woken by LISTEN/NOTIFY)."""
    request = dict(REQUEST, steps=steps)
    process, base, queue = start_shared(binary, database)
    worker = start_worker(binary, queue)
    served = []
    try:
        assert wait_finished(base, call(base, "POST", "/jobs", request)["id"])["state"] == "succeeded"
        for _ in range(repeat):
            time.sleep(1.5)  # the worker idle, as between a user's requests
            started = time.perf_counter()
            final = wait_finished(base, call(base, "POST", "/jobs", request)["id"])
            served.append(time.perf_counter() - started)
            assert final["state"] == "succeeded", final
    finally:
        worker.terminate()
        worker.wait()
        process.terminate()
        process.wait()
    row = {"command": "serve-latency", "backend": "cpu", "queue": "postgres", "steps": steps, "repeat": repeat,
           "served_seconds": statistics.median(served), "served_seconds_best": min(served),
           "over_embedded_served": statistics.median(served) / embedded["served_seconds"],
           "over_generate_after_load": statistics.median(served) / embedded["generate_after_load_seconds"]}
    print(json.dumps(row), flush=True)
    return row


def throughput(binary, database, workers, jobs, steps):
    process, base, queue = start_shared(binary, database)
    running = []
    try:
        for _ in range(workers):
            running.append(start_worker(binary, queue))
        started = time.perf_counter()
        ids = [call(base, "POST", "/jobs", dict(REQUEST, steps=steps, seed=seed))["id"] for seed in range(jobs)]
        # Four looks a second: the bench's own polling stays out of the 2 cores' way.
        while True:
            state = call(base, "GET", "/queue")
            if state["queued"] + state["running"] == 0:
                break
            time.sleep(0.25)
        seconds = time.perf_counter() - started
        states = [call(base, "GET", f"/jobs/{job_id}")["state"] for job_id in ids]
        assert states.count("succeeded") == jobs, states
    finally:
        for worker in running:
            worker.terminate()
        for worker in running:
            worker.wait()
        process.terminate()
        process.wait()
    row = {"command": "serve-throughput", "backend": "cpu", "queue": "postgres", "workers": workers, "jobs": jobs, "steps": steps,
           "seconds": seconds, "jobs_per_second": jobs / seconds}
    print(json.dumps(row), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("database")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    row = latency(args.binary, args.repeat, args.steps)
    print(f"latency (medians of {args.repeat}): served {row['served_seconds']:.3f} s vs generate {row['generate_seconds']:.3f} s "
          f"in all, {row['generate_after_load_seconds']:.3f} s after loading ({row['served_over_generate_after_load']:.3f}x), "
          f"sampling {row['generate_sampling_seconds']:.3f} s ({row['served_over_generate_sampling']:.3f}x)", file=sys.stderr)
    shared = postgres_latency(args.binary, args.database, args.repeat, args.steps, row)
    print(f"latency through PostgreSQL (API-only server, one idle worker): {shared['served_seconds']:.3f} s "
          f"({shared['over_embedded_served']:.3f}x the embedded server's, {shared['over_generate_after_load']:.3f}x generate after loading)",
          file=sys.stderr)
    rows = [throughput(args.binary, args.database, int(count), args.jobs, args.steps) for count in args.workers.split(",")]
    anchor = rows[0]["jobs_per_second"]
    for row in rows:
        print(f"throughput: {row['workers']} worker(s): {row['jobs_per_second']:.2f} jobs/s ({row['jobs_per_second'] / anchor:.2f}x one worker)",
              file=sys.stderr)


if __name__ == "__main__":
    main()
