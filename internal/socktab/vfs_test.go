package socktab

import (
	"net"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBoundTo: a unix socket is matched to its file by the inode number's
// low 32 bits and the device, all that sock_diag reports (issue 28, low
// item: unix_diag's 32-bit inode compared with a 64-bit st_ino). On a
// filesystem with 64-bit inode numbers (tmpfs inode64, XFS, btrfs) the
// file's st_ino has high bits the kernel's report drops.
func TestBoundTo(t *testing.T) {
	dev := unix.Mkdev(0, 45)
	sock := Socket{Inode: 4711, VFSIno: 99, VFSDev: 45} // MKDEV(0, 45)
	tests := []struct {
		name string
		st   unix.Stat_t
		want bool
	}{
		{"32-bit inode", unix.Stat_t{Ino: 99, Dev: dev}, true},
		{"64-bit inode", unix.Stat_t{Ino: 1<<32 | 99, Dev: dev}, true},
		{"64-bit inode, all high bits", unix.Stat_t{Ino: 0xffffffff_00000063, Dev: dev}, true},
		{"another inode", unix.Stat_t{Ino: 1<<32 | 98, Dev: dev}, false},
		{"another device", unix.Stat_t{Ino: 99, Dev: unix.Mkdev(0, 46)}, false},
		{"same low bits, another major", unix.Stat_t{Ino: 99, Dev: unix.Mkdev(1, 45)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sock.boundTo(&tt.st); got != tt.want {
				t.Errorf("boundTo(ino %#x, dev %#x) = %v, want %v", tt.st.Ino, tt.st.Dev, got, tt.want)
			}
		})
	}
	if (Socket{}).boundTo(&unix.Stat_t{Ino: 1 << 32, Dev: 0}) {
		t.Error("a socket bound to no file matched a file whose low inode bits are 0")
	}
}

// TestUnixListenersAtRealFile: UnixListenersAt finds a real listener by
// its file, and none for a file no one listens on.
func TestUnixListenersAtRealFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	socks, err := UnixListenersAt(path)
	if err != nil {
		t.Skipf("sock_diag: %v", err)
	}
	if len(socks) != 1 {
		t.Fatalf("UnixListenersAt(%s) = %+v, want the one listener", path, socks)
	}
	stale := filepath.Join(dir, "stale.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: stale})
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if socks, err := UnixListenersAt(stale); err != nil || len(socks) != 0 {
		t.Errorf("UnixListenersAt(a stale file) = %+v, %v; want none", socks, err)
	}
}
