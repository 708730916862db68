package seccomp

import (
	"strings"
	"syscall"
	"testing"
)

// TestCheckAddFD: an fd that does not know SECCOMP_IOCTL_NOTIF_ADDFD, as a
// seccomp listener of a kernel before 5.9 does not, is reported with the
// kernel version that has it. (Every end-to-end test passes through the
// check with a listener of this kernel, which has it.)
func TestCheckAddFD(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	err := CheckAddFD(p[0])
	if err == nil || !strings.Contains(err.Error(), "Linux 5.9") {
		t.Errorf("CheckAddFD(a pipe) = %v, want the missing ioctl named with its kernel version", err)
	}
}
