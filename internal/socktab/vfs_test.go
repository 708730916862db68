package socktab

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBoundTo: a unix socket is matched to its file by the inode number's
// low 32 bits and the device, all that sock_diag reports (issue 28, low
// item: unix_diag's 32-bit inode compared with a 64-bit st_ino). On a
// filesystem with 64-bit inode numbers (tmpfs inode64, XFS, btrfs) the
// file's st_ino has high bits the kernel's report drops.
func TestBoundTo(t *testing.T) {
	sock := Socket{Inode: 4711, VFSIno: 99, VFSDev: 45} // MKDEV(0, 45)
	tests := []struct {
		name string
		ino  uint64
		dev  uint64
		want bool
	}{
		{"32-bit inode", 99, unix.Mkdev(0, 45), true},
		{"64-bit inode", 1<<32 | 99, unix.Mkdev(0, 45), true},
		{"64-bit inode, all high bits", 0xffffffff_00000063, unix.Mkdev(0, 45), true},
		{"another inode", 1<<32 | 98, unix.Mkdev(0, 45), false},
		{"another device", 99, unix.Mkdev(0, 46), false},
		{"same low bits, another major", 99, unix.Mkdev(1, 45), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := boundTo([]Socket{sock}, tt.ino, kernelDev(tt.dev))
			if (len(got) == 1) != tt.want {
				t.Errorf("boundTo(ino %#x, dev %#x) = %+v, want it found: %v", tt.ino, tt.dev, got, tt.want)
			}
		})
	}
	if got := boundTo([]Socket{{Inode: 1}}, 1<<32, 0); len(got) != 0 {
		t.Errorf("a socket bound to no file matched a file whose low inode bits are 0: %+v", got)
	}
}

const mountinfoFixture = `22 1 0:21 / / rw,relatime shared:1 - btrfs /dev/vda3 rw,subvol=/root
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw
69 45 0:41 / /tmp/m rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u/up,workdir=/u/work,xino=off
70 22 259:1048575 / /big rw - ext4 /dev/nvme0n1p1 rw
71 22 0:x / /bad rw - tmpfs none rw
72 22 4096:0 / /toobig rw - tmpfs none rw
`

func TestMountinfoDev(t *testing.T) {
	tests := []struct {
		id      uint64
		want    uint32
		wantErr string
	}{
		{id: 22, want: 21},
		{id: 69, want: 41},
		{id: 70, want: 259<<20 | 1048575},
		{id: 71, wantErr: "malformed"},
		{id: 72, wantErr: "malformed"},
		{id: 2, wantErr: "not in mountinfo"}, // 2 is a prefix of 22 and a field of others
		{id: 45, wantErr: "not in mountinfo"},
	}
	for _, tt := range tests {
		got, err := mountinfoDev([]byte(mountinfoFixture), tt.id)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("mountinfoDev(%d) = %d, %v; want an error containing %q", tt.id, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("mountinfoDev(%d) = %#x, %v; want %#x", tt.id, got, err, tt.want)
		}
	}
}

func FuzzMountinfoDev(f *testing.F) {
	f.Add([]byte(mountinfoFixture), uint64(69))
	f.Add([]byte("1 0 :\n"), uint64(1))
	f.Add([]byte(""), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, id uint64) {
		dev, err := mountinfoDev(b, id)
		if err == nil && dev>>20 >= 1<<12 {
			t.Errorf("mountinfoDev gave %#x: a major beyond 12 bits", dev)
		}
	})
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

// TestUnixListenersAtOverlay: a listener on an overlayfs whose layers are
// two filesystems (xino off) is found by its file, whose st_dev is its
// layer's, not the overlay's that sock_diag gives; btrfs does the same
// with its subvolumes. It runs as root, in a mount namespace of its own
// (one locked thread's, which goes with it).
func TestUnixListenersAtOverlay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	base := t.TempDir()
	for _, d := range []string{"lower", "upper", "merged"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		socks    []Socket
		stDev    uint64
		skip     string
		err      error
		diagErr  error
		mountErr error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread and its mounts go together
		var r result
		defer func() { done <- r }()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			r.skip = "unshare(CLONE_NEWNS): " + err.Error()
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			r.mountErr = err
			return
		}
		lower, upper, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "merged")
		for _, d := range []string{lower, upper} {
			if err := unix.Mount("none", d, "tmpfs", 0, ""); err != nil {
				r.mountErr = err
				return
			}
		}
		for _, d := range []string{"up", "work"} {
			if err := os.Mkdir(filepath.Join(upper, d), 0o755); err != nil {
				r.mountErr = err
				return
			}
		}
		opts := "lowerdir=" + lower + ",upperdir=" + upper + "/up,workdir=" + upper + "/work,xino=off"
		if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
			r.skip = "mount overlay: " + err.Error()
			return
		}
		path := filepath.Join(merged, "app.sock")
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			r.err = err
			return
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			r.err = err
			return
		}
		if err := unix.Listen(fd, 1); err != nil {
			r.err = err
			return
		}
		var st unix.Stat_t
		unix.Stat(path, &st)
		r.stDev = st.Dev
		r.socks, r.diagErr = UnixListenersAt(path)
	}()
	r := <-done
	switch {
	case r.skip != "":
		t.Skip(r.skip)
	case r.mountErr != nil || r.err != nil:
		t.Fatalf("set up: %v %v", r.mountErr, r.err)
	case r.diagErr != nil:
		t.Skipf("sock_diag: %v", r.diagErr)
	}
	if len(r.socks) != 1 {
		t.Errorf("UnixListenersAt on an overlay (file st_dev %d:%d) = %+v, want the one listener", unix.Major(r.stDev), unix.Minor(r.stDev), r.socks)
	}
}
