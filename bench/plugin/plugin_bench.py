#!/usr/bin/env python3
"""Orthanc plugin benchmarks (docs/benchmarks.md, "Orthanc plugin (issue 3)").

Figures measured against a real Orthanc 1.10.1 started from a generated configuration on free loopback ports:
  ingest  - C-STORE throughput through storescu, Orthanc without vs with the plugin (interleaved runs), and
            how long after storescu the plugin had indexed everything;
  lag     - time from a study's last instance stored to the study annotated, minus StableAge;
  memory  - peak resident memory (VmHWM) of Orthanc after 10,000 instances, without vs with the plugin, and
            the comcl database / image-cache sizes.
Standard library only (urllib, subprocess). Everything is written under --work (a /tmp folder); every Orthanc
started here is stopped (SIGTERM, then SIGKILL after 60 s) when the script ends, also on errors and Ctrl-C;
their pids are also written to <work>/orthanc.pids for the shell wrapper's trap.

usage: plugin_bench.py --build BUILD_DIR --work DIR [--figures ingest lag memory] [options]
"""
import argparse
import datetime
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
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


def main():
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True, help="build folder (plugin/libOrthancComcl.so, tools/comcl/comcl)")
    parser.add_argument("--work", required=True, help="scratch folder under /tmp")
    parser.add_argument("--figures", nargs="+", default=["ingest", "lag", "memory"])
    parser.add_argument("--runs", type=int, default=3, help="ingest: runs of each variant, interleaved")
    parser.add_argument("--ingest-patients", type=int, default=1000, help="x2 views = instances")
    parser.add_argument("--ingest-rows", type=int, default=512)
    parser.add_argument("--lag-studies", type=int, default=60)
    parser.add_argument("--lag-runs", type=int, default=3)
    parser.add_argument("--lag-gap", type=float, default=0.0, help="pause between two studies (s)")
    parser.add_argument("--memory-patients", type=int, default=2500, help="x2 studies x2 views = instances")
    parser.add_argument("--memory-order", nargs="+", default=["without", "with"])
    parser.add_argument("--memory-parallel", type=int, default=4, help="concurrent storescu processes")
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
            {"ingest": figure_ingest, "lag": figure_lag, "memory": figure_memory}[figure](args)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
