package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/testutil"
)

// BenchmarkSystemdRestart: under the same load (2 HTTP clients from the
// host), in one run, `systemctl restart` three times of the demo server
// (which takes a second to start) as (a) a plain Type=simple service,
// (b) takeover without the file descriptor store, (c) takeover with it;
// then `systemctl reload` three times of (c). It prints docs/systemd.md's table:
//
//	go test -run '^$' -bench BenchmarkSystemdRestart -benchtime 1x .
//
// (scripts/bench.sh --only systemd runs the same.)
func BenchmarkSystemdRestart(b *testing.B) {
	box := bootSystemd(b, sdOptions{})
	sdInstall(b, box)
	type row struct {
		name string
		r    *load.Result
	}
	var rows []row
	for range b.N {
		rows = rows[:0]
		plainAddr := "127.0.0.1:" + testutil.FreePort(b)
		box.WriteUnit("plain.service", sdUnitDefaults+"Type=simple\nExecStart=/usr/local/bin/takeover demo-server --init-delay "+sdStartDelay+" "+plainAddr+"\n")
		rows = append(rows, row{"(a) the server as a plain Type=simple service, 3 restarts", sdBenchRun(b, box, "plain.service", plainAddr, "restart")})

		nostore := sdDemo(b, box, "bench-nostore", "")
		box.WriteUnit(nostore.unit+".d/nostore.conf", "[Service]\nFileDescriptorStoreMax=0\n")
		rows = append(rows, row{"(b) takeover, FileDescriptorStoreMax=0, 3 restarts", sdBenchRun(b, box, nostore.unit, nostore.addr, "restart")})

		store := sdDemo(b, box, "bench-store", "")
		rows = append(rows, row{"(c) takeover with the fd store (contrib's unit), 3 restarts", sdBenchRun(b, box, store.unit, store.addr, "restart")})
		rows = append(rows, row{"(c) the same, 3 `systemctl reload`", sdBenchRun(b, box, store.unit, store.addr, "reload")})
		for _, u := range []string{"plain.service", nostore.unit, store.unit} {
			box.Systemctl("stop", u)
		}
	}
	b.StopTimer()
	var out strings.Builder
	fmt.Fprintln(&out, "| under systemd 252, 2 clients, a server that takes 1 s to start | requests | failed | refused | longest refused window | max latency |")
	fmt.Fprintln(&out, "|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(&out, "| %s | %d | %d | %d | %v | %v |\n", r.name, r.r.Requests, r.r.FailedRequests(), r.r.Refused,
			r.r.LongestRefused().Round(time.Millisecond), maxLatency(r.r).Round(time.Millisecond))
	}
	fmt.Print(out.String())
	if len(rows) == 4 {
		b.ReportMetric(float64(rows[2].r.Refused), "refused-restart")
		b.ReportMetric(float64(rows[3].r.Refused), "refused-reload")
	}
}

// sdBenchRun starts unit, loads addr, and runs `systemctl VERB unit` three
// times, each once the service answers again and 300 more requests have
// finished.
func sdBenchRun(b *testing.B, box *sdBox, unit, addr, verb string) *load.Result {
	if out, err := box.Systemctl("start", unit); err != nil {
		b.Fatalf("start %s: %v: %s\n%s", unit, err, out, box.Journal(unit))
	}
	sdWaitAnswer(b, addr)
	load := startSdLoad(addr)
	for range 3 {
		load.waitRequests(300)
		if out, err := box.Systemctl(verb, unit); err != nil {
			b.Fatalf("%s %s: %v: %s\n%s", verb, unit, err, out, box.Journal(unit))
		}
		sdWaitAnswer(b, addr)
	}
	return load.stop()
}

// sdWaitAnswer waits until addr answers a request.
func sdWaitAnswer(b testing.TB, addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := testutil.Get(addr, "/"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not answer after 30s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
