#!/usr/bin/env python3
"""Orthanc plugin benchmarks (docs/benchmarks.md, "Orthanc plugin (issue 3)").

Figures measured against a real Orthanc 1.10.1 started from a generated configuration on free loopback ports:
  ingest  - C-STORE throughput through storescu, Orthanc without vs with the plugin (interleaved runs), and
            how long after storescu the plugin had indexed everything;
  lag     - time from a study's last instance stored to the study annotated, minus StableAge;
  memory  - peak resident memory (VmHWM) of Orthanc after 10,000 instances, without vs with the plugin, and
            the comcl database / image-cache sizes;
  rest    - REST latency of the plugin's read routes under a training run (issue 6: p50/p95 of
            GET /comcl/studies/{id} and GET /comcl/status with 20 concurrent clients, target p95 < 50 ms on
            2 cores), Orthanc's own GET /studies/{id} measured alongside as the reference. A labelled archive
            (the MHH films of --rest-data, stored with storescu and labelled "icu" from label_icu_ever through
            POST /comcl/labels; a synthetic one when that folder is missing) is indexed and annotated, then
            two phases of --rest-seconds each: "idle" (no training), and "training" (POST /comcl/train with
            --rest-train-body, load started once the job reports Stage "pre-train", the job cancelled
            after). --rest-clients threads (urllib, one connection per request) each pick a random study and
            go round the three routes, back to back unless --rest-think-ms. One record per phase x route:
            p50/p95/p99/max ms, requests, errors (not 200), req/s; the training records add the job's
            images/s at start and end of the window (the job's figure over its recent steps: stale when no
            step ended in the window) and the pre-training steps seen ending in the window (the job polled
            every 0.25 s) x BatchSize / seconds.
            Each phase also records the CPU seconds of Orthanc's threads (by name and nice value) and of this
            client, to tell what dominated. Orthanc's HTTP pool ("HttpThreadsCount", default 50) is left at
            its default: enough for 20 clients. Run it without `nice`: the training thread lowers itself to
            nice 10, which only ranks it below the HTTP threads when Orthanc itself runs at nice 0.
Standard library only (urllib, subprocess). Everything is written under --work (a /tmp folder); every Orthanc
started here is stopped (SIGTERM, then SIGKILL after 60 s) when the script ends, also on errors and Ctrl-C;
their pids are also written to <work>/orthanc.pids for the shell wrapper's trap.

usage: plugin_bench.py --build BUILD_DIR --work DIR [--figures ingest lag memory rest] [options]
"""
import argparse
import csv
import datetime
import hashlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ORTHANCS = []  # every Orthanc started and not yet stopped
WORK = None

DECLARED = {
    "UserMetadata": {"ComclQuality": 4201, "ComclQualityReasons": 4202, "ComclModel": 4203,
                     "ComclScores": 4204},
    "UserContentType": {"comcl-report": [4200, "application/json"]},
}


def log(*args):
    print(*args, flush=True)


def emit(record):
    """One JSON line per measurement, on stdout and in <work>/results.jsonl."""
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    with open(os.path.join(WORK, "results.jsonl"), "a") as out:
        out.write(line + "\n")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def parse_utc(text):
    # SQLite's strftime('%Y-%m-%dT%H:%M:%fZ'): 2024-05-01T12:00:00.123Z
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def orthanc_id(*parts):
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def tree_bytes(path):
    """Allocated bytes (st_blocks) of a file, or of every file under a folder."""
    if os.path.isfile(path):
        return os.lstat(path).st_blocks * 512
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def proc_status(pid):
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                values[key] = int(rest.split()[0])  # kB, or a count for Threads
    return values


class Orthanc:
    def __init__(self, name, plugin_path, stable_age, comcl):
        self.dir = os.path.join(WORK, name)
        subprocess.run(["rm", "-rf", self.dir], check=True)
        os.makedirs(self.dir)
        self.http = free_port()
        self.dicom = free_port()
        while self.dicom == self.http:
            self.dicom = free_port()
        self.storage = os.path.join(self.dir, "storage")
        self.plugin = plugin_path is not None
        config = {
            "Name": "BENCH",
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": "BENCH-ORTHANC",
            "DicomServerEnabled": True,
            "StorageDirectory": self.storage,
            "IndexDirectory": self.storage,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StableAge": stable_age,
            "Plugins": [plugin_path] if plugin_path else [],
        }
        config.update(DECLARED)  # the same in both variants (docs/annotation.md: what the admin adds)
        if plugin_path:
            config["Comcl"] = comcl
        self.config_path = os.path.join(self.dir, "config.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.log_path = os.path.join(self.dir, "orthanc.log")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(["Orthanc", self.config_path], stdout=self.log_file,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        ORTHANCS.append(self)
        with open(os.path.join(WORK, "orthanc.pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.time() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("Orthanc exited with %s; log: %s" % (self.proc.returncode, self.log_path))
            try:
                self.get("/system", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                if time.time() > deadline:
                    raise RuntimeError("Orthanc did not answer /system within 90 s; log: " + self.log_path)
                time.sleep(0.1)

    def get(self, path, timeout=30):
        url = "http://127.0.0.1:%d%s" % (self.http, path)
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.loads(answer.read().decode())

    def post(self, path, body, timeout=60):
        url = "http://127.0.0.1:%d%s" % (self.http, path)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read().decode()
            return json.loads(text) if text.strip() else None

    def get_or_none(self, path):
        try:
            return self.get(path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def storescu(self, files, timeout=3600):
        command = ["timeout", str(timeout), "storescu", "-aet", "BENCH", "-aec", "BENCH-ORTHANC", "-R",
                   "127.0.0.1", str(self.dicom)] + files
        start = time.monotonic()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.monotonic() - start
        if result.returncode != 0:
            raise RuntimeError("storescu failed (%d): %s" % (result.returncode, result.stdout[-2000:]))
        return seconds

    def status(self):
        return self.get("/comcl/status")

    def log_summary(self):
        self.log_file.flush()
        errors, warnings = [], []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if line.startswith("E"):
                    errors.append(line.rstrip())
                elif line.startswith("W"):
                    warnings.append(line.rstrip())
        return {"errors": len(errors), "warnings": len(warnings), "firstErrors": errors[:5],
                "comclWarnings": [w for w in warnings if "comcl" in w][:5]}

    def stop(self):
        if self in ORTHANCS:
            ORTHANCS.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


def stop_all(*_):
    for orthanc in list(ORTHANCS):
        try:
            orthanc.stop()
        except Exception as e:  # keep stopping the others
            log("stopping Orthanc %d: %s" % (orthanc.proc.pid, e))


def synth(comcl_tool, out, patients, studies, size, encodings, seed):
    """A synthetic archive (once per parameters; reused by later runs)."""
    manifest = os.path.join(out, "manifest.json")
    if not os.path.exists(manifest):
        subprocess.run(["rm", "-rf", out], check=True)
        subprocess.run([comcl_tool, "synth", "--out", out, "--patients", str(patients), "--studies",
                        str(studies), "--size", str(size), "--seed", str(seed), "--degraded-fraction", "0",
                        "--encodings"] + encodings, check=True, stdout=subprocess.DEVNULL)
    with open(manifest) as f:
        data = json.load(f)
    rows = data if isinstance(data, list) else data.get("images", data.get("Images"))
    return rows


def field(row, *names):
    for name in names:
        if name in row:
            return row[name]
    raise KeyError("none of %s in manifest row %s" % (names, sorted(row)))


def wait_until(predicate, limit, step=0.1):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def spread(values):
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1], "n": len(values),
            "values": values}


def pct(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def indexed_all(orthanc, count):
    s = orthanc.status()
    q = s["Queues"]
    return s if (s["Instances"] >= count and q["Ingest"] == 0 and q["Scoring"] == 0) else None


# --- figure 1: C-STORE throughput without / with the plugin

def figure_ingest(args):
    rows = synth(args.comcl, os.path.join(WORK, "data-ingest"), args.ingest_patients, 1, args.ingest_rows,
                 ["Mono2Uint16", "Mono1Uint16"], 3)
    files = [os.path.join(WORK, "data-ingest", field(r, "file", "File")) for r in rows]
    studies = len({field(r, "studyInstanceUid", "StudyInstanceUID") for r in rows})
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    log("ingest: %d files (%.0f MB), %d studies" % (len(files), total_mb, studies))
    # Warm the page cache so that the first run does not read the files from disk.
    for f in files:
        with open(f, "rb") as h:
            h.read()
    order = (["without", "with", "with", "without"] * args.runs)[:2 * args.runs]
    rates = {"without": [], "with": []}
    for i, variant in enumerate(order):
        orthanc = Orthanc("ingest-%d-%s" % (i, variant), args.plugin if variant == "with" else None,
                          args.stable_age, args.comcl_config)
        try:
            seconds = orthanc.storescu(files)
            stored = orthanc.get("/statistics")["CountInstances"]
            record = {"figure": "ingest", "run": i, "variant": variant, "files": len(files),
                      "megabytes": total_mb, "storescuSeconds": seconds,
                      "instancesPerSecond": len(files) / seconds, "orthancInstances": stored}
            if variant == "with":
                at_end = orthanc.status()
                t0 = time.monotonic()
                done = wait_until(lambda: indexed_all(orthanc, len(files)), 600)
                record["indexedAfterStorescuSeconds"] = time.monotonic() - t0 if done else None
                record["statusWhenStorescuEnded"] = {"Instances": at_end["Instances"],
                                                     "Queues": at_end["Queues"]}
                final = done or orthanc.status()
                annotated = wait_until(lambda: orthanc.status()["StudiesAnnotated"] >= studies,
                                       args.stable_age + 120, 0.25)
                record["allStudiesAnnotatedAfterStorescuSeconds"] = (time.monotonic() - t0 if annotated
                                                                     else None)
                final = orthanc.status()
                record["status"] = {k: final[k] for k in ("Instances", "Queues", "Counters", "ByDecodeState",
                                                          "StudiesAnnotated", "LatencyMs")}
            record["log"] = orthanc.log_summary()
            rates[variant].append(len(files) / seconds)
            emit(record)
        finally:
            orthanc.stop()
            subprocess.run(["rm", "-rf", orthanc.storage], check=True)
    without, with_ = spread(rates["without"]), spread(rates["with"])
    emit({"figure": "ingest-summary", "without": without, "with": with_,
          "overheadPercentOfMedians": 100.0 * (1 - with_["median"] / without["median"])})


# --- figure 2: lag from the last instance of a study stored to the study annotated

def figure_lag(args):
    rows = synth(args.comcl, os.path.join(WORK, "data-lag"), args.lag_studies, 1, args.ingest_rows,
                 ["Mono2Uint16", "Mono1Uint16"], 5)
    by_study = {}
    for r in rows:
        key = (field(r, "patientId", "PatientID"), field(r, "studyInstanceUid", "StudyInstanceUID"))
        by_study.setdefault(key, []).append(os.path.join(WORK, "data-lag", field(r, "file", "File")))
    for run in range(args.lag_runs):
        orthanc = Orthanc("lag-%d" % run, args.plugin, args.stable_age, args.comcl_config)
        try:
            ends = {}
            for (patient, study_uid), files in sorted(by_study.items()):
                orthanc.storescu(sorted(files))
                ends[orthanc_id(patient, study_uid)] = utc_now()
                if args.lag_gap > 0:
                    time.sleep(args.lag_gap)
            last_store = utc_now()

            def all_annotated():
                answers = {sid: orthanc.get_or_none("/comcl/studies/" + sid) for sid in ends}
                return answers if all(a and a.get("Annotated") for a in answers.values()) else None

            answers = wait_until(all_annotated, args.stable_age + 180, 0.5)
            if not answers:
                raise RuntimeError("not every study was annotated; log: " + orthanc.log_path)
            lags = []
            for sid, end in ends.items():
                annotated_at = parse_utc(answers[sid]["AnnotatedAt"])
                lags.append((annotated_at - end).total_seconds() - args.stable_age)
            status = orthanc.status()
            emit({"figure": "lag", "run": run, "studies": len(ends), "instancesPerStudy": 2,
                  "stableAge": args.stable_age, "gapBetweenStudiesSeconds": args.lag_gap,
                  "storingSeconds": (last_store - min(ends.values())).total_seconds(),
                  "lagSeconds": {"p50": pct(lags, 0.5), "p95": pct(lags, 0.95), "max": max(lags),
                                 "min": min(lags), "mean": statistics.mean(lags)},
                  "lags": sorted(round(x, 3) for x in lags),
                  "status": {k: status[k] for k in ("Instances", "Counters", "StudiesAnnotated", "LatencyMs")},
                  "log": orthanc.log_summary()})
        finally:
            orthanc.stop()
            subprocess.run(["rm", "-rf", orthanc.storage], check=True)


# --- figure 4: peak resident memory after 10,000 instances

def figure_memory(args):
    out = os.path.join(WORK, "data-memory")
    rows = synth(args.comcl, out, args.memory_patients, 2, 256, ["Mono2Uint8"], 9)
    files = [os.path.join(out, field(r, "file", "File")) for r in rows]
    studies = len({field(r, "studyInstanceUid", "StudyInstanceUID") for r in rows})
    log("memory: %d files, %d studies" % (len(files), studies))
    for variant in args.memory_order:
        orthanc = Orthanc("memory-" + variant, args.plugin if variant == "with" else None, args.stable_age,
                          args.comcl_config)
        try:
            at_start = proc_status(orthanc.proc.pid)
            # --memory-parallel storescu processes at once, each one association for its share of the files
            # (only the end state matters here, not the store rate)
            n = max(1, args.memory_parallel)
            shares = [files[k::n] for k in range(n)]
            start = time.monotonic()
            procs = [subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", "BENCH-ORTHANC", "-R", "127.0.0.1",
                                       str(orthanc.dicom)] + share, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for share in shares]
            for p in procs:
                output = p.communicate()[0]
                if p.returncode != 0:
                    raise RuntimeError("storescu failed (%d): %s" % (p.returncode, output[-2000:]))
            seconds = time.monotonic() - start
            record = {"figure": "memory", "variant": variant, "files": len(files),
                      "storescuSeconds": seconds, "storescuProcesses": n,
                      "orthancInstances": orthanc.get("/statistics")["CountInstances"],
                      "atStart": at_start}
            if variant == "with":
                t0 = time.monotonic()
                done = wait_until(lambda: indexed_all(orthanc, len(files)), 900, 0.5)
                record["indexedAfterStorescuSeconds"] = time.monotonic() - t0 if done else None
                wait_until(lambda: orthanc.status()["StudiesAnnotated"] >= studies, args.stable_age + 300, 0.5)
                record["annotatedAfterStorescuSeconds"] = time.monotonic() - t0
                status = orthanc.status()
                record["status"] = {k: status[k] for k in ("Instances", "Queues", "Counters", "ByDecodeState",
                                                           "StudiesAnnotated")}
                comcl_dir = os.path.join(orthanc.storage, "comcl")
                record["comclFiles"] = {name: {"apparentBytes": os.path.getsize(os.path.join(comcl_dir, name)),
                                               "diskBytes": tree_bytes(os.path.join(comcl_dir, name))}
                                        for name in sorted(os.listdir(comcl_dir))
                                        if os.path.isfile(os.path.join(comcl_dir, name))}
            else:
                # the same idle time after the store as the plugin run gets: StudiesStable + a margin
                time.sleep(args.stable_age + 5)
            record["end"] = proc_status(orthanc.proc.pid)
            record["orthancStorageDiskBytes"] = tree_bytes(orthanc.storage) - (
                tree_bytes(os.path.join(orthanc.storage, "comcl")) if variant == "with" else 0)
            record["log"] = orthanc.log_summary()
            emit(record)
        finally:
            orthanc.stop()
            subprocess.run(["rm", "-rf", orthanc.storage], check=True)


# --- figure 5: REST latency of the read routes under a training run (issue 6)

def rest_archive(args):
    """(source, files, {Orthanc study id: (StudyInstanceUID, label)}) of the archive the rest figure
    stores."""
    data = os.path.abspath(args.rest_data)
    manifest = os.path.join(data, "manifest.csv")
    if os.path.exists(manifest):
        with open(manifest, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("dicom_file")]
        files = [os.path.join(data, r["dicom_file"]) for r in rows]
        labels_by_file = {os.path.join(data, r["dicom_file"]): int(r["label_icu_ever"]) for r in rows}
        # PatientID and StudyInstanceUID of every file: one dcmdump for all of them
        dump = subprocess.run(["dcmdump", "-q", "+F", "+P", "0010,0020", "+P", "0020,000d"] + files,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
        tags, current = {}, None
        for line in dump.splitlines():
            if line.startswith("# dcmdump ("):
                current = line.split("): ", 1)[1].strip()
                tags[current] = {}
            elif current and line.startswith("(") and "[" in line:
                tags[current][line[1:10]] = line.split("[", 1)[1].split("]", 1)[0]
        labels = {}
        for path in files:
            t = tags.get(path, {})
            if "0010,0020" not in t or "0020,000d" not in t:
                raise RuntimeError("no PatientID / StudyInstanceUID read from " + path)
            sid = orthanc_id(t["0010,0020"], t["0020,000d"])
            labels[sid] = (t["0020,000d"], labels_by_file[path])
        return "mhh:" + data, files, labels
    log("rest: %s not found, using a synthetic archive" % manifest)
    out = os.path.join(WORK, "data-rest")
    rows = synth(args.comcl, out, 120, 1, 256, ["Mono2Uint16"], 11)
    files = [os.path.join(out, field(r, "file", "File")) for r in rows]
    labels = {}
    for r in rows:
        patient, uid = field(r, "patientId", "PatientID"), field(r, "studyInstanceUid", "StudyInstanceUID")
        labels[orthanc_id(patient, uid)] = (uid, int(hashlib.sha1(patient.encode()).hexdigest(), 16) % 2)
    return "synthetic", files, labels


def thread_cpu(pid):
    """{tid: (thread name and nice, CPU seconds)} of every thread of a process (/proc/*/task/*/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): utime = field 14, stime = 15, nice = 19
        out[tid] = ("%s (nice %s)" % (name, fields[16]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_delta(before, after, training_tids=()):
    """CPU seconds spent between two thread_cpu() snapshots, by thread name and nice (threads that ended in
    between are missed), with the number of threads of each name that ran. A thread inherits its name from
    the thread that started it: the training run's threads, started from an HTTP request, are also called
    civetweb-worker, so the threads of `training_tids` are counted apart."""
    seconds, threads = {}, {}
    for tid, (key, now) in after.items():
        spent = now - before.get(tid, (key, 0.0))[1]
        if tid in training_tids:
            key = "training run: " + key
        if spent > 0:
            seconds[key] = seconds.get(key, 0.0) + spent
            threads[key] = threads.get(key, 0) + 1
    return {"%s x%d" % (k, threads[k]): round(v, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


def rest_load(orthanc, study_ids, clients, seconds, seed, think, sample=None, tids_before_training=None):
    """clients threads, each for `seconds`, going round the three routes on random studies, pausing `think`
    seconds after each answer; sample() is called every 0.25 s meanwhile. Orthanc's threads that were not
    in tids_before_training (a thread_cpu() snapshot) are counted as the training run's."""
    routes = ["GET /comcl/studies/{id}", "GET /comcl/status", "GET /studies/{id}"]
    paths = ["/comcl/studies/%s", "/comcl/status", "/studies/%s"]
    base = "http://127.0.0.1:%d" % orthanc.http
    results = [{r: {"ms": [], "errors": {}} for r in routes} for _ in range(clients)]
    start_barrier = threading.Barrier(clients + 1)
    window = {}

    def client(k):
        rng = random.Random(seed * 1000 + k)
        mine = results[k]
        turn = k % len(routes)
        start_barrier.wait()
        deadline = window["end"]
        while time.monotonic() < deadline:
            route, path = routes[turn], paths[turn]
            turn = (turn + 1) % len(routes)
            if "%s" in path:
                path = path % rng.choice(study_ids)
            t0 = time.perf_counter()
            error = None
            try:
                with urllib.request.urlopen(base + path, timeout=30) as answer:
                    answer.read()
                    if answer.status != 200:
                        error = str(answer.status)
            except urllib.error.HTTPError as e:
                error = str(e.code)
            except Exception as e:  # timeouts, refused connections: counted, not fatal
                error = type(e).__name__
            ms = (time.perf_counter() - t0) * 1000.0
            if error is None:
                mine[route]["ms"].append(ms)
            else:
                mine[route]["errors"][error] = mine[route]["errors"].get(error, 0) + 1
            if think > 0:
                time.sleep(think)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    cpu_before, own_before = thread_cpu(orthanc.proc.pid), os.times()
    window["end"] = time.monotonic() + seconds
    t_start = time.monotonic()
    start_barrier.wait()
    while any(t.is_alive() for t in threads) and time.monotonic() < t_start + seconds + 60:
        if sample and time.monotonic() < window["end"]:
            sample()
        time.sleep(0.25)
    elapsed = time.monotonic() - t_start
    cpu_after, own_after = thread_cpu(orthanc.proc.pid), os.times()
    merged = {}
    for r in routes:
        ms = [x for res in results for x in res[r]["ms"]]
        errors = {}
        for res in results:
            for kind, n in res[r]["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
        merged[r] = {"ms": ms, "errors": errors}
    training_tids = set() if tids_before_training is None else set(cpu_after) - set(tids_before_training)
    orthanc_cpu = cpu_delta(cpu_before, cpu_after, training_tids)
    cpu = {"orthancSeconds": round(sum(orthanc_cpu.values()), 2), "orthancByThread": orthanc_cpu,
           "clientSeconds": round((own_after.user + own_after.system) - (own_before.user + own_before.system), 2),
           "windowSeconds": round(elapsed, 2), "loadavg": os.getloadavg()}
    return merged, elapsed, cpu


def rest_records(phase, merged, elapsed, clients, extra):
    records = []
    for route, data in merged.items():
        ms = data["ms"]
        errors = sum(data["errors"].values())
        record = {"figure": "rest", "phase": phase, "route": route, "clients": clients,
                  "seconds": round(elapsed, 2), "requests": len(ms) + errors, "errors": errors,
                  "errorKinds": data["errors"], "throughput": (len(ms) + errors) / elapsed,
                  "p50": pct(ms, 0.5), "p95": pct(ms, 0.95), "p99": pct(ms, 0.99),
                  "max": max(ms) if ms else None, "mean": statistics.mean(ms) if ms else None}
        record.update(extra)
        records.append(record)
    return records


def job(orthanc, job_id):
    return orthanc.get("/jobs/" + job_id)


def figure_rest(args):
    source, files, labels = rest_archive(args)
    study_ids = sorted(labels)
    log("rest: %s, %d files, %d studies" % (source, len(files), len(study_ids)))
    comcl = dict(args.comcl_config)
    comcl.update({"Labels": {"icu": "binary"}, "ImageSize": args.rest_image_size})
    orthanc = Orthanc("rest", args.plugin, args.stable_age, comcl)
    records = []
    try:
        store_seconds = orthanc.storescu(files)
        if not wait_until(lambda: indexed_all(orthanc, len(files)), 600, 0.5):
            raise RuntimeError("comcl did not index %d instances; status %s; log: %s"
                               % (len(files), orthanc.status(), orthanc.log_path))
        rows = [{"StudyInstanceUID": uid, "Labels": {"icu": value}} for uid, value in labels.values()]
        answer = orthanc.post("/comcl/labels", rows)
        if answer.get("Problems") or answer.get("Stored") != len(rows):
            raise RuntimeError("POST /comcl/labels: %s" % json.dumps(answer)[:2000])

        def all_annotated():
            if orthanc.status()["StudiesAnnotated"] < len(study_ids):
                return None
            answers = [orthanc.get_or_none("/comcl/studies/" + sid) for sid in study_ids]
            return all(a and a.get("Annotated") for a in answers)

        if not wait_until(all_annotated, args.stable_age + 300, 1.0):
            raise RuntimeError("not every study was annotated; log: " + orthanc.log_path)
        status = orthanc.status()
        report_bytes = len(json.dumps(orthanc.get("/comcl/studies/" + study_ids[0])))
        status_bytes = len(json.dumps(status))
        common = {"archive": source, "studies": len(study_ids), "instances": status["Instances"],
                  "nice": os.nice(0), "thinkMs": args.rest_think_ms,
                  "answerJsonBytes": {"GET /comcl/studies/{id}": report_bytes, "GET /comcl/status": status_bytes}}
        log("rest: %d instances stored in %.1f s, indexed, labelled, annotated" % (len(files), store_seconds))

        # phase 1: no training
        merged, elapsed, cpu = rest_load(orthanc, study_ids, args.rest_clients, args.rest_seconds, 1,
                                        args.rest_think_ms / 1000.0)
        phase = rest_records("idle", merged, elapsed, args.rest_clients, dict(common, cpu=cpu))
        for r in phase:
            emit(r)
        records += phase

        # phase 2: the same load while a training run pre-trains
        body = json.loads(args.rest_train_body)
        tids_before_training = thread_cpu(orthanc.proc.pid)
        started = orthanc.post("/comcl/train", body)
        job_id = started["ID"]
        log("rest: training job %s (run %s) started with %s" % (job_id, started.get("RunId"), json.dumps(body)))
        try:
            def pretraining():
                j = job(orthanc, job_id)
                if j["State"] not in ("Pending", "Running"):
                    raise RuntimeError("training job ended before pre-training: %s; run: %s"
                                       % (json.dumps(j)[:1000], orthanc.get("/comcl/runs/%s" % started["RunId"])))
                content = j.get("Content") or {}
                return content if content.get("Stage") == "pre-train" and content.get("ImagesPerSecond") else None

            t0 = time.monotonic()
            at_start = wait_until(pretraining, args.rest_train_wait, 0.5)
            if not at_start:
                raise RuntimeError("the training job did not report pre-training images/s within %d s: %s"
                                   % (args.rest_train_wait, json.dumps(job(orthanc, job_id))[:1000]))
            log("rest: pre-training after %.1f s (epoch %s, %.1f images/s); load starts"
                % (time.monotonic() - t0, at_start.get("Epoch"), at_start["ImagesPerSecond"]))
            # the job reports after each pre-training step (Loss: the last step's); count the reports seen
            reports = []

            def sample():
                content = job(orthanc, job_id).get("Content") or {}
                key = (content.get("Stage"), content.get("Epoch"), content.get("Loss"))
                if not reports or reports[-1] != key:
                    reports.append(key)

            sample()
            merged, elapsed, cpu = rest_load(orthanc, study_ids, args.rest_clients, args.rest_seconds, 2,
                                            args.rest_think_ms / 1000.0, sample, tids_before_training)
            steps = len(reports) - 1
            at_end_job = job(orthanc, job_id)
            at_end = at_end_job.get("Content") or {}
            training = {"trainBody": body, "jobStateAtEnd": at_end_job["State"],
                        "imagesPerSecondAtStart": at_start.get("ImagesPerSecond"),
                        "imagesPerSecondAtEnd": at_end.get("ImagesPerSecond"),
                        "epochAtStart": at_start.get("Epoch"), "epochAtEnd": at_end.get("Epoch"),
                        "stepsSeenInWindow": steps,
                        "imagesPerSecondInWindow": steps * body.get("BatchSize", 32) / elapsed,
                        "stageAtEnd": at_end.get("Stage")}
            phase = rest_records("training", merged, elapsed, args.rest_clients, dict(common, cpu=cpu, **training))
            for r in phase:
                emit(r)
            records += phase
        finally:
            try:
                orthanc.post("/jobs/%s/cancel" % job_id, b"")
            except urllib.error.HTTPError as e:  # already finished
                log("rest: cancel job %s: HTTP %d" % (job_id, e.code))
            left = wait_until(lambda: job(orthanc, job_id)["State"] not in ("Pending", "Running"), 120, 0.5)
            final = job(orthanc, job_id)
            log("rest: training job %s %s (%s)" % (job_id, final["State"], "stopped" if left else "still running"))
        emit({"figure": "rest-log", "log": orthanc.log_summary()})
    finally:
        orthanc.stop()
        subprocess.run(["rm", "-rf", orthanc.storage], check=True)
    log("")
    log("%-9s %-24s %8s %8s %8s %8s %7s %6s %8s  %s" % ("phase", "route", "p50 ms", "p95 ms", "p99 ms", "max ms",
                                                       "req", "err", "req/s", "images/s job start/end, window"))
    for r in records:
        ips = ("%.1f/%.1f, %.1f" % (r["imagesPerSecondAtStart"] or 0, r["imagesPerSecondAtEnd"] or 0,
                                    r["imagesPerSecondInWindow"]) if r["phase"] == "training" else "")
        log("%-9s %-24s %8.1f %8.1f %8.1f %8.1f %7d %6d %8.1f  %s" % (
            r["phase"], r["route"], r["p50"] or 0, r["p95"] or 0, r["p99"] or 0, r["max"] or 0, r["requests"],
            r["errors"], r["throughput"], ips))
    for phase in ("idle", "training"):
        cpu = next((r["cpu"] for r in records if r["phase"] == phase), None)
        if cpu:
            top = ", ".join("%s %.1f" % kv for kv in cpu["orthancByThread"].items())
            log("%s: %.1f s window, Orthanc CPU %.1f s (%s), client CPU %.1f s" % (
                phase, cpu["windowSeconds"], cpu["orthancSeconds"], top, cpu["clientSeconds"]))


def main():
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True, help="build folder (plugin/libOrthancComcl.so, tools/comcl/comcl)")
    parser.add_argument("--work", required=True, help="scratch folder under /tmp")
    parser.add_argument("--figures", nargs="+", default=["ingest", "lag", "memory"],
                        choices=["ingest", "lag", "memory", "rest"])
    parser.add_argument("--runs", type=int, default=3, help="ingest: runs of each variant, interleaved")
    parser.add_argument("--ingest-patients", type=int, default=1000, help="x2 views = instances")
    parser.add_argument("--ingest-rows", type=int, default=512)
    parser.add_argument("--lag-studies", type=int, default=60)
    parser.add_argument("--lag-runs", type=int, default=3)
    parser.add_argument("--lag-gap", type=float, default=0.0, help="pause between two studies (s)")
    parser.add_argument("--memory-patients", type=int, default=2500, help="x2 studies x2 views = instances")
    parser.add_argument("--memory-order", nargs="+", default=["without", "with"])
    parser.add_argument("--memory-parallel", type=int, default=4, help="concurrent storescu processes")
    parser.add_argument("--rest-data", default="/work/shared/data/mhh_covid_cxr",
                        help="rest: folder with manifest.csv (dicom_file, label_icu_ever) and the DICOM files")
    parser.add_argument("--rest-seconds", type=float, default=30, help="rest: length of each phase's load (s)")
    parser.add_argument("--rest-clients", type=int, default=20, help="rest: concurrent client threads")
    parser.add_argument("--rest-think-ms", type=float, default=0,
                        help="rest: each client's pause after an answer (0: back to back, the worst case)")
    parser.add_argument("--rest-image-size", type=int, default=128, help="rest: Comcl.ImageSize (image cache)")
    parser.add_argument("--rest-train-body", default=json.dumps(
        {"Method": "medaug", "Epochs": 200, "ImageSize": 64, "BatchSize": 32, "Device": "cpu"}),
                        help="rest: JSON body of POST /comcl/train")
    parser.add_argument("--rest-train-wait", type=int, default=300,
                        help="rest: at most this long (s) for the job to report pre-training images/s")
    parser.add_argument("--stable-age", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--catch-up-interval", type=int, default=5)
    args = parser.parse_args()
    WORK = os.path.abspath(args.work)
    os.makedirs(WORK, exist_ok=True)
    args.plugin = os.path.abspath(os.path.join(args.build, "plugin", "libOrthancComcl.so"))
    args.comcl = os.path.abspath(os.path.join(args.build, "tools", "comcl", "comcl"))
    for path in (args.plugin, args.comcl):
        if not os.path.exists(path):
            sys.exit("missing " + path)
    args.comcl_config = {"Workers": args.workers, "CatchUpInterval": args.catch_up_interval}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    emit({"figure": "machine", "nproc": os.cpu_count(), "cpu": cpu, "loadavg": os.getloadavg(),
          "orthanc": subprocess.run(["Orthanc", "--version"], stdout=subprocess.PIPE, text=True).stdout.split("\n")[0],
          "comclConfig": args.comcl_config, "stableAge": args.stable_age, "started": utc_now().isoformat()})
    try:
        for figure in args.figures:
            {"ingest": figure_ingest, "lag": figure_lag, "memory": figure_memory,
             "rest": figure_rest}[figure](args)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
