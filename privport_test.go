package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/takeover/takeover/internal/testutil"
)

// TestPrivilegedPortNeedsRealCapability: takeover, as root, binds a port
// below net.ipv4.ip_unprivileged_port_start for its command only if the
// command could bind it itself. An unprivileged user (nobody, by setpriv)
// in a user namespace of its own (unshare -U -r) has a full CapEff there,
// but no CAP_NET_BIND_SERVICE for the network namespace takeover runs in:
// its bind of port 81 is refused (EACCES), as the kernel refuses it
// without takeover. The same user in a network namespace its user
// namespace owns (unshare -U -r -n) may bind it, and root may. Where
// ip_unprivileged_port_start is 0, nobody may, but not once moved to a
// network namespace of the default 1024 (unshare -n as root, then
// setpriv). Each takeover runs in a network namespace of its own, so port
// 81 is the test's alone.
func TestPrivilegedPortNeedsRealCapability(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: takeover binds port 81 as root")
	}
	testutil.RequireTool(t, "setpriv")
	testutil.RequireTool(t, "unshare")
	bin := takeoverBin(t)
	nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}
	if out, err := exec.Command(nobody[0], append(nobody[1:], "unshare", "-U", "-r", "true")...).CombinedOutput(); err != nil {
		t.Skipf("an unprivileged user cannot make a user namespace here: %v %s", err, out)
	}
	for _, tt := range []struct {
		name    string
		command []string
		allowed bool
		open    bool // net.ipv4.ip_unprivileged_port_start=0 where takeover runs
	}{
		{name: "nobody in a user namespace of its own", command: append(append([]string{}, nobody...), "unshare", "-U", "-r", "--")},
		{name: "nobody", command: nobody},
		{name: "nobody in its own user and network namespaces", command: append(append([]string{}, nobody...), "unshare", "-U", "-r", "-n", "--"), allowed: true},
		{name: "root", allowed: true},
		// takeover reads the sysctl of its own network namespace: in
		// another (root's unshare -n, then nobody) port 81 is privileged
		// again, as the kernel's default there.
		{name: "nobody where ports are open to all", command: nobody, open: true, allowed: true},
		{name: "nobody moved to a network namespace where they are not", command: append([]string{"unshare", "-n", "--"}, nobody...), open: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--port", "81", "--"}, tt.command...)
			args = append(args, bin, "demo-server", "0.0.0.0:81")
			open := "1024"
			if tt.open {
				open = "0"
			}
			cmd := exec.Command("sh", append([]string{"-c", `echo $0 > /proc/sys/net/ipv4/ip_unprivileged_port_start && exec "$@"`, open, bin}, args...)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
			r := startRun(t, cmd)
			select {
			case line := <-r.lines:
				r.cmd.Process.Signal(syscall.SIGTERM)
				r.wait(t)
				if !tt.allowed {
					t.Fatalf("the command bound port 81 (%q), want EACCES\n%s", line, r.stderr)
				}
			case <-r.exited:
				code := r.wait(t)
				if tt.allowed || code != 1 || !strings.Contains(r.stderr.String(), "bind: permission denied") {
					t.Fatalf("takeover exited %d; want the command's bind of port 81 %s\n%s",
						code, map[bool]string{true: "to succeed", false: "refused (permission denied, status 1)"}[tt.allowed], r.stderr)
				}
			}
		})
	}
}
