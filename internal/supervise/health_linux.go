package supervise

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/ready"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// Health-gated readiness: with --ready http://HOST:PORT/PATH or
// --ready-exec CMD, a generation that is ready as --ready says (accepting,
// for a URL) is ready only once the check passes, tried again every
// checkEvery until --ready-timeout; one that never passes is rolled back
// as any generation that is not ready in time, with the check's last
// answer as what it had not done (the log, and the status file's
// last_failed_reload).
//
// The URL's request reaches the new server, not the old one that serves
// the same port meanwhile: in a fenced handoff the new socket is beside
// the old one in one SO_REUSEPORT group whose program sends every new
// connection to the old socket until the swap completes, and for the
// check's one connection, known by its source address and port (bound
// before it connects), the program picks the new socket
// (swap.Fence.SteerCheck). Where the port was free, or a rebind has
// stopped the old server, the new server's socket is the only one. In a
// handoff that is not fenced (--fence off, MPTCP, the server's own
// SO_REUSEPORT group) the two servers accept from one shared socket, and
// the check reaches whichever accepts first: takeover says so in the log.
// (A unix --path target is not a URL's: --ready-exec is for it.)

const (
	checkEvery       = 200 * time.Millisecond
	httpCheckTimeout = 2 * time.Second  // one request, at most; less if --ready-timeout ends first
	execCheckTimeout = 10 * time.Second // one run of --ready-exec, at most; less if --ready-timeout ends first
	answerMax        = 120              // bytes of an answer kept for the log
	noAnswer         = "no answer within"
	failedCheck      = "has not passed its health check: "
)

// passCheck runs the checks until they pass, and reports true; or until
// end, when it records the last answer as what the generation has not
// done and closes g.timedOut, or until the generation exits or ctx ends,
// and reports false.
func (g *generation) passCheck(ctx context.Context, end time.Time) bool {
	cfg := g.want
	if !cfg.Gated() {
		return true
	}
	var last string
	for {
		left := time.Until(end)
		if left <= 0 {
			g.mu.Lock()
			g.missing = failedCheck + cmp.Or(last, "no check finished")
			g.mu.Unlock()
			close(g.timedOut)
			return false
		}
		ok, what, answer, cut := true, "", "", false
		if cfg.Health != nil {
			what, cut = cfg.Health.URL, left < httpCheckTimeout
			ok, answer = g.checkHTTP(ctx, *cfg.Health, min(left, httpCheckTimeout))
		}
		if ok && cfg.Exec != "" {
			what, cut = "--ready-exec", left < execCheckTimeout
			ok, answer = g.checkExec(ctx, cfg.Exec, min(left, execCheckTimeout))
		}
		if ok {
			g.log.Info("the new generation passed its health check", "generation", g.num, "pid", g.pid, "check", what, "answer", answer)
			return true
		}
		// An attempt cut short by --ready-timeout that got no answer says
		// less than the answer before it.
		if now := what + ": " + answer; now != last && !(cut && strings.HasPrefix(answer, noAnswer) && last != "") {
			g.log.Info("the new generation's health check did not pass; trying again until --ready-timeout", "generation", g.num, "pid", g.pid, "check", what, "answer", answer)
			last = now
		}
		select {
		case <-ctx.Done():
			return false
		case <-g.exited:
			return false
		case <-time.After(min(checkEvery, max(time.Until(end), 0))):
		}
	}
}

// rollbackHint is what the log suggests when g is rolled back for not
// being ready in time.
func (g *generation) rollbackHint() string {
	if strings.HasPrefix(g.missingNow(), "has not passed its health check") {
		return "the new release fails its health check: fix it, or its check; raise --ready-timeout if it needs longer to become healthy"
	}
	return "raise --ready-timeout if it needs longer to start; pass --ready listen if it accepts in a way takeover cannot see"
}

// checkHTTP GETs the health URL from a socket the fence steers to the new
// server's, and reports whether it answered 2xx, and its answer (the
// status line and the body's start) or the error.
func (g *generation) checkHTTP(ctx context.Context, h ready.Health, timeout time.Duration) (bool, string) {
	held := g.heldFor(h)
	var fence *swap.Fence
	sock := -1
	if held != nil && held.Fence != nil {
		fence = held.Fence
		if sock = g.holdings.DupHeld(held.Spec, held.Addr); sock < 0 {
			return false, "the new server's socket is gone"
		}
		defer unix.Close(sock)
	}
	steered := false
	d := net.Dialer{Timeout: timeout, ControlContext: func(_ context.Context, _, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			// Bind first, so that the fence knows the connection by its
			// source; a bound port is no other socket's.
			if err = unix.Bind(int(fd), target.SockaddrOf(netip.AddrPortFrom(h.Addr.Addr(), 0))); err != nil {
				return
			}
			sa, e := unix.Getsockname(int(fd))
			if err = e; err != nil || fence == nil {
				return
			}
			if err = fence.SteerCheck(sock, target.AddrPortOf(sa)); err == nil {
				steered = true
			}
		})
		return errors.Join(cerr, err)
	}}
	defer func() {
		if steered {
			fence.EndCheck(sock)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", h.Addr.String())
	if err != nil {
		return false, httpError(err, timeout)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	code, answer, err := getHTTP(conn, h.URL)
	if err != nil {
		return false, httpError(err, timeout)
	}
	return code >= 200 && code < 300, answer
}

// httpError says what went wrong with a check's request: no answer
// within timeout, or the error (without the URL, which the log says).
func httpError(err error, timeout time.Duration) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Sprintf("%s %v", noAnswer, timeout)
	}
	return err.Error()
}

// getHTTP sends GET of rawURL over conn as an HTTP/1.1 client that closes
// the connection after one answer, and returns the answer's status code,
// and its status and first line of body ("200 OK: \"ok\""). It follows no
// redirect and takes no proxy: the check stays on this host. (net/http's
// client would do the same, at the cost of its package's start-up in every
// takeover process; see internal/metrics.)
func getHTTP(conn net.Conn, rawURL string) (int, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, "", err
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: takeover-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, "", err
	}
	r := bufio.NewReader(io.LimitReader(conn, 64<<10))
	status, err := r.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("no HTTP answer: %w", err)
	}
	proto, status, _ := strings.Cut(strings.TrimRight(status, "\r\n"), " ")
	codeText, _, _ := strings.Cut(status, " ")
	code, err := strconv.Atoi(codeText)
	if !strings.HasPrefix(proto, "HTTP/") || err != nil || code < 100 || code > 999 {
		return 0, "", fmt.Errorf("not an HTTP answer: %q", firstLine([]byte(proto+" "+status)))
	}
	chunked := false
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return 0, "", fmt.Errorf("the answer's header: %w", err)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		name, value, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Transfer-Encoding") && strings.Contains(strings.ToLower(value), "chunked") {
			chunked = true
		}
	}
	if chunked {
		r.ReadString('\n') // the first chunk's size
	}
	body := make([]byte, answerMax)
	n, _ := io.ReadFull(r, body)
	answer := status
	if b := firstLine(body[:n]); b != "" {
		answer += ": " + strconv.Quote(b)
	}
	return code, answer, nil
}

// heldFor returns the generation's socket the check's address reaches: of
// its target, at that address, or at the unspecified address of its
// family, or at [::] (dual-stack). It warns, once, where that socket was
// handed over unfenced: shared with the old server.
func (g *generation) heldFor(h ready.Health) *swap.Held {
	var best *swap.Held
	rank := func(s *swap.Held) int {
		a := s.Addr.Addr()
		switch {
		case a.Unmap() == h.Addr.Addr():
			return 3
		case a.IsUnspecified() && a.Is4() == h.Addr.Addr().Is4():
			return 2
		case a.IsUnspecified() && a.Is6():
			return 1
		}
		return 0
	}
	g.holdings.Each(func(_ swap.SockKey, s *swap.Held) {
		if s.Spec == h.Spec && rank(s) > 0 && (best == nil || rank(s) > rank(best)) {
			best = s
		}
	})
	if best != nil && best.Fence == nil && best.Sw != nil && best.Sw.Strategy == "handoff" {
		g.mu.Lock()
		warned := g.checkWarned
		g.checkWarned = true
		g.mu.Unlock()
		if !warned {
			g.log.Warn("the handoff of the health check's port is not fenced: the old and the new server share one socket, and the check reaches whichever accepts it",
				"generation", g.num, "port", h.Spec.String(), "not_fenced", best.Sw.NotFenced)
		}
	}
	return best
}

// checkExec runs --ready-exec by sh -c, with the new generation's pid and
// port in its environment, in a process group of its own that is killed
// at timeout; it passes when it exits 0. Its answer is its exit and the
// last line of its output.
func (g *generation) checkExec(ctx context.Context, cmdline string, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cmdline)
	cmd.Env = append(os.Environ(), g.checkEnv()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	tail := lastLine(out.Bytes())
	answer := "exit status 0"
	switch {
	case ctx.Err() != nil && err != nil:
		answer = fmt.Sprintf("%s %v (killed)", noAnswer, timeout)
	case err != nil:
		answer = err.Error()
	}
	if tail != "" {
		answer += ": " + strconv.Quote(tail)
	}
	return err == nil, answer
}

// checkEnv is what --ready-exec is told: TAKEOVER_NEW_PID, the new
// generation's command; TAKEOVER_PORT, the first --port's port (or a
// --path's path); TAKEOVER_PORTS, every --port and --path, space-separated.
func (g *generation) checkEnv() []string {
	var all []string
	for _, s := range g.want.Targets {
		all = append(all, s.String())
	}
	first := ""
	if len(g.want.Targets) > 0 {
		s := g.want.Targets[0]
		first = strconv.Itoa(int(s.Port))
		if s.Net == target.NetUnix {
			first = s.Path
		}
	}
	return []string{"TAKEOVER_NEW_PID=" + strconv.Itoa(g.pid), "TAKEOVER_PORT=" + first, "TAKEOVER_PORTS=" + strings.Join(all, " ")}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(s)
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > answerMax {
		s = s[len(s)-answerMax:]
	}
	return strings.TrimSpace(s)
}
