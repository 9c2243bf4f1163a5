#!/usr/bin/python3
"""The live page and report.html in a real browser (headless Chromium).

  report  train a short run (1 rank), `epochal report RUN --html`, load report.html from
          disk (file://, no server) and check the DOM; screenshot it.
  live    a 2-rank run with --dashboard-port 0: load the live page while it trains and
          after it finished, check the DOM, screenshot it, and check that /api/run at the
          end matches history.json.

The data are Fashion-MNIST subsets whose validation split holds copies of training
samples, so the leakage panel has pairs to draw and the diagnosis a finding to state.
Exits 77 (skipped, with the reason) when Chromium, mpiexec or the data are missing.
Servers bind 127.0.0.1 on free ports; every wait is bounded.
"""
import argparse
import gzip
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

DATA = "/usr/share/datasets/fashion-mnist"
PANELS = ["state", "batch-loss", "loss-unshifted", "loss-shifted", "gap-terms", "findings",
          "leakage", "throughput"]
REPORT_PANELS = PANELS + ["epoch-table", "decomposition-table", "classification-report",
                          "config"]
LEAKED = 20


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(77)


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_idx(path, dims, payload):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + payload)


def make_data(directory, n_train, n_val):
    """Training: the first n_train samples. Validation: LEAKED copies of training samples
    and n_val - LEAKED test samples."""
    (_, h, w), train_x = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz"))
    _, train_y = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))
    _, test_x = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))
    _, test_y = read_idx(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"))
    size = h * w
    leaked = [i * 7 for i in range(LEAKED)]
    val_x = b"".join(train_x[i * size:(i + 1) * size] for i in leaked) + \
        test_x[:(n_val - LEAKED) * size]
    val_y = bytes(train_y[i] for i in leaked) + test_y[:n_val - LEAKED]
    write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"), (n_train, h, w),
              train_x[:n_train * size])
    write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"), (n_train,), train_y[:n_train])
    write_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"), (n_val, h, w), val_x)
    write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"), (n_val,), val_y)


def chromium(binary, url, extra, timeout=60):
    profile = tempfile.mkdtemp(prefix="epochal_chromium.")
    try:
        # --no-sandbox: the test may run as root, where Chromium's sandbox refuses to start.
        cmd = ["timeout", "-k", "5", str(timeout), binary, "--headless", "--no-sandbox",
               "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--user-data-dir=" + profile, "--window-size=1000,4200",
               "--virtual-time-budget=5000"] + extra + [url]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 10)
        if r.returncode != 0:
            fail("chromium exited %d: %s" % (r.returncode, r.stderr.decode(errors="replace")[-2000:]))
        return r.stdout.decode(errors="replace")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def panel(dom, name):
    """The HTML of the panel `name` (up to the next panel)."""
    start = dom.find('data-panel="%s"' % name)
    if start < 0:
        return None
    end = dom.find('class="panel', start + 1)
    return dom[start:end if end > 0 else len(dom)]


def check_dom(dom, panels, what, finished):
    for name in panels:
        if panel(dom, name) is None:
            fail("%s: panel %s missing" % (what, name))
    for name in ["batch-loss", "loss-unshifted", "loss-shifted"]:
        counts = [int(n) for n in re.findall(r'data-points="(\d+)"', panel(dom, name))]
        if not counts or max(counts) == 0:
            fail("%s: panel %s has no curve with points" % (what, name))
    if finished:
        gap = panel(dom, "gap-terms")
        bars = re.findall(r'class="bar" data-series="([^"]*)"', gap)
        # The four terms; regularization (their middle two's sum) is not stacked again.
        for term in ["timing", "dropout", "batch norm", "data"]:
            if not any(b.startswith(term + ":") for b in bars):
                fail("%s: gap-terms has no bar of the %s term" % (what, term))
        if any(b.startswith("regularization:") for b in bars):
            fail("%s: gap-terms stacks regularization on top of its parts" % what)
        if len(re.findall(r'class="error-bar"', gap)) == 0:
            fail("%s: gap-terms has no error bars" % what)
        findings = panel(dom, "findings")
        texts = re.findall(r'<span class="finding-text">([^<]+)</span>', findings)
        if not texts or not all(len(t) > 20 for t in texts):
            fail("%s: no finding with its sentence: %s" % (what, findings[:500]))
        if 'data-finding="LEAKAGE"' not in findings:
            fail("%s: the LEAKAGE finding is missing: %s" % (what, findings[:800]))
        leak = panel(dom, "leakage")
        if leak.count('class="leak-image"') < 2 * LEAKED:
            fail("%s: expected %d leakage image pairs, found %d images" %
                 (what, LEAKED, leak.count('class="leak-image"')))
        if 'data-series="images/s of each rank"' not in panel(dom, "throughput"):
            fail("%s: no throughput bar" % what)
    print("%s: DOM ok (%d bytes)" % (what, len(dom)))


def train_command(args, data_dir, out, epochs, extra):
    config = os.path.join(args.source, "configs", "fashion_mnist_minivggnet.textproto")
    return [args.epochal, "train", "--config", config, "--data-dir", data_dir, "--epochs",
            str(epochs), "--out", out, "--threads", "1"] + extra


def run_report(args, work, data_dir):
    out = os.path.join(work, "run_report")
    r = subprocess.run(["timeout", "-k", "10", "900"] +
                       train_command(args, data_dir, out, 3, []),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        fail("train: %s" % r.stdout.decode()[-3000:])
    r = subprocess.run(["timeout", "-k", "10", "300", args.epochal, "report", out, "--html"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        fail("report --html: %s" % r.stdout.decode()[-3000:])
    html = os.path.join(out, "report.html")
    text = open(html, encoding="utf-8").read()
    # Self-contained: no external script, style sheet, image or fetch (the only URL in
    # it is the SVG namespace).
    for forbidden in ["<script src", "<link", "<img", "@import", "fetch(", "https://"]:
        if forbidden in text:
            fail("report.html refers to something outside itself: %s" % forbidden)
    if set(re.findall(r"https?://[^\s'\"]+", text)) - {"http://www.w3.org/2000/svg"}:
        fail("report.html holds URLs: %s" % set(re.findall(r"https?://[^\s'\"]+", text)))
    dom = chromium(args.chromium, "file://" + html, ["--dump-dom"])
    check_dom(dom, REPORT_PANELS, "report.html", True)
    for cls in ["epochs", "decomposition"]:
        if '<table class="%s">' % cls not in dom:
            fail("report.html: table %s missing" % cls)
    if "precision" not in panel(dom, "classification-report"):
        fail("report.html: the classification report is missing")
    if "fashion_mnist_minivggnet" not in panel(dom, "config"):
        fail("report.html: the config is missing")
    shot = os.path.join(args.shots, "report.png")
    chromium(args.chromium, "file://" + html, ["--screenshot=" + shot])
    print("report.html: screenshot %s" % shot)
    check_generic_terms(args, work, text)


def check_generic_terms(args, work, text):
    """The renderer draws whatever gap_<term> the epochs carry, with error bars from
    gap_<term>_se: a history with a fifth, unknown term and its standard errors, put into
    the report."""
    start = text.index('<script type="application/json" id="run-data">') + \
        len('<script type="application/json" id="run-data">')
    end = text.index("</script>", start)
    doc = json.loads(text[start:end])
    for e in doc["epochs"]:
        e["gap_extra"] = 0.05
        e["gap_data"] -= 0.05
        e["gap_extra_se"] = 0.02
    path = os.path.join(work, "generic.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:start] + json.dumps(doc).replace("<", "\\u003c") + text[end:])
    dom = chromium(args.chromium, "file://" + path, ["--dump-dom"])
    gap = panel(dom, "gap-terms")
    epochs = len(doc["epochs"])
    for term in ["timing", "dropout", "batchnorm", "data", "extra"]:
        label = {"batchnorm": "batch norm:", "extra": "extra\""}.get(term, term + ":")
        bars = re.findall(r'class="bar" data-series="%s' % label, gap)
        errors = re.findall(r'class="error-bar" data-series="%s' % label, gap)
        if len(bars) != epochs or len(errors) != epochs:
            fail("generic terms: %s has %d bars and %d error bars for %d epochs" %
                 (term, len(bars), len(errors), epochs))
    if "extra" not in panel(dom, "decomposition-table") or "\u00b1" not in \
            panel(dom, "decomposition-table"):
        fail("generic terms: the decomposition table lacks the fifth term or its error")
    shot = os.path.join(args.shots, "report_four_terms.png")
    chromium(args.chromium, "file://" + path, ["--screenshot=" + shot])
    print("report.html with a fifth term and standard errors: DOM ok, screenshot %s" % shot)


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read().decode())


def run_live(args, work, data_dir):
    out = os.path.join(work, "run_live")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["timeout", "-k", "10", "900", args.mpiexec, "-n", "2", "--oversubscribe"] + \
        train_command(args, data_dir, out, 3,
                      ["--dashboard-port", "0", "--dashboard-linger", "120"])
    log = open(os.path.join(work, "live.log"), "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        url = None
        deadline = time.time() + 300
        while time.time() < deadline and url is None:
            if proc.poll() is not None:
                break
            log.seek(0)
            m = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", log.read())
            url = m.group(1) if m else None
            time.sleep(0.2)
        if url is None:
            log.seek(0)
            fail("no dashboard URL printed: %s" % log.read()[-3000:])
        print("live page at " + url)
        # While it trains: the page renders from the snapshot.
        deadline = time.time() + 600
        seen_training = False
        while time.time() < deadline:
            doc = get_json(url + "api/run")
            if doc["state"] == "training" and doc["batches"]:
                seen_training = True
                dom = chromium(args.chromium, url, ["--dump-dom"])
                for name in PANELS:
                    if panel(dom, name) is None:
                        fail("live page during training: panel %s missing" % name)
                if 'data-points="' not in panel(dom, "batch-loss"):
                    fail("live page during training: no batch-loss curve")
                print("live page during training: DOM ok, epoch_progress %.3f" %
                      doc["progress"]["epoch_progress"])
                shot = os.path.join(args.shots, "live_training.png")
                chromium(args.chromium, url, ["--screenshot=" + shot])
                break
            if doc["state"] in ("finished", "stopped"):
                break
            time.sleep(0.5)
        if not seen_training:
            fail("never saw the run training")
        while time.time() < deadline:
            doc = get_json(url + "api/run")
            if doc["state"] in ("finished", "stopped"):
                break
            time.sleep(0.5)
        if doc["state"] != "finished":
            fail("run did not finish: state %s" % doc["state"])
        # The end of the run: /api/run against history.json.
        history = json.load(open(os.path.join(out, "history.json")))
        if doc["epochs"] != history["epochs"]:
            fail("/api/run epochs differ from history.json's")
        if doc["batches_offset"] != 0 or doc["batches"] != history["batches"]:
            fail("/api/run batches differ from history.json's (%d vs %d)" %
                 (len(doc["batches"]), len(history["batches"])))
        tail = get_json(url + "api/run?since=%d" % (len(history["batches"]) - 5))
        if tail["batches_offset"] != len(history["batches"]) - 5 or len(tail["batches"]) != 5:
            fail("/api/run?since=N does not send batches N..end")
        if len(doc["ranks"]) != 2 or not all(r["images_per_second"] > 0 for r in doc["ranks"]):
            fail("/api/run: expected the throughput of 2 ranks: %s" % doc["ranks"])
        print("/api/run matches history.json: %d epochs, %d batches" %
              (len(doc["epochs"]), len(doc["batches"])))
        dom = chromium(args.chromium, url, ["--dump-dom"])
        check_dom(dom, PANELS, "live page (finished)", True)
        shot = os.path.join(args.shots, "live.png")
        chromium(args.chromium, url, ["--screenshot=" + shot])
        print("live page: screenshot %s" % shot)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # The linger ends on a stop signal.
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["report", "live"])
    p.add_argument("--epochal", required=True)
    p.add_argument("--mpiexec", default="mpiexec")
    p.add_argument("--source", required=True)
    p.add_argument("--shots", required=True, help="directory for the screenshots")
    args = p.parse_args()
    args.chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not args.chromium:
        skip("chromium is not installed (Debian package chromium; scripts/bootstrap.sh)")
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        skip("Fashion-MNIST is not installed (dataset-fashion-mnist)")
    if args.mode == "live" and not shutil.which(args.mpiexec):
        skip("no mpiexec")
    os.makedirs(args.shots, exist_ok=True)
    work = tempfile.mkdtemp(prefix="epochal_browser.")
    try:
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        make_data(data_dir, 1000, 300)
        if args.mode == "report":
            run_report(args, work, data_dir)
        else:
            run_live(args, work, data_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
