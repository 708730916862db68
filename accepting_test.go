package main

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

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
			got := accepting("testdata/proc-accept", []int{tt.pid}, want)
			if diff := cmp.Diff(tt.want, got.Ways); diff != "" {
				t.Errorf("accepting(%d) (-want +got):\n%s", tt.pid, diff)
			}
		})
	}
	all := accepting("testdata/proc-accept", []int{300, 301, 302, 303, 304, 305}, want)
	if len(all.Ways) != 4 {
		t.Errorf("accepting(all) = %v, want 4 sockets", all.Ways)
	}
}

func TestParseEpollTargets(t *testing.T) {
	in := "pos:\t0\nflags:\t02\ntfd:        5 events:       19 data:                5  pos:0 ino:2f5a sdev:8\n" +
		"tfd: 6 events: zz data: 1 pos:0 ino:1 sdev:8\ntfd: 7\ntfd:        8 events: 1 data: 8 pos:0 ino:10 sdev:8"
	want := []epollTarget{{FD: 5, Events: 0x19, Inode: 0x2f5a}, {FD: 8, Events: 1, Inode: 0x10}}
	if diff := cmp.Diff(want, parseEpollTargets([]byte(in))); diff != "" {
		t.Errorf("parseEpollTargets (-want +got):\n%s", diff)
	}
}

func TestParseSyscall(t *testing.T) {
	tests := []struct {
		in   string
		want syscallState
		ok   bool
	}{
		{"288 0x5 0x7f001000 0x7f001080 0x80800 0x0 0x0 0x7f00a000 0x7f00b000\n", syscallState{Nr: 288, Args: [6]uint64{5, 0x7f001000, 0x7f001080, 0x80800}}, true},
		{"running\n", syscallState{}, false},
		{"-1 0x7ffd0000 0x7f000000\n", syscallState{}, false},
		{"288 0x3\n", syscallState{}, false},
		{"7 0xzz 0x1 0x0 0x0 0x0 0x0 0x1 0x2", syscallState{}, false},
	}
	for _, tt := range tests {
		got, ok := parseSyscall([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseSyscall(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// A live Go server waits in its runtime's epoll set; a python
// socketserver in poll(2) or select(2); a process that only listens is not
// seen accepting.
func TestAcceptingLive(t *testing.T) {
	inodeOfListener := func(t *testing.T, pid int, addr string) uint64 {
		t.Helper()
		ls := lookup(t, addr)
		if len(ls) != 1 {
			t.Fatalf("lookup(%s) = %v", addr, ls)
		}
		return ls[0].Inode
	}
	t.Run("go", func(t *testing.T) {
		h := startHelper(t, "serve", "127.0.0.1:0")
		ino := inodeOfListener(t, h.cmd.Process.Pid, h.addr)
		if _, err := get(h.addr, "/"); err != nil {
			t.Fatal(err)
		}
		seen := lookUntilSeen(h.cmd.Process.Pid, ino)
		if seen.Ways[ino] != byEpoll {
			t.Errorf("a Go server: seen %v, want epoll", seen.Ways)
		}
	})
	t.Run("python", func(t *testing.T) {
		requireTool(t, "python3")
		port := freePort(t)
		cmd := exec.Command("python3", "-u", "testdata/server.py", port)
		h := startAndReadLine(t, cmd)
		addr := "127.0.0.1:" + port
		waitServing(t, addr)
		ino := inodeOfListener(t, cmd.Process.Pid, addr)
		seen := lookUntilSeen(cmd.Process.Pid, ino)
		if w := seen.Ways[ino]; w != byPoll && w != bySelect && w != byEpoll {
			t.Errorf("python socketserver: seen %v (line %q), want poll, select or epoll", seen.Ways, h.line)
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
		ino, err := fdInode("/proc", cmd.Process.Pid, 3)
		if err != nil {
			t.Fatal(err)
		}
		seen := accepting("/proc", []int{cmd.Process.Pid}, map[uint64]bool{ino: true})
		if len(seen.Ways) != 0 {
			t.Errorf("a process that only holds a listener: seen %v, want nothing", seen.Ways)
		}
	})
}

// lookUntilSeen looks at pid until it is seen accepting on ino, for at most
// 200 looks: a server between two waits (handling a request, or between
// two poll(2) timeouts) is not seen.
func lookUntilSeen(pid int, ino uint64) acceptSeen {
	var seen acceptSeen
	for range 200 {
		if seen = accepting("/proc", []int{pid}, map[uint64]bool{ino: true}); len(seen.Ways) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return seen
}

func FuzzParseEpollTargets(f *testing.F) {
	f.Add([]byte("tfd:        5 events:       19 data:                5  pos:0 ino:2f5a sdev:8\n"))
	f.Add([]byte("tfd: 1 events: ffffffff ino:ffffffffffffffff"))
	f.Fuzz(func(t *testing.T, b []byte) { parseEpollTargets(b) })
}

func FuzzParseSyscall(f *testing.F) {
	f.Add([]byte("288 0x5 0x7f001000 0x7f001080 0x80800 0x0 0x0 0x7f00a000 0x7f00b000"))
	f.Add([]byte("running"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if sc, ok := parseSyscall(b); ok && sc.Nr < 0 {
			t.Fatalf("parseSyscall(%q) = %+v: a negative number is no system call", b, sc)
		}
	})
}

func FuzzParseFDSet(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0}, 7)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		for _, fd := range parseFDSet(b, n) {
			if fd >= n || fd < 0 {
				t.Fatalf("fd %d out of range %d", fd, n)
			}
		}
	})
}
