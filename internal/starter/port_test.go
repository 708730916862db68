package starter

import (
	"slices"
	"testing"
)

func TestStartServerPortArgs(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Port
		bad  bool
	}{
		{in: "8000", want: Port{Port: "8000", FD: -1, Name: "8000"}},
		{in: " 8000 = 5 ", want: Port{Port: "8000", FD: 5, Name: "8000"}},
		{in: "127.0.0.1:8000", want: Port{Host: "127.0.0.1", Port: "8000", FD: -1, Name: "127.0.0.1:8000"}},
		{in: "localhost:8000=0", want: Port{Host: "localhost", Port: "8000", FD: 0, Name: "localhost:8000"}},
		{in: "[::1]:8080", want: Port{Host: "::1", Port: "8080", FD: -1, Name: "[::1]:8080"}},
		{in: "::1:8080", want: Port{Host: "::1", Port: "8080", FD: -1, Name: "[::1]:8080"}},
		{in: "u53", want: Port{Port: "53", FD: -1, UDP: true, Name: "53"}},
		{in: "[::]:u53=7", want: Port{Host: "::", Port: "53", FD: 7, UDP: true, Name: "[::]:53"}},
		{in: "", bad: true}, {in: "http", bad: true}, {in: ":80", bad: true}, {in: "[::1]8080", bad: true},
		{in: "80=x", bad: true}, {in: "80=-1", bad: true}, {in: "[]:80", bad: true}, {in: "1.2.3.4:", bad: true},
		{in: "=:0=0", bad: true}, {in: "a=b:80", bad: true}, {in: "[a=b]:80", bad: true}, {in: "a]:b:80", bad: true}, {in: "a b:80", bad: true},
	} {
		got, err := ParsePort(tt.in)
		switch {
		case tt.bad && err == nil:
			t.Errorf("ParsePort(%q) = %+v, want an error", tt.in, got)
		case !tt.bad && err != nil:
			t.Errorf("ParsePort(%q): %v", tt.in, err)
		case !tt.bad && got != tt.want:
			t.Errorf("ParsePort(%q) (-want +got):\n-%+v\n+%+v", tt.in, tt.want, got)
		}
	}
	fds, err := AssignFDs([]Port{{FD: -1, Name: "a"}, {FD: 3, Name: "b"}, {FD: -1, Name: "c"}, {FD: 0, Name: "d"}})
	if want := []int{4, 3, 5, 0}; err != nil || !slices.Equal(fds, want) {
		t.Errorf("AssignFDs = %v, %v; want %v", fds, err, want)
	}
}

// FuzzStarterPort: the --port parser never panics, and the name it gives a
// port (SERVER_STARTER_PORT's) reads back as the same port.
func FuzzStarterPort(f *testing.F) {
	for _, s := range []string{"8000", "127.0.0.1:8000=3", "[::1]:u8080", "::1:80", "localhost:80", " 1 = 2 ", "[:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParsePort(s)
		if err != nil {
			return
		}
		b, err := ParsePort(a.Name)
		if err != nil || b.Name != a.Name || b.Host != a.Host || b.Port != a.Port || b.FD != -1 || b.UDP {
			t.Errorf("%q names itself %q, which reads back as %+v, %v", s, a.Name, b, err)
		}
	})
}
