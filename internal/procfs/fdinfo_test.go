package procfs

// Tests of the fdinfo readers: open flags, epoll targets.

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseFdinfoCloexec(t *testing.T) {
	tests := []struct {
		in      string
		want    bool
		wantErr bool
	}{
		{"pos:\t0\nflags:\t02000002\nmnt_id:\t9\n", true, false},
		{"pos:\t0\nflags:\t04002\n", false, false},
		{"pos:\t0\n", false, true},
		{"flags:\t0x9\n", false, true},
	}
	for _, tt := range tests {
		got, err := parseFdinfoCloexec(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("parseFdinfoCloexec(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func FuzzParseFdinfoFlags(f *testing.F) {
	f.Add("pos:\t0\nflags:\t02004002\nmnt_id:\t9\nino:\t1234\n")
	f.Add("flags:\t99999999999999999999999\n")
	f.Fuzz(func(t *testing.T, s string) {
		flags, err := parseFdinfoFlags(s)
		if err == nil && flags < 0 {
			t.Fatalf("parseFdinfoFlags(%q) = %d", s, flags)
		}
	})
}

func TestParseEpollTargets(t *testing.T) {
	in := "pos:\t0\nflags:\t02\ntfd:        5 events:       19 data:                5  pos:0 ino:2f5a sdev:8\n" +
		"tfd: 6 events: zz data: 1 pos:0 ino:1 sdev:8\ntfd: 7\ntfd:        8 events: 1 data: 8 pos:0 ino:10 sdev:8"
	want := []EpollTarget{{FD: 5, Events: 0x19, Inode: 0x2f5a}, {FD: 8, Events: 1, Inode: 0x10}}
	if diff := cmp.Diff(want, parseEpollTargets([]byte(in))); diff != "" {
		t.Errorf("parseEpollTargets (-want +got):\n%s", diff)
	}
}

func FuzzParseEpollTargets(f *testing.F) {
	f.Add([]byte("tfd:        5 events:       19 data:                5  pos:0 ino:2f5a sdev:8\n"))
	f.Add([]byte("tfd: 1 events: ffffffff ino:ffffffffffffffff"))
	f.Fuzz(func(t *testing.T, b []byte) { parseEpollTargets(b) })
}

func TestFDFlagsFixtures(t *testing.T) {
	tests := []struct {
		name        string
		proc        FS
		pid, fd     int
		wantFlags   int
		wantCloexec bool
		wantErr     error
	}{
		{"O_RDWR|O_NONBLOCK|O_CLOEXEC", fixtures, 100, 3, 0o2004002, true, nil},
		{"flags that are no octal number", broken, 400, 3, 0, false, errMalformed},
		{"no flags line", broken, 400, 4, 0, false, errMalformed},
		{"no such fd", fixtures, 100, 9, 0, false, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, err := tt.proc.FDFlags(tt.pid, tt.fd)
			if flags != tt.wantFlags || !errors.Is(err, tt.wantErr) {
				t.Errorf("FDFlags(%d, %d) = %#o, %v; want %#o, %v", tt.pid, tt.fd, flags, err, tt.wantFlags, tt.wantErr)
			}
			cloexec, err := tt.proc.Cloexec(tt.pid, tt.fd)
			if cloexec != tt.wantCloexec || !errors.Is(err, tt.wantErr) {
				t.Errorf("Cloexec(%d, %d) = %v, %v; want %v, %v", tt.pid, tt.fd, cloexec, err, tt.wantCloexec, tt.wantErr)
			}
		})
	}
}

func TestEpollTargetsFixtures(t *testing.T) {
	tests := []struct {
		name      string
		proc      FS
		pid, epfd int
		want      []EpollTarget
		wantErr   error
	}{
		{"two targets", waiting, 300, 4, []EpollTarget{{FD: 9, Events: 0x19, Inode: 0x1b60}, {FD: 3, Events: 0x10000019, Inode: 0x1b59}}, nil},
		{"no events asked", waiting, 304, 7, []EpollTarget{{FD: 3, Inode: 0x1b5d}}, nil},
		{"garbled and truncated lines", waiting, 305, 4, nil, nil},
		{"garbage", broken, 400, 5, nil, nil},
		{"no such fd", waiting, 300, 9, nil, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.proc.EpollTargets(tt.pid, tt.epfd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("EpollTargets(%d, %d) error = %v, want %v", tt.pid, tt.epfd, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("EpollTargets(%d, %d) (-want +got):\n%s", tt.pid, tt.epfd, diff)
			}
		})
	}
}
