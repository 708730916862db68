package doctor

import (
	"fmt"
	"os"
	"strings"
)

// IoUringCheck says whether a server here could bind a port through
// io_uring (IORING_OP_BIND, Linux 6.11): such a bind is no system call, so
// no seccomp filter sees it and takeover cannot take it over. (The kernel
// checks it as it checks any bind: the port is the server's own, or the
// bind fails with EADDRINUSE while the old server holds it.) It is said,
// not warned of: io_uring is on by default, and no common runtime binds
// through it, so a warning would be on every host. disabled is
// kernel.io_uring_disabled ("" where the kernel lacks it: no io_uring
// sysctl, or none at all). Binds made in the x32 and 32-bit ABIs, by
// contrast, are trapped as native ones (internal/seccomp's Filter).
func IoUringCheck(release, disabled string) Check {
	c := Check{Status: StatusOK, Check: "io_uring"}
	major, minor, ok := KernelVersion(release)
	switch disabled = strings.TrimSpace(disabled); {
	case ok && (major < 6 || major == 6 && minor < 11):
		c.Detail = fmt.Sprintf("Linux %d.%d predates IORING_OP_BIND (6.11): every bind is a system call takeover sees", major, minor)
	case disabled == "2":
		c.Detail = "io_uring is disabled (kernel.io_uring_disabled=2): every bind is a system call takeover sees"
	default:
		who := "every process"
		if disabled == "1" {
			who = "privileged processes and the kernel.io_uring_group"
		}
		c.Detail = fmt.Sprintf("io_uring is enabled for %s, and a bind through it (IORING_OP_BIND, Linux 6.11) is seen by no seccomp filter: takeover does not take such a bind over", who)
		c.Do = []string{"make sure the server binds its --port with bind(2) (every common runtime does), or set kernel.io_uring_disabled=2 if nothing on this host uses io_uring"}
	}
	return c
}

// ioUringDisabled reads kernel.io_uring_disabled; "" where it cannot.
func ioUringDisabled() string {
	b, _ := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
	return string(b)
}
