package procfs

// Tests of the status reader.

import (
	"reflect"
	"testing"
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
