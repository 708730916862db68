package procfs

// Tests of the status reader.

import (
	"errors"
	"io/fs"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// What a thread's new file would get comes from its status, read once with
// the rest of it.
func TestStatusFileOwner(t *testing.T) {
	owner := func(status string) (FileOwner, error) {
		st, err := parseThreadStatus("Tgid:\t42\nCapEff:\t0\n" + status)
		if err != nil {
			return FileOwner{}, err
		}
		return st.FileOwner()
	}
	got, err := owner("Name:\tpython3\nUmask:\t0077\nState:\tS (sleeping)\nUid:\t1000\t1001\t1002\t1003\nGid:\t65534\t65534\t65534\t65535\nGroups:\t4 27 \n")
	if want := (FileOwner{UID: 1003, GID: 65535, Groups: []int{4, 27}, Umask: 0o077}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("fileOwner = %+v, %v; want %+v", got, err, want)
	}
	if _, err := owner("Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n"); err == nil {
		t.Error("fileOwner without Umask: want an error")
	}
	if _, err := owner("Umask:\t0022\nUid:\t1\nGid:\t1\n"); err == nil {
		t.Error("fileOwner without the filesystem ids: want an error")
	}
	if _, err := owner("Umask:\t0999\nUid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n"); err == nil {
		t.Error("a status with a non-octal umask: want an error")
	}
}

func FuzzParseThreadStatus(f *testing.F) {
	f.Add("Name:\tjava\nTgid:\t42\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000400\n")
	f.Fuzz(func(t *testing.T, s string) {
		if st, err := parseThreadStatus(s); err == nil && st.Tgid <= 0 {
			t.Fatalf("parseThreadStatus(%q) = %+v", s, st)
		}
	})
}

func TestStatusFixtures(t *testing.T) {
	tests := []struct {
		name    string
		proc    FS
		pid     int
		want    Status
		wantErr error
	}{
		{"a server's", fixtures, 100, Status{Tgid: 100, UID: 1000, CapEff: 0x400}, nil},
		{"garbage, and a Tgid that is no number", broken, 400, Status{}, errMalformed},
		{"a Uid that is no number", broken, 401, Status{}, errMalformed},
		{"no Tgid", broken, 404, Status{}, errMalformed},
		{"no such process", fixtures, 999, Status{}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.proc.Status(tt.pid)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Status(%d) error = %v, want %v", tt.pid, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(Status{})); diff != "" {
				t.Errorf("Status(%d) (-want +got):\n%s", tt.pid, diff)
			}
		})
	}
	st, _ := fixtures.Status(100)
	got, err := st.FileOwner()
	want := FileOwner{UID: 1000, GID: 1000, Groups: []int{4, 1000}, Umask: 0o022}
	if diff := cmp.Diff(want, got); err != nil || diff != "" {
		t.Errorf("FileOwner = %v (-want +got):\n%s", err, diff)
	}
}
