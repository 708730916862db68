package swap

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/testutil"
)

// TestMigrateReqKilled: a takeover SIGKILLed while it holds
// net.ipv4.tcp_migrate_req on leaves it on, but not for ever: the next one
// to start, or to hold and let go, in that network namespace puts it back
// to 0. And a takeover never puts it back under another that holds it.
// Each case runs takeovers (helpers: "migrate") in a namespace of its own,
// each step then the sysctl it must leave.
func TestMigrateReqKilled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (ip netns add, the sysctl)")
	}
	if _, err := os.Stat(migrateReqPath); err != nil {
		t.Skip("no net.ipv4.tcp_migrate_req (Linux 5.14)")
	}
	for _, tc := range []struct{ name, steps string }{
		{"hold adopts", "A hold 1, B start 1, A kill 1, B hold 1, B release 0"},
		{"start puts back", "A hold 1, A kill 1, B start 0"},
		{"last out puts back", "A hold 1, B hold 1, A release 1, A kill 1, B release 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := fmt.Sprintf("tkmig-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
			if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
				t.Fatalf("ip netns add: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() }) // after the helpers' cleanup
			dir := filepath.Join(t.TempDir(), "run")
			procs := map[string]*migrateProc{}
			for _, step := range strings.Split(tc.steps, ", ") {
				f := strings.Fields(step)
				p := procs[f[0]]
				if p == nil {
					p = startMigrate(t, ns, dir)
					procs[f[0]] = p
				}
				switch f[1] {
				case "kill":
					p.cmd.Process.Kill()
					p.cmd.Wait()
				case "hold", "release":
					fmt.Fprintln(p.in, f[1])
					p.line(t)
				}
				out, _ := exec.Command("ip", "netns", "exec", ns, "cat", migrateReqPath).Output()
				if got := strings.TrimSpace(string(out)); got != f[2] {
					t.Fatalf("after %q: tcp_migrate_req = %q, want %s (steps: %s)", step, got, f[2], tc.steps)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "tcp_migrate_req-*")); len(left) > 0 {
				t.Errorf("markers left: %q", left)
			}
		})
	}
}

type migrateProc struct {
	cmd   *exec.Cmd
	in    *os.File
	lines chan string
}

// startMigrate starts a migrate helper in ns with the run directory dir,
// once it has started as a launcher does (MigrateMarkerIn).
func startMigrate(t *testing.T, ns, dir string) *migrateProc {
	p := &migrateProc{cmd: exec.Command("ip", "netns", "exec", ns, os.Args[0], dir), lines: make(chan string)}
	p.cmd.Env = append(os.Environ(), testutil.HelperEnv+"=migrate")
	p.cmd.Stderr = os.Stderr
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdin, p.in = r, w
	out, _ := p.cmd.StdoutPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait(); w.Close() })
	go func() {
		for s := bufio.NewScanner(out); s.Scan(); {
			p.lines <- s.Text()
		}
		close(p.lines)
	}()
	p.line(t)
	return p
}

func (p *migrateProc) line(t *testing.T) {
	select {
	case l, ok := <-p.lines:
		if !ok || l != "ok" {
			t.Fatalf("migrate helper %d: %q", p.cmd.Process.Pid, l)
		}
	case <-time.After(time.Minute):
		t.Fatalf("migrate helper %d: no answer in a minute", p.cmd.Process.Pid)
	}
}

// migrateHelper holds and releases tcp_migrate_req, one fence's, as the
// lines of stdin say, in the run directory dir: "ok" when started, and
// after each.
func migrateHelper(dir string) int {
	d, err := rundir.Open(dir, true)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	MigrateMarkerIn(d)
	fmt.Println("ok")
	f := &Fence{}
	for in := bufio.NewScanner(os.Stdin); in.Scan(); fmt.Println("ok") {
		if in.Text() == "hold" {
			f.HoldMigrate()
		} else {
			f.ReleaseMigrate()
		}
	}
	return 0
}
