package starter

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseServerStarterPort(t *testing.T) {
	got, err := ParseEnv("127.0.0.1:8100=3;/run/app.sock=4")
	want := []Socket{{"127.0.0.1:8100", 3}, {"/run/app.sock", 4}}
	if err != nil || !cmp.Equal(want, got) {
		t.Errorf("ParseEnv = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", ";", "8100", "8100=x", "=3", "8100=-1"} {
		if _, err := ParseEnv(bad); err == nil {
			t.Errorf("ParseEnv(%q) accepted it", bad)
		}
	}
}

func FuzzParseServerStarterPort(f *testing.F) {
	f.Add("127.0.0.1:8100=3;/run/app.sock=4")
	f.Add("[::1]:80=5")
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseEnv(s)
		for _, p := range ps {
			if err == nil && (p.FD < 0 || p.Addr == "") {
				t.Fatalf("ParseEnv(%q) = %+v", s, ps)
			}
		}
	})
}
