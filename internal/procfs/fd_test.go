package procfs

// Tests of the fd readers and the walk for a set of sockets.

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSocketInode(t *testing.T) {
	tests := []struct {
		name    string
		proc    FS
		pid, fd int
		want    uint64
		wantErr bool
	}{
		{"a socket", fixtures, 100, 3, 5555, false},
		{"not a socket", fixtures, 100, 0, 0, true},
		{"no closing bracket", broken, 400, 3, 0, true},
		{"no inode", broken, 400, 4, 0, true},
		{"an inode past 64 bits", broken, 400, 5, 0, true},
		{"no such fd", fixtures, 100, 9, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.proc.SocketInode(tt.pid, tt.fd)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("SocketInode(%d, %d) = %d, %v; want %d, error %v", tt.pid, tt.fd, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := fixtures.FDLink(100, 9); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FDLink of no fd: %v, want ErrNotExist", err)
	}
}

func TestSocketFDs(t *testing.T) {
	fds, epolls, err := waiting.SocketFDs(300, map[uint64]bool{7001: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[int]uint64{3: 7001}, fds); diff != "" {
		t.Errorf("SocketFDs sockets (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{4}, epolls); diff != "" {
		t.Errorf("SocketFDs epolls (-want +got):\n%s", diff)
	}
	// Broken links are neither sockets nor epolls; a socket not wanted is
	// left out.
	fds, epolls, err = broken.SocketFDs(400, map[uint64]bool{5555: true, 0: true})
	if err != nil || len(fds) != 0 || len(epolls) != 0 {
		t.Errorf("SocketFDs of broken links = %v, %v, %v; want none", fds, epolls, err)
	}
}

func TestSockets(t *testing.T) {
	held := make(map[uint64]bool)
	if err := waiting.Sockets(300, held); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[uint64]bool{7001: true}, held); diff != "" {
		t.Errorf("Sockets(300) (-want +got):\n%s", diff)
	}
	if err := broken.Sockets(400, held); err != nil || len(held) != 1 {
		t.Errorf("Sockets of broken links added to %v (%v), want none", held, err)
	}
	if err := waiting.Sockets(399, held); err == nil {
		t.Error("Sockets of no such process: no error")
	}
}

func TestFDWalker(t *testing.T) {
	inodes := []uint64{5555, 5556, 6000, 4242}
	w, err := fixtures.FDWalker(inodes)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Walk(999) // gone meanwhile: neither found nor hidden
	pids, err := fixtures.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	w.WalkParallel(pids)
	want := [][]Holder{{{PID: 100, FD: 3}, {PID: 101, FD: 4}}, {{PID: 90, FD: 7}}, {{PID: 200, FD: 5}}, nil}
	var got [][]Holder
	for i := range inodes {
		hs := slices.Clone(w.Found(i))
		slices.SortFunc(hs, func(a, b Holder) int { return a.PID - b.PID })
		got = append(got, hs)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Found (-want +got):\n%s", diff)
	}
	if w.FoundAll() || w.Hidden() {
		t.Errorf("FoundAll, Hidden = %v, %v; want false, false", w.FoundAll(), w.Hidden())
	}

	// Links that are not quite a socket's, and a name that is no fd.
	w, err = broken.FDWalker([]uint64{5555})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Walk(400)
	if got := w.Found(0); len(got) != 0 {
		t.Errorf("Found in broken links: %v, want none", got)
	}
	if _, err := FS("testdata/nope").FDWalker(inodes); err == nil {
		t.Error("FDWalker of no directory: want an error")
	}
}

// The walk and the link readers against the live /proc: this test's own
// listening socket.
func TestFDWalkerLive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	proc, pid, fd := FS("/proc"), os.Getpid(), int(f.Fd())
	ino, err := proc.SocketInode(pid, fd)
	if err != nil {
		t.Fatal(err)
	}
	// Go listens with MPTCP where the kernel has it.
	if name, err := proc.SocketProtocol(pid, fd); name != "TCP" && name != "MPTCP" || err != nil {
		t.Errorf("SocketProtocol = %q, %v; want TCP or MPTCP", name, err)
	}
	w, err := proc.FDWalker([]uint64{ino})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Walk(pid)
	if !w.FoundAll() || !slices.Contains(w.Found(0), Holder{PID: pid, FD: fd}) {
		t.Errorf("Found = %v, want pid %d fd %d among them", w.Found(0), pid, fd)
	}
}
