package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestWhoDualStack: `takeover who ADDR:P` lists what a takeover of that
// spec would replace, the listeners a bind there conflicts with: for
// 127.0.0.1:P the 0.0.0.0:P listener (which takes that address too) and
// not the IPv6-only [::]:P beside it; for [::1]:P that one, said to be
// IPv6 only; for P both. Real sockets, in a network namespace of the
// test's own.
func TestWhoDualStack(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("needs root: it binds the wildcards in a network namespace")
	}
	err := testutil.InPrivateNetns(func() error {
		var port uint16
		for _, k := range []testutil.BindKind{{Name: "v4 any", Addr: "0.0.0.0"}, {Name: "v6 any v6only", Addr: "::", V6Only: true}} {
			s, err := k.Socket(port)
			if err != nil {
				return fmt.Errorf("bind %s: %w", k.Name, err)
			}
			defer unix.Close(s)
			if err := unix.Listen(s, 1); err != nil {
				return err
			}
			sa, _ := unix.Getsockname(s)
			port = target.AddrPortOf(sa).Port()
		}
		p := strconv.Itoa(int(port))
		v4, v6 := "0.0.0.0:"+p+" (socket inode", "[::]:"+p+" (socket inode"
		for _, tt := range []struct {
			spec      string
			want, not []string
		}{
			{"127.0.0.1:" + p, []string{v4}, []string{v6}},
			{"[::1]:" + p, []string{v6, "IPv6 only"}, []string{v4}},
			{p, []string{v4, v6, "IPv6 only"}, nil},
		} {
			var out, errOut bytes.Buffer
			if code := run([]string{"who", tt.spec}, &out, &errOut); code != 0 {
				t.Errorf("who %s = %d, want 0; it printed:\n%s%s", tt.spec, code, out.String(), errOut.String())
				continue
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("who %s lacks %q:\n%s", tt.spec, w, out.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("who %s lists %q, which a bind there does not conflict with:\n%s", tt.spec, n, out.String())
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
