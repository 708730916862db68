package swap

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// BenchmarkAccept: what fencing costs a server that accepts short
// connections, against the candidate it was chosen over. One acceptor (a
// level-triggered epoll loop, as redis's and asyncio's are) serves 2
// clients that each connect, read "ok" and close. plain: the acceptor on a
// socket of its own. fenced: the acceptor on the new socket of a fenced
// handoff, its SO_REUSEPORT group steered to it, while the old server
// (another acceptor) waits on the old socket; old-cpu-ms is the old
// server's CPU time over the run (a level-triggered loop that saw its
// socket readable and could not accept would spin). accept-trapped: the
// acceptor under a seccomp filter that sends every accept(2) to a
// supervisor (answered "continue" at once), what trapping accept to fence
// would cost for the server's whole life.
//
//	go test -run '^$' -bench Accept -benchtime 20000x ./internal/swap
func BenchmarkAccept(b *testing.B) {
	for _, mode := range []string{"plain", "fenced", "accept-trapped"} {
		b.Run(mode, func(b *testing.B) { benchAccept(b, mode) })
	}
}

func benchAccept(b *testing.B, mode string) {
	ln, addr := fenceListener(b)
	serveOn := ln
	var old *exec.Cmd
	if mode == "fenced" {
		old = startAcceptor(b, "acceptor", ln, -1)
		own := tcpSocket(b)
		f := joinFence(b, own, ln, addr, 4096)
		if err := f.Raise(own); err != nil {
			b.Fatal(err)
		}
		serveOn = own
	}
	helper, notifFD := "acceptor", -1
	var trapped atomic.Int64
	supervisor := 0 // the thread that answers the trapped accepts
	var srv *exec.Cmd
	if mode == "accept-trapped" {
		helper = "trapped-acceptor"
		ours, theirs, err := unixSocketPair()
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(ours)
		srv = startAcceptor(b, helper, serveOn, theirs)
		unix.Close(theirs)
		notifFD = recvFD(b, ours)
		defer unix.Close(notifFD)
		tids := make(chan int, 1)
		go func() {
			runtime.LockOSThread() // the answering loop's CPU is its thread's
			tids <- unix.Gettid()
			answerContinue(notifFD, &trapped)
		}()
		supervisor = <-tids
	} else {
		srv = startAcceptor(b, helper, serveOn, -1)
	}
	if err := waitOK(addr.String()); err != nil {
		b.Fatal(err)
	}
	var oldCPU0, supCPU0 time.Duration
	if old != nil {
		oldCPU0 = cpuTime(b, old.Process.Pid)
	}
	if supervisor != 0 {
		supCPU0 = cpuTime(b, supervisor)
	}
	server := srv.Process.Pid
	srvCPU0 := cpuTime(b, server)
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	began := time.Now()
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if waitOK(addr.String()) != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "accepts/s")
	b.ReportMetric(0, "ns/op")
	if n := failed.Load(); n > 0 {
		b.Errorf("%d of %d connections failed", n, b.N)
	}
	perAccept := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(perAccept(cpuTime(b, server)-srvCPU0), "server-cpu-µs/accept")
	if old != nil {
		b.ReportMetric(float64((cpuTime(b, old.Process.Pid) - oldCPU0).Milliseconds()), "old-cpu-ms")
	}
	if supervisor != 0 {
		b.ReportMetric(perAccept(cpuTime(b, supervisor)-supCPU0), "supervisor-cpu-µs/accept")
		b.ReportMetric(float64(trapped.Load())/float64(b.N), "trapped/accept")
	}
}

// waitOK connects to addr and reads the acceptor's answer.
func waitOK(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ok\n" {
		return syscall.EPROTO
	}
	return nil
}

// startAcceptor runs the test binary as an acceptor helper on ln (its fd
// 3), with extra as its fd 4 if it is not -1; stopped at the end.
func startAcceptor(b *testing.B, mode string, ln, extra int) *exec.Cmd {
	b.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), testutil.HelperEnv+"="+mode)
	cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(dupFD(b, ln)), "listener")}
	if extra >= 0 {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(dupFD(b, extra)), "notif"))
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	b.Cleanup(func() {
		cmd.Process.Kill() // the pidfd-backed os.Process: never another process
		cmd.Wait()
	})
	return cmd
}

func dupFD(b *testing.B, fd int) int {
	b.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func unixSocketPair() (int, int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	return fds[0], fds[1], err
}

func recvFD(b *testing.B, sock int) int {
	b.Helper()
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
	if err != nil {
		b.Fatalf("receive the seccomp listener: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		b.Fatalf("receive the seccomp listener: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		b.Fatalf("receive the seccomp listener: %v", err)
	}
	return fds[0]
}

// answerContinue lets every trapped call through, as takeover's loop
// answers a call that is not its business, until the acceptor is gone.
// It counts the calls it answered.
func answerContinue(fd int, answered *atomic.Int64) {
	seccomp.SyncWakeUp(fd)
	var n seccomp.Notif
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			return // POLLHUP: the acceptor is gone
		}
		if err := seccomp.Recv(fd, &n); err != nil {
			if err == unix.ENOENT || err == unix.EINTR {
				continue
			}
			return
		}
		r := seccomp.Continue
		r.ID = n.ID
		if seccomp.Send(fd, &r) == nil {
			answered.Add(1)
		}
	}
}

// cpuTime reads a process's (or a thread's: /proc/TID works for any thread)
// user and system time from /proc/PID/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100
}

// acceptLoop serves fd from a level-triggered epoll loop: accept every
// connection it can, answer "ok", close it.
func acceptLoop(fd int) int {
	unix.SetNonblock(fd, true)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return 1
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return 1
	}
	evs := make([]unix.EpollEvent, 1)
	answer := []byte("ok\n")
	for {
		if _, err := unix.EpollWait(ep, evs, -1); err != nil && err != unix.EINTR {
			return 1
		}
		for {
			c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err != nil {
				break
			}
			unix.Write(c, answer)
			unix.Close(c)
		}
	}
}

// trappedAcceptor installs a filter that traps accept and accept4 on its
// locked thread, sends the listener fd over fd 4, and execs an acceptor,
// which inherits the filter.
func trappedAcceptor() int {
	runtime.LockOSThread()
	fd, err := seccomp.Install([]uint32{unix.SYS_ACCEPT, unix.SYS_ACCEPT4})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	if err := unix.Sendmsg(4, []byte{0}, unix.UnixRights(fd), nil, 0); err != nil {
		return 1
	}
	unix.Close(fd)
	unix.Close(4)
	self, _ := os.Executable()
	env := []string{testutil.HelperEnv + "=acceptor"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, testutil.HelperEnv+"=") {
			env = append(env, kv)
		}
	}
	syscall.Exec(self, []string{self}, env)
	return 1
}
