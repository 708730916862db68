package procfs

// Tests of the passwd reader.

import "testing"

func TestUserName(t *testing.T) {
	tests := []struct {
		name string
		uid  int
		want string
		ok   bool
	}{
		{"root", 0, "root", true},
		{"a system user", 1, "daemon", true},
		{"a person", 1000, "alice", true}, // the first line naming 1000, not the comment's or alice2's
		{"leading blanks", 1001, "spaced", true},
		{"NIS line", 2, "", false},
		{"empty name", 1002, "", false},
		{"nobody with that uid", 4242, "", false},
		{"uid that is a prefix", 10, "", false},
	}
	for _, tt := range tests {
		got, ok := UserName("testdata/passwd", tt.uid)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: UserName(%d) = %q, %v; want %q, %v", tt.name, tt.uid, got, ok, tt.want, tt.ok)
		}
	}
	if got, ok := UserName("testdata/no-such-passwd", 0); ok {
		t.Errorf("UserName of a missing file = %q, true; want false", got)
	}
}
