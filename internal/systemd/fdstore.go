package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// systemd's file descriptor store keeps what a service puts in it
// (FDSTORE=1 with the fds over NOTIFY_SOCKET) while the service restarts:
// across `systemctl restart`, and a Restart= after takeover itself dies,
// the next takeover gets the sockets back as LISTEN_FDS (listenfds.go),
// so connections wait in the accept queue instead of being refused.
// `systemctl stop`, and a unit that ends failed, empty it.

// A Store is takeover's side of a unit's file descriptor store: one
// socket per target, under the target's store name.
type Store struct {
	log  *slog.Logger
	unit string // the unit takeover runs in, "" if unknown

	mu      sync.Mutex
	stored  map[string]uint64 // store name -> inode of the socket stored under it
	limit   int               // FileDescriptorStoreMax=, -1 until known or if unknowable
	warned  bool              // the one warning about the store was given
	checked bool
}

// NewStore returns the store of the unit takeover runs in, or nil when it
// does not run under systemd. kept names the sockets systemd passed at
// start (from the store, or from socket units): they are with systemd
// already and are never stored again.
func NewStore(log *slog.Logger, unit string, kept []Passed) *Store {
	if !UnderSystemd() {
		return nil
	}
	s := &Store{log: log, unit: unit, stored: map[string]uint64{}, limit: -1}
	for _, k := range kept {
		s.stored[k.Spec.StoreName()] = k.Inode
	}
	return s
}

// Keep puts the socket fd (inode) in the store under name, unless it is
// there already; another socket stored under the name is removed first,
// so that the store never keeps a port takeover has let go of.
func (s *Store) Keep(name string, fd int, inode uint64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.stored[name]; ok {
		if old == inode {
			return
		}
		s.removeLocked(name)
	}
	s.checkLimitLocked()
	if s.limit >= 0 && len(s.stored) >= s.limit {
		s.warnLocked(fmt.Sprintf("systemd's file descriptor store of %s is full (FileDescriptorStoreMax=%d): %s is not kept across a restart of the service; raise FileDescriptorStoreMax= to the number of --port and --path (at least %d)",
			s.unitName(), s.limit, name, len(s.stored)+1))
		return
	}
	if _, err := sdNotifyFDs("FDSTORE=1\nFDNAME="+name, []int{fd}); err != nil {
		s.warnLocked(fmt.Sprintf("cannot put %s in systemd's file descriptor store: %v", name, err))
		return
	}
	s.stored[name] = inode
	s.log.Debug("socket put in systemd's file descriptor store", "name", name, "inode", inode)
}

// Remove takes the socket stored under name out of the store: takeover no
// longer serves it, and systemd's copy must not keep the port from freeing.
func (s *Store) Remove(name string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.stored[name]; ok {
		s.removeLocked(name)
	}
}

func (s *Store) removeLocked(name string) {
	if _, err := Notify("FDSTOREREMOVE=1\nFDNAME=" + name); err != nil {
		s.log.Warn("cannot remove a socket from systemd's file descriptor store", "name", name, "err", err)
	}
	delete(s.stored, name)
}

// checkLimitLocked learns FileDescriptorStoreMax= once: from $FDSTORE
// (systemd 254 and later set it), else from `systemctl show`. A store
// systemd does not keep (0) is said once, with what to add to the unit.
func (s *Store) checkLimitLocked() {
	if s.checked {
		return
	}
	s.checked = true
	s.limit = storeLimit(s.unit)
	if s.limit == 0 {
		s.warnLocked(fmt.Sprintf("%s has no file descriptor store (FileDescriptorStoreMax=0): `systemctl restart` and a crash of takeover refuse connections until the next server listens; add FileDescriptorStoreMax=8 to its [Service] section", s.unitName()))
	}
}

func (s *Store) warnLocked(msg string) {
	if !s.warned {
		s.warned = true
		s.log.Warn(msg)
	}
}

func (s *Store) unitName() string {
	if s.unit == "" {
		return "the unit"
	}
	return s.unit
}

// storeLimit returns the unit's FileDescriptorStoreMax=, or -1 if it
// cannot be learnt (systemctl missing or not allowed to ask).
func storeLimit(unit string) int {
	if v := os.Getenv("FDSTORE"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	if unit == "" {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", "show", "--property=FileDescriptorStoreMax", "--value", unit).Output()
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return -1
	}
	return n
}
