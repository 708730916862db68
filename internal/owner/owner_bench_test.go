package owner

import (
	"net/netip"
	"os/exec"
	"strconv"
	"testing"

	psnet "github.com/shirou/gopsutil/v3/net"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// BenchmarkLookup finds the holders of one listening port with 400 extra idle
// processes running, as takeover does it and as the tools a user would reach
// for do it, in the same run:
//
//	go test -run '^$' -bench Lookup -benchtime 200x ./internal/owner
//
// takeover-swap is the lookup at a swap, which starts from the previous
// generation's launcher; takeover-who is the full walk `takeover who` does.
func BenchmarkLookup(b *testing.B) {
	for range 400 {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	h := testutil.StartHelper(b, "wrapper", "127.0.0.1:0")
	ap := netip.MustParseAddrPort(h.Addr)
	spec := target.Spec{Addr: ap.Addr(), Port: ap.Port()}
	port := strconv.Itoa(int(ap.Port()))
	launcher := h.Cmd.Process.Pid

	mustFind := func(b *testing.B, ls []Listener, err error) {
		if err != nil || len(ls) != 1 || len(ls[0].Holders) == 0 {
			b.Fatalf("lookup = %+v, %v", ls, err)
		}
	}
	b.Run("takeover-swap", func(b *testing.B) {
		for b.Loop() {
			ls, err := Listeners("/proc", spec, []int{launcher}, true)
			mustFind(b, ls, err)
		}
	})
	b.Run("takeover-who", func(b *testing.B) {
		for b.Loop() {
			ls, err := Listeners("/proc", spec, nil, false)
			mustFind(b, ls, err)
		}
	})
	b.Run("gopsutil-connections", func(b *testing.B) {
		for b.Loop() {
			conns, err := psnet.Connections("tcp")
			if err != nil {
				b.Fatal(err)
			}
			found := false
			for _, c := range conns {
				found = found || (c.Status == "LISTEN" && c.Laddr.Port == uint32(ap.Port()) && c.Pid > 0)
			}
			if !found {
				b.Fatal("gopsutil did not find the listener")
			}
		}
	})
	runTool := func(name string, args ...string) {
		b.Run(name, func(b *testing.B) {
			testutil.RequireTool(b, name)
			for b.Loop() {
				out, err := exec.Command(name, args...).Output()
				if err != nil || len(out) == 0 {
					b.Fatalf("%s: %v, %q", name, err, out)
				}
			}
		})
	}
	runTool("ss", "-ltnpH", "sport = :"+port)
	runTool("lsof", "-t", "-sTCP:LISTEN", "-i:"+port)
}
