package ready

import (
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/target"
)

func TestParseHealth(t *testing.T) {
	list := func(specs ...string) target.List {
		var l target.List
		for _, s := range specs {
			if err := l.Set(s); err != nil {
				t.Fatal(err)
			}
		}
		return l
	}
	for _, c := range []struct {
		url   string
		ports target.List
		want  string // the address checked, or the error's words
	}{
		{"http://127.0.0.1:8100/healthz", list("8100"), "127.0.0.1:8100"},
		{"http://localhost:8100/", list("8100"), "127.0.0.1:8100"},
		{"http://[::1]:8100/", list("[::]:8100"), "[::1]:8100"},
		{"http://127.0.0.2:8100/", list("0.0.0.0:8100"), "127.0.0.2:8100"},
		{"http://10.1.2.3:8100/", list("10.1.2.3:8100"), "10.1.2.3:8100"},
		{"http://127.0.0.1/", list("80"), "127.0.0.1:80"},
		{"http://10.1.2.3:8100/", list("8100"), "nowhere off the host"},
		{"http://192.0.2.1:8100/", list("10.1.2.3:8100"), "nowhere off the host"},
		{"http://127.0.0.1:8100/", list("10.1.2.3:8100"), "does not reach"},
		{"http://[::1]:8100/", list("0.0.0.0:8100"), "does not reach"},
		{"http://example.com:8100/", list("8100"), "not an IP address"},
		{"http://127.0.0.1:8200/", list("8100"), "not a TCP --port target"},
		{"http://127.0.0.1:5353/", list("udp:5353"), "not a TCP --port target"},
		{"https://127.0.0.1:8100/", list("8100"), "plain http only"},
		{"ftp://127.0.0.1:8100/", list("8100"), "want http://"},
		{"http://", list("8100"), "no HOST:PORT"},
		{"http://u:p@127.0.0.1:8100/", list("8100"), "user:password"},
		{"http://127.0.0.1:0/", list("8100"), "want 1 to 65535"},
	} {
		h, err := ParseHealth(c.url, c.ports)
		got := h.Addr.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("ParseHealth(%q, %v) = %q; want %q", c.url, c.ports, got, c.want)
		}
	}
}
