package ready

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// waiting is procfs's fixture of processes waiting to accept in each way.
const waiting procfs.FS = "../procfs/testdata/proc-accept"

// The tests start helpers: the test binary again (testutil.RunHelper's serve).
func TestMain(m *testing.M) { testutil.Main(m, nil) }

func TestAcceptingFixture(t *testing.T) {
	want := map[uint64]bool{7001: true, 7002: true, 7003: true, 7004: true, 7005: true, 7006: true}
	tests := []struct {
		name string
		pid  int
		want map[uint64]acceptWay
	}{
		{"epoll set lists the socket", 300, map[uint64]acceptWay{7001: byEpoll}},
		{"a thread in accept4", 301, map[uint64]acceptWay{7002: byAccept}},
		{"poll array holds the fd", 302, map[uint64]acceptWay{7003: byPoll}},
		{"select set holds the fd", 303, map[uint64]acceptWay{7004: bySelect}},
		{"epoll without EPOLLIN, no wait", 304, map[uint64]acceptWay{}},
		{"broken and truncated files", 305, map[uint64]acceptWay{}},
		{"no such process", 399, map[uint64]acceptWay{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := accepting(waiting, []int{tt.pid}, want)
			if diff := cmp.Diff(tt.want, got.ways); diff != "" {
				t.Errorf("accepting(%d) (-want +got):\n%s", tt.pid, diff)
			}
		})
	}
	all := accepting(waiting, []int{300, 301, 302, 303, 304, 305}, want)
	if len(all.ways) != 4 {
		t.Errorf("accepting(all) = %v, want 4 sockets", all.ways)
	}
}

// A live Go server waits in its runtime's epoll set; a python
// socketserver in poll(2) or select(2); a process that only listens is not
// seen accepting.
func TestAcceptingLive(t *testing.T) {
	inodeOfListener := func(t *testing.T, pid int, addr string) uint64 {
		t.Helper()
		spec, err := target.Parse(addr)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := owner.Listeners("/proc", spec, nil, false)
		if err != nil || len(ls) != 1 {
			t.Fatalf("lookup(%s) = %v, %v", addr, ls, err)
		}
		return ls[0].Inode
	}
	t.Run("go", func(t *testing.T) {
		h := testutil.StartHelper(t, "serve", "127.0.0.1:0")
		ino := inodeOfListener(t, h.Cmd.Process.Pid, h.Addr)
		if _, err := testutil.Get(h.Addr, "/"); err != nil {
			t.Fatal(err)
		}
		seen := lookUntilSeen(h.Cmd.Process.Pid, ino)
		if seen.ways[ino] != byEpoll {
			t.Errorf("a Go server: seen %v, want epoll", seen.ways)
		}
	})
	t.Run("python", func(t *testing.T) {
		testutil.RequireTool(t, "python3")
		port := testutil.FreePort(t)
		cmd := exec.Command("python3", "-u", testutil.ModuleFile(t, "testdata/server.py"), port)
		h := testutil.StartAndReadLine(t, cmd)
		addr := "127.0.0.1:" + port
		testutil.WaitServing(t, addr)
		ino := inodeOfListener(t, cmd.Process.Pid, addr)
		seen := lookUntilSeen(cmd.Process.Pid, ino)
		if w := seen.ways[ino]; w != byPoll && w != bySelect && w != byEpoll {
			t.Errorf("python socketserver: seen %v (line %q), want poll, select or epoll", seen.ways, h.Line)
		}
	})
	t.Run("listening only", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, _ := ln.(*net.TCPListener).File()
		ln.Close()
		defer f.Close()
		cmd := exec.Command("sleep", "60")
		cmd.ExtraFiles = []*os.File{f}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		ino, err := procfs.FS("/proc").SocketInode(cmd.Process.Pid, 3)
		if err != nil {
			t.Fatal(err)
		}
		seen := accepting("/proc", []int{cmd.Process.Pid}, map[uint64]bool{ino: true})
		if len(seen.ways) != 0 {
			t.Errorf("a process that only holds a listener: seen %v, want nothing", seen.ways)
		}
	})
}

// lookUntilSeen looks at pid until it is seen accepting on ino, for at most
// 200 looks: a server between two waits (handling a request, or between
// two poll(2) timeouts) is not seen.
func lookUntilSeen(pid int, ino uint64) acceptSeen {
	var seen acceptSeen
	for range 200 {
		if seen = accepting("/proc", []int{pid}, map[uint64]bool{ino: true}); len(seen.ways) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return seen
}
