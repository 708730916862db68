package procfs

// Tests of the fdinfo readers: open flags, epoll targets.

import (
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
