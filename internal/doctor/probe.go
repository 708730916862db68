package doctor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/takeover/takeover/internal/intercept"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// The probe: a child of `takeover doctor` that it examines as a launcher
// examines its server.

// probeContext is what probeChecks needs to explain a failure.
type probeContext struct {
	seccompFilters int
	yama           bool
	scope          int
	capPtrace      bool
}

// probeMem is what the doctor reads back from the probe's memory.
var probeMem [32]byte

// runDoctorProbe is the child `takeover doctor` examines. It prints where
// probeMem is, then installs the bind filter on one thread and sends the
// notification fd over fd 3, as the shim does, and binds a socket on that
// thread, which the doctor answers. It prints what the socket's fd held
// after the bind, and exits when its stdin closes.
func runDoctorProbe() int {
	copy(probeMem[:], "takeover doctor probe "+strconv.Itoa(os.Getpid()))
	fmt.Printf("mem %#x\n", uintptr(unsafe.Pointer(&probeMem[0])))
	unix.CloseOnExec(intercept.ShimFD)
	bound := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the filtered thread ends with this goroutine
		bound <- probeBind()
	}()
	fmt.Println(<-bound)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func probeBind() string {
	fd, err := seccomp.Install(intercept.TrappedCalls(false))
	if err != nil {
		intercept.SendShimResult(-1, err.Error())
		return "nofilter"
	}
	err = intercept.SendShimResult(fd, "")
	unix.Close(fd)
	if err != nil {
		return "nofilter"
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "error " + err.Error()
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return "error " + err.Error()
	}
	var st unix.Stat_t
	unix.Fstat(s, &st)
	return "bound " + strconv.FormatUint(st.Ino, 10)
}

// probeTimeout bounds the time given to the probe, which takes a few
// milliseconds.
const probeTimeout = 5 * time.Second

// untilDeadline is what is left of d, at least a millisecond: a timeout of
// zero means forever to SO_RCVTIMEO.
func untilDeadline(d time.Time) time.Duration {
	return max(time.Until(d), time.Millisecond)
}

// probeChecks starts the probe and does to it what a launcher does to its
// server. The probe is killed and reaped before it returns.
func probeChecks(pc probeContext) []Check {
	fail := func(what string, err error) []Check {
		return []Check{{Status: StatusMissing, Check: "child process", Detail: fmt.Sprintf("%s: %v", what, err),
			Do: []string{"takeover starts every server by re-executing itself (/proc/self/exe): what stops this child stops takeover too"}}}
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socketpair", err)
	}
	sock, probeEnd := pair[0], os.NewFile(uintptr(pair[1]), "probe")
	defer unix.Close(sock)
	inR, inW, err := os.Pipe()
	if err != nil {
		probeEnd.Close()
		return fail("pipe", err)
	}
	defer inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		probeEnd.Close()
		inR.Close()
		return fail("pipe", err)
	}
	defer outR.Close()
	var inStat unix.Stat_t // the probe's stdin, which pidfd_getfd copies
	if conn, err := inR.SyscallConn(); err == nil {
		conn.Control(func(fd uintptr) { unix.Fstat(int(fd), &inStat) })
	}

	var stderr bytes.Buffer
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{doctorProbeArg0}
	cmd.Env = append(os.Environ(), doctorProbeEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, &stderr
	cmd.ExtraFiles = []*os.File{probeEnd}
	err = cmd.Start()
	probeEnd.Close()
	inR.Close()
	outW.Close()
	if err != nil {
		return fail("cannot start a child process (/proc/self/exe)", err)
	}
	// The probe would exit once its stdin closes (which is how it goes
	// when the doctor dies first); killing it saves the time.
	stop := sync.OnceFunc(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	defer stop()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(probeTimeout)
	outR.SetReadDeadline(deadline)
	lines := bufio.NewReader(outR)
	first, err := lines.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(first), "mem ")
	if err != nil || !ok {
		stop() // before stderr is read: until then os/exec writes to it
		return fail("the child process (takeover itself, in its probe mode) did not start", fmt.Errorf("%v %s", err, strings.TrimSpace(stderr.String())))
	}

	var checks []Check
	tv := unix.NsecToTimeval(untilDeadline(deadline).Nanoseconds())
	unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	notifFD, err := intercept.RecvShimResult(sock, deadline)
	if err != nil {
		checks = append(checks, listenerFailed(err))
	} else {
		checks = append(checks, answerProbe(notifFD, lines, deadline)...)
		unix.Close(notifFD)
	}
	checks = append(checks, memCheck(pid, addr, pc))
	checks = append(checks, pidfdChecks(pid, inStat.Ino, pc)...)
	checks = append(checks, procCheck(pid, sock))
	return checks
}

// listenerFailed explains why the probe could not install the bind filter.
func listenerFailed(err error) Check {
	c := Check{Status: StatusMissing, Check: "seccomp listener", Detail: err.Error()}
	switch msg := err.Error(); {
	case strings.Contains(msg, "another seccomp listener"): // seccomp.Install's EBUSY
		if pid := os.Getenv(rundir.LauncherEnv); pid != "" {
			c.Detail = fmt.Sprintf("this process runs under takeover (%s=%s), whose seccomp listener is the one allowed: a takeover cannot run inside another takeover (EBUSY)", rundir.LauncherEnv, pid)
			c.Do = []string{"run takeover at the top: started by systemd, a deploy script or a shell, not by a server that runs under takeover"}
		} else {
			c.Detail = "a seccomp listener is already installed above this process, and the kernel allows one (EBUSY): a takeover inside a takeover, or a container runtime or sandbox that intercepts system calls with one (sysbox, LXD's syscall interception)"
			c.Do = []string{"run takeover outside that runtime's interception, or in a container without it"}
		}
	case strings.Contains(msg, "NEW_LISTENER"):
		c.Do = []string{"upgrade to Linux 5.9 or later, built with CONFIG_SECCOMP_FILTER"}
	default:
		c.Do = []string{"a seccomp profile or an LSM around takeover forbids seccomp(2) itself (Docker's default profile allows it): check the profile in use (docker run --security-opt seccomp=...) and the LSM's log"}
	}
	c.Do = append(c.Do, "without it, a server that takes its listening sockets from its parent still works: takeover --sockets systemd (LISTEN_FDS) or --sockets server-starter (SERVER_STARTER_PORT) needs no seccomp")
	return c
}

// answerProbe answers the probe's bind as a launcher would answer its
// server's: it reads the address from the probe's memory, installs a
// socket of its own at the probe's fd and lets the bind go on, then reads
// back which socket the probe bound.
func answerProbe(notifFD int, lines *bufio.Reader, deadline time.Time) []Check {
	listener := Check{Status: StatusMissing, Check: "seccomp listener",
		Do: []string{"the kernel accepted the filter but the notification did not work as takeover uses it: run takeover doctor --json and report it, with uname -a"}}
	fds := []unix.PollFd{{Fd: int32(notifFD), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(untilDeadline(deadline).Milliseconds()))
	for err == unix.EINTR {
		n, err = unix.Poll(fds, int(untilDeadline(deadline).Milliseconds()))
	}
	var notif seccomp.Notif
	if err == nil && n == 1 && fds[0].Revents&unix.POLLIN != 0 {
		err = seccomp.Recv(notifFD, &notif)
	} else if err == nil {
		err = errors.New("no notification came")
	}
	if err != nil || notif.Nr != unix.SYS_BIND {
		listener.Detail = fmt.Sprintf("installed in a child, but its bind(2) did not reach this process (nr %d): %v", notif.Nr, err)
		return []Check{listener}
	}
	what := "its bind(2)"
	if raw, err := seccomp.ReadSockaddr(notifFD, &notif); err == nil {
		if ap, _, ok := target.ParseSockaddr(raw); ok && ap == netip.MustParseAddrPort("127.0.0.1:0") {
			what += " of " + ap.String()
		}
	}

	addfd := Check{Status: StatusMissing, Check: "SECCOMP_IOCTL_NOTIF_ADDFD"}
	var want uint64
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		var st unix.Stat_t
		unix.Fstat(s, &st)
		want = st.Ino
		err = seccomp.AddFD(notifFD, notif.ID, s, int(notif.Args[0]), true)
		unix.Close(s)
	}
	resp := seccomp.Continue
	resp.ID = notif.ID
	sendErr := seccomp.Send(notifFD, &resp)
	second, rerr := lines.ReadString('\n')
	second = strings.TrimSpace(second)
	switch {
	case sendErr != nil || rerr != nil:
		listener.Detail = fmt.Sprintf("installed in a child and %s reached this process, but answering it failed: %v %v", what, sendErr, rerr)
		return []Check{listener}
	case !strings.HasPrefix(second, "bound "):
		listener.Detail = fmt.Sprintf("installed in a child and %s reached this process, but the bind then failed: %s", what, second)
		return []Check{listener}
	}
	listener.Status, listener.Do = StatusOK, nil
	listener.Detail = fmt.Sprintf("installed takeover's bind filter in a child; %s reached this process and was answered", what)
	switch {
	case err != nil:
		addfd.Detail = fmt.Sprintf("cannot install a socket in the child: %v", err)
		addfd.Do = []string{"takeover needs it to hand a listening socket to a new server; Linux 5.9 or later has it"}
	case second != "bound "+strconv.FormatUint(want, 10):
		addfd.Detail = fmt.Sprintf("installed a socket in the child, but the child bound another (%s, want inode %d)", second, want)
		addfd.Do = []string{"takeover needs it to hand a listening socket to a new server: run takeover doctor --json and report it, with uname -a"}
	default:
		addfd.Status, addfd.Detail = StatusOK, "installed a socket in the child at the fd it was binding, as a handoff does"
	}
	return []Check{listener, addfd}
}

// memCheck reads probeMem from the probe's memory, as takeover reads the
// address a server passes to bind(2).
func memCheck(pid int, addr string, pc probeContext) Check {
	c := Check{Status: StatusMissing, Check: "/proc/PID/mem"}
	at, err := strconv.ParseUint(strings.TrimPrefix(addr, "0x"), 16, 64)
	if err != nil {
		c.Detail = fmt.Sprintf("the child printed no address (%q)", addr)
		c.Do = []string{"the probe is takeover itself: is /proc/self/exe this takeover binary?"}
		return c
	}
	want := "takeover doctor probe " + strconv.Itoa(pid)
	got := make([]byte, len(want))
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err == nil {
		_, err = f.ReadAt(got, int64(at))
		f.Close()
	}
	switch {
	case err != nil:
		c.Detail = fmt.Sprintf("cannot read a child's memory: %v; takeover reads the address its server binds from there", err)
		if pc.yama && pc.scope >= 2 {
			c.Do = []string{"Yama forbids it: see the Yama line below"}
		} else {
			c.Do = []string{"an LSM (AppArmor, SELinux) or a hardened /proc forbids it: allow ptrace read access to takeover's own children, or give takeover CAP_SYS_PTRACE"}
		}
	case string(got) != want:
		c.Detail = fmt.Sprintf("read %q from the child's memory, want %q", got, want)
		c.Do = []string{"a hardened /proc may serve another process's memory wrong: run takeover doctor --json and report it, with uname -a"}
	default:
		c.Status, c.Detail = StatusOK, "read a child's memory, as takeover reads the address its server binds"
	}
	return c
}

// pidfdChecks opens a pidfd of the probe and copies its stdin out of it,
// as takeover copies its server's socket and an old server's.
func pidfdChecks(pid int, stdinIno uint64, pc probeContext) []Check {
	open := Check{Status: StatusMissing, Check: "pidfd_open"}
	getfd := Check{Status: StatusWarn, Check: "pidfd_getfd"}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		open.Detail = fmt.Sprintf("cannot open a pidfd of a child: %v; takeover signals and waits for old servers through pidfds", err)
		open.Do = []string{"Linux 5.3 or later has it; a container's seccomp profile may forbid it: allow pidfd_open"}
		getfd.Status, getfd.Detail = StatusMissing, "not tried: pidfd_open failed"
		getfd.Do = open.Do
		return []Check{open, getfd}
	}
	defer unix.Close(pidfd)
	open.Status, open.Detail = StatusOK, "opened a pidfd of a child, as takeover holds the processes it stops"
	fd, err := unix.PidfdGetfd(pidfd, 0, 0)
	if err == nil {
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		unix.Close(fd)
		if st.Ino != stdinIno {
			getfd.Detail = fmt.Sprintf("copied an fd out of a child, but not the one it holds (inode %d, want %d)", st.Ino, stdinIno)
			getfd.Do = []string{"run takeover doctor --json and report it, with uname -a"}
			return []Check{open, getfd}
		}
		getfd.Status, getfd.Detail = StatusOK, "copied an fd out of a child, as takeover copies sockets for bind and handoff"
		return []Check{open, getfd}
	}
	fallback := "without it, takeover falls back to creating sockets itself and passing them between takeovers over unix sockets: handoff keeps working, but the socket options a server set on its own socket are not copied"
	switch {
	case errors.Is(err, unix.ENOSYS) && pc.seccompFilters == 0:
		getfd.Status = StatusMissing
		getfd.Detail = "this kernel has no pidfd_getfd (ENOSYS)"
		getfd.Do = []string{"upgrade to Linux 5.9 or later"}
	case errors.Is(err, unix.EPERM) && pc.yama && pc.scope >= 2 && !(pc.scope == 2 && pc.capPtrace):
		getfd.Detail = fmt.Sprintf("cannot copy an fd out of a child (%v): Yama's ptrace_scope is %d (see the Yama line below)", err, pc.scope)
		getfd.Do = []string{fallback}
	case pc.seccompFilters > 0:
		getfd.Detail = fmt.Sprintf("cannot copy an fd out of a child (%v): a seccomp profile around takeover forbids pidfd_getfd, as the default profiles of Docker, containerd and Kubernetes do unless the container has CAP_SYS_PTRACE (podman's, as Debian ships it, allows it)", err)
		getfd.Do = []string{
			"docker run --cap-add SYS_PTRACE (podman: the same); Kubernetes: securityContext.capabilities.add: [SYS_PTRACE]",
			fallback,
		}
	default:
		getfd.Detail = fmt.Sprintf("cannot copy an fd out of a child (%v): an LSM (AppArmor, SELinux) forbids ptrace access", err)
		getfd.Do = []string{
			"give takeover CAP_SYS_PTRACE (systemd: AmbientCapabilities=CAP_SYS_PTRACE; docker run --cap-add SYS_PTRACE), or allow ptrace of its own children in the LSM's policy",
			fallback,
		}
	}
	return []Check{open, getfd}
}

// procCheck reads what takeover reads in /proc about other processes: the
// flags of an fd, and the system call each thread waits in, by which it
// sees whether a server accepts.
func procCheck(pid, ownFD int) Check {
	c := Check{Status: StatusMissing, Check: "/proc"}
	if _, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(ownFD)); err != nil {
		c.Detail = fmt.Sprintf("cannot read this process's fdinfo: %v", err)
		c.Do = []string{"mount procfs at /proc (mount -t proc proc /proc)"}
		return c
	}
	if _, err := procfs.FS("/proc").Cloexec(pid, 0); err != nil {
		c.Detail = fmt.Sprintf("cannot read a child's /proc/PID/fdinfo: %v; a handoff copies fd flags from there", err)
		c.Do = []string{"mount procfs at /proc without hidepid=, or with gid= of a group takeover's user is in"}
		return c
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err == nil {
		err = errors.New("no threads")
		for _, t := range tasks {
			if _, err = os.ReadFile(dir + "/" + t.Name() + "/syscall"); err == nil {
				break
			}
		}
	}
	if err != nil {
		c.Status = StatusWarn
		c.Detail = fmt.Sprintf("fdinfo is readable, but not a child's /proc/PID/task/TID/syscall: %v", err)
		c.Do = []string{"it needs the same ptrace right as pidfd_getfd (see the Yama line); without it takeover cannot see whether a server accepts, and relies on its listen(2) alone"}
		return c
	}
	c.Status, c.Detail = StatusOK, "a child's fdinfo and task/TID/syscall are readable, as takeover reads them to see a server accept"
	return c
}
