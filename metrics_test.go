package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// scrape GETs /metrics from a takeover's --metrics (a TCP address or a
// unix socket's path) and parses it with Prometheus' own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	// A connection a scrape, as Prometheus' own scrapes of a takeover
	// every 15 s or so would be.
	tr := &http.Transport{DisableKeepAlives: true}
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	url := "http://" + addr + "/metrics"
	if strings.HasPrefix(addr, "/") {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}
		url = "http://metrics/metrics"
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return parseMetrics(t, b)
}

func parseMetrics(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse the metrics: %v\n%s", err, b)
	}
	return mfs
}

// metricValue returns the value of name's sample whose labels include
// labels ("k=v" each): a counter's or gauge's value, a histogram's count.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	var sum float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	if !found {
		return -1
	}
	return sum
}

// waitMetric polls get until name{labels} is want, for at most 30 s.
func waitMetric(t *testing.T, get func() map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	var got float64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = metricValue(get(), name, labels...); got == want {
			return
		}
	}
	t.Errorf("%s%v = %v, want %v", name, labels, got, want)
}

// TestMetrics: a takeover with --metrics (a unix socket) and
// --metrics-file counts a fresh start, a handoff (HUP) and a rolled-back
// reload; a second takeover (the same --metrics, --strategy rebind)
// replaces it and starts its counters from the first one's, then counts its
// rebind and a crash and restart. Each is scraped and parsed with prometheus/common's
// text parser.
func TestMetrics(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	dir := t.TempDir()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	// The command reads its helper mode from a file at each start, so that
	// a reload can start a server that never accepts.
	mode, app := filepath.Join(dir, "mode"), filepath.Join(dir, "app")
	os.WriteFile(mode, []byte("serve"), 0o644)
	os.WriteFile(app, []byte(fmt.Sprintf("#!/bin/sh\nTAKEOVER_TEST_HELPER=$(cat %s) exec %s %s\n", mode, self, addr)), 0o755)
	sock, file := filepath.Join(dir, "metrics.sock"), filepath.Join(dir, "takeover.prom")
	timeouts := []string{"--ready-timeout", "5s", "--bind-timeout", "2s", "--kill-timeout", "1s"}

	first := startTakeover(t, "", append(timeouts, "--metrics", sock, "--metrics-file", file, "--port", port, "--", app)...)
	first.waitLog(t, `msg="took over"`)
	viaSock := func() map[string]*dto.MetricFamily { return scrape(t, sock) }
	viaFile := func() map[string]*dto.MetricFamily {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return parseMetrics(t, b)
	}
	waitMetric(t, viaSock, 1, "takeover_swaps_total", "target="+port, "strategy=fresh", "result=ok")
	waitMetric(t, viaSock, 1, "takeover_generation")
	waitMetric(t, viaSock, 1, "takeover_sockets_held")

	first.cmd.Process.Signal(syscall.SIGHUP) // a handoff
	first.waitLogCount(t, `msg="took over"`, 2)
	waitMetric(t, viaSock, 1, "takeover_swaps_total", "target="+port, "strategy=handoff", "result=ok")
	waitMetric(t, viaSock, 2, "takeover_generation")
	waitMetric(t, viaSock, 2, "takeover_swap_duration_seconds", "target="+port)
	waitMetric(t, viaFile, 1, "takeover_swaps_total", "target="+port, "strategy=handoff", "result=ok")

	os.WriteFile(mode, []byte("listenonly"), 0o644) // a reload that is rolled back
	first.cmd.Process.Signal(syscall.SIGHUP)
	first.waitLog(t, "rolling back")
	waitMetric(t, viaSock, 1, "takeover_rollbacks_total")
	waitMetric(t, viaSock, 1, "takeover_failed_reloads_total")
	waitMetric(t, viaSock, 1, "takeover_swaps_total", "target="+port, "result=rolled_back")
	waitMetric(t, viaFile, 1, "takeover_failed_reloads_total")
	waitMetric(t, viaSock, 2, "takeover_generation") // the running one serves on

	// A deploy: the next takeover, which rebinds, starts from the first's
	// counts, and takes the metrics' socket over (the first one, exiting,
	// leaves it be).
	os.WriteFile(mode, []byte("serve"), 0o644)
	second := startTakeover(t, "", append(timeouts, "--strategy", "rebind", "--metrics", sock, "--metrics-file", file, "--port", port, "--", app)...)
	second.waitLog(t, `msg="took over"`)
	if code := first.wait(t); code != 0 {
		t.Fatalf("the replaced takeover exited %d; stderr:\n%s", code, first.stderr)
	}
	waitMetric(t, viaSock, 1, "takeover_swaps_total", "target="+port, "strategy=rebind", "result=ok")
	waitMetric(t, viaSock, 1, "takeover_swaps_total", "target="+port, "strategy=handoff", "result=ok")
	waitMetric(t, viaSock, 1, "takeover_swaps_total", "target="+port, "strategy=fresh", "result=ok")
	waitMetric(t, viaSock, 1, "takeover_rollbacks_total")
	waitMetric(t, viaSock, 1, "takeover_failed_reloads_total")
	waitMetric(t, viaSock, 1, "takeover_refused_window_seconds", "target="+port) // its own rebind: histograms start anew

	// A crash and a restart on the held socket.
	testutil.WaitServing(t, addr)
	syscall.Kill(childOf(t, second, addr), syscall.SIGKILL)
	second.waitLog(t, "msg=restarted")
	waitMetric(t, viaSock, 1, "takeover_restarts_total")
	waitMetric(t, viaSock, 0, "takeover_restart_give_ups_total")
	waitMetric(t, viaSock, 2, "takeover_generation")
	waitMetric(t, viaSock, 0, "takeover_old_generations_draining")
	waitMetric(t, viaFile, 1, "takeover_restarts_total")
	mfs := viaSock()
	if got := metricValue(mfs, "takeover_swaps_total"); got != 5 {
		t.Errorf("takeover_swaps_total = %v in all, want 5 (fresh, handoff, rolled back, rebind, restart)", got)
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetName(), "pid") {
					t.Errorf("%s has a label %s", name, l.GetName())
				}
			}
		}
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	second.wait(t)
}

// TestMetricsBadAddress: an address that names none, or is not one, is
// refused before anything starts (exit 125).
func TestMetricsBadAddress(t *testing.T) {
	self, _ := os.Executable()
	for _, tt := range []struct{ addr, says string }{
		{":9101", "names no address"},
		{"127.0.0.1:99999", "is not a port"},
		{"example.org:9101", "is not an IP address"},
		{"metrics.sock/x", "must be absolute"},
	} {
		cmd := exec.Command(takeoverBin(t), "--metrics", tt.addr, "--port", testutil.FreePort(t), "--", self)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != supervise.ExitLauncher || !strings.Contains(string(out), tt.says) {
			t.Errorf("--metrics %s: %v, %q; want exit %d saying %q", tt.addr, err, out, supervise.ExitLauncher, tt.says)
		}
	}
}

// TestStatus: `takeover status` against four takeovers at once, one of
// them replaced and its fenced old server draining (a keep-alive
// connection holds it): each is listed with what it serves, the drain with
// its pid, and a target nobody serves exits 1.
func TestStatus(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	self, _ := os.Executable()
	var ports []string
	var runs []*tkRun
	for range 2 {
		port := testutil.FreePort(t)
		r := startTakeover(t, "serve", "--port", port, "--", self, "127.0.0.1:"+port)
		testutil.WaitServing(t, "127.0.0.1:"+port)
		ports, runs = append(ports, port), append(runs, r)
	}
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	old, oldChild := startHanging(t, "hangtcp", addr)
	kept, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	kept.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := http.ReadResponse(bufio.NewReader(kept), nil); err != nil {
		t.Fatal(err)
	}
	next := startTakeover(t, "hangtcp", "--drain-timeout", "10m", "--kill-timeout", "1s", "--port", port, "--", self, addr)
	next.waitLog(t, "fenced=true")

	status := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(takeoverBin(t), append([]string{"status"}, args...)...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := status()
	if code != 0 {
		t.Fatalf("takeover status exited %d:\n%s", code, out)
	}
	for _, r := range append(runs, old, next) {
		if !strings.Contains(out, fmt.Sprintf("takeover pid %d ", r.cmd.Process.Pid)) {
			t.Errorf("takeover status does not list takeover %d:\n%s", r.cmd.Process.Pid, out)
		}
	}
	if !strings.Contains(out, fmt.Sprintf("draining: pid %d ", oldChild)) || !strings.Contains(out, fmt.Sprintf("replaced by takeover pid %d", next.cmd.Process.Pid)) {
		t.Errorf("takeover status does not show the old server %d draining, replaced by %d:\n%s", oldChild, next.cmd.Process.Pid, out)
	}
	t.Logf("takeover status:\n%s", out)

	js, code := status("--json", port)
	var got []takeoverStatus
	if err := json.Unmarshal([]byte(js), &got); code != 0 || err != nil || len(got) != 2 {
		t.Fatalf("takeover status --json %s: exit %d, %v, %d takeovers, want the old and the new one:\n%s", port, code, err, len(got), js)
	}
	o, n := got[0], got[1]
	if o.TakeoverPID != old.cmd.Process.Pid || o.ReplacedBy != n.TakeoverPID || len(o.Serving) != 0 {
		t.Errorf("the old takeover: %+v, want it replaced by %d, serving nothing", o, n.TakeoverPID)
	}
	if n.TakeoverPID != next.cmd.Process.Pid || len(n.Serving) != 1 || len(n.Draining) != 1 || n.Draining[0].PID != oldChild || n.State != "serving" ||
		len(n.LastSwap) != 1 || n.LastSwap[0].Strategy != "handoff" || !n.LastSwap[0].Fenced {
		t.Errorf("the new takeover: %+v, want it serving %s by a fenced handoff, old pid %d draining", n, port, oldChild)
	}

	if out, code := status(ports[0], ports[1]); code != 0 {
		t.Errorf("takeover status %s %s exited %d:\n%s", ports[0], ports[1], code, out)
	}
	free := testutil.FreePort(t)
	if out, code := status(free); code != 1 || !strings.Contains(out, "no takeover serves "+free) {
		t.Errorf("takeover status %s (nobody serves it) exited %d, want 1:\n%s", free, code, out)
	}
	if out, code := status(ports[0], free); code != 1 {
		t.Errorf("takeover status %s %s exited %d, want 1:\n%s", ports[0], free, code, out)
	}
	if out, code := status("nope:x"); code != 2 {
		t.Errorf("takeover status nope:x exited %d, want 2:\n%s", code, out)
	}

	kept.Close() // the drain ends; the old server, which ignores TERM, is killed after --kill-timeout
	testutil.WaitGone(t, oldChild)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		js, _ := status("--json", port)
		got = nil
		json.Unmarshal([]byte(js), &got)
		if len(got) == 1 && len(got[0].Draining) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the drain, takeover status --json %s:\n%s", port, js)
		}
	}
}

// TestPrometheusContrib: contrib/prometheus's alert rules pass `promtool
// check rules` and their unit tests (alerts_test.yml), a real takeover's
// --metrics-file passes `promtool check metrics` (the naming guide's
// lint), and every metric the rules and the Grafana dashboard query is one
// takeover exports.
func TestPrometheusContrib(t *testing.T) {
	testutil.RequireTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "contrib/prometheus/alerts.yml"},
		{"test", "rules", "contrib/prometheus/alerts_test.yml"},
	} {
		if out, err := exec.Command("promtool", args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	port := testutil.FreePort(t)
	file := filepath.Join(t.TempDir(), "takeover.prom")
	self, _ := os.Executable()
	maddr := "127.0.0.1:" + testutil.FreePort(t)
	r := startTakeover(t, "serve", "--metrics", maddr, "--metrics-file", file, "--port", port, "--", self, "127.0.0.1:"+port)
	r.waitLog(t, `msg="took over"`)
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := metricValue(scrape(t, maddr), "takeover_swaps_total"); got != 1 {
		t.Errorf("takeover_swaps_total over TCP = %v, want 1", got)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n%s", err, out, text)
	}
	exported := parseMetrics(t, text)
	for _, name := range []string{"takeover_swaps_total", "takeover_swap_duration_seconds", "takeover_ready_wait_seconds",
		"takeover_restarts_total", "takeover_restart_give_ups_total", "takeover_rollbacks_total", "takeover_failed_reloads_total",
		"takeover_generation", "takeover_old_generations_draining", "takeover_sockets_held"} {
		if exported[name] == nil {
			t.Errorf("%s is not exported after a first swap:\n%s", name, text)
		}
	}
	// The drain and the refused window appear with the first old server.
	known := func(name string) bool {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		return exported[base] != nil || base == "takeover_drain_seconds" || base == "takeover_refused_window_seconds"
	}
	used := regexp.MustCompile(`takeover_[a-z_]+`)
	for _, f := range []string{"contrib/prometheus/alerts.yml", "contrib/prometheus/dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".json") && !json.Valid(b) {
			t.Errorf("%s is not valid JSON", f)
		}
		for _, name := range used.FindAllString(string(b), -1) {
			if !known(name) {
				t.Errorf("%s queries %s, which takeover does not export", f, name)
			}
		}
	}
}

// TestMetricsReplacedStops: the replaced takeover, which waits for its old
// server (it ignores TERM) while the newer one serves, stops serving its
// metrics on the port both took with SO_REUSEPORT: every scrape then
// answers with the newer takeover's counts, never the older, lower ones
// (a counter going down, a reset to Prometheus).
func TestMetricsReplacedStops(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	maddr := "127.0.0.1:" + testutil.FreePort(t)
	self, _ := os.Executable()
	first := startTakeover(t, "hang", "-v", "--metrics", maddr, "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, first, addr)
	t.Cleanup(func() { syscall.Kill(oldChild, syscall.SIGKILL) })
	second := startTakeover(t, "serve", "--kill-timeout", "60s", "--metrics", maddr, "--port", port, "--", self, addr)
	second.waitLog(t, `msg="took over"`)
	first.waitLog(t, "event=replaced") // its stop signal came: from here on, only the newer one answers
	if !first.running() {
		t.Fatalf("the first takeover exited before its server did:\n%s", first.stderr)
	}
	for i := range 40 {
		if got := metricValue(scrape(t, maddr), "takeover_swaps_total", "strategy=handoff"); got != 1 {
			t.Fatalf("scrape %d, while the replaced takeover waits: takeover_swaps_total{strategy=handoff} = %v, want the newer takeover's 1", i, got)
		}
	}
	syscall.Kill(oldChild, syscall.SIGKILL)
	if code := first.wait(t); code != 0 {
		t.Errorf("the replaced takeover exited %d", code)
	}
}
