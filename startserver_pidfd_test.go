package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStartServerSignalsOnlyTheLockHolder: --stop and --restart signal the
// pid their pid file names only if that process holds the file's lock, as
// a start_server does: a pid file whose lock someone else holds (flock(2)
// needs only read access) names, here, a process of the test's that is no
// start_server, and it is left alone.
func TestStartServerSignalsOnlyTheLockHolder(t *testing.T) {
	bin := takeoverBin(t)
	dir := t.TempDir()
	pidFile, statusFile := filepath.Join(dir, "pid"), filepath.Join(dir, "status")
	for _, flag := range []string{"--stop", "--restart"} {
		sleeper := exec.Command("sleep", "60")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- sleeper.Wait() }()
		t.Cleanup(func() { sleeper.Process.Kill(); <-done })
		os.WriteFile(pidFile, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o644)
		os.WriteFile(statusFile, []byte("1:"+strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o644)
		reader, err := os.Open(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(reader.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd := exec.Command(bin, "start-server", flag, "--pid-file="+pidFile, "--status-file="+statusFile)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ctlDone := make(chan error, 1)
		go func() { ctlDone <- cmd.Wait() }()
		select {
		case err := <-ctlDone:
			if err == nil || !strings.Contains(out.String(), "does not hold the lock on "+pidFile) {
				t.Errorf("%s with a pid file another process locks: %v, %q; want a refusal", flag, err, out.String())
			}
		case err := <-done:
			done <- err
			cmd.Process.Kill() // it would wait for the lock
			<-ctlDone
			t.Errorf("%s signalled pid %d, which is no start_server (%v)", flag, sleeper.Process.Pid, err)
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-ctlDone
			t.Errorf("%s still ran after 60s: %q", flag, out.String())
		}
		reader.Close()
	}
}
