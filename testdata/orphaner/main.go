// orphaner is the application of containers_test.go, built static and put
// on the container's volume as /srv/app/server beside a static takeover.
// Each start leaves an orphan behind, as a server that daemonizes a helper
// does (a child starts a grandchild and exits at once; the grandchild
// writes its pid to orphans.log, lives 200ms and exits: a zombie unless its
// new parent, the nearest subreaper or PID 1, reaps it). Then it becomes
// `takeover ARGS...` (demo-server), answering gen= with the contents of the
// file "version" beside it: a new version is a new file on the volume.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	dir := filepath.Dir(self)
	switch os.Getenv("ORPHANER") {
	case "child":
		grandchild := exec.Command(self)
		grandchild.Env = append(os.Environ(), "ORPHANER=grandchild")
		if err := grandchild.Start(); err != nil {
			fail(err)
		}
		os.Exit(0) // the grandchild is orphaned
	case "grandchild":
		f, err := os.OpenFile(filepath.Join(dir, "orphans.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fail(err)
		}
		fmt.Fprintln(f, os.Getpid())
		f.Close()
		time.Sleep(200 * time.Millisecond)
		os.Exit(0)
	}
	child := exec.Command(self)
	child.Env = append(os.Environ(), "ORPHANER=child")
	if err := child.Run(); err != nil {
		fail(err)
	}
	version, err := os.ReadFile(filepath.Join(dir, "version"))
	if err != nil {
		fail(err)
	}
	env := append(os.Environ(), "TAKEOVER_TEST_GEN="+strings.TrimSpace(string(version)))
	tk := filepath.Join(dir, "takeover")
	fail(syscall.Exec(tk, append([]string{tk}, os.Args[1:]...), env))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "orphaner:", err)
	os.Exit(1)
}
