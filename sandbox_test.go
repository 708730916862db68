package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/takeover/takeover/internal/doctor"
	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// The sandbox emulates the default seccomp profile of Docker, containerd and
// podman around a process: without CAP_SYS_PTRACE they answer EPERM to
// pidfd_getfd, ptrace, process_vm_readv, process_vm_writev and kcmp. It
// installs no listener, so takeover can still install its own inside it.
//
// The test binary becomes the sandbox when TAKEOVER_TEST_SANDBOX=1: it
// installs the filter on its main thread and execs os.Args[1:] from there.
// With TAKEOVER_TEST_SANDBOX_PROBE=1 it instead tries each of those system
// calls and prints what they return (sandboxProbe).
func init() {
	if os.Getenv("TAKEOVER_TEST_SANDBOX") == "1" {
		runSandbox(os.Args[1:])
	}
	if os.Getenv("TAKEOVER_TEST_SANDBOX_PROBE") == "1" {
		os.Exit(sandboxProbe())
	}
}

// sandboxed returns cmd rewritten to run inside the emulated container profile.
func sandboxed(cmd *exec.Cmd) *exec.Cmd {
	s := exec.Command(os.Args[0], append([]string{cmd.Path}, cmd.Args[1:]...)...)
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	s.Env = append(env[:len(env):len(env)], "TAKEOVER_TEST_SANDBOX=1")
	s.Dir = cmd.Dir
	s.Stdin, s.Stdout, s.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	s.ExtraFiles = cmd.ExtraFiles
	s.SysProcAttr = cmd.SysProcAttr
	s.WaitDelay = cmd.WaitDelay
	s.Err = cmd.Err
	return s
}

// sandboxDenied are the system calls a container's default profile refuses
// without CAP_SYS_PTRACE.
var sandboxDenied = []uint32{unix.SYS_PIDFD_GETFD, unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_KCMP}

// sandboxFilter answers EPERM to sandboxDenied of the native architecture
// and allows everything else. (Other architectures' calls pass, as the
// x32 ABI does: it is a test's sandbox, not a security boundary.)
func sandboxFilter() []unix.SockFilter {
	return seccomp.Filter(sandboxDenied, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM))
}

// runSandbox never returns: it execs args[0] under the filter, or exits.
func runSandbox(args []string) {
	runtime.LockOSThread() // the filter binds to this thread, which execs
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "sandbox: %s: %v\n", what, err)
		os.Exit(125)
	}
	if len(args) == 0 {
		fail("no command", nil)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail("prctl(PR_SET_NO_NEW_PRIVS)", err)
	}
	insns := sandboxFilter()
	prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		fail("seccomp(SECCOMP_SET_MODE_FILTER)", errno)
	}
	runtime.KeepAlive(insns)
	os.Unsetenv("TAKEOVER_TEST_SANDBOX")
	err := syscall.Exec(args[0], args, os.Environ())
	fail("exec "+args[0], err)
}

// sandboxProbe tries each system call the sandbox denies, on a child of
// its own (a descendant, so that Yama's ptrace_scope=1 lets it through), and
// prints one line per call: its name and "ok" or the error.
func sandboxProbe() int {
	r, w, err := os.Pipe()
	if err != nil {
		return 1
	}
	defer w.Close()
	child := exec.Command("/proc/self/exe")
	child.Env = append(os.Environ(), "TAKEOVER_TEST_SANDBOX_PROBE=", "TAKEOVER_TEST_HELPER=holdfd")
	child.ExtraFiles = []*os.File{r}
	if err := child.Start(); err != nil {
		fmt.Println("start:", err)
		return 1
	}
	r.Close()
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	pid := child.Process.Pid
	result := func(name string, err error) {
		if err == nil {
			fmt.Printf("%s: ok\n", name)
		} else {
			fmt.Printf("%s: %v\n", name, err)
		}
	}

	pidfd, err := unix.PidfdOpen(pid, 0)
	result("pidfd_open", err)
	if err == nil {
		fd, err := unix.PidfdGetfd(pidfd, 3, 0)
		if err == nil {
			unix.Close(fd)
		}
		result("pidfd_getfd", err)
		unix.Close(pidfd)
	}
	// The child is not traced: an allowed PTRACE_PEEKDATA fails with ESRCH.
	_, err = unix.PtracePeekData(pid, 0, make([]byte, 8))
	result("ptrace", err)
	buf, other := make([]byte, 7), make([]byte, 7)
	copy(buf, "sandbox") // writable: a []byte of a constant may live in read-only memory
	local := []unix.Iovec{{Base: &other[0]}}
	local[0].SetLen(len(other))
	remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&buf[0])), Len: len(buf)}}
	_, err = unix.ProcessVMReadv(os.Getpid(), local, remote, 0)
	result("process_vm_readv", err)
	_, err = unix.ProcessVMWritev(os.Getpid(), local, remote, 0)
	result("process_vm_writev", err)
	const kcmpFile = 0
	_, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(pid), kcmpFile, 0, 0, 0)
	if errno == 0 {
		result("kcmp", nil)
	} else {
		result("kcmp", errno)
	}
	_, err = os.Getwd() // anything else is allowed
	result("getcwd", err)
	runtime.KeepAlive(buf)
	return 0
}

// TestSandbox: inside the sandbox each denied system call fails with EPERM
// and everything else works; outside it, they all work.
func TestSandbox(t *testing.T) {
	run := func(cmd *exec.Cmd) map[string]string {
		t.Helper()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		got := make(map[string]string)
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			name, res, _ := strings.Cut(line, ": ")
			got[name] = res
		}
		return got
	}
	probe := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		// GORACE: a -race binary otherwise sleeps a second before it exits.
		cmd.Env = append(os.Environ(), "TAKEOVER_TEST_SANDBOX_PROBE=1", "GORACE=atexit_sleep_ms=0")
		return cmd
	}

	outside := run(probe())
	inside := run(sandboxed(probe()))
	eperm := unix.EPERM.Error()
	for _, tt := range []struct{ call, outside, inside string }{
		{"pidfd_open", "ok", "ok"},
		{"pidfd_getfd", "ok", eperm},
		{"ptrace", unix.ESRCH.Error(), eperm},
		{"process_vm_readv", "ok", eperm},
		{"process_vm_writev", "ok", eperm},
		{"kcmp", "ok", eperm},
		{"getcwd", "ok", "ok"},
	} {
		if outside[tt.call] != tt.outside {
			t.Errorf("outside the sandbox, %s: %q, want %q", tt.call, outside[tt.call], tt.outside)
		}
		if inside[tt.call] != tt.inside {
			t.Errorf("inside the sandbox, %s: %q, want %q", tt.call, inside[tt.call], tt.inside)
		}
	}
}

// TestSandboxStatus: the command runs under exactly one more seccomp filter,
// with its own arguments and environment, and without the sandbox's variable.
func TestSandboxStatus(t *testing.T) {
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var filters int
	fmt.Sscan(doctor.StatusFields(string(self))["Seccomp_filters"], &filters)
	cmd := exec.Command("sh", "-c", `grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status; echo "args $0 $1 [$TAKEOVER_TEST_SANDBOX] $MARK"`, "zero", "one")
	cmd.Env = append(os.Environ(), "MARK=here")
	out, err := sandboxed(cmd).Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	st := doctor.StatusFields(string(out))
	if want := fmt.Sprint(filters + 1); st["Seccomp"] != "2" || st["Seccomp_filters"] != want || st["NoNewPrivs"] != "1" {
		t.Errorf("inside the sandbox, /proc/self/status says Seccomp %q, Seccomp_filters %q, NoNewPrivs %q; want 2, %s, 1:\n%s",
			st["Seccomp"], st["Seccomp_filters"], st["NoNewPrivs"], want, out)
	}
	if !strings.Contains(string(out), "args zero one [] here") {
		t.Errorf("the command did not get its arguments and environment:\n%s", out)
	}
}
